// RoI max pooling (Fast R-CNN, Sec. 2.1) and its backward pass (Sec. 2.3), one thread per
// output element (and a gathering backward, one thread per input element). The semantics are
// those of Caffe's RoIPooling layer and torchvision.ops.roi_pool, operation for operation in
// scalar_t, so that the values agree bit for bit with them and with the NumPy spec in
// tinyrcnn/ops/roi_pool.py.
//
// One GPU-only difference: CuPy compiles every RawModule with -ftz=true (cupy/cuda/compiler.py
// adds it), so float32 arithmetic and comparisons there treat subnormal numbers (|v| < 1.2e-38)
// as zero; in a bin of float32 subnormals the GPU may pick another winner than NumPy. float64
// is not affected.
//
// Layouts (all C-contiguous):
//   x      (N, C, H, W)            the feature map
//   rois   (R, 5)                  rows [batch_index, x1, y1, x2, y2] in input-image pixels
//   y      (R, C, out_h, out_w)    the pooled output
//   argmax (R, C, out_h, out_w)    flat index h * W + w of the winner inside its (H, W) plane,
//                                  or -1 for an empty bin
// Compiles under NVRTC (CuPy) and, through compat.h, with g++ for the CPU tests.
#include "common.cuh"

// Clip v to [0, hi]: bins may hang over the map's edge (or lie wholly outside it).
__device__ __forceinline__ index_t clip_index(index_t v, index_t hi) {
  return v < 0 ? 0 : (v > hi ? hi : v);
}

// Where a RoI lands on the feature map: its image n, its first column and row x1, y1 (possibly
// off the map) and its fractional bin sizes. Shared by the forward pass and the gather backward,
// so both cut the bins identically.
struct RoIBins { index_t n, x1, y1; scalar_t bin_h, bin_w; };

__device__ __forceinline__ RoIBins roi_bins(const scalar_t* roi, scalar_t spatial_scale,
                                            index_t out_h, index_t out_w) {
  RoIBins b;
  // The batch index is validated on the host to be an integer in [0, N).
  b.n = (index_t)roi[0];

  // Corners onto the feature map: the product is taken in scalar_t (as torchvision and Caffe
  // do), then C's round(), which sends halves away from zero (0.5 -> 1, -0.5 -> -1).
  b.x1 = (index_t)round(roi[1] * spatial_scale);
  b.y1 = (index_t)round(roi[2] * spatial_scale);
  const index_t x2 = (index_t)round(roi[3] * spatial_scale);
  const index_t y2 = (index_t)round(roi[4] * spatial_scale);

  // The end is inclusive; a degenerate RoI (x2' < x1') is forced to one pixel.
  index_t roi_w = x2 - b.x1 + 1;
  index_t roi_h = y2 - b.y1 + 1;
  if (roi_w < 1) roi_w = 1;
  if (roi_h < 1) roi_h = 1;

  // Bin sizes are fractional; bins cover [floor(p * bin), ceil((p + 1) * bin)), so neighbours
  // may share a row or column and no pixel of the RoI is left out.
  b.bin_h = (scalar_t)roi_h / (scalar_t)out_h;
  b.bin_w = (scalar_t)roi_w / (scalar_t)out_w;
  return b;
}

extern "C" __global__ void roi_pool_forward(
    const scalar_t* x, const scalar_t* rois, scalar_t* y, index_t* argmax,
    index_t R, index_t C, index_t H, index_t W, index_t out_h, index_t out_w,
    scalar_t spatial_scale) {
  KERNEL_LOOP(i, R * C * out_h * out_w) {
    // i is the flat index of y[r, c, ph, pw]; peel off the fastest-moving index first.
    const index_t pw = i % out_w;
    const index_t ph = (i / out_w) % out_h;
    const index_t c = (i / (out_w * out_h)) % C;
    const index_t r = i / (out_w * out_h * C);

    const RoIBins b = roi_bins(rois + r * 5, spatial_scale, out_h, out_w);
    const index_t hstart = clip_index((index_t)floor((scalar_t)ph * b.bin_h) + b.y1, H);
    const index_t hend = clip_index((index_t)ceil((scalar_t)(ph + 1) * b.bin_h) + b.y1, H);
    const index_t wstart = clip_index((index_t)floor((scalar_t)pw * b.bin_w) + b.x1, W);
    const index_t wend = clip_index((index_t)ceil((scalar_t)(pw + 1) * b.bin_w) + b.x1, W);

    // A bin clipped away entirely (the RoI leaves the map) is empty: it outputs 0 and records
    // argmax -1, which the backward pass skips, so it sends no gradient anywhere.
    const scalar_t* plane = x + (b.n * C + c) * H * W;
    scalar_t best = 0;
    index_t best_at = -1;
    for (index_t h = hstart; h < hend; ++h) {
      for (index_t w = wstart; w < wend; ++w) {
        const index_t at = h * W + w;
        const scalar_t v = plane[at];
        // Scan order is h then w. The first pixel always enters (so a bin of -inf still has a
        // winner to route its gradient to); afterwards only a strictly larger value replaces
        // the winner, so the first maximum wins, like np.argmax. A NaN wins once and then
        // stays (v != v is the NaN test), like np.max, so a diverged network is not hidden.
        if (best_at < 0 || (best == best && (v > best || v != v))) {
          best = v;
          best_at = at;
        }
      }
    }
    y[i] = best;
    argmax[i] = best_at;
  }
}

extern "C" __global__ void roi_pool_backward(
    const scalar_t* gy, const index_t* argmax, const scalar_t* rois, scalar_t* gx,
    index_t R, index_t C, index_t H, index_t W, index_t out_h, index_t out_w) {
  // One thread per OUTPUT element (Sec. 2.3): dL/dx[n, c, h, w] is the sum of gy over all the
  // bins, of all RoIs, whose argmax is (h, w). Bins of overlapping RoIs can share a winner,
  // hence the atomic add. On a GPU the order in which the atomics land changes from run to run,
  // and float addition is not associative, so a pixel won by several bins may differ in its last
  // bits between runs (and from the NumPy path, which adds in output order). For a
  // reproducible gradient use roi_pool_backward_gather below.
  KERNEL_LOOP(i, R * C * out_h * out_w) {
    const index_t at = argmax[i];
    if (at < 0) continue;  // empty bin: it took no input, so it gives no gradient
    const index_t c = (i / (out_w * out_h)) % C;
    const index_t r = i / (out_w * out_h * C);
    const index_t n = (index_t)rois[r * 5];
    atomicAdd(gx + (n * C + c) * H * W + at, gy[i]);
  }
}

// The same gradient, GATHERED instead of scattered: one thread per INPUT element (n, c, h, w)
// adds up the gy of every bin whose argmax is this pixel, in a fixed order (RoI r, then bin row
// ph, then bin column pw, each increasing). No two threads write the same place, so there are no
// atomics, and the order is that of np.add.at in the NumPy path: the result is the same on every
// run and equal to NumPy's bit for bit (on a GPU, float32 subnormals aside: CuPy compiles with
// -ftz=true). This is how the original Fast R-CNN (Caffe) layer computed it. The price: each
// thread visits every RoI, where the atomic version does one add per output, so it is the
// opt-in path (RoIPool.deterministic in ops/roi_pool.py).
extern "C" __global__ void roi_pool_backward_gather(
    const scalar_t* gy, const index_t* argmax, const scalar_t* rois, scalar_t* gx,
    index_t N, index_t R, index_t C, index_t H, index_t W, index_t out_h, index_t out_w,
    scalar_t spatial_scale) {
  KERNEL_LOOP(e, N * C * H * W) {
    const index_t w = e % W;
    const index_t h = (e / W) % H;
    const index_t c = (e / (W * H)) % C;
    const index_t n = e / (W * H * C);
    const index_t at = h * W + w;  // how argmax names this pixel
    scalar_t sum = 0;
    for (index_t r = 0; r < R; ++r) {
      const RoIBins b = roi_bins(rois + r * 5, spatial_scale, out_h, out_w);
      if (b.n != n) continue;
      // Row h can only lie in bins ph with floor(ph * bin_h) <= h - y1 < ceil((ph + 1) * bin_h),
      // i.e. (h - y1 - 1) / bin_h - 1 < ph < (h - y1 + 1) / bin_h. One bin of margin on each side
      // absorbs the rounding of these divisions; the argmax test is the exact one. A RoI far
      // from the pixel gives an empty range.
      const index_t ph0 = clip_index((index_t)floor((scalar_t)(h - b.y1 - 1) / b.bin_h) - 1, out_h);
      const index_t ph1 = clip_index((index_t)ceil((scalar_t)(h - b.y1 + 1) / b.bin_h) + 1, out_h);
      const index_t pw0 = clip_index((index_t)floor((scalar_t)(w - b.x1 - 1) / b.bin_w) - 1, out_w);
      const index_t pw1 = clip_index((index_t)ceil((scalar_t)(w - b.x1 + 1) / b.bin_w) + 1, out_w);
      const index_t plane = (r * C + c) * out_h * out_w;  // the (out_h, out_w) bins of (r, c)
      for (index_t ph = ph0; ph < ph1; ++ph) {
        for (index_t pw = pw0; pw < pw1; ++pw) {
          if (argmax[plane + ph * out_w + pw] == at) sum += gy[plane + ph * out_w + pw];
        }
      }
    }
    gx[e] = sum;
  }
}
