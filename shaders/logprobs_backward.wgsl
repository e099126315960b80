// Gradient of out[row] = log softmax(logits[row, :])[target] with respect to the logits, given the
// output gradient g[row]: d[row, j] = g[row] * (onehot(target)[j] - softmax(logits[row, :])[j]),
// written in place over the logits (the chunk's logits are not needed afterwards). One workgroup
// per row, as in the forward kernel. The bindings and `row_max_sum` are logprobs_rows.wgsl's; the
// output gradient comes in `values`.

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x;
    let stats = row_max_sum(row, lid.x);
    let g = values[row];
    let base = row_start(row);
    let vocab = info[1];
    let tgt = u32(targets[row]);
    for (var j = lid.x; j < vocab; j = j + {{ workgroup_size }}u) {
        var d = -g * exp(logits[base + j] - stats.x) / stats.y;
        if (j == tgt) {
            d = d + g;
        }
        logits[base + j] = d;
    }
}
