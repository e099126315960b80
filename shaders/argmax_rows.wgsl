// The index of each row's largest value, one workgroup per row: each thread scans a strided slice
// of the row keeping its best (value, index), then the pairs are merged in workgroup memory. Ties
// go to the lowest index and NaN counts as the largest value, as `torch.argmax` orders them.
//
// Bindings: values [rows, n] f32 (contiguous), ids [rows] i32, info = [first row of this launch, n].
// The launch has exactly one workgroup per row it covers, so every thread reaches the barriers.

@group(0) @binding(0) var<storage, read_write> values: array<f32>;
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> info: array<u32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> best_value: array<f32, {{ workgroup_size }}>;
var<workgroup> best_index: array<u32, {{ workgroup_size }}>;

// From the bits: WGSL lets compilers assume that `x != x` never holds.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (v, i) comes before (w, j): a real entry before none, NaN before numbers, the larger
// value first, and on equal values the lower index.
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    if (j == NONE) {
        return i != NONE;
    }
    if (i == NONE) {
        return false;
    }
    let v_nan = is_nan(v);
    let w_nan = is_nan(w);
    if (v_nan != w_nan) {
        return v_nan;
    }
    if (v_nan || v == w) {
        return i < j;
    }
    return v > w;
}

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = info[0] + group.x;
    let n = info[1];
    let base = row * n;
    var v = 0.0;
    var i = NONE;
    for (var j = lane; j < n; j = j + {{ workgroup_size }}u) {
        let x = values[base + j];
        if (before(x, j, v, i)) {
            v = x;
            i = j;
        }
    }
    best_value[lane] = v;
    best_index[lane] = i;
    workgroupBarrier();
    for (var stride = {{ workgroup_size }}u / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            let w = best_value[lane + stride];
            let j = best_index[lane + stride];
            if (before(w, j, best_value[lane], best_index[lane])) {
                best_value[lane] = w;
                best_index[lane] = j;
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        ids[row] = i32(best_index[0]);
    }
}
