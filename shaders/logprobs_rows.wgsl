// Shared by the log-prob kernels (prepended to each): their bindings, and the (max, sum of exp) of
// one logits row reduced by a whole workgroup. Each thread keeps an online (max, sum) pair over a
// strided slice of the row, and the pairs are merged in workgroup memory, so the row is read once.
// Every thread of the workgroup must call `row_max_sum` (it contains barriers).
//
// Bindings: logits [rows, vocab] f32, targets [rows] i32, values [rows] f32 (the forward's output,
// the backward's output gradient), info = [rows, vocab].

@group(0) @binding(0) var<storage, read_write> logits: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> values: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> info: array<u32>;

var<workgroup> part_max: array<{{ elem }}, {{ workgroup_size }}>;
var<workgroup> part_sum: array<{{ elem }}, {{ workgroup_size }}>;

// Where row `row` starts in `logits`.
fn row_start(row: u32) -> u32 {
    return row * info[1];
}

fn row_max_sum(row: u32, lane: u32) -> vec2<{{ elem }}> {
    let base = row_start(row);
    let vocab = info[1];
    var m = -3.0e38;
    var s = 0.0;
    for (var j = lane; j < vocab; j = j + {{ workgroup_size }}u) {
        let x = logits[base + j];
        if (x > m) {
            s = s * exp(m - x) + 1.0;
            m = x;
        } else {
            s = s + exp(x - m);
        }
    }
    part_max[lane] = m;
    part_sum[lane] = s;
    workgroupBarrier();
    for (var stride = {{ workgroup_size }}u / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            let m1 = part_max[lane];
            let m2 = part_max[lane + stride];
            let mm = max(m1, m2);
            part_sum[lane] = part_sum[lane] * exp(m1 - mm) + part_sum[lane + stride] * exp(m2 - mm);
            part_max[lane] = mm;
        }
        workgroupBarrier();
    }
    return vec2<{{ elem }}>(part_max[0], part_sum[0]);
}
