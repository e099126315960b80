// Per-row log-probability of a target token: values[row] = logits[row, target] - logsumexp(logits[row, :]).
// One workgroup per row (exactly one per row is launched: an early bounds return before the
// barriers would make them non-uniform). The bindings and `row_max_sum` are logprobs_rows.wgsl's;
// the result goes to `values`.

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x;
    let stats = row_max_sum(row, lid.x);
    if (lid.x == 0u) {
        values[row] = logits[row_start(row) + u32(targets[row])] - (stats.x + log(stats.y));
    }
}
