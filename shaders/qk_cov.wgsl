// qk_cov.wgsl — the query/key map's PCA (issue 12): every head's scatter matrix, one dispatch.
//
// For every head g of a batch and every pair of dimensions (i, j) of the head size K:
//     cov[g, i, j] = sum_m x[g, m, i] * x[g, m, j]        (x: the head's M map points, already
//                                                           aligned and centred on the CPU)
// i.e. X_g^T X_g, whose two leading eigenvectors are the PCA axes (numpy: glassbox.qk.pca,
// through glassbox.qk.pca_axes; the K x K eigenproblem itself runs on numpy).
//
// Threads: one workgroup of K invocations per (row i, head g): workgroup_id.x = i,
// workgroup_id.y = g, invocation j computes entry (i, j). It reads x[g, m, i] (the same for
// the whole workgroup) and x[g, m, j] (adjacent across invocations) for every point, and sums
// in two levels: float32 partial sums of BLOCK points, added into the total, so each float32
// sum has at most BLOCK + M / BLOCK terms in a row (not M). Dispatch (K, G, 1).

struct Params {
    M: u32,      // points per head (queries then keys)
    G: u32,      // heads in this batch
    _pad0: u32,
    _pad1: u32,
}

override K: u32;              // head size (also the workgroup size)
override BLOCK: u32 = 64u;    // points per partial sum

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [G, M, K] centred points
@group(0) @binding(2) var<storage, read_write> cov: array<f32>;    // [G, K, K] X^T X per head

@compute @workgroup_size(K)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = wid.x;
    let g = wid.y;
    let j = lid.x;
    if (g >= params.G || i >= K) {
        return;
    }
    let base = g * params.M * K;
    var total = 0.0;
    for (var m0 = 0u; m0 < params.M; m0 += BLOCK) {
        let end = min(m0 + BLOCK, params.M);
        var s = 0.0;
        for (var m = m0; m < end; m++) {
            let row = base + m * K;
            s += x[row + i] * x[row + j];
        }
        total += s;
    }
    cov[(g * K + i) * K + j] = total;
}
