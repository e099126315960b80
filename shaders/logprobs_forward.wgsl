// Per-row log-probability of a target token: out[row] = logits[row, target] - logsumexp(logits[row, :]).
// One workgroup per row. Each thread keeps an online (max, sum) pair over a strided slice of the
// vocabulary; the pairs are merged in workgroup memory, so the row is read once.
//
// Bindings: logits [rows, vocab] f32, targets [rows] i32, out [rows] f32, info = [rows, vocab].

@group(0) @binding(0) var<storage, read_write> logits: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

var<workgroup> part_max: array<{{ elem }}, {{ workgroup_size }}>;
var<workgroup> part_sum: array<{{ elem }}, {{ workgroup_size }}>;

@compute @workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Exactly one workgroup per row is launched (no bounds check: an early return before the
    // barriers would make them non-uniform).
    let row = wid.x;
    let vocab = info[1];
    let base = row * vocab;
    var m = -3.0e38;
    var s = 0.0;
    for (var j = lid.x; j < vocab; j = j + {{ workgroup_size }}u) {
        let x = logits[base + j];
        if (x > m) {
            s = s * exp(m - x) + 1.0;
            m = x;
        } else {
            s = s + exp(x - m);
        }
    }
    part_max[lid.x] = m;
    part_sum[lid.x] = s;
    workgroupBarrier();
    for (var stride = {{ workgroup_size }}u / 2u; stride > 0u; stride = stride / 2u) {
        if (lid.x < stride) {
            let m1 = part_max[lid.x];
            let m2 = part_max[lid.x + stride];
            let mm = max(m1, m2);
            part_sum[lid.x] = part_sum[lid.x] * exp(m1 - mm) + part_sum[lid.x + stride] * exp(m2 - mm);
            part_max[lid.x] = mm;
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        let lse = part_max[0] + log(part_sum[0]);
        out[row] = logits[base + u32(targets[row])] - lse;
    }
}
