// attention.wgsl — causal scaled dot-product attention for one (query, head) per workgroup,
// against the KV cache, appending this run's keys and values to it.
//
// With q, k, v the three D-wide parts of a qkv row, head h owning channels h*K .. h*K+K-1, and
// query n at absolute position start + n, for every key t < T = start + N:
//     scores[h, n, t] = sum_c q[n, hK + c] * k[t, hK + c]
//     scaled[h, n, t] = scores[h, n, t] / SQRT_K
//     masked[h, n, t] = scaled[h, n, t] if t <= start + n else MASK_VALUE (-1e30)
//     att[h, n, t]    = exp(masked - max_t masked) / sum_t exp(masked - max_t masked)
//     out[n, hK + c]  = sum_t att[h, n, t] * v[t, hK + c]    (= head_out[h, n, c], heads merged)
// Keys and values of positions t < start come from the cache; those of this run from qkv. Each
// workgroup also writes its own token's k and v (head h) into cache row start + n. No race:
// cache rows < start are only read, rows >= start only written, in this dispatch.
// numpy: glassbox.reference.attention (scores, scaled, masked, att, head_out), with
// glassbox.reference.KVCache.append and merge_heads.
//
// CAPTURE writes the four [H, N, T] stages (the trace's scores/scaled/masked/att); without it
// the stage bindings are dummies and masked keys (t > start + n) are skipped: their att is
// exactly 0 (exp(-1e30 - max) underflows to 0), so head_out is unchanged.
//
// Threads: workgroup (n = workgroup_id.x, h = workgroup_id.y) of WG invocations; invocation j
// scores keys j, j + WG, ... into workgroup memory (CTX floats), softmax uses tree reductions,
// then invocation j sums channels j, j + WG, ... of att @ v. Dispatch (N, H, 1).

// #include attention_common

override CTX: u32;              // context length C: the most keys a row can have
override CAPTURE: bool = false;
override WG: u32 = 64u;         // invocations per workgroup (a power of two)

@group(0) @binding(4) var<storage, read_write> scores: array<f32>;    // [H, N, T] (CAPTURE)
@group(0) @binding(5) var<storage, read_write> scaled: array<f32>;    // [H, N, T] (CAPTURE)
@group(0) @binding(6) var<storage, read_write> masked: array<f32>;    // [H, N, T] (CAPTURE)
@group(0) @binding(7) var<storage, read_write> att: array<f32>;       // [H, N, T] (CAPTURE)
@group(0) @binding(8) var<storage, read_write> out: array<f32>;       // [N, D] heads merged

var<workgroup> q_row: array<f32, K>;
var<workgroup> row: array<f32, CTX>;     // masked scores, then exp, then att
var<workgroup> partial: array<f32, WG>;

fn workgroup_max(j: u32, value: f32) -> f32 {
    partial[j] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (j < s) {
            partial[j] = max(partial[j], partial[j + s]);
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

fn workgroup_sum(j: u32, value: f32) -> f32 {
    partial[j] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (j < s) {
            partial[j] += partial[j + s];
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = wid.x;
    let h = wid.y;
    let j = lid.x;
    let D = H * K;
    let N = params.N;
    let T = params.T;
    if (n >= N || h >= H) {
        return;  // uniform per workgroup
    }
    let base = h * K;
    let visible = params.start + n + 1u;  // keys 0 .. start + n
    let scored = select(visible, T, CAPTURE);

    for (var c = j; c < K; c += WG) {
        let src = n * 3u * D;
        q_row[c] = qkv[src + base + c];
        k_cache[(params.start + n) * D + base + c] = CacheT(qkv[src + D + base + c]);
        v_cache[(params.start + n) * D + base + c] = CacheT(qkv[src + 2u * D + base + c]);
    }
    workgroupBarrier();

    var best = MASK_VALUE;
    for (var t = j; t < scored; t += WG) {
        var s = 0.0;
        for (var c = 0u; c < K; c++) {
            s += q_row[c] * key(t, base + c);
        }
        let sc = s / SQRT_K;
        let m = select(MASK_VALUE, sc, t < visible);
        row[t] = m;
        best = max(best, m);
        if (CAPTURE) {
            let i = (h * N + n) * T + t;
            scores[i] = s;
            scaled[i] = sc;
            masked[i] = m;
        }
    }
    let row_max = workgroup_max(j, best);

    var total = 0.0;
    for (var t = j; t < scored; t += WG) {
        let e = exp(row[t] - row_max);
        row[t] = e;
        total += e;
    }
    let denom = workgroup_sum(j, total);

    for (var t = j; t < scored; t += WG) {
        let a = row[t] / denom;
        row[t] = a;
        if (CAPTURE) {
            att[(h * N + n) * T + t] = a;
        }
    }
    workgroupBarrier();

    for (var c = j; c < K; c += WG) {
        var acc = 0.0;
        for (var t = 0u; t < visible; t++) {
            acc += row[t] * value(t, base + c);
        }
        out[n * D + base + c] = acc;
    }
}
