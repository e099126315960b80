// Attention backward for the keys and values, one workgroup per key row `j` of a (batch, K/V head)
// pair. Over the query rows that see it (every query head of the group at the query positions
// `ranges` lists for the key), a chunk at a time: `pᵢ = exp(qᵢ·kⱼ + mask − lseᵢ)` and
// `∂sᵢ = pᵢ·(∂oᵢ·vⱼ − Dᵢ)` (a query per thread, `lse` and `D` from the query backward), then
// `∂vⱼ = Σ pᵢ·∂oᵢ` and `∂kⱼ = Σ ∂sᵢ·qᵢ` (the head dimension split over the threads). Writes `dk` and
// `dv` [batch, heads, keys, d].

@group(0) @binding(6) var<storage, read_write> grad: array<f32>;
@group(0) @binding(7) var<storage, read_write> stats: array<f32>;
@group(0) @binding(8) var<storage, read_write> dk: array<f32>;
@group(0) @binding(9) var<storage, read_write> dv: array<f32>;

// `row_b · grad[start..start + d]`: the key's value against a query's output gradient.
fn dot_b_grad(start: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < dim(); c = c + 1u) {
        s = s + row_b[c] * grad[start + c];
    }
    return s;
}

// `row_a · q[start..start + d]`: the key against a query.
fn dot_a_q(start: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < dim(); c = c + 1u) {
        s = s + row_a[c] * q[start + c];
    }
    return s;
}

@compute @workgroup_size({{ workgroup_size }})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let key_row = workgroup_row(wid, groups);
    if (!row_is_live(key_row, lane)) {
        return;
    }
    let d = dim();
    let j = key_row % keys();
    let bh = key_row / keys();
    let b = bh / heads();
    for (var c = lane; c < d; c = c + {{ workgroup_size }}u) {
        row_a[c] = k[key_row * d + c];
        row_b[c] = v[key_row * d + c];
    }
    let positions = key_queries(j, lane);
    let n_pos = positions.y - positions.x;
    let total = group() * n_pos;
    // Query row i of the walk: head g = i / n_pos of the group, position positions.x + i % n_pos.
    let rows_start = bh * group() * seq();

    var acc_k: array<f32, {{ per_thread }}>;
    var acc_v: array<f32, {{ per_thread }}>;
    for (var i0 = 0u; i0 < total; i0 = i0 + {{ workgroup_size }}u) {
        let i = i0 + lane;
        var p = 0.0;
        var ds = 0.0;
        if (i < total) {
            let pos = positions.x + i % n_pos;
            let row = rows_start + (i / n_pos) * seq() + pos;
            let s = dot_a_q(row * d) + mask_at(b, pos, j);
            p = exp(s - stats[2u * row]);
            ds = p * (dot_b_grad(row * d) - stats[2u * row + 1u]);
        }
        chunk_a[lane] = p;
        chunk_b[lane] = ds;
        workgroupBarrier();
        let n = min({{ workgroup_size }}u, total - i0);
        for (var t = 0u; t < {{ per_thread }}u; t = t + 1u) {
            let c = lane + t * {{ workgroup_size }}u;
            if (c < d) {
                var a_k = acc_k[t];
                var a_v = acc_v[t];
                for (var ii = 0u; ii < n; ii = ii + 1u) {
                    let i = i0 + ii;
                    let row = rows_start + (i / n_pos) * seq() + positions.x + i % n_pos;
                    a_v = a_v + chunk_a[ii] * grad[row * d + c];
                    a_k = a_k + chunk_b[ii] * q[row * d + c];
                }
                acc_k[t] = a_k;
                acc_v[t] = a_v;
            }
        }
        workgroupBarrier();
    }
    for (var t = 0u; t < {{ per_thread }}u; t = t + 1u) {
        let c = lane + t * {{ workgroup_size }}u;
        if (c < d) {
            dk[key_row * d + c] = acc_k[t];
            dv[key_row * d + c] = acc_v[t];
        }
    }
}
