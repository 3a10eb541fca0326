// qk_cov.wgsl — the query/key map's PCA (issue 12): every head's scatter matrix, one dispatch.
//
// For every head g of a batch and every pair of dimensions (i, j) of the head size K:
//     cov[g, i, j] = sum_m x[g, m, i] * x[g, m, j]        (x: the head's M map points, already
//                                                           aligned and centred on the CPU)
// i.e. X_g^T X_g, whose two leading eigenvectors are the PCA axes (numpy: glassbox.qk.pca,
// through glassbox.qk.pca_axes; the K x K eigenproblem itself runs on numpy).
//
// Threads: one workgroup of WG invocations per (i * K + j, g): workgroup_id.x = i * K + j,
// workgroup_id.y = g. Invocation t sums the points m = t, t + WG, ... in float32, then a tree
// reduction in workgroup memory adds the WG partial sums (pairwise: each float32 sum has
// about M / WG + log2(WG) terms in a row, not M). Dispatch (K * K, G, 1).

struct Params {
    M: u32,      // points per head (queries then keys)
    G: u32,      // heads in this batch
    _pad0: u32,
    _pad1: u32,
}

override K: u32;          // head size
override WG: u32 = 64u;   // invocations per entry (a power of two)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [G, M, K] centred points
@group(0) @binding(2) var<storage, read_write> cov: array<f32>;    // [G, K, K] X^T X per head

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let g = wid.y;
    let i = wid.x / K;
    let j = wid.x % K;
    let t = lid.x;
    if (g >= params.G || i >= K) {
        return;  // uniform per workgroup: every invocation leaves, no barrier is skipped by some
    }
    let base = g * params.M * K;
    var s = 0.0;
    for (var m = t; m < params.M; m += WG) {
        let row = base + m * K;
        s += x[row + i] * x[row + j];
    }
    partial[t] = s;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        if (t < h) {
            partial[t] += partial[t + h];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        cov[(g * K + i) * K + j] = partial[0];
    }
}
