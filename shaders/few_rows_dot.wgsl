// Decoding's product by the transpose of a half-precision matrix read in place (the tied LM head
// `Eᵀ`): `out[r, j] = x[r, :] · E[j, :]` for `x` [m ≤ 4, k] (f32) and `E` [n, k] (f16, two per
// u32 word, k even). One workgroup per output column: its threads stride over the row's words,
// then their sums are added in workgroup memory, so every weight word is read once.
//
// Bindings: x [m, k] f32 (contiguous), e [n, k / 2] u32, out [m, n] f32,
// info = [m, k, n, first column of this launch]. The launch has exactly one workgroup per column
// it covers, so every thread reaches the barriers.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> e: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

var<workgroup> sums: array<vec4<f32>, {{ workgroup_size }}>;

@compute @workgroup_size({{ workgroup_size }})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let m = info[0];
    let k = info[1];
    let n = info[2];
    let j = info[3] + group.x;
    let words = k / 2u;
    var acc = vec4<f32>(0.0);
    for (var i = local.x; i < words; i += {{ workgroup_size }}u) {
        let wv = unpack2x16float(e[j * words + i]);
        let kk = 2u * i;
        var part = vec4<f32>(0.0);
        part.x = dot(vec2<f32>(x[kk], x[kk + 1u]), wv);
        if (m > 1u) {
            part.y = dot(vec2<f32>(x[k + kk], x[k + kk + 1u]), wv);
        }
        if (m > 2u) {
            part.z = dot(vec2<f32>(x[2u * k + kk], x[2u * k + kk + 1u]), wv);
        }
        if (m > 3u) {
            part.w = dot(vec2<f32>(x[3u * k + kk], x[3u * k + kk + 1u]), wv);
        }
        acc += part;
    }
    sums[local.x] = acc;
    workgroupBarrier();
    for (var stride = {{ workgroup_size }}u / 2u; stride > 0u; stride /= 2u) {
        if (local.x < stride) {
            sums[local.x] += sums[local.x + stride];
        }
        workgroupBarrier();
    }
    if (local.x == 0u) {
        let total = sums[0];
        out[j] = total.x;
        if (m > 1u) {
            out[n + j] = total.y;
        }
        if (m > 2u) {
            out[2u * n + j] = total.z;
        }
        if (m > 3u) {
            out[3u * n + j] = total.w;
        }
    }
}
