//! The decoder's projections as single operations: `x · W` by a frozen weight (stored in f32, in
//! half precision, or block-quantized while activations stay f32), and the LoRA projection
//! `x · W + (x · A) · B`.
//!
//! - **Narrow weights.** Casting the weight with ordinary tensor ops would make the matmul keep the
//!   f32 copy alive for the backward (it needs `W` to form `∂x = g · Wᵀ`), so a model stored in half
//!   precision or in blocks would hold an f32 copy of every weight until the backward ran. These
//!   ops keep the *stored* weight as their backward state and widen it transiently in each pass.
//! - **Blocks** (`blocks.rs`: Q8_0 and Q4_0, llama.cpp's layout) are widened a tile at a time
//!   inside the product on flex (`blocks_cpu.rs`), and by a WGSL kernel before CubeCL's matmul on
//!   wgpu (`blocks_wgsl.rs`); other backends widen them on the host.
//! - **LoRA as one op.** Its backward forms `∂x = g · Wᵀ + (g · Bᵀ) · Aᵀ` as one product
//!   accumulated into another, where the decomposed graph would add two `[rows, d_in]` gradients.
//!   The frozen weight never gets a gradient.
//! - **Flex** runs both products through `gemm` into one unzeroed buffer (`flex.rs`, `gemm.rs`).
//!   With [`Products::Bf16`] a bf16 weight multiplies activations rounded to bf16, with f32 sums,
//!   on CPUs with AVX512-BF16 (`bf16_gemm.rs`): twice the multiply-adds per instruction.
//!   Other backends compose ordinary ops (Fusion fuses them lazily on wgpu).
//! - **Autodiff** (`tracked.rs`) keeps the stored weight, dense or in blocks, for the backward.
//! - **Decoding on wgpu** (1–4 rows, no autodiff) reads a half-precision weight in place
//!   (`few_rows_wgsl.rs`) instead of casting it to an f32 copy before the matmul.

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::FloatDType;

#[cfg(target_arch = "x86_64")]
mod bf16_gemm;
pub mod blocks;
mod blocks_cpu;
mod blocks_wgsl;
mod few_rows;
mod few_rows_wgsl;
mod flex;
pub(crate) mod gemm;
mod tracked;

pub use blocks::BlockFormat;

/// How a frozen product by a dense weight multiplies (resolved from the `matmul_precision`
/// setting by `model::precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    /// The weight widened to `x`'s dtype (f32): the parity-tested path.
    #[default]
    F32,
    /// A bf16 weight by `x` rounded to bf16, the sums in f32, where the backend has such a
    /// product (flex on CPUs with AVX512-BF16); as [`Self::F32`] elsewhere.
    Bf16,
}

impl Products {
    /// The op argument (`backend_extension` ops take plain values).
    pub fn code(self) -> usize {
        self as usize
    }

    /// A short name for reports (`f32`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }

    pub fn from_code(code: usize) -> Self {
        match code {
            0 => Self::F32,
            1 => Self::Bf16,
            _ => panic!("unknown product precision code {code}"),
        }
    }
}

/// Whether this CPU multiplies bf16 by bf16 natively, as [`Products::Bf16`] does on flex
/// (x86-64 with AVX512-BF16).
pub fn cpu_has_bf16_products() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bf16_gemm::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The operations (differentiable in everything but the frozen weight: `Autodiff` routes to the
/// impl below). Row-major 2-D operands; a dense weight may be stored in any float dtype. A
/// block-quantized weight `W` `[d_out, d_in]` is its `words` and `scales` (`blocks.rs`) with its
/// format's [`BlockFormat::code`].
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait ProjectionOps: Backend {
    /// `x` `[rows, d_in]` · `weight` `[d_in, d_out]` → `[rows, d_out]` in `x`'s dtype, multiplied
    /// as [`Products::from_code`]`(products)` says.
    #[fusion(default)]
    fn frozen_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        let _ = products;
        let weight = cast_like::<Self>(weight, &x);
        Self::float_matmul(x, weight)
    }

    /// `x · weight + u · v`, with `u` `[rows, r]` and `v` `[r, d_out]` in `x`'s dtype (`u · v`
    /// in `x`'s dtype whatever `products` says).
    #[fusion(default)]
    fn matmul_add_product(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        let base = Self::frozen_matmul(x, weight, products);
        Self::float_add(base, Self::float_matmul(u, v))
    }

    /// LoRA: `x · weight + (x · a) · b`, with `a` `[d_in, r]` and `b` `[r, d_out]` (carrying
    /// LoRA's scale); only the frozen product follows `products`.
    #[fusion(default)]
    fn lora_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        let u = Self::float_matmul(x.clone(), a);
        Self::matmul_add_product(x, weight, u, b, products)
    }

    /// The block-quantized `W` `[d_out, d_in]` in f32.
    #[fusion(dtype = scales, shape = Shape::new([scales[0], scales[1] * blocks::BLOCK]))]
    fn dequantize_blocks(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self>;

    /// `x` `[rows, d_in]` · `Wᵀ` → `[rows, d_out]`, plus `u · v` (`[rows, r]` · `[r, d_out]`).
    #[fusion(default)]
    fn block_matmul_add_product(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let weight = Self::float_transpose(Self::dequantize_blocks(words, scales, format));
        Self::matmul_add_product(x, weight, u, v, Products::F32.code())
    }

    /// `x` `[rows, d_in]` · `Wᵀ` → `[rows, d_out]`.
    #[fusion(default)]
    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        let weight = Self::float_transpose(Self::dequantize_blocks(words, scales, format));
        Self::float_matmul(x, weight)
    }

    /// The backward's `g` `[rows, d_out]` · `W` → `[rows, d_in]`, plus `u · v` (`[r, d_in]`).
    #[fusion(default)]
    fn block_grad_matmul_add_product(
        g: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let weight = Self::dequantize_blocks(words, scales, format);
        Self::matmul_add_product(g, weight, u, v, Products::F32.code())
    }

    /// The backward's `g` `[rows, d_out]` · `W` → `[rows, d_in]`.
    #[fusion(default)]
    fn block_grad_matmul(
        g: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        Self::float_matmul(g, Self::dequantize_blocks(words, scales, format))
    }

    /// LoRA on a block-quantized weight: `x · Wᵀ + (x · a) · b`.
    #[fusion(default)]
    fn block_lora_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let u = Self::float_matmul(x.clone(), a);
        Self::block_matmul_add_product(x, words, scales, format, u, b)
    }
}

/// `x` `[rows, d_in]` · a frozen `weight` `[d_in, d_out]` in any float dtype → `[rows, d_out]` in
/// `x`'s dtype, keeping only the stored weight for the backward (whose `∂x = g · Wᵀ` multiplies
/// as `products` says too).
pub fn frozen_matmul(x: Tensor<2>, weight: Tensor<2>, products: Products) -> Tensor<2> {
    if let Some(out) = few_rows_wgsl::product(&x, &weight) {
        return out;
    }
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::frozen_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
        products.code(),
    ))
}

/// `x · weight + (x · a) · b` for a frozen `weight` (any float dtype) and trainable `a`
/// `[d_in, r]`, `b` `[r, d_out]`: gradients for `x`, `a` and `b`. Only the frozen products (forward
/// and `∂x`) follow `products`; LoRA's own stay f32.
pub fn lora_matmul(
    x: Tensor<2>,
    weight: Tensor<2>,
    a: Tensor<2>,
    b: Tensor<2>,
    products: Products,
) -> Tensor<2> {
    if let Some(base) = few_rows_wgsl::product(&x, &weight) {
        return base + x.matmul(a).matmul(b);
    }
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::lora_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
        products.code(),
    ))
}

/// A block-quantized frozen weight `W` `[d_out, d_in]` as the ops take it (`blocks.rs`).
#[derive(Debug, Clone)]
pub struct BlockOperand {
    /// `[d_out, d_in / 32 · words per block]` u32.
    pub words: Tensor<2, Int>,
    /// `[d_out, d_in / 32]` f32.
    pub scales: Tensor<2>,
    pub format: BlockFormat,
}

/// `x` `[rows, d_in]` · `Wᵀ` → `[rows, d_out]`, keeping only the blocks for the backward.
pub fn block_matmul(x: Tensor<2>, weight: &BlockOperand) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::block_matmul(
        x.into_dispatch(),
        weight.words.clone().into_dispatch(),
        weight.scales.clone().into_dispatch(),
        weight.format.code(),
    ))
}

/// `x · Wᵀ + (x · a) · b` for a block-quantized `W` and trainable `a` `[d_in, r]`, `b`
/// `[r, d_out]`: gradients for `x`, `a` and `b`.
pub fn block_lora_matmul(
    x: Tensor<2>,
    weight: &BlockOperand,
    a: Tensor<2>,
    b: Tensor<2>,
) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::block_lora_matmul(
        x.into_dispatch(),
        weight.words.clone().into_dispatch(),
        weight.scales.clone().into_dispatch(),
        weight.format.code(),
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// `W` `[d_out, d_in]` in f32 (embedding rows, merging, saving, checks).
pub fn dequantize_blocks(weight: &BlockOperand) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::dequantize_blocks(
        weight.words.clone().into_dispatch(),
        weight.scales.clone().into_dispatch(),
        weight.format.code(),
    ))
}

/// `weight` cast to the dtype of `like` (a no-op when they already match).
pub(super) fn cast_like<B: Backend>(
    weight: FloatTensor<B>,
    like: &FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_cast(weight, FloatDType::from(like.dtype()))
}

impl ProjectionOps for NdArray {
    fn dequantize_blocks(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        blocks::dequantize_on_host::<Self>(words, scales, BlockFormat::from_code(format))
    }
}

impl ProjectionOps for CubeBackend {
    fn dequantize_blocks(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        blocks_wgsl::dequantize(words, scales, BlockFormat::from_code(format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;

    pub(super) fn normal(shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device).detach()
    }

    fn close(a: Tensor<2>, b: Tensor<2>) {
        let e = max_rel_err(a, b);
        assert!(e <= 1e-5, "max relative error {e}");
    }

    /// `fused` and `plain`, the same function of `inputs`, agree within 1e-5 (relative) in value and
    /// in every input's gradient under the output cotangent `cot`.
    pub(super) fn assert_same(
        fused: Tensor<2>,
        plain: Tensor<2>,
        cot: &Tensor<2>,
        inputs: &[&Tensor<2>],
    ) {
        let (g1, g2) = (
            (fused.clone() * cot.clone()).sum().backward(),
            (plain.clone() * cot.clone()).sum().backward(),
        );
        close(fused.inner(), plain.inner());
        for t in inputs {
            close(t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
        }
    }

    /// Both ops (or only the LoRA one, which runs the frozen product inside it) against ordinary
    /// ops on the weight cast to f32: the same values and the same gradients for `x`, `a` and `b`.
    fn check(device: &Device, dtype: FloatDType, frozen_too: bool) {
        let device = device.clone().autodiff();
        let (rows, d_in, d_out, r) = (7, 8, 5, 3);
        let x = normal([rows, d_in], &device).require_grad();
        let a = normal([d_in, r], &device).require_grad();
        let b = normal([r, d_out], &device).require_grad();
        let weight = normal([d_in, d_out], &device).cast(dtype);
        assert_eq!(weight.dtype(), dtype.into());
        let wide = weight.clone().cast(FloatDType::F32);
        let cot = normal([rows, d_out], &device);

        if frozen_too {
            let fused = frozen_matmul(x.clone(), weight.clone(), Products::F32);
            assert_eq!(fused.dtype(), x.dtype());
            let plain = x.clone().matmul(wide.clone());
            assert_same(fused, plain, &cot, &[&x]);
        }

        let fused = lora_matmul(x.clone(), weight, a.clone(), b.clone(), Products::F32);
        let plain = x.clone().matmul(wide) + x.clone().matmul(a.clone()).matmul(b.clone());
        assert_same(fused, plain, &cot, &[&x, &a, &b]);
    }

    /// With bf16 products (where the CPU has them) the frozen product takes `x` rounded to bf16
    /// forward and the cotangent rounded to bf16 backward, while LoRA's products stay f32:
    /// values and gradients match that reference within 1e-5, which they could not if either
    /// pass had stayed f32 (bf16 rounding is ~4e-3).
    #[test]
    fn bf16_products_round_the_frozen_operands_only_on_flex() {
        if !cpu_has_bf16_products() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        let device = Device::flex().autodiff();
        let (rows, d_in, d_out, r) = (20, 70, 60, 3);
        let round = |t: Tensor<2>| t.cast(FloatDType::BF16).cast(FloatDType::F32);
        let x = normal([rows, d_in], &device).require_grad();
        let a = normal([d_in, r], &device).require_grad();
        let b = normal([r, d_out], &device).require_grad();
        let weight = normal([d_in, d_out], &device).cast(FloatDType::BF16);
        let wide = weight.clone().cast(FloatDType::F32).inner();
        let cot = normal([rows, d_out], &device);
        let fused = lora_matmul(x.clone(), weight, a.clone(), b.clone(), Products::Bf16);
        let grads = (fused.clone() * cot.clone()).sum().backward();
        let (x0, a0, b0) = (x.clone().inner(), a.clone().inner(), b.clone().inner());
        let cot0 = cot.inner();
        let lora = x0.clone().matmul(a0.clone()).matmul(b0.clone());
        let value = round(x0.clone()).matmul(wide.clone()) + lora.clone();
        let du = cot0.clone().matmul(b0.transpose());
        let lora_dx = du.clone().matmul(a0.clone().transpose());
        let dx = round(cot0.clone()).matmul(wide.clone().transpose()) + lora_dx;
        let da = x0.clone().transpose().matmul(du);
        let db = x0.clone().matmul(a0).transpose().matmul(cot0);
        close(fused.clone().inner(), value);
        close(x.grad(&grads).unwrap(), dx);
        close(a.grad(&grads).unwrap(), da);
        close(b.grad(&grads).unwrap(), db);
        // The f32 product is more than the tolerance away: an f32 path would have failed above.
        let f32_value = x0.matmul(wide) + lora;
        assert!(max_rel_err(fused.inner(), f32_value) > 1e-4);
    }

    #[test]
    fn projections_match_plain_ops_on_flex() {
        check(&Device::flex(), FloatDType::F32, true);
        check(&Device::flex(), FloatDType::BF16, true);
    }

    #[test]
    fn projections_match_plain_ops_on_ndarray() {
        check(&Device::ndarray(), FloatDType::F32, true);
    }

    /// Without gradients (the reference pass) the ops take the inner backend's path directly.
    #[test]
    fn untracked_lora_matmul_matches_tracked_on_flex() {
        let device = Device::flex();
        let (x, w, a, b) = (
            normal([4, 6], &device),
            normal([6, 5], &device),
            normal([6, 2], &device),
            normal([2, 5], &device),
        );
        let plain = x.clone().matmul(w.clone()) + x.clone().matmul(a.clone()).matmul(b.clone());
        close(lora_matmul(x, w, a, b, Products::F32), plain);
    }

    /// On wgpu each new shape and dtype compiles (and autotunes) kernels, slowly on the software
    /// Vulkan of CI, so the f16 weight goes through the LoRA op only.
    #[test]
    fn projections_match_plain_ops_on_wgpu() {
        if let Some(device) = crate::device::wgpu_or_skip() {
            check(&device, FloatDType::F32, true);
            if device.supports_dtype(FloatDType::F16) {
                check(&device, FloatDType::F16, false);
            } else {
                eprintln!("skipping the f16 check on wgpu: the adapter has no f16 support");
            }
        }
    }
}
