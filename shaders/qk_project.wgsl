// qk_project.wgsl — the query/key map's PCA (issue 12): every point of every head onto its 2 axes.
//
// For every head g of a batch and every point m:
//     out[g, m, c] = sum_k x[g, m, k] * axes[g, k, c]      c = 0, 1
// x: the head's centred map points; axes: its two PCA loading vectors with the sign fixed
// (numpy: glassbox.qk.pca, whose scores are the centred points times the same axes).
//
// Threads: one invocation per (point, head): global_invocation_id.x = m, workgroup_id.y = g;
// each sums its K products in order in float32. Dispatch (ceil(M / WG), G, 1).

struct Params {
    M: u32,      // points per head (queries then keys)
    G: u32,      // heads in this batch
    _pad0: u32,
    _pad1: u32,
}

override K: u32;          // head size
override WG: u32 = 64u;   // invocations per workgroup

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [G, M, K] centred points
@group(0) @binding(2) var<storage, read> axes: array<f32>;         // [G, K, 2] loading vectors
@group(0) @binding(3) var<storage, read_write> out: array<f32>;    // [G, M, 2] map coordinates

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let m = gid.x;
    let g = wid.y;
    if (m >= params.M || g >= params.G) {
        return;
    }
    let row = (g * params.M + m) * K;
    let a = g * K * 2u;
    var s0 = 0.0;
    var s1 = 0.0;
    for (var k = 0u; k < K; k++) {
        let v = x[row + k];
        s0 += v * axes[a + 2u * k];
        s1 += v * axes[a + 2u * k + 1u];
    }
    out[(g * params.M + m) * 2u] = s0;
    out[(g * params.M + m) * 2u + 1u] = s1;
}
