//! Picks the Burn `Device` the user asked for: `auto` (a real GPU through wgpu when one exists,
//! the CPU otherwise), `wgpu` (any adapter, software ones included), `cpu`/`flex`, or `ndarray`.
//! Also lists the adapters wgpu can see, for the `devices` command.

use std::sync::Mutex;

use burn::prelude::*;
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::wgpu;

use crate::error::{Error, Result};

/// What `--device` accepts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A real GPU through wgpu if there is one, else the CPU (flex).
    Auto,
    /// wgpu on whatever adapter it finds (Vulkan, Metal, DX12; software rasterisers too).
    Wgpu,
    /// The CPU, through Burn's flex backend (same as `flex`).
    Cpu,
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// Burn's older ndarray CPU backend.
    Ndarray,
}

/// One adapter as wgpu reports it.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub name: String,
    pub device_type: wgpu::DeviceType,
    pub backend: wgpu::Backend,
    pub driver: String,
}

impl Adapter {
    /// `discrete`, `integrated`, `virtual`, `cpu` or `other`.
    pub fn kind(&self) -> &'static str {
        match self.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "cpu",
            wgpu::DeviceType::Other => "other",
        }
    }

    /// Whether this is real GPU hardware (not a software rasteriser).
    pub fn is_gpu(&self) -> bool {
        matches!(
            self.device_type,
            wgpu::DeviceType::DiscreteGpu
                | wgpu::DeviceType::IntegratedGpu
                | wgpu::DeviceType::VirtualGpu
        )
    }
}

/// The graphics APIs Burn's `wgpu` device tries, best first, on this platform.
fn api_chain() -> Vec<wgpu::Backend> {
    if cfg!(target_os = "macos") {
        vec![wgpu::Backend::Metal]
    } else {
        vec![
            wgpu::Backend::Vulkan,
            wgpu::Backend::Dx12,
            wgpu::Backend::Gl,
        ]
    }
}

/// Every adapter of every graphics API in Burn's chain, in the order Burn would consider them.
pub fn list_adapters() -> Vec<Adapter> {
    let mut found = Vec::new();
    for api in api_chain() {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: api.into(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        for adapter in pollster::block_on(instance.enumerate_adapters(api.into())) {
            let info = adapter.get_info();
            found.push(Adapter {
                name: info.name,
                device_type: info.device_type,
                backend: info.backend,
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            });
        }
    }
    found
}

/// The adapter `auto` would use: on the first API with a real GPU, its best GPU.
pub fn auto_gpu(adapters: &[Adapter]) -> Option<&Adapter> {
    let rank = |a: &Adapter| match a.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        _ => 2,
    };
    let api = adapters.iter().find(|a| a.is_gpu())?.backend;
    adapters
        .iter()
        .filter(|a| a.backend == api && a.is_gpu())
        .min_by_key(|a| rank(a))
}

/// Whether `device` runs through CubeCL (wgpu): a GPU memory pool and autotuned kernels. Decided
/// from the device's kind alone, without asking the device anything (no round trip to it).
pub fn is_cube(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        burn::backend::DispatchDevice::Cube(_)
    )
}

/// Whether `device` is the CPU through flex (the backend with the CPU kernels of `kernels::`).
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.clone().without_autodiff().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// A device ready to use, with a line saying what it is.
pub struct SelectedDevice {
    pub device: Device,
    pub description: String,
}

/// Resolves `choice` into a device, or a clear error when it cannot exist here.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    match choice {
        DeviceChoice::Cpu | DeviceChoice::Flex => Ok(cpu_device()),
        #[allow(deprecated)]
        DeviceChoice::Ndarray => Ok(SelectedDevice {
            device: Device::ndarray(),
            description: "cpu (ndarray backend)".into(),
        }),
        DeviceChoice::Wgpu => {
            let adapters = list_adapters();
            let Some(first) = adapters.first() else {
                return Err(Error::Device(
                    "--device wgpu: no wgpu adapter found (no Vulkan, Metal or DX12 driver); \
                     install GPU drivers (on Linux: mesa-vulkan-drivers) or use --device cpu"
                        .into(),
                ));
            };
            let chosen = auto_gpu(&adapters).unwrap_or(first).clone();
            init_wgpu(&chosen)
        }
        DeviceChoice::Auto => match auto_gpu(&list_adapters()) {
            Some(gpu) => init_wgpu(&gpu.clone()).or_else(|err| {
                eprintln!("warning: {err}; falling back to the CPU");
                Ok(cpu_device())
            }),
            None => Ok(cpu_device()),
        },
    }
}

fn cpu_device() -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        description: "cpu (flex backend)".into(),
    }
}

/// Devices already started, by adapter: Burn's wgpu runtime starts once per adapter and process.
static STARTED: Mutex<Vec<(String, Device)>> = Mutex::new(Vec::new());

fn init_wgpu(adapter: &Adapter) -> Result<SelectedDevice> {
    let description = format!(
        "wgpu: {} ({}, {:?})",
        adapter.name,
        adapter.kind(),
        adapter.backend
    );
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, device)) = started.iter().find(|(d, _)| *d == description) {
        return Ok(SelectedDevice {
            device: device.clone(),
            description,
        });
    }
    let kind = match adapter.device_type {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(0),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(0),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(0),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    let device = Device::wgpu_options()
        .device_kind(kind)
        .init()
        .map_err(|e| Error::Device(format!("cannot start wgpu on {}: {e}", adapter.name)))?;
    started.push((description.clone(), device.clone()));
    Ok(SelectedDevice {
        device,
        description,
    })
}

/// For the unit tests that compare backends: a wgpu device, or `None` after printing why the
/// wgpu half of the test is skipped (no adapter here).
#[cfg(test)]
pub(crate) fn wgpu_or_skip() -> Option<Device> {
    select(DeviceChoice::Wgpu)
        .map(|selected| selected.device)
        .map_err(|e| eprintln!("skipping the wgpu check: {e}"))
        .ok()
}

/// Three tests that run `$check(&device)` on flex, ndarray and wgpu (the last skipped, with a
/// printed reason, when no adapter exists).
#[cfg(test)]
macro_rules! on_every_backend {
    ($check:path => $flex:ident, $ndarray:ident, $wgpu:ident) => {
        #[test]
        fn $flex() {
            $check(&burn::prelude::Device::flex());
        }

        #[test]
        #[allow(deprecated)] // ndarray stays selectable (`--device ndarray`), so it stays tested
        fn $ndarray() {
            $check(&burn::prelude::Device::ndarray());
        }

        #[test]
        fn $wgpu() {
            if let Some(device) = $crate::device::wgpu_or_skip() {
                $check(&device);
            }
        }
    };
}

#[cfg(test)]
pub(crate) use on_every_backend;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::batch::bucketed_len;

    #[test]
    fn only_cubecl_devices_count_as_gpus_and_bucket_lengths() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            assert!(!is_cube(&device));
            assert_eq!(bucketed_len(70, &device), 70);
        }
        if let Some(gpu) = wgpu_or_skip() {
            for device in [gpu.clone(), gpu.autodiff()] {
                assert!(is_cube(&device));
                assert_eq!(bucketed_len(70, &device), 128);
            }
        }
    }
}
