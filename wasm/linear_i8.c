/* linear_i8: y = (x . q^T) * scale, int8 weights times float32 activations, WebAssembly SIMD128.
 *
 *   y     float32 [N, O]   output (written, not accumulated)
 *   x     float32 [N, I]   activations, rows of I inputs
 *   q     int8    [O, I]   weights in the Glassbox layout [out, in] (glassbox/quant.py int8)
 *   scale float32 [O]      per-output-row scale: W[o, i] = q[o, i] * scale[o]
 *   scratch float32 [cap]  work space for one block of rows converted to float32
 *
 * Must match glassbox.reference.linear(x, dequantize_int8(q, scale), None) up to float32
 * summation order: here each dot product runs over i in four interleaved partial sums of
 * q * x, and the row scale multiplies the finished sum once (numpy multiplies each weight by
 * the scale first; the two differ by a few ulps of the sum).
 *
 * How the work is cut: rows of q are taken in blocks of B (as many as fit in scratch); a
 * block is converted from int8 to float32 once (no scale) and then used for every token, so
 * the conversion costs O*I per call, not N*O*I. Within a block, 4 tokens x 2 rows are
 * computed together (8 vector accumulators, 6 vector loads per 8 multiply-adds). With fewer
 * than 4 tokens (decoding) each row is converted on the fly instead.
 *
 * Built as an Emscripten side module (wasm/Makefile) and loaded by Pyodide's dynamic linker
 * (ctypes.CDLL), so it runs on Pyodide's own memory: the pointers are numpy arrays'
 * addresses (arr.ctypes.data), nothing is copied. It has no data, no globals and no stack
 * frame of its own (every value lives in WebAssembly locals), so it cannot disturb the
 * interpreter's memory. Requires I % 16 == 0 (the caller checks).
 */
#include <stdint.h>
#include <wasm_simd128.h>

static inline float hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1) +
         wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

/* 16 int8 -> 4 x f32x4 */
#define I8X16_TO_F32(src, a, b, c, d)                                        \
  do {                                                                        \
    v128_t w8 = wasm_v128_load(src);                                          \
    v128_t lo = wasm_i16x8_extend_low_i8x16(w8), hi = wasm_i16x8_extend_high_i8x16(w8); \
    a = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(lo));            \
    b = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(lo));           \
    c = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(hi));            \
    d = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(hi));           \
  } while (0)

#define MADD(acc, a, b) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(a, b))

/* Few tokens: one row at a time, int8 converted in the loop. */
static void linear_direct(float *y, const float *x, const int8_t *q, const float *scale,
                          int n, int in, int out) {
  for (int t = 0; t < n; t++) {
    const float *xt = x + (long)t * in;
    for (int o = 0; o < out; o++) {
      const int8_t *qo = q + (long)o * in;
      v128_t s0 = wasm_f32x4_splat(0), s1 = s0, s2 = s0, s3 = s0;
      for (int i = 0; i < in; i += 16) {
        v128_t a, b, c, d;
        I8X16_TO_F32(qo + i, a, b, c, d);
        MADD(s0, a, wasm_v128_load(xt + i));
        MADD(s1, b, wasm_v128_load(xt + i + 4));
        MADD(s2, c, wasm_v128_load(xt + i + 8));
        MADD(s3, d, wasm_v128_load(xt + i + 12));
      }
      y[(long)t * out + o] = hsum(wasm_f32x4_add(wasm_f32x4_add(s0, s1), wasm_f32x4_add(s2, s3))) * scale[o];
    }
  }
}

/* Rows [o0, o0 + rows) already converted into w (float32 [rows, in]): every token. */
static void linear_block(float *y, const float *x, const float *w, const float *scale,
                         int n, int in, int out, int o0, int rows) {
  int t = 0;
  for (; t + 4 <= n; t += 4) {
    const float *x0 = x + (long)t * in, *x1 = x0 + in, *x2 = x1 + in, *x3 = x2 + in;
    int r = 0;
    for (; r + 2 <= rows; r += 2) {
      const float *w0 = w + (long)r * in, *w1 = w0 + in;
      v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (int i = 0; i < in; i += 4) {
        v128_t u = wasm_v128_load(w0 + i), v = wasm_v128_load(w1 + i);
        v128_t p = wasm_v128_load(x0 + i);
        MADD(a0, p, u); MADD(b0, p, v);
        p = wasm_v128_load(x1 + i);
        MADD(a1, p, u); MADD(b1, p, v);
        p = wasm_v128_load(x2 + i);
        MADD(a2, p, u); MADD(b2, p, v);
        p = wasm_v128_load(x3 + i);
        MADD(a3, p, u); MADD(b3, p, v);
      }
      float s = scale[o0 + r], z = scale[o0 + r + 1];
      float *yt = y + (long)t * out + o0 + r;
      yt[0] = hsum(a0) * s; yt[1] = hsum(b0) * z;
      yt[out] = hsum(a1) * s; yt[out + 1] = hsum(b1) * z;
      yt[2 * out] = hsum(a2) * s; yt[2 * out + 1] = hsum(b2) * z;
      yt[3 * out] = hsum(a3) * s; yt[3 * out + 1] = hsum(b3) * z;
    }
    for (; r < rows; r++) {  /* an odd last row */
      const float *w0 = w + (long)r * in;
      for (int k = 0; k < 4; k++) {
        const float *xk = x0 + (long)k * in;
        v128_t a = wasm_f32x4_splat(0);
        for (int i = 0; i < in; i += 4) MADD(a, wasm_v128_load(xk + i), wasm_v128_load(w0 + i));
        y[(long)(t + k) * out + o0 + r] = hsum(a) * scale[o0 + r];
      }
    }
  }
  for (; t < n; t++) {  /* the last n % 4 tokens */
    const float *xt = x + (long)t * in;
    for (int r = 0; r < rows; r++) {
      const float *w0 = w + (long)r * in;
      v128_t a = wasm_f32x4_splat(0), b = a;
      for (int i = 0; i < in; i += 8) {
        MADD(a, wasm_v128_load(xt + i), wasm_v128_load(w0 + i));
        MADD(b, wasm_v128_load(xt + i + 4), wasm_v128_load(w0 + i + 4));
      }
      y[(long)t * out + o0 + r] = hsum(wasm_f32x4_add(a, b)) * scale[o0 + r];
    }
  }
}

__attribute__((visibility("default")))
int glassbox_linear_i8(float *y, const float *x, const int8_t *q, const float *scale,
                       int n, int in, int out, float *scratch, int cap) {
  if (n <= 0 || in <= 0 || out <= 0 || in % 16) return -1;
  if (n < 4) {
    linear_direct(y, x, q, scale, n, in, out);
    return 0;
  }
  int block = cap / in;
  if (block < 1) return -2;
  for (int o0 = 0; o0 < out; o0 += block) {
    int rows = out - o0 < block ? out - o0 : block;
    for (int r = 0; r < rows; r++) {
      const int8_t *src = q + (long)(o0 + r) * in;
      float *dst = scratch + (long)r * in;
      for (int i = 0; i < in; i += 16) {
        v128_t a, b, c, d;
        I8X16_TO_F32(src + i, a, b, c, d);
        wasm_v128_store(dst + i, a);
        wasm_v128_store(dst + i + 4, b);
        wasm_v128_store(dst + i + 8, c);
        wasm_v128_store(dst + i + 12, d);
      }
    }
    linear_block(y, x, scratch, scale, n, in, out, o0, rows);
  }
  return 0;
}
