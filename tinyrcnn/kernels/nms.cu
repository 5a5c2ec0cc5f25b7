// Greedy non-maximum suppression with a bitmask (the scheme of the original Faster R-CNN GPU NMS),
// written as grid-stride / block-stride loops so that compat.h can run it on the CPU.
//
// The boxes arrive already sorted by decreasing score, so "box i may suppress box j" means j > i.
// The N boxes are split into col_blocks = ceil(N / 64) column blocks of 64; work item
// t = i * col_blocks + cb computes one 64-bit word:
//     mask[i, cb] bit b set  <=>  j = cb * 64 + b > i  and  IoU(i, j) > thresh
// (strictly greater, as in the original code and torchvision). A second kernel, nms_reduce, walks
// the boxes in score order once, on one block of threads, and keeps box i unless an earlier kept
// box set its bit.
//
// IoU must be bit-for-bit the NumPy reference (tinyrcnn/boxes.py): same +1 inclusive widths,
// same operation order, same scalar_t. On the GPU the compiler would otherwise fuse
// `a + b - w * h` into one fma (rounded once instead of twice), which flips IoUs that sit right at
// the threshold; __fmul_rn / __fdiv_rn are never contracted. On the CPU a volatile store rounds
// the product for the same reason on machines whose baseline has FMA (aarch64). CuPy compiles
// with -ftz=true (float32 subnormals read as 0), which changes nothing here: a +1 width is 0 or
// at least 2^-24, so no product or IoU of boxes of any sensible size is subnormal.
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

// The sequential half of greedy NMS, by ONE block of threads working together.
//
// Greedy NMS is sequential in the boxes (whether box i survives depends on every decision
// before it) but parallel in the words of the mask (once box i is kept, OR-ing its row into
// `removed` is col_blocks independent ORs). So the block walks the column blocks of 64 boxes in
// score order, and for each one:
//   (a) the 64 words mask[i, cb] of its boxes (the diagonal: which of the SAME 64 boxes each one
//       suppresses) are loaded into shared memory, one word per thread;
//   (b) every thread, redundantly and in registers, decides the 64 boxes one after another:
//       box i is kept unless its bit is set in removed[cb] (by a kept box of an earlier column
//       block) or in `dead` (by a kept box of this one). All threads reach the same decisions and
//       the same count, so they leave the loops together and no one is left at a barrier;
//   (c) the kept boxes of this column block suppress boxes further on: the words
//       removed[cb + 1 ..] are split among the threads, each ORs in the rows of those kept boxes.
// Two barriers per column block: before (a), so that nobody still reads the previous diagonal
// and removed[cb] is final, and after (a), so that the diagonal is there. No word of `removed`
// is ever written by two threads between two barriers, so there is no race (tested on real
// threads under ThreadSanitizer, tests/kernels/test_threads.py).
//
// It stops as soon as max_keep boxes are kept (the RPN keeps only its top 300 or 2000), and it
// writes the kept positions in score order, keep[0 .. *num_kept), so the host needs neither a
// compaction nor a pass over N flags. One thread doing every block-stride item (compat.h) is the
// same algorithm with a block of one, which is how the CPU tests run it.
//
// mask (N, col_blocks) from nms_mask; removed (col_blocks,) is scratch (zeroed here);
// keep (N,) and num_kept (1,) are written by thread 0. Launch ONE block; other blocks return.
extern "C" __global__ void nms_reduce(const mask_t* mask, const index_t N, const index_t max_keep,
                                      mask_t* removed, index_t* keep, index_t* num_kept) {
  if (blockIdx.x != 0) return;  // a whole block leaves, so no barrier below waits for it
  const index_t col_blocks = (N + BLOCK_BITS - 1) / BLOCK_BITS;
  __shared__ mask_t diag[BLOCK_BITS];
  for (index_t w = threadIdx.x; w < col_blocks; w += blockDim.x) removed[w] = 0;
  index_t count = 0;  // boxes kept so far: the same value in every thread
  for (index_t cb = 0; cb < col_blocks && count < max_keep; ++cb) {
    const index_t first = cb * BLOCK_BITS;
    const index_t n = N - first < BLOCK_BITS ? N - first : BLOCK_BITS;  // boxes in this block
    __syncthreads();
    for (index_t b = threadIdx.x; b < n; b += blockDim.x) diag[b] = mask[(first + b) * col_blocks + cb];
    __syncthreads();
    mask_t dead = removed[cb], kept = 0;
    for (index_t b = 0; b < n && count < max_keep; ++b) {
      if ((dead >> b) & 1) continue;
      kept |= 1ULL << b;
      if (threadIdx.x == 0) keep[count] = first + b;
      ++count;
      dead |= diag[b];  // box first + b suppresses later boxes of this same column block
    }
    if (count >= max_keep) break;  // nothing further will be decided, so nothing to spread
    for (index_t w = cb + 1 + threadIdx.x; w < col_blocks; w += blockDim.x) {
      mask_t r = removed[w];
      for (mask_t k = kept; k != 0; k &= k - 1) {  // each set bit of kept, lowest first
        const index_t i = first + __ffsll((long long)k) - 1;
        r |= mask[i * col_blocks + w];
      }
      removed[w] = r;
    }
  }
  if (threadIdx.x == 0) *num_kept = count;
}
