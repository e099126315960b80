// Shared by the log-prob kernels: the (max, sum of exp) of one logits row, reduced by a whole
// workgroup. Each thread keeps an online (max, sum) pair over a strided slice of the row, and the
// pairs are merged in workgroup memory, so the row is read once. The including kernel declares
// `logits`; every thread of the workgroup must call this (it contains barriers).

var<workgroup> part_max: array<{{ elem }}, {{ workgroup_size }}>;
var<workgroup> part_sum: array<{{ elem }}, {{ workgroup_size }}>;

fn row_max_sum(base: u32, vocab: u32, lane: u32) -> vec2<{{ elem }}> {
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
