// Greedy non-maximum suppression with a bitmask (the scheme of the original Faster R-CNN GPU NMS),
// written as grid-stride loops without shared memory so that compat.h can run it on the CPU.
//
// The boxes arrive already sorted by decreasing score, so "box i may suppress box j" means j > i.
// The N boxes are split into col_blocks = ceil(N / 64) column blocks of 64; work item
// t = i * col_blocks + cb computes one 64-bit word:
//     mask[i, cb] bit b set  <=>  j = cb * 64 + b > i  and  IoU(i, j) > thresh
// (strictly greater, as in the original code and torchvision). A second kernel, nms_reduce, walks
// the boxes in score order once and keeps box i unless an earlier kept box set its bit.
//
// IoU must be bit-for-bit the NumPy reference (tinyrcnn/boxes.py): same +1 inclusive widths,
// same operation order, same scalar_t. On the GPU the compiler would otherwise fuse
// `a + b - w * h` into one fma (rounded once instead of twice), which flips IoUs that sit right at
// the threshold; __fmul_rn / __fdiv_rn are never contracted. On the CPU a volatile store rounds
// the product for the same reason on machines whose baseline has FMA (aarch64).
#include "common.cuh"

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
#else
inline scalar_t mul_rn(scalar_t a, scalar_t b) { volatile scalar_t p = a * b; return p; }
inline scalar_t div_rn(scalar_t a, scalar_t b) { volatile scalar_t q = a / b; return q; }
#endif

typedef unsigned long long mask_t;
#define BLOCK_BITS 64

// IoU of boxes a and b ([x1, y1, x2, y2], inclusive pixels), in the order of boxes.py:box_iou.
__device__ __forceinline__ scalar_t iou_inclusive(const scalar_t* a, const scalar_t* b) {
  const scalar_t one = 1, zero = 0;
  const scalar_t area_a = mul_rn(a[2] - a[0] + one, a[3] - a[1] + one);
  const scalar_t area_b = mul_rn(b[2] - b[0] + one, b[3] - b[1] + one);
  const scalar_t xx1 = a[0] > b[0] ? a[0] : b[0];
  const scalar_t yy1 = a[1] > b[1] ? a[1] : b[1];
  const scalar_t xx2 = a[2] < b[2] ? a[2] : b[2];
  const scalar_t yy2 = a[3] < b[3] ? a[3] : b[3];
  scalar_t w = xx2 - xx1 + one, h = yy2 - yy1 + one;
  w = w > zero ? w : zero;  // disjoint boxes: no overlap rather than a negative one
  h = h > zero ? h : zero;
  const scalar_t inter = mul_rn(w, h);
  // Degenerate boxes can make the union 0: 0/0 = NaN, and NaN > thresh is false (nothing
  // suppressed), the same as NumPy.
  return div_rn(inter, area_a + area_b - inter);
}

// boxes (N, 4) sorted by decreasing score; mask (N, col_blocks) of 64-bit words, fully written.
extern "C" __global__ void nms_mask(const scalar_t* boxes, const index_t N, const scalar_t thresh,
                                    mask_t* mask) {
  const index_t col_blocks = (N + BLOCK_BITS - 1) / BLOCK_BITS;
  KERNEL_LOOP(t, N * col_blocks) {
    const index_t i = t / col_blocks;
    const index_t cb = t % col_blocks;
    const index_t first = cb * BLOCK_BITS;
    const index_t last = first + BLOCK_BITS < N ? first + BLOCK_BITS : N;  // exclusive
    const index_t start = i + 1 > first ? i + 1 : first;  // only later (lower-scored) boxes
    mask_t bits = 0;
    for (index_t j = start; j < last; ++j) {
      if (iou_inclusive(boxes + 4 * i, boxes + 4 * j) > thresh) bits |= 1ULL << (j - first);
    }
    mask[t] = bits;
  }
}

// The sequential half of greedy NMS, one work item: keep[i] = 1 for the boxes that survive.
// removed (col_blocks,) is scratch, zeroed by the caller; keep (N,) bytes.
extern "C" __global__ void nms_reduce(const mask_t* mask, const index_t N, mask_t* removed,
                                      unsigned char* keep) {
  const index_t col_blocks = (N + BLOCK_BITS - 1) / BLOCK_BITS;
  KERNEL_LOOP(t, 1) {
    for (index_t i = 0; i < N; ++i) {
      const mask_t bit = 1ULL << (i % BLOCK_BITS);
      if (removed[i / BLOCK_BITS] & bit) { keep[i] = 0; continue; }
      keep[i] = 1;
      // Boxes before i's own block are already decided, so start OR-ing at that block.
      for (index_t cb = i / BLOCK_BITS; cb < col_blocks; ++cb) removed[cb] |= mask[i * col_blocks + cb];
    }
  }
}
