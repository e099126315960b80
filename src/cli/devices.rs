//! `minordpo devices`: the GPU adapters wgpu finds and what `--device auto` would pick; with
//! `--check`, the vocabulary-wide kernels run on the `--device` against the host
//! (`kernels/self_check.rs`), and one DPO step against the CPU's tensor ops (`dpo/device_check.rs`).

use clap::Args;

use crate::device::{self, DeviceChoice};
use crate::dpo::device_check;
use crate::kernels::self_check;

#[derive(Args)]
pub struct DevicesArgs {
    /// Also run minordpo's vocabulary-wide operations (fused log-probs, argmax) and one DPO
    /// training step on the `--device` and compare them with the host; exits with an error if one
    /// the trainer relies on is wrong.
    #[arg(long)]
    check: bool,
}

/// Lists the adapters, then runs the checks if asked.
pub fn run(choice: DeviceChoice, args: DevicesArgs) -> anyhow::Result<()> {
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
    if !args.check {
        return Ok(());
    }
    let selected = device::select(choice)?;
    println!("checking {}", selected.description);
    let mut lines = self_check::run_checks(&selected.device);
    lines.extend(device_check::step_lines(&selected.device));
    for line in &lines {
        println!("  {line}");
    }
    let failed = lines.iter().filter(|l| l.required && !l.passed).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} check(s) failed on {}: its results cannot be trusted; use --device cpu",
            selected.description
        );
    }
    Ok(())
}
