// im2col / col2im for conv2d on the GPU (the matrix product itself goes through cuBLAS).
//
// Layout. One image x of shape (C, H, W) is unfolded into cols of shape (C*kh*kw, Ho*Wo):
// row r = (c*kh + i)*kw + j holds, for every output position (oy, ox), the input pixel
// x[c, oy*stride - pad + i, ox*stride - pad + j], or 0 where that falls in the padding.
// Then y (K, Ho*Wo) = w (K, C*kh*kw) @ cols, and NCHW comes out directly.
#include "common.cuh"

// One thread per element of cols for all N images: cols has shape (N, C*kh*kw, Ho*Wo).
// Decompose the flat index e into (n, c, i, j, oy, ox), slowest to fastest.
extern "C" __global__ void im2col(const scalar_t* __restrict__ x, scalar_t* __restrict__ cols,
                                  index_t N, index_t C, index_t H, index_t W,
                                  index_t kh, index_t kw, index_t stride, index_t pad,
                                  index_t Ho, index_t Wo) {
  const index_t total = N * C * kh * kw * Ho * Wo;
  KERNEL_LOOP(e, total) {
    index_t t = e;
    const index_t ox = t % Wo; t /= Wo;
    const index_t oy = t % Ho; t /= Ho;
    const index_t j = t % kw;  t /= kw;
    const index_t i = t % kh;  t /= kh;
    const index_t c = t % C;   t /= C;
    const index_t n = t;
    const index_t y = oy * stride - pad + i;
    const index_t xx = ox * stride - pad + j;
    // Outside the image is the zero padding.
    const bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
    cols[e] = inside ? x[((n * C + c) * H + y) * W + xx] : (scalar_t)0;
  }
}

// The adjoint of im2col: gx[n, c, y, xx] = sum of every cols entry that copied this pixel.
// One thread per INPUT pixel gathers its contributions, so no two threads write the same
// place and no atomics are needed. Pixel (y, xx) was copied by kernel tap (i, j) at output
// (oy, ox) when y = oy*stride - pad + i, i.e. for i with (y + pad - i) divisible by stride.
extern "C" __global__ void col2im(const scalar_t* __restrict__ cols, scalar_t* __restrict__ gx,
                                  index_t N, index_t C, index_t H, index_t W,
                                  index_t kh, index_t kw, index_t stride, index_t pad,
                                  index_t Ho, index_t Wo) {
  const index_t total = N * C * H * W;
  KERNEL_LOOP(e, total) {
    index_t t = e;
    const index_t xx = t % W; t /= W;
    const index_t y = t % H;  t /= H;
    const index_t c = t % C;  t /= C;
    const index_t n = t;
    scalar_t sum = 0;
    for (index_t i = 0; i < kh; ++i) {
      const index_t ty = y + pad - i;
      if (ty < 0 || ty % stride != 0) continue;
      const index_t oy = ty / stride;
      if (oy >= Ho) continue;
      for (index_t j = 0; j < kw; ++j) {
        const index_t tx = xx + pad - j;
        if (tx < 0 || tx % stride != 0) continue;
        const index_t ox = tx / stride;
        if (ox >= Wo) continue;
        const index_t row = (c * kh + i) * kw + j;
        sum += cols[((n * C * kh * kw) + row) * (Ho * Wo) + oy * Wo + ox];
      }
    }
    gx[e] = sum;
  }
}
