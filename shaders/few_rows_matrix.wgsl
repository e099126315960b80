// Decoding's product by a half-precision weight stored row-major, read in place: partial sums of
// `x · W` for `x` [m ≤ 4, k] (f32) and `W` [k, n] (f16, two per u32 word, n even), each
// thread owning one word's two output columns and a range of `W`'s rows, so every weight word is
// read once. Workgroup (x, y) covers column pairs x·WG.. and rows y·kc..; the partial sums of the
// row ranges are added by `few_rows_sum.wgsl`.
//
// Bindings: x [m, k] f32 (contiguous), w [k, n / 2] u32, partial [ranges, m, n] f32,
// info = [m, k, n, kc].

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<u32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ workgroup_size }})
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let m = info[0];
    let k = info[1];
    let n = info[2];
    let kc = info[3];
    let words = n / 2u;
    let pair = group.x * {{ workgroup_size }}u + local.x;
    if (pair >= words) {
        return;
    }
    let k0 = group.y * kc;
    let k1 = min(k0 + kc, k);
    var acc: array<vec2<f32>, 4>;
    for (var kk = k0; kk < k1; kk++) {
        let wv = unpack2x16float(w[kk * words + pair]);
        for (var r = 0u; r < m; r++) {
            acc[r] += x[r * k + kk] * wv;
        }
    }
    for (var r = 0u; r < m; r++) {
        let at = (group.y * m + r) * n + 2u * pair;
        partial[at] = acc[r].x;
        partial[at + 1u] = acc[r].y;
    }
}
