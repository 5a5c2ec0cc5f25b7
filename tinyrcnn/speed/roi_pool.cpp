// RoI max pooling on the CPU (speed/roi_pool.py). Forward reads the map channels-last,
// xt (N, H, W, C), so that each pixel of a bin updates the running maximum and argmax of all
// channels at once in one vectorised loop; each channel sees its pixels in the kernel's scan
// order (kernels/roi_pool.cu, one thread per output). The rules are the reference's
// (ops/roi_pool.py): scan order h then w, the first maximum wins (strictly greater replaces it,
// so -0 and 0 tie), the first NaN wins over everything, y is the winner's own value, an empty
// bin gives 0 and argmax -1. The bins' edges come from
// `ops.roi_pool.bin_edges`, computed in NumPy as for the reference.
//
// Backward adds each output's gradient to its winner in the reference's order (np.add.at over
// RoIs, then channel, row, column of the output), so every input pixel receives its sum in the
// same order: the same bits.
//
// Shapes (C-contiguous): xt (N, H, W, C); gx (N, C, H, W); y, gy, argmax (R, C, oh, ow);
// batch (R,); hs, he (R, oh); ws, we (R, ow). A forward call covers RoIs r0 <= r < r1, a
// backward call channels c0 <= c < c1: two threads split either.
#include <vector>

typedef long long i64;

namespace {

template <typename T>
void forward(const T* xt, const i64* batch, const i64* hs, const i64* he, const i64* ws,
             const i64* we, T* y, i64* argmax, i64 C, i64 H, i64 W, i64 oh, i64 ow, i64 r0,
             i64 r1) {
    std::vector<T> m(C);
    std::vector<int> k(C);          // h * W + w in 32 bits: roi_pool.py sends larger maps to NumPy
    for (i64 r = r0; r < r1; ++r) {
        const T* image = xt + batch[r] * H * W * C;
        for (i64 ph = 0; ph < oh; ++ph) {
            const i64 h0 = hs[r * oh + ph], h1 = he[r * oh + ph];
            for (i64 pw = 0; pw < ow; ++pw) {
                const i64 w0 = ws[r * ow + pw], w1 = we[r * ow + pw];
                T* yo = y + (r * C * oh + ph) * ow + pw;   // channel c at yo[c * oh * ow]
                i64* ao = argmax + (yo - y);
                if (h1 <= h0 || w1 <= w0) {
                    for (i64 c = 0; c < C; ++c) {
                        yo[c * oh * ow] = T(0);
                        ao[c * oh * ow] = -1;
                    }
                    continue;
                }
                const T* first = image + (h0 * W + w0) * C;
                for (i64 c = 0; c < C; ++c) {
                    m[c] = first[c];
                    k[c] = static_cast<int>(h0 * W + w0);
                }
                for (i64 h = h0; h < h1; ++h)
                    for (i64 w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
                        const T* v = image + (h * W + w) * C;
                        const int here = static_cast<int>(h * W + w);
                        for (i64 c = 0; c < C; ++c) {      // selects, no branches: vectorised
                            // a NaN already held has won; otherwise strictly greater, or NaN
                            const bool take = (m[c] == m[c]) & ((v[c] > m[c]) | (v[c] != v[c]));
                            m[c] = take ? v[c] : m[c];
                            k[c] = take ? here : k[c];
                        }
                    }
                for (i64 c = 0; c < C; ++c) {
                    yo[c * oh * ow] = m[c];
                    ao[c * oh * ow] = k[c];
                }
            }
        }
    }
}

template <typename T>
void backward(const T* gy, const i64* argmax, const i64* batch, T* gx, i64 R, i64 C, i64 H,
              i64 W, i64 bins, i64 c0, i64 c1) {
    for (i64 r = 0; r < R; ++r)
        for (i64 c = c0; c < c1; ++c) {
            T* plane = gx + (batch[r] * C + c) * H * W;
            const T* g = gy + (r * C + c) * bins;
            const i64* a = argmax + (r * C + c) * bins;
            for (i64 b = 0; b < bins; ++b)
                if (a[b] >= 0)
                    plane[a[b]] += g[b];
        }
}

}  // namespace

#define EXPORT(suffix, T)                                                                      \
    extern "C" void roi_pool_forward_##suffix(const T* xt, const i64* batch, const i64* hs,    \
                                              const i64* he, const i64* ws, const i64* we,     \
                                              T* y, i64* argmax, i64 C, i64 H, i64 W, i64 oh,  \
                                              i64 ow, i64 r0, i64 r1) {                        \
        forward<T>(xt, batch, hs, he, ws, we, y, argmax, C, H, W, oh, ow, r0, r1);             \
    }                                                                                          \
    extern "C" void roi_pool_backward_##suffix(const T* gy, const i64* argmax,                 \
                                               const i64* batch, T* gx, i64 R, i64 C, i64 H,   \
                                               i64 W, i64 bins, i64 c0, i64 c1) {              \
        backward<T>(gy, argmax, batch, gx, R, C, H, W, bins, c0, c1);                          \
    }

EXPORT(f32, float)
EXPORT(f64, double)
