// Attention forward, one workgroup per query row: over the keys of the row's span, a chunk at a
// time, the scores `q·kⱼ + mask` (a key per thread), the online max and sum of their exps, and the
// output `Σ pⱼ·vⱼ` (the head dimension split over the threads), rescaled as the max grows.
// Writes `out` [batch, heads, group·seq, d].

@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size({{ workgroup_size }})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = workgroup_row(wid, groups);
    if (!row_is_live(row, lane)) {
        return;
    }
    let r = query_row(row);
    let d = dim();
    load_row_a_from_q(r.start, lane);
    let span = span_keys(r.pos, lane);
    var m = LOWEST;
    var l = 0.0;
    var acc: array<f32, {{ per_thread }}>;
    for (var c0 = span.x; c0 < span.y; c0 = c0 + {{ workgroup_size }}u) {
        let j = c0 + lane;
        var s = LOWEST;
        if (j < span.y) {
            s = dot_a_k((r.keys_start + j) * d) + mask_at(r.b, r.pos, j);
        }
        let m_new = max(m, reduce_max(s, lane));
        var p = 0.0;
        if (j < span.y) {
            p = exp(s - m_new);
        }
        chunk_a[lane] = p;
        let scale = exp(m - m_new);
        l = l * scale + reduce_sum(p, lane);
        m = m_new;
        let n = min({{ workgroup_size }}u, span.y - c0);
        for (var i = 0u; i < {{ per_thread }}u; i = i + 1u) {
            let c = lane + i * {{ workgroup_size }}u;
            if (c < d) {
                var a = acc[i] * scale;
                for (var jj = 0u; jj < n; jj = jj + 1u) {
                    a = a + chunk_a[jj] * v[(r.keys_start + c0 + jj) * d + c];
                }
                acc[i] = a;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < {{ per_thread }}u; i = i + 1u) {
        let c = lane + i * {{ workgroup_size }}u;
        if (c < d) {
            out[r.start + c] = acc[i] / l;
        }
    }
}
