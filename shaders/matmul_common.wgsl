// matmul_common.wgsl — the helpers matmul.wgsl, matmul_splitk.wgsl and matmul_prefill.wgsl share.
//
// Not a kernel: each of those files pastes this text in at its "// #include matmul_common" line
// (glassbox.gpu.kernels.Kernel.source), after declaring the overrides (SCHEME, OUT, OUT_STRIDE,
// OUT_OFFSET, ROW0, ROWS, HAS_BIAS, EPILOGUE, STORE_PRE) and bindings (params, res, scale,
// bias, pre, out) used here. finish() is the fused epilogue of glassbox.reference.linear:
//     int8: y = acc * scale[o] (the kernels sum x q; the row scale multiplies the sum once)
//     y += bias[o] (HAS_BIAS); EPILOGUE 0 out = y, 1 out = gelu(y), 2 out = res + y; STORE_PRE pre = y.

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
