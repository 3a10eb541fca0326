// attention_common.wgsl — what attention.wgsl, flash_attention.wgsl and attention_decode.wgsl share.
//
// Not a kernel: each of those files pastes this text in at its "// #include attention_common"
// line (glassbox.gpu.kernels.Kernel.source): the Params uniform, the overrides H, K and SQRT_K,
// the bindings 0..3 (params, this run's qkv, the layer's KV cache) and key() / value(), which
// read position t's key or value channel c from the cache (t < start) or from this run's qkv.
// glassbox.gpu.kernels.cache_variant turns CacheT into f16 for the f16 KV cache.

// #include params

override H: u32;          // heads
override K: u32;          // head size, D / H
override SQRT_K: f32;     // float32(sqrt(K)), as the numpy reference divides by it

const MASK_VALUE: f32 = -1e30;  // glassbox.reference.MASK_VALUE
alias CacheT = f32;             // the KV cache's element: f16 in the f16-cache variant (kernels.py)

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;               // [N, 3D] this run's q | k | v
@group(0) @binding(2) var<storage, read_write> k_cache: array<CacheT>;  // [C, D] keys by position
@group(0) @binding(3) var<storage, read_write> v_cache: array<CacheT>;  // [C, D] values by position

fn key(t: u32, c: u32) -> f32 {
    let D = H * K;
    if (t < params.start) {
        return f32(k_cache[t * D + c]);
    }
    return qkv[(t - params.start) * 3u * D + D + c];
}

fn value(t: u32, c: u32) -> f32 {
    let D = H * K;
    if (t < params.start) {
        return f32(v_cache[t * D + c]);
    }
    return qkv[(t - params.start) * 3u * D + 2u * D + c];
}
