// RoI max pooling (Fast R-CNN, Sec. 2.1) and its backward pass (Sec. 2.3), one thread per
// output element. The semantics are those of Caffe's RoIPooling layer and
// torchvision.ops.roi_pool, operation for operation in scalar_t, so that the values agree bit for
// bit with them and with the NumPy spec in tinyrcnn/ops/roi_pool.py.
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

    // The batch index is validated on the host to be an integer in [0, N).
    const scalar_t* roi = rois + r * 5;
    const index_t n = (index_t)roi[0];

    // Corners onto the feature map: the product is taken in scalar_t (as torchvision and Caffe
    // do), then C's round(), which sends halves away from zero (0.5 -> 1, -0.5 -> -1).
    const index_t x1 = (index_t)round(roi[1] * spatial_scale);
    const index_t y1 = (index_t)round(roi[2] * spatial_scale);
    const index_t x2 = (index_t)round(roi[3] * spatial_scale);
    const index_t y2 = (index_t)round(roi[4] * spatial_scale);

    // The end is inclusive; a degenerate RoI (x2' < x1') is forced to one pixel.
    index_t roi_w = x2 - x1 + 1;
    index_t roi_h = y2 - y1 + 1;
    if (roi_w < 1) roi_w = 1;
    if (roi_h < 1) roi_h = 1;

    // Bin sizes are fractional; bins cover [floor(p * bin), ceil((p + 1) * bin)), so neighbours
    // may share a row or column and no pixel of the RoI is left out.
    const scalar_t bin_h = (scalar_t)roi_h / (scalar_t)out_h;
    const scalar_t bin_w = (scalar_t)roi_w / (scalar_t)out_w;
    const index_t hstart = clip_index((index_t)floor((scalar_t)ph * bin_h) + y1, H);
    const index_t hend = clip_index((index_t)ceil((scalar_t)(ph + 1) * bin_h) + y1, H);
    const index_t wstart = clip_index((index_t)floor((scalar_t)pw * bin_w) + x1, W);
    const index_t wend = clip_index((index_t)ceil((scalar_t)(pw + 1) * bin_w) + x1, W);

    // A bin clipped away entirely (the RoI leaves the map) is empty: it outputs 0 and records
    // argmax -1, which the backward pass skips, so it sends no gradient anywhere.
    const scalar_t* plane = x + (n * C + c) * H * W;
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
  // hence the atomic add (on the GPU the order of the additions is not fixed).
  KERNEL_LOOP(i, R * C * out_h * out_w) {
    const index_t at = argmax[i];
    if (at < 0) continue;  // empty bin: it took no input, so it gives no gradient
    const index_t c = (i / (out_w * out_h)) % C;
    const index_t r = i / (out_w * out_h * C);
    const index_t n = (index_t)rois[r * 5];
    atomicAdd(gx + (n * C + c) * H * W + at, gy[i]);
  }
}
