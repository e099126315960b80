// Shared by the attention kernels (prepended to each): the bindings they all read, the layout
// accessors and the workgroup reductions. One workgroup of {{ workgroup_size }} threads handles one
// row (a query row in the forward and the query backward, a key row in the key backward); the
// threads split the row's keys (or queries) a chunk of {{ workgroup_size }} at a time and then the
// head dimension, at most {{ per_thread }}·{{ workgroup_size }} components, for the products with v
// (or k, q, ∂o). Masked pairs keep the additive mask's large negative value, so their exp is 0.
//
// Bindings: q [batch, heads, group·seq, d], k and v [batch, heads, keys, d], the additive mask
// [mask_rows, seq, keys], ranges (u32: per query position its span's keys [start, end), then per
// key the query positions [start, end) whose spans see it), info = [batch, heads, group, seq,
// keys, d, mask_rows, rows]; all f32 and contiguous.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;
@group(0) @binding(1) var<storage, read_write> k: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> ranges: array<u32>;
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

const LOWEST: f32 = -3.0e38;

var<workgroup> reduce_buf: array<f32, {{ workgroup_size }}>;
// The row's own vector (q or k) and a second one (∂o or v), shared by the workgroup.
var<workgroup> row_a: array<f32, {{ max_dim }}>;
var<workgroup> row_b: array<f32, {{ max_dim }}>;
// Per-chunk weights (probabilities, score gradients) the threads read across the head dimension.
var<workgroup> chunk_a: array<f32, {{ workgroup_size }}>;
var<workgroup> chunk_b: array<f32, {{ workgroup_size }}>;
// Values every thread must agree on (loop bounds around barriers): read through
// workgroupUniformLoad.
var<workgroup> uniform_pair: vec2<u32>;

fn heads() -> u32 { return info[1]; }
fn group() -> u32 { return info[2]; }
fn seq() -> u32 { return info[3]; }
fn keys() -> u32 { return info[4]; }
fn dim() -> u32 { return info[5]; }
fn mask_rows() -> u32 { return info[6]; }

// The row this workgroup handles (the grid may be two-dimensional for many rows).
fn workgroup_row(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

// Broadcasts a pair lane 0 computed to every thread as a uniform value.
fn uniform_load(pair: vec2<u32>, lane: u32) -> vec2<u32> {
    if (lane == 0u) {
        uniform_pair = pair;
    }
    let value = workgroupUniformLoad(&uniform_pair);
    // Every thread has read it before lane 0 may write the next one.
    workgroupBarrier();
    return value;
}

// Whether `row` is one of the `info[7]` rows to do (the grid may hold more workgroups), as a
// uniform value, so the workgroups past the end can return before any barrier.
fn row_is_live(row: u32, lane: u32) -> bool {
    return uniform_load(vec2<u32>(select(0u, 1u, row < info[7]), 0u), lane).x == 1u;
}

// The keys [start, end) of query position `pos`'s span, as a uniform value.
fn span_keys(pos: u32, lane: u32) -> vec2<u32> {
    return uniform_load(vec2<u32>(ranges[2u * pos], ranges[2u * pos + 1u]), lane);
}

// The query positions [start, end) whose spans see key `j`, as a uniform value.
fn key_queries(j: u32, lane: u32) -> vec2<u32> {
    let at = 2u * (seq() + j);
    return uniform_load(vec2<u32>(ranges[at], ranges[at + 1u]), lane);
}

// The additive mask for query position `pos` of batch row `b` and key `j`.
fn mask_at(b: u32, pos: u32, j: u32) -> f32 {
    let row = select(b, 0u, mask_rows() == 1u);
    return mask[(row * seq() + pos) * keys() + j];
}

fn reduce_max(x: f32, lane: u32) -> f32 {
    reduce_buf[lane] = x;
    workgroupBarrier();
    for (var s = {{ workgroup_size }}u / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            reduce_buf[lane] = max(reduce_buf[lane], reduce_buf[lane + s]);
        }
        workgroupBarrier();
    }
    let r = reduce_buf[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(x: f32, lane: u32) -> f32 {
    reduce_buf[lane] = x;
    workgroupBarrier();
    for (var s = {{ workgroup_size }}u / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            reduce_buf[lane] = reduce_buf[lane] + reduce_buf[lane + s];
        }
        workgroupBarrier();
    }
    let r = reduce_buf[0];
    workgroupBarrier();
    return r;
}

// Copies the `d` elements of `src` at `start` into `row_a`: the row's query (or key).
fn load_row_a_from_q(start: u32, lane: u32) {
    for (var c = lane; c < dim(); c = c + {{ workgroup_size }}u) {
        row_a[c] = q[start + c];
    }
}

// `row_a · k[start..start + d]`: a query's score against key row `start / d`.
fn dot_a_k(start: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < dim(); c = c + 1u) {
        s = s + row_a[c] * k[start + c];
    }
    return s;
}

// `row_b · v[start..start + d]`: an output gradient against a value row.
fn dot_b_v(start: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < dim(); c = c + 1u) {
        s = s + row_b[c] * v[start + c];
    }
    return s;
}

// Where query row `row` (of the [batch·heads·group·seq] rows) starts, its position and its
// (batch, head) pair's first key row.
struct QueryRow {
    start: u32,
    pos: u32,
    b: u32,
    keys_start: u32,
}

fn query_row(row: u32) -> QueryRow {
    let per_head = group() * seq();
    let bh = row / per_head;
    return QueryRow(row * dim(), row % seq(), bh / heads(), bh * keys());
}
