// flash_attention.wgsl — causal scaled dot-product attention for a tile of B queries of one
// head per workgroup, with an online softmax over tiles of B keys: the [H, N, T] score matrix
// is never materialized. The engine runs it for layers whose attention stages are not captured.
//
// Same result as attention.wgsl's out: head_out of numpy glassbox.reference.attention,
// heads merged (glassbox.reference.merge_heads), keys t < start from the KV cache and the rest from
// qkv, and the same append of this run's k and v (head h) to cache rows start .. start + N - 1
// (glassbox.reference.KVCache.append). For query n (position start + n) and each key tile:
//     s[t]  = (sum_c q[n, hK + c] * k[t, hK + c]) / SQRT_K      for visible keys t <= start + n
//     m'    = max(m, max_t s[t]),  p[t] = exp(s[t] - m'),  alpha = exp(m - m')
//     l     = l * alpha + sum_t p[t],  acc[c] = acc[c] * alpha + sum_t p[t] * v[t, hK + c]
// then out[n, hK + c] = acc[c] / l. Masked keys get p = 0 exactly, as the reference's
// exp(-1e30 - max) underflows to 0; the running max only rescales, so this is the reference's
// softmax up to float32 rounding.
//
// Threads: workgroup (tile = workgroup_id.x, h = workgroup_id.y) of B*B invocations, invocation
// j = (row i = j / B, lane l = j % B). Per key tile, all invocations copy the tile's K and V
// rows (B positions x head h's K channels; consecutive invocations read consecutive channels of
// one [C, D] row: coalesced) into workgroup memory; (i, l) scores query i against key l; row
// i's lane l turns its score into p; then every lane of row i updates the row's running max
// and sum (the same values) and its own channels c = l, l + B, ... of acc (CPL of them, in
// registers). Ks rows are padded to K + 1 floats so the B lanes of a row reading B keys hit
// different banks. Dispatch (ceil(N / B), H, 1).

// #include attention_common

override B: u32 = 16u;  // queries per tile = keys per tile; B * B invocations
override CPL: u32;      // channels per lane: ceil(K / B), at most MAX_CPL

const MAX_CPL: u32 = 16u;

@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [N, D] heads merged

var<workgroup> Qs: array<f32, B * K>;         // the tile's queries (head h)
var<workgroup> Ks: array<f32, B * (K + 1u)>;  // the key tile, rows padded to K + 1
var<workgroup> Vs: array<f32, B * K>;         // the value tile
var<workgroup> S: array<f32, B * B>;          // scaled scores, MASK_VALUE where masked
var<workgroup> P: array<f32, B * B>;          // exp(s - m') of the tile, 0 where masked

@compute @workgroup_size(B * B)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let D = H * K;
    let N = params.N;
    let start = params.start;
    let q0 = wid.x * B;
    let h = wid.y;
    if (q0 >= N || h >= H) {
        return;  // uniform per workgroup
    }
    let base = h * K;
    let i = j / B;
    let l = j % B;
    let KP = K + 1u;

    for (var e = j; e < B * K; e += B * B) {
        let r = e / K;
        let c = e % K;
        let n = q0 + r;
        var q = 0.0;
        if (n < N) {
            let src = n * 3u * D + base + c;
            q = qkv[src];
            k_cache[(start + n) * D + base + c] = CacheT(qkv[src + D]);
            v_cache[(start + n) * D + base + c] = CacheT(qkv[src + 2u * D]);
        }
        Qs[e] = q;
    }

    let visible = start + q0 + i + 1u;             // row i sees keys 0 .. start + q0 + i
    let keys = start + min(q0 + B, N);              // the tile's last row sees this many
    var m = MASK_VALUE;
    var sum = 0.0;
    var acc: array<f32, MAX_CPL>;
    for (var k0 = 0u; k0 < keys; k0 += B) {
        workgroupBarrier();  // the previous tile's Ks, Vs, P are no longer read
        for (var e = j; e < B * K; e += B * B) {
            let r = e / K;
            let c = e % K;
            let t = k0 + r;
            var kv = vec2<f32>(0.0, 0.0);
            if (t < start) {
                kv = vec2<f32>(f32(k_cache[t * D + base + c]), f32(v_cache[t * D + base + c]));
            } else if (t < keys) {
                let src = (t - start) * 3u * D + D + base + c;
                kv = vec2<f32>(qkv[src], qkv[src + D]);
            }
            Ks[r * KP + c] = kv.x;
            Vs[e] = kv.y;
        }
        workgroupBarrier();

        var s = 0.0;
        for (var c = 0u; c < K; c++) {
            s += Qs[i * K + c] * Ks[l * KP + c];
        }
        S[j] = select(MASK_VALUE, s / SQRT_K, k0 + l < visible);
        workgroupBarrier();

        var tile_max = MASK_VALUE;
        for (var x = 0u; x < B; x++) {
            tile_max = max(tile_max, S[i * B + x]);
        }
        let m_new = max(m, tile_max);
        P[j] = select(0.0, exp(S[j] - m_new), k0 + l < visible);
        workgroupBarrier();

        let alpha = exp(m - m_new);
        m = m_new;
        var tile_sum = 0.0;
        for (var x = 0u; x < B; x++) {
            tile_sum += P[i * B + x];
        }
        sum = sum * alpha + tile_sum;
        for (var u = 0u; u < CPL; u++) {
            let c = l + u * B;
            if (c < K) {
                var a = acc[u] * alpha;
                for (var x = 0u; x < B; x++) {
                    a += P[i * B + x] * Vs[x * K + c];
                }
                acc[u] = a;
            }
        }
    }

    let n = q0 + i;
    if (n < N) {
        for (var u = 0u; u < CPL; u++) {
            let c = l + u * B;
            if (c < K) {
                out[n * D + base + c] = acc[u] / sum;
            }
        }
    }
}
