// matmul_common.wgsl — what matmul.wgsl, matmul_splitk.wgsl and matmul_prefill.wgsl share.
//
// Not a kernel: each of those files pastes this text in at its "// #include matmul_common" line
// (glassbox.gpu.kernels.Kernel.source): the Params uniform, the overrides and the bindings the
// three have in common (binding 3, the weights, is each file's own: u32 words or 16-byte
// blocks), and helpers. finish() is the fused epilogue of glassbox.reference.linear:
//     int8: y = acc * scale[o] (the kernels sum x q; the row scale multiplies the sum once)
//     y += bias[o] (HAS_BIAS); EPILOGUE 0 out = y, 1 out = gelu(y), 2 out = res + y; STORE_PRE pre = y.
//
// LN (issue 15, engine: layer norm fused into the matmul's prologue; matmul_splitk.wgsl and
// matmul_prefill.wgsl): x is the layer norm's input, not its output. The kernel computes each
// token's mean and variance over the whole row of x (two passes, as layer_norm.wgsl) and
// normalizes x as it stages it: ln(v) = (v - mean) / sqrt(var + EPS) * res[k] + res[IN + k].
// The res binding then holds the layer norm's weight then bias ([2, IN]); EPILOGUE 2 (which
// reads res as the residual) cannot be combined with LN.

// #include params

override IN: u32;                // inputs per row: D or F
override OUT: u32;               // output rows of W in this dispatch: 3D, D, F or a vocabulary chunk
override SCHEME: u32 = 0u;       // 0 fp32, 1 int8, 2 q4 (glassbox.quant.SCHEMES)
override GROUP: u32 = 32u;       // q4 group size G (a multiple of 8)
override HAS_BIAS: bool = true;
override EPILOGUE: u32 = 0u;     // 0 none, 1 GELU, 2 residual add
override STORE_PRE: bool = false;
override OUT_STRIDE: u32 = 0u;   // row stride of out, pre and res; 0 means OUT
override OUT_OFFSET: u32 = 0u;   // first column written by this dispatch
override ROW0: u32 = 0u;         // first token of this dispatch (the bindings start there)
override ROWS: u32 = 0u;         // most tokens in this dispatch; 0 means all N - ROW0
override LN: bool = false;       // x is normalized on load (matmul_splitk, matmul_prefill)
override EPS: f32 = 1e-5;        // LN: config.layer_norm_epsilon

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;              // [N, IN]
@group(0) @binding(2) var<storage, read> res: array<f32>;            // [N, OUT_STRIDE] residual (EPILOGUE 2); LN: [2, IN] weight, bias
@group(0) @binding(4) var<storage, read> scale: array<f32>;          // int8 [OUT], q4 [OUT, IN / G]; unused for fp32
@group(0) @binding(5) var<storage, read> bias: array<f32>;           // [OUT] (HAS_BIAS)
@group(0) @binding(6) var<storage, read_write> pre: array<f32>;      // [N, OUT_STRIDE] (STORE_PRE)
@group(0) @binding(7) var<storage, read_write> out: array<f32>;      // [N, OUT_STRIDE]

// LN: input k of a token whose row has this mean and sqrt(var + EPS), normalized (as
// layer_norm.wgsl's out, glassbox.reference.layer_norm).
fn ln(v: f32, mean: f32, denom: f32, k: u32) -> f32 {
    return (v - mean) / denom * res[k] + res[IN + k];
}

// u32 words per weight element group: 1 fp32, 4 int8, 8 q4 per word.
fn epw() -> u32 {
    return select(select(1u, 4u, SCHEME == 1u), 8u, SCHEME == 2u);
}

fn rows_here() -> u32 {
    let left = params.N - ROW0;
    return select(left, min(left, ROWS), ROWS > 0u);
}

fn stride() -> u32 {
    return select(OUT_STRIDE, OUT, OUT_STRIDE == 0u);
}

// Four int8 (byte 0 first) as f32, sign-extended.
fn int8x4(word: u32) -> vec4<f32> {
// #if packed4x8
    return vec4<f32>(unpack4xI8(word));
// #else
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
// #endif
}

// gelu(u) = 0.5 u (1 + tanh(sqrt(2/pi) (u + 0.044715 u^3))), the tanh argument clamped to
// [-15, 15] (tanh is exactly +-1 in f32 there; unclamped, exp overflows to NaN).
fn gelu(u: f32) -> f32 {
    let inner = 0.7978845608028654 * (u + 0.044715 * u * u * u);
    return 0.5 * u * (1.0 + tanh(clamp(inner, -15.0, 15.0)));
}

fn finish(n: u32, o: u32, acc: f32) {
    var y = acc;
    if (SCHEME == 1u) {
        y *= scale[o];  // int8: sum_i x q, then the row scale once
    }
    if (HAS_BIAS) {
        y += bias[o];
    }
    let i = n * stride() + OUT_OFFSET + o;
    if (EPILOGUE == 0u) {
        out[i] = y;
        return;
    }
    if (STORE_PRE) {
        pre[i] = y;
    }
    if (EPILOGUE == 1u) {
        out[i] = gelu(y);
    } else {
        out[i] = res[i] + y;
    }
}
