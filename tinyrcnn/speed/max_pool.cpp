// Max pooling over 2x2 windows with stride 2 (speed/layers.py), one pass over memory each way.
// layers.py's NumPy version makes about ten passes (three maxima, three comparisons, masked
// writes) over VGG16's largest maps. Forward keeps, per output, the position 0..3 of the first
// maximum in its window (row-major), as `ops.pool`'s argmax does, and takes y from there: the
// reference's values and winners exactly. A NaN anywhere in a window sets *nan, and the caller
// hands the whole map to the reference. Backward writes gy to each window's winner and zero
// everywhere else (an odd last row or column included), as the reference's assignment does.
//
// Shapes (C-contiguous): x, gx (P, H, W), y, gy, win (P, Ho, Wo) with Ho = H / 2, Wo = W / 2;
// each call covers planes p0 <= p < p1, so two threads can split a map.
typedef long long i64;

namespace {

template <typename T>
void forward(const T* x, T* y, signed char* win, i64 H, i64 W, i64 Ho, i64 Wo, i64 p0, i64 p1,
             i64* nan) {
    for (i64 p = p0; p < p1; ++p)
        for (i64 i = 0; i < Ho; ++i) {
            const T* top = x + (p * H + 2 * i) * W;
            const T* bottom = top + W;
            T* yr = y + (p * Ho + i) * Wo;
            signed char* wr = win + (p * Ho + i) * Wo;
            bool seen = false;
            for (i64 j = 0; j < Wo; ++j) {                // selects, no branches: vectorised
                const T a = top[2 * j], b = top[2 * j + 1];
                const T c = bottom[2 * j], d = bottom[2 * j + 1];
                seen |= (a != a) | (b != b) | (c != c) | (d != d);
                T m = a;
                signed char k = 0;
                k = b > m ? 1 : k;                        // strictly greater: the first wins
                m = b > m ? b : m;
                k = c > m ? 2 : k;
                m = c > m ? c : m;
                k = d > m ? 3 : k;
                m = d > m ? d : m;
                yr[j] = m;
                wr[j] = k;
            }
            if (seen)
                *nan = 1;                                 // the reference decides
        }
}

template <typename T>
void backward(const T* gy, const signed char* win, T* gx, i64 H, i64 W, i64 Ho, i64 Wo, i64 p0,
              i64 p1) {
    for (i64 p = p0; p < p1; ++p) {
        T* plane = gx + p * H * W;
        for (i64 r = 0; r < H; ++r)
            for (i64 c = 0; c < W; ++c)
                plane[r * W + c] = T(0);
        for (i64 i = 0; i < Ho; ++i) {
            const T* gr = gy + (p * Ho + i) * Wo;
            const signed char* wr = win + (p * Ho + i) * Wo;
            T* top = plane + 2 * i * W;
            for (i64 j = 0; j < Wo; ++j) {
                const int k = wr[j];
                top[(k >> 1) * W + 2 * j + (k & 1)] = gr[j];
            }
        }
    }
}

}  // namespace

#define EXPORT(suffix, T)                                                                      \
    extern "C" void max_pool_2x2_##suffix(const T* x, T* y, signed char* win, i64 H, i64 W,    \
                                          i64 Ho, i64 Wo, i64 p0, i64 p1, i64* nan) {          \
        forward<T>(x, y, win, H, W, Ho, Wo, p0, p1, nan);                                      \
    }                                                                                          \
    extern "C" void max_pool_2x2_backward_##suffix(const T* gy, const signed char* win, T* gx, \
                                                   i64 H, i64 W, i64 Ho, i64 Wo, i64 p0,       \
                                                   i64 p1) {                                   \
        backward<T>(gy, win, gx, H, W, Ho, Wo, p0, p1);                                        \
    }

EXPORT(f32, float)
EXPORT(f64, double)
