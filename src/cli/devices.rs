//! `minordpo devices`: the GPU adapters wgpu finds and what `--device auto` would pick.

use crate::device;

/// Lists the adapters.
pub fn run() -> anyhow::Result<()> {
    let adapters = device::list_adapters();
    if adapters.is_empty() {
        println!("no wgpu adapter found (no Vulkan, Metal or DX12 driver)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "[{i}] {}  type: {}  api: {:?}  driver: {}",
            a.name,
            a.kind(),
            a.backend,
            if a.driver.is_empty() { "?" } else { &a.driver }
        );
    }
    match device::auto_gpu(&adapters) {
        Some(gpu) => println!(
            "auto: wgpu on {} ({}, {:?})",
            gpu.name,
            gpu.kind(),
            gpu.backend
        ),
        None => println!("auto: cpu (flex backend) — no hardware GPU adapter"),
    }
    Ok(())
}
