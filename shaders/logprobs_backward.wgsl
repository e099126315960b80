// Gradient of out[row] = log softmax(logits[row, :])[target] with respect to the logits, given the
// output gradient g[row]: d[row, j] = g[row] * (onehot(target)[j] - softmax(logits[row, :])[j]),
// written in place over the logits (the chunk's logits are not needed afterwards). One workgroup
// per row, as in the forward kernel; uses `row_max_sum` from logprobs_rows.wgsl.
//
// Bindings: logits [rows, vocab] f32 (in: logits, out: gradient), targets [rows] i32,
// grad [rows] f32, info = [rows, vocab].

@group(0) @binding(0) var<storage, read_write> logits: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> grad: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x;
    let vocab = info[1];
    let base = row * vocab;
    let stats = row_max_sum(base, vocab, lid.x);
    let g = grad[row];
    let tgt = u32(targets[row]);
    for (var j = lid.x; j < vocab; j = j + {{ workgroup_size }}u) {
        var d = -g * exp(logits[base + j] - stats.x) / stats.y;
        if (j == tgt) {
            d = d + g;
        }
        logits[base + j] = d;
    }
}
