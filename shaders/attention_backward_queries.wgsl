// Attention backward for the queries, one workgroup per query row. A first pass over the span's
// keys computes the row's log-sum-exp `lse` and `D = Σ pⱼ·(∂o·vⱼ)` online (both rescaled as the
// max grows); a second recomputes `pⱼ = exp(sⱼ − lse)` and `∂sⱼ = pⱼ·(∂o·vⱼ − D)` and accumulates
// `∂q = Σ ∂sⱼ·kⱼ`. Writes `dq` [batch, heads, group·seq, d] and `stats` [rows, 2] = (lse, D),
// which the key backward reads.

@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
@group(0) @binding(7) var<storage, read_write> dq: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;

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
    for (var c = lane; c < d; c = c + {{ workgroup_size }}u) {
        row_b[c] = grad[r.start + c];
    }
    let span = span_keys(r.pos, lane);

    // Pass 1: lse and D.
    var m = LOWEST;
    var l = 0.0;
    var u = 0.0;
    for (var c0 = span.x; c0 < span.y; c0 = c0 + {{ workgroup_size }}u) {
        let j = c0 + lane;
        var s = LOWEST;
        var dp = 0.0;
        if (j < span.y) {
            s = dot_a_k((r.keys_start + j) * d) + mask_at(r.b, r.pos, j);
            dp = dot_b_v((r.keys_start + j) * d);
        }
        let m_new = max(m, reduce_max(s, lane));
        var e = 0.0;
        if (j < span.y) {
            e = exp(s - m_new);
        }
        let scale = exp(m - m_new);
        l = l * scale + reduce_sum(e, lane);
        u = u * scale + reduce_sum(e * dp, lane);
        m = m_new;
    }
    let lse = m + log(l);
    let big_d = u / l;

    // Pass 2: ∂q.
    var acc: array<f32, {{ per_thread }}>;
    for (var c0 = span.x; c0 < span.y; c0 = c0 + {{ workgroup_size }}u) {
        let j = c0 + lane;
        var ds = 0.0;
        if (j < span.y) {
            let s = dot_a_k((r.keys_start + j) * d) + mask_at(r.b, r.pos, j);
            let p = exp(s - lse);
            ds = p * (dot_b_v((r.keys_start + j) * d) - big_d);
        }
        chunk_a[lane] = ds;
        workgroupBarrier();
        let n = min({{ workgroup_size }}u, span.y - c0);
        for (var i = 0u; i < {{ per_thread }}u; i = i + 1u) {
            let c = lane + i * {{ workgroup_size }}u;
            if (c < d) {
                var a = acc[i];
                for (var jj = 0u; jj < n; jj = jj + 1u) {
                    a = a + chunk_a[jj] * k[(r.keys_start + c0 + jj) * d + c];
                }
                acc[i] = a;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < {{ per_thread }}u; i = i + 1u) {
        let c = lane + i * {{ workgroup_size }}u;
        if (c < d) {
            dq[r.start + c] = acc[i];
        }
    }
    if (lane == 0u) {
        stats[2u * row] = lse;
        stats[2u * row + 1u] = big_d;
    }
}
