//! The key/value cache of decoding: per layer, buffers reserved once and written in place, so a
//! step costs its own keys and values, not a copy of everything cached before it.

use burn::prelude::*;

/// Per-layer key/value caches plus the number of positions already processed.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub len: usize,
    /// Positions each layer's buffers are allocated for at first (they grow when exceeded).
    pub reserve: usize,
}

impl KvCache {
    /// An empty cache whose buffers will hold `positions` positions without growing.
    pub fn with_capacity(positions: usize) -> Self {
        Self {
            reserve: positions,
            ..Self::default()
        }
    }

    /// Makes sure there is one layer cache per decoder layer (empty ones, reserving
    /// [`Self::reserve`] positions, when the count differs).
    pub(super) fn ensure_layers(&mut self, layers: usize) {
        if self.layers.len() != layers {
            let empty = LayerCache {
                reserve: self.reserve,
                ..LayerCache::default()
            };
            self.layers = vec![empty; layers];
        }
    }
}

/// Keys and values seen so far by one layer, in buffers `[batch, kv_heads, capacity, head_dim]`
/// whose first `len` positions are filled: a decoding step writes its keys and values in place
/// (on flex and wgpu alike) instead of copying the whole cache into a longer one.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    buffers: Option<(Tensor<4>, Tensor<4>)>,
    len: usize,
    /// Positions the buffers are allocated for at first.
    reserve: usize,
}

impl LayerCache {
    /// Appends `k` and `v` `[batch, kv_heads, seq, head_dim]` and returns every key and value so
    /// far, `[batch, kv_heads, len, head_dim]` views of the buffers. Buffers that are too short
    /// are reallocated with room for at least the reserved positions (and at least twice their
    /// size, so an unknown length costs amortised constant copies).
    pub(super) fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [batch, heads, seq, hd] = k.dims();
        let (start, end) = (self.len, self.len + seq);
        let capacity = self.buffers.as_ref().map_or(0, |(b, _)| b.dims()[2]);
        let (kb, vb) = match self.buffers.take() {
            Some(buffers) if end <= capacity => buffers,
            old => {
                let capacity = end.max(self.reserve).max(2 * capacity);
                let device = k.device();
                let grow = |old: Option<Tensor<4>>| {
                    let fresh = Tensor::zeros([batch, heads, capacity, hd], &device);
                    match old {
                        Some(old) if start > 0 => fresh.slice_assign(
                            [0..batch, 0..heads, 0..start, 0..hd],
                            old.narrow(2, 0, start),
                        ),
                        _ => fresh,
                    }
                };
                let (ok, ov) = old.unzip();
                (grow(ok), grow(ov))
            }
        };
        let at = [0..batch, 0..heads, start..end, 0..hd];
        let (kb, vb) = (kb.slice_assign(at.clone(), k), vb.slice_assign(at, v));
        self.buffers = Some((kb.clone(), vb.clone()));
        self.len = end;
        (kb.narrow(2, 0, end), vb.narrow(2, 0, end))
    }
}
