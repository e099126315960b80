//! A run's peak memory, as each device can tell it: on the CPU the process's peak resident memory
//! (the operating system's own high-water mark, so no allocation goes unseen); on wgpu the largest
//! reservation of CubeCL's GPU memory pool seen at the moments it is asked (step boundaries after
//! a host read), so a short-lived peak between them can go unseen. `train` and `sft` log it on
//! every metrics line, `bench` reports it once.

use burn::prelude::*;

use crate::device;

/// The peak so far, for one device.
#[derive(Debug)]
pub struct PeakMemory {
    /// The device asked, on wgpu; `None` on the CPU backends.
    gpu: Option<Device>,
    /// The largest pool reservation seen (wgpu).
    pool_peak: u64,
}

impl PeakMemory {
    pub fn new(device: &Device) -> Self {
        Self {
            gpu: device::is_cube(device).then(|| device.clone()),
            pool_peak: 0,
        }
    }

    /// Notes the GPU pool's reservation now (nothing to do on the CPU, whose operating system
    /// keeps the peak). It waits for CubeCL's server to take the queued work, so call it where the
    /// run syncs anyway.
    pub fn observe(&mut self) {
        if let Some(usage) = self.gpu.as_ref().and_then(Device::memory_pool_usage) {
            self.pool_peak = self.pool_peak.max(usage.bytes_reserved);
        }
    }

    /// The peak in bytes, where the device or platform reports one.
    pub fn bytes(&self) -> Option<u64> {
        match self.gpu {
            Some(_) => Some(self.pool_peak).filter(|&b| b > 0),
            None => peak_rss_bytes(),
        }
    }

    /// What [`Self::bytes`] measures: `gpu_pool_reserved` or `host_rss`.
    pub fn kind(&self) -> &'static str {
        if self.gpu.is_some() {
            "gpu_pool_reserved"
        } else {
            "host_rss"
        }
    }
}

/// Peak resident memory of this process in bytes, where the platform reports it: `getrusage`'s
/// maximum resident set on Unix, the peak working set on Windows.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let max = u64::try_from(usage.ru_maxrss).ok()?;
        // Linux and the BSDs report KiB, macOS bytes.
        Some(if cfg!(target_os = "macos") {
            max
        } else {
            max * 1024
        })
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::ProcessStatus::{
            K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS,
        };
        use windows_sys::Win32::System::Threading::GetCurrentProcess;
        let cb = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        // SAFETY: a plain C struct of integers, for which zero is valid.
        let mut counters: PROCESS_MEMORY_COUNTERS = unsafe { std::mem::zeroed() };
        // SAFETY: the current process's pseudo-handle needs no closing, and the call writes only
        // the `cb` bytes of the struct we pass.
        if unsafe { K32GetProcessMemoryInfo(GetCurrentProcess(), &mut counters, cb) } == 0 {
            return None;
        }
        Some(counters.PeakWorkingSetSize as u64)
    }
    #[cfg(not(any(unix, windows)))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU the peak is the process's: at least what this test itself touched, and it never
    /// goes down.
    #[test]
    fn the_cpu_peak_covers_what_the_process_touched() {
        let memory = PeakMemory::new(&Device::flex());
        assert_eq!(memory.kind(), "host_rss");
        if !cfg!(any(unix, windows)) {
            assert_eq!(memory.bytes(), None);
            return;
        }
        let before = memory.bytes().unwrap();
        // 64 MB written, so every page is resident.
        let touched = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = memory.bytes().unwrap();
        assert!(after >= before, "{after} < {before}");
        assert!(
            after >= touched.len() as u64,
            "peak {after} below the {} bytes just written",
            touched.len()
        );
        drop(touched);
        assert!(memory.bytes().unwrap() >= after);
    }

    /// On wgpu the peak is the pool's largest reservation seen, which covers a tensor alive when
    /// it is asked.
    #[test]
    fn the_gpu_peak_covers_a_live_tensor_on_wgpu() {
        let Some(device) = device::wgpu_or_skip() else {
            return;
        };
        let mut memory = PeakMemory::new(&device);
        assert_eq!(memory.kind(), "gpu_pool_reserved");
        let values = 4 << 20;
        let tensor = Tensor::<1>::ones([values], &device);
        // Reading one value back makes sure the buffer exists.
        assert_eq!(tensor.clone().slice(0..1).into_scalar::<f32>(), 1.0);
        memory.observe();
        let peak = memory.bytes().unwrap();
        assert!(peak >= 4 * values as u64, "{peak}");
        drop(tensor);
        memory.observe();
        assert!(memory.bytes().unwrap() >= peak);
    }
}
