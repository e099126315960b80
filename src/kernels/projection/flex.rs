//! The projections on flex: a few rows (decoding) as matrix-vector products that read the weight
//! in its stored precision (`few_rows.rs`), dense f32 products straight to `gemm` (`gemm.rs`),
//! bf16 weights multiplied in bf16 with [`Products::Bf16`] where the CPU can (`bf16_gemm.rs`) and
//! otherwise widened by the parallel kernel of `kernels::cpu`, blocks a tile at a time inside the
//! product (`blocks_cpu.rs`).

use burn::backend::flex::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::DType;

use super::blocks_cpu::{self, Side};
use super::{BlockFormat, Products, ProjectionOps, blocks, cast_like, few_rows, gemm};

/// Flex: f32 products go straight to `gemm`; bf16 weights are multiplied in bf16 when asked and
/// able, else widened by the parallel kernel of `kernels::cpu`; blocks a tile at a time inside the
/// product (`blocks_cpu`).
impl ProjectionOps for Flex {
    fn frozen_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        if let Some(out) = few_rows::product(&x, &weight, None) {
            return out;
        }
        if let Some(out) = bf16_product(&x, &weight, None, products) {
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
        products: usize,
    ) -> FloatTensor<Self> {
        if let Some(out) = few_rows::product(&x, &weight, Some((&u, &v))) {
            return out;
        }
        if let Some(out) = bf16_product(&x, &weight, Some((&u, &v)), products) {
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

/// `x · weight (+ u · v)` multiplied in bf16 (`bf16_gemm`), when `products` asks for it and the
/// operands and the CPU allow; `None` otherwise.
fn bf16_product(
    x: &FloatTensor<Flex>,
    weight: &FloatTensor<Flex>,
    plus: Option<(&FloatTensor<Flex>, &FloatTensor<Flex>)>,
    products: usize,
) -> Option<FloatTensor<Flex>> {
    if Products::from_code(products) != Products::Bf16 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        super::bf16_gemm::product(x, weight, plus)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, weight, plus);
        None
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
        Some((u, v)) => Flex::matmul_add_product(lhs, weight, u, v, Products::F32.code()),
        None => Flex::frozen_matmul(lhs, weight, Products::F32.code()),
    }
}
