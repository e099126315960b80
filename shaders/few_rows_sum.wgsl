// The sum over row ranges of `few_rows_matrix.wgsl`'s partial sums: out[i] = Σ_s partial[s, i].
//
// Bindings: partial [ranges, len] f32, out [len] f32, info = [len, ranges].

@group(0) @binding(0) var<storage, read_write> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ workgroup_size }})
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let len = info[0];
    let ranges = info[1];
    let i = id.x;
    if (i >= len) {
        return;
    }
    var total = 0.0;
    for (var s = 0u; s < ranges; s++) {
        total += partial[s * len + i];
    }
    out[i] = total;
}
