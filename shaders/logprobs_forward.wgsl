// Per-row log-probability of a target token: out[row] = logits[row, target] - logsumexp(logits[row, :]).
// One workgroup per row (exactly one per row is launched: an early bounds return before the
// barriers would make them non-uniform). Uses `row_max_sum` from logprobs_rows.wgsl.
//
// Bindings: logits [rows, vocab] f32, targets [rows] i32, out [rows] f32, info = [rows, vocab].

@group(0) @binding(0) var<storage, read_write> logits: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x;
    let vocab = info[1];
    let base = row * vocab;
    let stats = row_max_sum(base, vocab, lid.x);
    if (lid.x == 0u) {
        out[row] = logits[base + u32(targets[row])] - (stats.x + log(stats.y));
    }
}
