// Widens a block-quantized weight to f32, one thread per u32 word of quantized values (the layout
// of `kernels/projection/blocks.rs`): words [rows, blocks · w] u32, scales [rows, blocks] f32,
// values [rows, blocks · 32] f32, info = [words in all, bits (8: Q8_0, 4: Q4_0)]. All contiguous,
// so word `i` belongs to block `i / w` of the flattened rows, whose scale is `scales[i / w]`.
//
// Q8_0 (w = 8): word j of a block holds values 4j‥4j+4, one signed byte each; value = q · d.
// Q4_0 (w = 4): byte i of a block holds value i (low nibble) and i + 16 (high), each q + 8;
// value = (q − 8) · d. The same f32 product as ggml's, so the result is bit-identical.

@group(0) @binding(0) var<storage, read_write> words: array<u32>;
@group(0) @binding(1) var<storage, read_write> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * {{ workgroup_size }}u;
    if (i >= info[0]) {
        return;
    }
    let word = words[i];
    if (info[1] == 8u) {
        let block = i / 8u;
        let d = scales[block];
        let base = block * 32u + (i % 8u) * 4u;
        for (var t = 0u; t < 4u; t = t + 1u) {
            let byte = (word >> (8u * t)) & 0xFFu;
            let q = i32(byte) - select(0, 256, byte >= 128u);
            values[base + t] = f32(q) * d;
        }
    } else {
        let block = i / 4u;
        let d = scales[block];
        let base = block * 32u + (i % 4u) * 4u;
        for (var t = 0u; t < 4u; t = t + 1u) {
            let byte = (word >> (8u * t)) & 0xFFu;
            values[base + t] = f32(i32(byte & 0xFu) - 8) * d;
            values[base + t + 16u] = f32(i32(byte >> 4u) - 8) * d;
        }
    }
}
