// 2-D max pooling with the argmax kept for backward (floor output size, no padding).
#include "common.cuh"

// One thread per output element (n, c, oy, ox). argmax is the flat index y*W + x of the
// maximum inside the (H, W) plane of that (n, c); the first maximum in row-major scan order
// wins, as with NumPy's argmax and Caffe.
extern "C" __global__ void max_pool_forward(const scalar_t* __restrict__ x,
                                            scalar_t* __restrict__ y, index_t* __restrict__ argmax,
                                            index_t NC, index_t H, index_t W,
                                            index_t k, index_t stride, index_t Ho, index_t Wo) {
  const index_t total = NC * Ho * Wo;
  KERNEL_LOOP(e, total) {
    const index_t ox = e % Wo;
    const index_t oy = (e / Wo) % Ho;
    const index_t nc = e / (Wo * Ho);
    const scalar_t* plane = x + nc * H * W;
    const index_t y0 = oy * stride, x0 = ox * stride;  // the window never leaves the map
    index_t best = y0 * W + x0;
    scalar_t best_value = plane[best];
    for (index_t i = 0; i < k; ++i) {
      for (index_t j = 0; j < k; ++j) {
        const index_t idx = (y0 + i) * W + (x0 + j);
        if (plane[idx] > best_value) { best_value = plane[idx]; best = idx; }
      }
    }
    y[e] = best_value;
    argmax[e] = best;
  }
}

// One thread per output element adds its gradient at its argmax. Windows overlap when
// stride < k, so two outputs may share an argmax: atomicAdd keeps that race-free (but on a GPU
// the order of those adds, and so the last bits of such a pixel, may change from run to run).
extern "C" __global__ void max_pool_backward(const scalar_t* __restrict__ gy,
                                             const index_t* __restrict__ argmax,
                                             scalar_t* __restrict__ gx,
                                             index_t NC, index_t H, index_t W, index_t Ho, index_t Wo) {
  const index_t total = NC * Ho * Wo;
  KERNEL_LOOP(e, total) {
    const index_t nc = e / (Ho * Wo);
    atomicAdd(gx + nc * H * W + argmax[e], gy[e]);
  }
}
