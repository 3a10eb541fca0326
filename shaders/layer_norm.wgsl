// layer_norm.wgsl — token-wise layer norm with a two-pass variance, keeping its statistics.
//
// For every row n of x [N, D]:
//     mean[n] = sum_d x[n, d] / D
//     var[n]  = sum_d (x[n, d] - mean[n])^2 / D        (second pass over the row: no
//                                                        E[x^2] - E[x]^2 cancellation)
//     out[n, d] = (x[n, d] - mean[n]) / sqrt(var[n] + EPS) * weight[d] + bias[d]
// numpy: glassbox.reference.layer_norm_stats and glassbox.reference.layer_norm.
//
// Threads: one workgroup of WG invocations per row (workgroup_id.x = n); invocation j handles
// channels j, j + WG, ...; each pass ends in a tree reduction in workgroup memory.
// Dispatch (N, 1, 1).

// #include params

override D: u32;           // model width
override EPS: f32 = 1e-5;  // config.layer_norm_epsilon
override WG: u32 = 128u;   // invocations per row (a power of two)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;            // [N, D]
@group(0) @binding(2) var<storage, read> weight: array<f32>;       // [D]
@group(0) @binding(3) var<storage, read> bias: array<f32>;         // [D]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;    // [N, D]
@group(0) @binding(5) var<storage, read_write> mean: array<f32>;   // [N]
@group(0) @binding(6) var<storage, read_write> var_: array<f32>;   // [N] biased variance

var<workgroup> partial: array<f32, WG>;

// Sum of every invocation's `value`, returned to all invocations.
fn workgroup_sum(j: u32, value: f32) -> f32 {
    partial[j] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (j < s) {
            partial[j] += partial[j + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();  // partial is reused by the next call
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = wid.x;
    let j = lid.x;
    if (n >= params.N) {
        return;  // uniform per workgroup: the barriers below are still reached by all or none
    }
    let row = n * D;

    var s = 0.0;
    for (var d = j; d < D; d += WG) {
        s += x[row + d];
    }
    let m = workgroup_sum(j, s) / f32(D);

    var s2 = 0.0;
    for (var d = j; d < D; d += WG) {
        let c = x[row + d] - m;
        s2 += c * c;
    }
    let v = workgroup_sum(j, s2) / f32(D);

    let denom = sqrt(v + EPS);
    for (var d = j; d < D; d += WG) {
        out[row + d] = (x[row + d] - m) / denom * weight[d] + bias[d];
    }
    if (j == 0u) {
        mean[n] = m;
        var_[n] = v;
    }
}
