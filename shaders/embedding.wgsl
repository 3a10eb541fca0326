// embedding.wgsl — token embedding gather plus position embedding.
//
// Computes, for every token n of this run and every channel d:
//     tok_emb[n, d] = wte[ids[n], d]
//     pos_emb[n, d] = wpe[start + n, d]
//     emb[n, d]     = tok_emb[n, d] + pos_emb[n, d]
// with wte and wpe stored as fp32, int8 or q4 (glassbox.quant layouts, read as u32 words):
//     fp32: W[r, d] = bitcast<f32>(word)
//     int8: W[r, d] = q[r, d] * scale[r]                       (4 int8 per word, byte 0 first)
//     q4:   W[r, d] = (nibble[r, d] - 8) * scale[r, d / GROUP]  (8 nibbles per word, low first)
// numpy: the first lines of glassbox.reference.forward (tok, pos, x = tok + pos), with wte and
// wpe from glassbox.quant.dequantize.
//
// wte may not fit one 128 MiB binding (fp32 GPT-2's is 154 MB), so it is cut into chunks of
// rows [V0, V0 + VC); the host dispatches this kernel once per chunk and each dispatch writes
// only the tokens whose id falls in its chunk (all dispatches write the same pos_emb).
//
// Threads: one invocation per (channel d, token n): global_invocation_id.x = d,
// workgroup_id.y = n. Dispatch (ceil(D / 64), N, 1).

// #include params

override D: u32;            // model width
override SCHEME: u32 = 0u;  // 0 fp32, 1 int8, 2 q4 (glassbox.quant.SCHEMES)
override GROUP: u32 = 32u;  // q4 group size G
override V0: u32 = 0u;      // first vocabulary row held by this wte chunk
override VC: u32;           // vocabulary rows in this chunk

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;              // [N] token ids
@group(0) @binding(2) var<storage, read> wte: array<u32>;              // [VC, D / EPW] words of this chunk
@group(0) @binding(3) var<storage, read> wte_scale: array<f32>;        // int8 [VC], q4 [VC, D / G]; unused for fp32
@group(0) @binding(4) var<storage, read> wpe: array<u32>;              // [C, D / EPW] words
@group(0) @binding(5) var<storage, read> wpe_scale: array<f32>;        // int8 [C], q4 [C, D / G]; unused for fp32
@group(0) @binding(6) var<storage, read_write> tok_emb: array<f32>;    // [N, D]
@group(0) @binding(7) var<storage, read_write> pos_emb: array<f32>;    // [N, D]
@group(0) @binding(8) var<storage, read_write> emb: array<f32>;        // [N, D]

// Elements per u32 word: 1 (fp32), 4 (int8) or 8 (q4).
fn epw() -> u32 {
    return select(select(1u, 4u, SCHEME == 1u), 8u, SCHEME == 2u);
}

// The raw value (before scaling) of element d of a row, given the word holding it.
fn unscaled(word: u32, d: u32) -> f32 {
    if (SCHEME == 1u) {
        return f32(extractBits(bitcast<i32>(word), 8u * (d % 4u), 8u));  // sign-extended int8
    }
    if (SCHEME == 2u) {
        return f32(i32(extractBits(word, 4u * (d % 8u), 4u)) - 8);
    }
    return bitcast<f32>(word);
}

fn scale_index(row: u32, d: u32) -> u32 {
    return select(row, row * (D / GROUP) + d / GROUP, SCHEME == 2u);
}

fn wte_at(row: u32, d: u32) -> f32 {
    let v = unscaled(wte[(row * D + d) / epw()], d);
    if (SCHEME == 0u) { return v; }
    return v * wte_scale[scale_index(row, d)];
}

fn wpe_at(row: u32, d: u32) -> f32 {
    let v = unscaled(wpe[(row * D + d) / epw()], d);
    if (SCHEME == 0u) { return v; }
    return v * wpe_scale[scale_index(row, d)];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let d = gid.x;
    let n = wid.y;
    if (d >= D || n >= params.N) {
        return;
    }
    let id = ids[n];
    if (id < V0 || id >= V0 + VC) {
        return;  // another chunk's dispatch writes this token
    }
    let i = n * D + d;
    let t = wte_at(id - V0, d);
    let p = wpe_at(params.start + n, d);
    tok_emb[i] = t;
    pos_emb[i] = p;
    emb[i] = t + p;
}
