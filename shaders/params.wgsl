// params.wgsl — the Params uniform of the forward's kernels (glassbox.gpu.kernels.params_array).
//
// Not a kernel: a kernel pastes this text in at its "// #include params" line
// (glassbox.gpu.kernels.Kernel.source) and binds it as binding 0, `params`.

struct Params {
    N: u32,      // tokens in this run (the queries of attention)
    T: u32,      // tokens attended to: start + N
    start: u32,  // position of this run's first token (the KV cache length before it)
    _pad: u32,
}
