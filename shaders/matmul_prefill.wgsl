// matmul_prefill.wgsl — prompts' y = x W^T + b: 64 outputs x 64 tokens per workgroup, 16-byte weight loads.
//
// The same function, weight layouts, epilogues and output placement as matmul.wgsl (numpy:
// glassbox.reference.linear, then glassbox.reference.gelu or res + linear, with W from
// glassbox.quant.dequantize), for runs of more than a few tokens:
//   workgroup (16, 8) owns outputs [64 r, 64 r + 64) x tokens [64 t, 64 t + 64); invocation
//   (i, j) accumulates outputs 4i..4i+3 (one vec4) for tokens 8j..8j+7: 32 sums in registers.
//   K-tiles of BK = 32 inputs: the x tile is staged transposed (xs[k] = tokens as vec4s) and
//   the W tile from 16-byte loads (vec4<u32> = 4 fp32, 16 int8 or 32 q4; int8 unpacked four
//   at a time with unpack4xI8 or shifts) as ws[k] = outputs as vec4s, each block read once
//   per tile. Per input k an invocation reads 1 + 2 vec4s of workgroup memory for 32
//   multiply-adds (matmul.wgsl's tiled entry: 5 reads for 16). int8's row scale multiplies
//   the sum once at the end; q4's group scale is applied while the tile is staged.
//   Workgroup memory: 2 x BK x 64 floats = 16 KiB, WebGPU's default limit, and 128 invocations.
//   LN (matmul_common.wgsl): first, invocations 2m and 2m + 1 sum token m's whole row (every
//   other input each; mean, then squared deviations, added in pairs through workgroup memory)
//   and keep its mean and sqrt(var + EPS) in registers; they then stage token m's half rows
//   (16 inputs each) normalized. Without LN the 128 invocations stage the tile row by row.
//   Dispatch (ceil(OUT / 64), ceil(rows / 64), 1).
// IN must be a multiple of the 16-byte block's elements (4 fp32, 16 int8, 32 q4): a partial
// last K-tile is zero-filled (glassbox.gpu.kernels.prefill_fits says which shapes qualify).
//
// Lines between "// #if NAME", "// #else" and "// #endif" are kept or dropped by
// glassbox.gpu.kernels.Kernel.source for the adapter's features (packed4x8);
// "// #include matmul_common" pastes in the helpers shared with matmul.wgsl (finish: the
// scale, bias and epilogue; gelu; int8x4).

// #include matmul_common

@group(0) @binding(3) var<storage, read> w: array<vec4<u32>>;        // [OUT, IN / (4 EPW)] 16-byte blocks

const BK: u32 = 32u;  // inputs per K-tile
const BN: u32 = 64u;  // outputs per workgroup (16 invocations x vec4)
const BM: u32 = 64u;  // tokens per workgroup (8 invocations x 8)
const THREADS: u32 = 128u;

var<workgroup> xs: array<vec4<f32>, BK * 16u>;  // [BK, BM / 4]: xs[k * 16 + m / 4][m % 4] = x[m, k]
var<workgroup> ws: array<vec4<f32>, BK * 16u>;  // [BK, BN / 4]: ws[k * 16 + o / 4][o % 4] = W[o, k] (int8 unscaled)

// LN: `value` of invocations tid and tid ^ 1 added, returned to both (xs as scratch).
fn pair_sum(tid: u32, value: f32) -> f32 {
    xs[tid].x = value;
    workgroupBarrier();
    let total = xs[tid & ~1u].x + xs[tid | 1u].x;
    workgroupBarrier();  // xs is written next
    return total;
}

fn put(k: u32, o: u32, v: f32) {
    ws[k * 16u + o / 4u][o % 4u] = v;
}

// The 16-byte block `words` = W[o, k .. k + 4 EPW) into ws rows j .. j + 4 EPW (j = k % BK).
fn stage_block(words: vec4<u32>, o: u32, r: u32, k: u32, j: u32) {
    if (SCHEME == 0u) {
        let f = bitcast<vec4<f32>>(words);
        for (var e = 0u; e < 4u; e++) {
            put(j + e, r, f[e]);
        }
        return;
    }
    if (SCHEME == 1u) {
        for (var i = 0u; i < 4u; i++) {
            let q = int8x4(words[i]);
            for (var e = 0u; e < 4u; e++) {
                put(j + 4u * i + e, r, q[e]);
            }
        }
        return;
    }
    for (var i = 0u; i < 4u; i++) {
        let word = vec4<u32>(words[i]);
        let s = scale[o * (IN / GROUP) + (k + 8u * i) / GROUP];
        let even = (vec4<f32>((word >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)) - 8.0) * s;
        let odd = (vec4<f32>((word >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)) - 8.0) * s;
        for (var e = 0u; e < 4u; e++) {
            put(j + 8u * i + 2u * e, r, even[e]);
            put(j + 8u * i + 2u * e + 1u, r, odd[e]);
        }
    }
}

@compute @workgroup_size(16, 8)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = rows_here();
    let o0 = wid.x * BN;
    let n0 = wid.y * BM;
    let tid = lid.y * 16u + lid.x;
    let per_block = 4u * epw();
    let row_blocks = IN / per_block;
    let blocks = BK / per_block;  // 16-byte blocks of a row per K-tile: 8 fp32, 2 int8, 1 q4
    var acc: array<vec4<f32>, 8>;

    // LN: invocations 2m and 2m + 1 own token n0 + m's row statistics and stage its inputs.
    let ln_m = tid / 2u;
    var mean = 0.0;
    var denom = 1.0;
    if (LN) {
        let live = n0 + ln_m < rows;
        let row = (n0 + ln_m) * IN;
        var s = 0.0;
        for (var k = tid % 2u; k < IN && live; k += 2u) {
            s += x[row + k];
        }
        mean = pair_sum(tid, s) / f32(IN);
        var s2 = 0.0;
        for (var k = tid % 2u; k < IN && live; k += 2u) {
            let c = x[row + k] - mean;
            s2 += c * c;
        }
        denom = sqrt(pair_sum(tid, s2) / f32(IN) + EPS);
    }

    for (var k0 = 0u; k0 < IN; k0 += BK) {
        // x tile, transposed: 64 tokens x BK inputs, 16 per invocation (LN: half a row each).
        for (var e = 0u; e < BM * BK / THREADS; e++) {
            let j = tid + e * THREADS;
            let m = select(j / BK, ln_m, LN);
            let k = select(j % BK, (tid % 2u) * (BK / 2u) + e, LN);
            var v = 0.0;
            if (n0 + m < rows && k0 + k < IN) {
                v = x[(n0 + m) * IN + k0 + k];
                if (LN) {
                    v = ln(v, mean, denom, k0 + k);
                }
            }
            xs[k * 16u + m / 4u][m % 4u] = v;
        }
        // W tile: 64 rows x BK inputs from 16-byte blocks.
        for (var j = tid; j < BN * blocks; j += THREADS) {
            let r = j / blocks;
            let b = j % blocks;
            let o = o0 + r;
            let k = k0 + b * per_block;
            if (o < OUT && k < IN) {
                stage_block(w[o * row_blocks + k / per_block], o, r, k, b * per_block);
            } else {
                for (var e = 0u; e < per_block; e++) {
                    put(b * per_block + e, r, 0.0);
                }
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let wv = ws[k * 16u + lid.x];
            let xa = xs[k * 16u + 2u * lid.y];
            let xb = xs[k * 16u + 2u * lid.y + 1u];
            acc[0] += xa.x * wv;
            acc[1] += xa.y * wv;
            acc[2] += xa.z * wv;
            acc[3] += xa.w * wv;
            acc[4] += xb.x * wv;
            acc[5] += xb.y * wv;
            acc[6] += xb.z * wv;
            acc[7] += xb.w * wv;
        }
        workgroupBarrier();
    }

    for (var m = 0u; m < 8u; m++) {
        let n = n0 + lid.y * 8u + m;
        for (var c = 0u; c < 4u; c++) {
            let o = o0 + lid.x * 4u + c;
            if (n < rows && o < OUT) {
                finish(n, o, acc[m][c]);
            }
        }
    }
}
