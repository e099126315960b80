//! The projections on flex: a few rows (decoding) as matrix-vector products that read the weight
//! in its stored precision (`few_rows.rs`), dense f32 products straight to `gemm` (`gemm.rs`),
//! bf16 weights widened by the parallel kernel of `kernels::cpu`, blocks a tile at a time inside the product
//! (`blocks_cpu.rs`).

use burn::backend::flex::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::DType;

use super::blocks_cpu::{self, Side};
use super::{BlockFormat, ProjectionOps, blocks, cast_like, few_rows, gemm};

/// Flex: f32 products go straight to `gemm`; bf16 weights are widened by the parallel kernel of
/// `kernels::cpu`; blocks a tile at a time inside the product (`blocks_cpu`).
impl ProjectionOps for Flex {
    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        if let Some(out) = few_rows::product(&x, &weight, None) {
            return out;
        }
        let weight = widen_like(weight, &x);
        if gemm::all_f32_matrices(&[&x, &weight]) {
            gemm::matmul_add(&x, &weight, None)
        } else {
            Self::float_matmul(x, weight)
        }
    }

    fn matmul_add_product(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if let Some(out) = few_rows::product(&x, &weight, Some((&u, &v))) {
            return out;
        }
        let weight = widen_like(weight, &x);
        if gemm::all_f32_matrices(&[&x, &weight, &u, &v]) {
            gemm::matmul_add(&x, &weight, Some((&u, &v)))
        } else {
            Self::float_add(Self::float_matmul(x, weight), Self::float_matmul(u, v))
        }
    }

    fn dequantize_blocks(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        let format = BlockFormat::from_code(format);
        match blocks_cpu::Blocks::of(&words, &scales, format) {
            Some(weight) => weight.dequantize(),
            None => blocks::dequantize_on_host::<Self>(words, scales, format),
        }
    }

    fn block_matmul_add_product(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_blocks(x, words, scales, format, Side::Forward, Some((u, v)))
    }

    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        flex_blocks(x, words, scales, format, Side::Forward, None)
    }

    fn block_grad_matmul_add_product(
        g: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_blocks(g, words, scales, format, Side::Backward, Some((u, v)))
    }

    fn block_grad_matmul(
        g: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        flex_blocks(g, words, scales, format, Side::Backward, None)
    }
}

/// A flex weight in `x`'s dtype: bf16 → f32 by the parallel kernel, anything else by flex's cast.
fn widen_like(weight: FloatTensor<Flex>, x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    if weight.dtype() == DType::BF16 && x.dtype() == DType::F32 {
        crate::kernels::cpu::bf16_to_f32(&weight)
    } else {
        cast_like::<Flex>(weight, x)
    }
}

/// One of flex's four block products, tiled when the operands allow (f32 matrices, contiguous
/// blocks), else through the whole dequantized weight.
fn flex_blocks(
    lhs: FloatTensor<Flex>,
    words: IntTensor<Flex>,
    scales: FloatTensor<Flex>,
    format: usize,
    side: Side,
    plus: Option<(FloatTensor<Flex>, FloatTensor<Flex>)>,
) -> FloatTensor<Flex> {
    let format = BlockFormat::from_code(format);
    let mut operands = vec![&lhs];
    if let Some((u, v)) = &plus {
        operands.extend([u, v]);
    }
    if let (true, Some(weight)) = (
        gemm::all_f32_matrices(&operands),
        blocks_cpu::Blocks::of(&words, &scales, format),
    ) {
        let plus = plus.as_ref().map(|(u, v)| (u, v));
        return blocks_cpu::product(&lhs, &weight, side, plus);
    }
    let weight = Flex::dequantize_blocks(words, scales, format.code());
    let weight = match side {
        Side::Forward => Flex::float_transpose(weight),
        Side::Backward => weight,
    };
    match plus {
        Some((u, v)) => Flex::matmul_add_product(lhs, weight, u, v),
        None => Flex::frozen_matmul(lhs, weight),
    }
}
