// matmul_splitk.wgsl — decode's y = x W^T + b (at most 4 tokens), the inputs split across workgroups.
//
// The same function, weight layouts, epilogues and output placement as matmul.wgsl (numpy:
// glassbox.reference.linear, then glassbox.reference.gelu or res + linear, with W from
// glassbox.quant.dequantize), for decode-sized runs. One output row per workgroup would leave
// a big GPU mostly idle (GPT-2-small's 768-wide outputs are 768 rows); here the K dimension
// (IN) is cut into slices of KS inputs too, and a second small pass adds the slices up:
//
//   partial  workgroup (r, s) owns RPW = WG / LANES output rows and inputs [s KS, s KS + KS).
//            It stages that slice of x once in workgroup memory, as a vec4 over the (up to 4)
//            tokens. With LN (matmul_common.wgsl) it first sums each token's whole row
//            (mean, then the squared deviations: two tree reductions) and stages the slice
//            normalized. LANES adjacent invocations share a row: lane j loads the row's 16-byte
//            blocks j, j + LANES, ... (adjacent lanes, adjacent bytes: one coalesced 16 LANES
//            bytes per step) as vec4<u32> = 4 fp32, 16 int8 or 32 q4 weights, unpacks int8
//            four at a time (unpack4xI8 where the WGSL language feature
//            packed_4x8_integer_dot_product exists, shifts otherwise) and accumulates the
//            tokens in one vec4. int8's row scale is NOT applied here: reduce multiplies the
//            row's sum once. q4's group scale multiplies each u32 word's sum (a word's 8
//            nibbles share a group: GROUP is a multiple of 8). The LANES sums of a row meet
//            in workgroup memory (or a subgroup shuffle) and go to part[s, o].
//            Dispatch (ceil(OUT / RPW), ceil(IN / KS), 1).
//   reduce   one invocation per output row o: the sum over s of part[s, o], times int8's
//            scale[o], plus the bias, the epilogue, stored for each token.
//            Dispatch (ceil(OUT / WG), 1, 1).
// IN must be a multiple of the 16-byte block's elements (4 fp32, 16 int8, 32 q4) and KS of
// that too (glassbox.gpu.kernels.splitk_fits says which shapes qualify).
//
// Lines between "// #if NAME", "// #else" and "// #endif" are kept or dropped by
// glassbox.gpu.kernels.Kernel.source for the adapter's features (packed4x8, subgroups);
// "// #include matmul_common" pastes in the helpers shared with matmul.wgsl (finish: the
// scale, bias and epilogue; gelu; int8x4).

// #if subgroups-enable
enable subgroups;
// #endif

// #include matmul_common

override KS: u32 = 256u;         // inputs per slice (a multiple of the block's elements)
override LANES: u32 = 8u;        // partial: invocations per output row (a power of two, divides WG)
override WG: u32 = 64u;          // invocations per workgroup (both entries)

@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;        // [OUT, IN / (4 EPW)] 16-byte blocks
@group(0) @binding(8) var<storage, read_write> part: array<vec4<f32>>;  // [ceil(IN / KS), OUT] sums (tokens)

const MAX_TOKENS: u32 = 4u;

var<workgroup> xs: array<vec4<f32>, KS>;     // x[0..4, slice] as vec4 over tokens
var<workgroup> sums: array<vec4<f32>, WG>;   // partial: the lanes' sums (without subgroups)

// LN: the sum over the workgroup of every invocation's `value` (a vec4 over tokens), returned
// to all invocations (a tree in `sums`; WG is a power of two).
fn workgroup_sum(j: u32, value: vec4<f32>) -> vec4<f32> {
    sums[j] = value;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (j < s) {
            sums[j] += sums[j + s];
        }
        workgroupBarrier();
    }
    let total = sums[0];
    workgroupBarrier();  // sums is reused next
    return total;
}

// sum_e x[.., j + e] * W[o, k + e] over the 16-byte block `words`, without int8's row scale.
// k: the block's first input; j: its place in xs.
fn block(words: vec4<u32>, o: u32, k: u32, j: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (SCHEME == 0u) {
        let f = bitcast<vec4<f32>>(words);
        return f.x * xs[j] + f.y * xs[j + 1u] + f.z * xs[j + 2u] + f.w * xs[j + 3u];
    }
    if (SCHEME == 1u) {
        for (var i = 0u; i < 4u; i++) {
            let q = int8x4(words[i]);
            let b = j + 4u * i;
            acc += q.x * xs[b] + q.y * xs[b + 1u] + q.z * xs[b + 2u] + q.w * xs[b + 3u];
        }
        return acc;
    }
    for (var i = 0u; i < 4u; i++) {
        let word = vec4<u32>(words[i]);
        let even = vec4<f32>((word >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)) - 8.0;   // nibbles 0 2 4 6
        let odd = vec4<f32>((word >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)) - 8.0;   // nibbles 1 3 5 7
        let b = j + 8u * i;
        let s = even.x * xs[b] + odd.x * xs[b + 1u] + even.y * xs[b + 2u] + odd.y * xs[b + 3u]
              + even.z * xs[b + 4u] + odd.z * xs[b + 5u] + even.w * xs[b + 6u] + odd.w * xs[b + 7u];
        acc += s * scale[o * (IN / GROUP) + (k + 8u * i) / GROUP];
    }
    return acc;
}

@compute @workgroup_size(WG)
fn partial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = min(rows_here(), MAX_TOKENS);
    let k0 = wid.y * KS;
    let width = min(KS, IN - k0);
    // Tokens past `rows` read token 0's row (their sums are never stored).
    let t1 = select(0u, IN, rows > 1u);
    let t2 = select(0u, 2u * IN, rows > 2u);
    let t3 = select(0u, 3u * IN, rows > 3u);
    var mean = vec4<f32>(0.0);  // LN: the tokens' row statistics (over all IN inputs)
    var denom = vec4<f32>(1.0);
    if (LN) {
        var s = vec4<f32>(0.0);
        for (var k = lid.x; k < IN; k += WG) {
            s += vec4<f32>(x[k], x[t1 + k], x[t2 + k], x[t3 + k]);
        }
        mean = workgroup_sum(lid.x, s) / f32(IN);
        var s2 = vec4<f32>(0.0);
        for (var k = lid.x; k < IN; k += WG) {
            let c = vec4<f32>(x[k], x[t1 + k], x[t2 + k], x[t3 + k]) - mean;
            s2 += c * c;
        }
        denom = sqrt(workgroup_sum(lid.x, s2) / f32(IN) + EPS);
    }
    for (var j = lid.x; j < width; j += WG) {
        let k = k0 + j;
        var v = vec4<f32>(x[k], x[t1 + k], x[t2 + k], x[t3 + k]);
        if (LN) {
            v = vec4<f32>(ln(v.x, mean.x, denom.x, k), ln(v.y, mean.y, denom.y, k), ln(v.z, mean.z, denom.z, k),
                          ln(v.w, mean.w, denom.w, k));
        }
        xs[j] = v;
    }
    workgroupBarrier();

    let lane = lid.x % LANES;
    let o = wid.x * (WG / LANES) + lid.x / LANES;
    let os = min(o, OUT - 1u);  // the idle tail reads a valid row (result unused)
    let per_block = 4u * epw();
    let first = os * (IN / per_block) + k0 / per_block;
    var acc = vec4<f32>(0.0);
    for (var b = lane; b < width / per_block; b += LANES) {
        acc += block(w[first + b], os, k0 + b * per_block, b * per_block);
    }

// #if subgroups
    // The host picks LANES <= the adapter's smallest subgroup: a row's lanes share a subgroup.
    for (var m = LANES / 2u; m > 0u; m /= 2u) {
        acc += subgroupShuffleXor(acc, m);
    }
    if (lane == 0u && o < OUT) {
        part[wid.y * OUT + o] = acc;
    }
// #else
    sums[lid.x] = acc;
    workgroupBarrier();
    if (lane == 0u && o < OUT) {
        var total = acc;
        for (var j = 1u; j < LANES; j++) {
            total += sums[lid.x + j];
        }
        part[wid.y * OUT + o] = total;
    }
// #endif
}

@compute @workgroup_size(WG)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if (o >= OUT) {
        return;
    }
    var total = vec4<f32>(0.0);
    for (var s = 0u; s < (IN + KS - 1u) / KS; s++) {
        total += part[s * OUT + o];
    }
    for (var n = 0u; n < min(rows_here(), MAX_TOKENS); n++) {
        finish(n, o, total[n]);  // int8: times scale[o] there, once
    }
}
