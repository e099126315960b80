//! What the hand-written WGSL kernels of `shaders/` share on CubeCL's wgpu runtime: the kernel
//! source (a shared prelude of bindings and helpers, the kernel's own source, and the `{{key}}`
//! values filled into them) and the u32 arguments they read from a storage buffer.

use burn::backend::wgpu::{KernelSource, SourceTemplate};
use burn::cubecl::prelude::KernelId;

/// A WGSL kernel: `prelude` (bindings and helpers shared with sibling kernels, or empty) then
/// `source`, with the template values added by [`Self::with`].
pub(crate) struct WgslKernel {
    /// Tells the kernels apart in CubeCL's compilation cache.
    name: &'static str,
    prelude: &'static str,
    source: &'static str,
    values: Vec<(&'static str, String)>,
}

impl WgslKernel {
    pub(crate) fn new(name: &'static str, prelude: &'static str, source: &'static str) -> Self {
        Self {
            name,
            prelude,
            source,
            values: Vec::new(),
        }
    }

    /// Fills `{{key}}` with `value`.
    pub(crate) fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.values.push((key, value.to_string()));
        self
    }
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        let text = format!("{}\n{}", self.prelude, self.source);
        self.values
            .iter()
            .fold(SourceTemplate::new(text), |template, (key, value)| {
                template.register(*key, value.as_str())
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.name)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// `values` as the little-endian bytes of a storage buffer of u32.
pub(crate) fn u32_bytes(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
