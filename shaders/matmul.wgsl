// matmul.wgsl — y = x W^T + b with W stored [out, in] as fp32, int8 or q4, and a fused epilogue.
//
// For every token n of this dispatch and output o:
//     pre[n, o] = sum_i x[n, i] * W[o, i] + bias[o]           (bias only if HAS_BIAS)
//     EPILOGUE 0: out = pre
//     EPILOGUE 1: out = gelu(pre)      (matmul_common.wgsl: tanh's argument clamped to [-15, 15])
//     EPILOGUE 2: out = res[n, o] + pre  (the residual add)
//     STORE_PRE also writes pre (the trace keeps mlp_fc beside mlp_gelu, attn_proj beside res_1).
// W is read as u32 words in the glassbox.quant layouts:
//     fp32: W[o, i] = bitcast<f32>(word)
//     int8: W[o, i] = q[o, i] * scale[o]                        (4 int8 per word, byte 0 first;
//           the kernels sum x q and multiply the row's sum by scale[o] once)
//     q4:   W[o, i] = (nibble[o, i] - 8) * scale[o, i / GROUP]  (8 nibbles per word, low first)
// numpy: glassbox.reference.linear (then glassbox.reference.gelu, or res + linear), with W
// from glassbox.quant.dequantize.
//
// Output columns may be a slice of a wider matrix: out[n, OUT_OFFSET + o] with row stride
// OUT_STRIDE (the logits: one dispatch per vocabulary chunk of wte). Tokens may be a block:
// x, res, pre and out are bound starting at token ROW0 and this dispatch handles at most ROWS
// tokens (the logits of long prompts, whose [N, V] would pass the 128 MiB binding limit).
//
// Two entry points share the bindings:
//   tiled   (prompts)  workgroup 16 x ROWS_Y owns 64 outputs x 4*ROWS_Y tokens; invocation
//                      (x, y) accumulates outputs 4x..4x+3 (one vec4) for tokens 4y..4y+3.
//                      K-tiles of 16 inputs: x [tokens, 16] and W dequantized [16, 64] are
//                      staged in workgroup memory, each word of W read once per tile.
//                      Dispatch (ceil(OUT / 64), ceil(rows / (4 ROWS_Y)), 1).
//   rowwise (decode, at most 4 tokens)  RW_LANES adjacent invocations own one output row:
//                      lane j reads words j, j + RW_LANES, ... of the row (adjacent lanes,
//                      adjacent words) and accumulates the (up to 4) tokens in one vec4; the
//                      row's first lane then adds the lanes' sums from workgroup memory.
//                      A workgroup of RW_WG owns RW_WG / RW_LANES rows.
//                      Dispatch (ceil(OUT * RW_LANES / RW_WG), 1, 1).
// The engine prefers matmul_splitk.wgsl (decode) and matmul_prefill.wgsl (prompts of 17 tokens
// or more) where a row is whole 16-byte blocks; these entries take every other shape.
// "// #include matmul_common" pastes in the helpers shared with those files (finish, gelu).

// #include matmul_common

override ROWS_Y: u32 = 16u;      // tiled: workgroup height (tokens per workgroup = 4 ROWS_Y)
override RW_LANES: u32 = 16u;    // rowwise: invocations per output row (divides RW_WG)
override RW_WG: u32 = 256u;      // rowwise: invocations per workgroup (RW_WG / RW_LANES rows)

@group(0) @binding(3) var<storage, read> w: array<u32>;              // [OUT, IN / EPW] words

const TM: u32 = 4u;   // tiled: tokens per invocation
const BK: u32 = 16u;  // tiled: inputs per K-tile
const BN: u32 = 64u;  // tiled: outputs per workgroup (16 invocations x vec4)
const RW_TOKENS: u32 = 4u;   // rowwise: most tokens (one vec4 of accumulators)

var<workgroup> xs: array<f32, 4u * ROWS_Y * BK>;          // tiled: x tile [4 ROWS_Y, BK]
var<workgroup> ws: array<vec4<f32>, BK * 16u>;            // tiled: W tile [BK, BN / 4] (vec4 of outputs)
var<workgroup> partial: array<vec4<f32>, RW_WG>;          // rowwise: [RW_WG] per-lane sums (tokens)

// Element e of `word`, which holds W[o, k .. k + EPW), dequantized -- except int8's row
// scale, which finish() applies once to the row's sum.
fn weight(word: u32, e: u32, o: u32, k: u32) -> f32 {
    if (SCHEME == 1u) {
        return f32(extractBits(bitcast<i32>(word), 8u * e, 8u));
    }
    if (SCHEME == 2u) {
        let q = f32(i32(extractBits(word, 4u * e, 4u)) - 8);
        return q * scale[o * (IN / GROUP) + (k + e) / GROUP];
    }
    return bitcast<f32>(word);
}

@compute @workgroup_size(16, ROWS_Y)
fn tiled(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = rows_here();
    let bm = TM * ROWS_Y;
    let o0 = wid.x * BN;
    let n0 = wid.y * bm;
    let tid = lid.y * 16u + lid.x;
    let threads = 16u * ROWS_Y;
    let per_word = epw();
    let row_words = IN / per_word;
    let tile_words = BK / per_word;  // words of one W row inside a K-tile
    var acc: array<vec4<f32>, TM>;

    for (var k0 = 0u; k0 < IN; k0 += BK) {
        for (var j = tid; j < bm * BK; j += threads) {
            let n = n0 + j / BK;
            let k = k0 + j % BK;
            var v = 0.0;
            if (n < rows && k < IN) {
                v = x[n * IN + k];
            }
            xs[j] = v;
        }
        for (var j = tid; j < BN * tile_words; j += threads) {
            let r = j / tile_words;
            let c = j % tile_words;
            let o = o0 + r;
            let k = k0 + c * per_word;
            var word = 0u;
            let live = o < OUT && k < IN;
            if (live) {
                word = w[o * row_words + k / per_word];
            }
            for (var e = 0u; e < per_word; e++) {
                var v = 0.0;
                if (live) {
                    v = weight(word, e, o, k);
                }
                ws[(c * per_word + e) * 16u + r / 4u][r % 4u] = v;
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let wv = ws[k * 16u + lid.x];
            for (var m = 0u; m < TM; m++) {
                acc[m] += xs[(lid.y * TM + m) * BK + k] * wv;
            }
        }
        workgroupBarrier();
    }

    for (var m = 0u; m < TM; m++) {
        let n = n0 + lid.y * TM + m;
        for (var c = 0u; c < 4u; c++) {
            let o = o0 + lid.x * 4u + c;
            if (n < rows && o < OUT) {
                finish(n, o, acc[m][c]);
            }
        }
    }
}

@compute @workgroup_size(RW_WG)
fn rowwise(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = min(rows_here(), RW_TOKENS);
    let lane = lid.x % RW_LANES;
    let o = wid.x * (RW_WG / RW_LANES) + lid.x / RW_LANES;
    let live = o < OUT;
    let os = min(o, OUT - 1u);  // a valid row to read for the idle tail (result unused)
    let per_word = epw();
    let row_words = IN / per_word;
    var acc = vec4<f32>(0.0);  // tokens 0..3 of row o
    let t1 = select(0u, IN, rows > 1u);  // row offsets of tokens 1..3 in x; token 0's
    let t2 = select(0u, 2u * IN, rows > 2u);  // row stands in for tokens past `rows`,
    let t3 = select(0u, 3u * IN, rows > 3u);  // whose results are never stored

    for (var c = lane; c < row_words; c += RW_LANES) {
        let k = c * per_word;
        let word = w[os * row_words + c];
        for (var e = 0u; e < per_word; e++) {
            let i = k + e;
            acc += weight(word, e, os, k) * vec4<f32>(x[i], x[t1 + i], x[t2 + i], x[t3 + i]);
        }
    }

    partial[lid.x] = acc;
    workgroupBarrier();
    if (lane == 0u && live) {
        var total = partial[lid.x];
        for (var j = 1u; j < RW_LANES; j++) {
            total += partial[lid.x + j];
        }
        for (var n = 0u; n < rows; n++) {
            finish(n, o, total[n]);
        }
    }
}
