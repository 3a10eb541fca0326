// attention_decode.wgsl — causal scaled dot-product attention for a few queries against a long
// KV cache, split over keys: entry `split` scores one chunk of keys per workgroup and writes a
// partial (max, sum, acc), entry `combine` merges the SPLITS partials of each (query, head).
// The score matrix is never materialized: the engine runs it for decode-sized runs of layers
// whose attention stages are not captured.
//
// Same result as attention.wgsl's out: head_out of numpy glassbox.reference.attention,
// heads merged (glassbox.reference.merge_heads), and the same append of this run's k and v to
// cache rows start .. start + N - 1 (glassbox.reference.KVCache.append; split 0 writes them).
// Keys are cut into chunks of chunk = max(MIN_KEYS, ceil(T / SPLITS)) positions, so one plan
// serves a whole decode loop (any T) and short contexts leave the later splits empty (cheap)
// instead of giving each a key or two. For query n (position start + n), split s covers the
// visible keys t of [s * chunk, (s + 1) * chunk) with t <= start + n:
//     s_t = (sum_c q[n, hK + c] * k[t, hK + c]) / SQRT_K,  m_s = max_t s_t,
//     l_s = sum_t exp(s_t - m_s),  acc_s[c] = sum_t exp(s_t - m_s) * v[t, hK + c]
// (a split without visible keys writes m_s = MASK_VALUE, l_s = 0, acc_s = 0); combine:
//     M = max_s m_s,  out[n, hK + c] = sum_s acc_s[c] exp(m_s - M) / sum_s l_s exp(m_s - M).
//
// Threads: split workgroup (s, h, n) = workgroup_id of WG invocations copies its chunk's key
// rows into workgroup memory (consecutive invocations read consecutive channels of one [C, D]
// row: coalesced); invocation j scores keys j, j + WG, ...; each invocation then reads the
// chunk's scores for the max (broadcast reads: three barriers in all, no tree reductions),
// invocation j writes p for keys j, j + WG, ..., and sums channels j, j + WG, ... of p @ v
// reading value rows straight from memory (again coalesced). Combine workgroup (h, n):
// invocation j merges channels j, j + WG, ... of the splits that hold keys (s * chunk < T).
// Dispatch split (S, H, N), then combine (H, N, 1), where S is at least the used splits
// ceil(T / chunk) and at most SPLITS (glassbox.gpu.kernels.decode_grid: the engine plans one
// grid per power-of-two bucket of T, so a short context launches few workgroups).

// #include attention_common

override SPLITS: u32;     // key chunks per (query, head)
override MIN_KEYS: u32;   // the fewest keys a chunk has (but T)
override CHUNK: u32;      // the most keys a chunk can have: max(MIN_KEYS, ceil(C / SPLITS)), at most C
override WG: u32 = 64u;   // invocations per workgroup (a power of two)

@group(0) @binding(4) var<storage, read_write> partials: array<f32>;  // [N, H, SPLITS, K + 2]: m, l, acc
@group(0) @binding(5) var<storage, read_write> out: array<f32>;       // [N, D] heads merged

var<workgroup> q_row: array<f32, K>;
var<workgroup> Ks: array<f32, CHUNK * (K + 1u)>;  // the chunk's keys, rows padded to K + 1
var<workgroup> row: array<f32, CHUNK>;            // scaled scores
var<workgroup> P: array<f32, CHUNK>;              // exp(score - m_s)

@compute @workgroup_size(WG)
fn split(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let D = H * K;
    let sp = wid.x;
    let h = wid.y;
    let n = wid.z;
    if (sp >= SPLITS || h >= H || n >= params.N) {
        return;  // uniform per workgroup
    }
    let base = h * K;
    let slot = ((n * H + h) * SPLITS + sp) * (K + 2u);
    let chunk = max(MIN_KEYS, (params.T + SPLITS - 1u) / SPLITS);
    let k0 = sp * chunk;
    let k1 = min(k0 + chunk, params.start + n + 1u);  // past the last visible key
    for (var c = j; c < K; c += WG) {
        let src = n * 3u * D + base + c;
        q_row[c] = qkv[src];
        if (sp == 0u) {
            k_cache[(params.start + n) * D + base + c] = CacheT(qkv[src + D]);
            v_cache[(params.start + n) * D + base + c] = CacheT(qkv[src + 2u * D]);
        }
    }
    if (k0 >= k1) {  // no visible key in this chunk (uniform per workgroup)
        for (var c = j; c < K + 2u; c += WG) {
            partials[slot + c] = select(0.0, MASK_VALUE, c == 0u);
        }
        return;
    }
    let count = k1 - k0;
    let KP = K + 1u;
    for (var e = j; e < count * K; e += WG) {
        let r = e / K;
        let c = e % K;
        Ks[r * KP + c] = key(k0 + r, base + c);
    }
    workgroupBarrier();

    for (var r = j; r < count; r += WG) {
        var s = 0.0;
        for (var c = 0u; c < K; c++) {
            s += q_row[c] * Ks[r * KP + c];
        }
        row[r] = s / SQRT_K;
    }
    workgroupBarrier();

    var m = MASK_VALUE;
    for (var r = 0u; r < count; r++) {
        m = max(m, row[r]);
    }
    for (var r = j; r < count; r += WG) {
        P[r] = exp(row[r] - m);
    }
    workgroupBarrier();

    var l = 0.0;
    for (var r = 0u; r < count; r++) {
        l += P[r];
    }
    for (var c = j; c < K; c += WG) {
        var acc = 0.0;
        for (var r = 0u; r < count; r++) {
            acc += P[r] * value(k0 + r, base + c);
        }
        partials[slot + 2u + c] = acc;
    }
    if (j == 0u) {
        partials[slot] = m;
        partials[slot + 1u] = l;
    }
}

@compute @workgroup_size(WG)
fn combine(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let D = H * K;
    let h = wid.x;
    let n = wid.y;
    if (h >= H || n >= params.N) {
        return;
    }
    let first = (n * H + h) * SPLITS * (K + 2u);
    // Splits past the last key (s * chunk >= T) hold nothing: they need not have run.
    let chunk = max(MIN_KEYS, (params.T + SPLITS - 1u) / SPLITS);
    let used = min(SPLITS, (params.T + chunk - 1u) / chunk);
    var M = MASK_VALUE;
    for (var s = 0u; s < used; s++) {
        M = max(M, partials[first + s * (K + 2u)]);
    }
    var L = 0.0;
    for (var s = 0u; s < used; s++) {
        let slot = first + s * (K + 2u);
        L += partials[slot + 1u] * exp(partials[slot] - M);
    }
    for (var c = j; c < K; c += WG) {
        var acc = 0.0;
        for (var s = 0u; s < used; s++) {
            let slot = first + s * (K + 2u);
            acc += partials[slot + 2u + c] * exp(partials[slot] - M);
        }
        out[n * D + h * K + c] = acc / L;
    }
}
