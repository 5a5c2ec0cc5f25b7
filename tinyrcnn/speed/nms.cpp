// Greedy non-maximum suppression over boxes sorted by decreasing score (speed/nms.py): the
// loop of boxes.nms, one kept box at a time, without NumPy's per-call costs. The IoU is the
// reference's formula in the boxes' dtype, operation for operation, NumPy's NaN propagation of
// minimum/maximum included, so the same boxes are kept (tests/speed/test_speed.py). Build
// without -ffast-math.
#include <cmath>

typedef long long i64;

namespace {

template <typename T>
inline T minimum(T a, T b) { return (std::isnan(a) || std::isnan(b)) ? NAN : (a < b ? a : b); }

template <typename T>
inline T maximum(T a, T b) { return (std::isnan(a) || std::isnan(b)) ? NAN : (a > b ? a : b); }

// keep[0..*kept) = positions (in the sorted order) of the kept boxes; at most `limit`.
template <typename T>
void greedy(const T* x1, const T* y1, const T* x2, const T* y2, const T* areas, i64 n, T thresh,
            i64 limit, unsigned char* suppressed, i64* keep, i64* kept) {
    i64 k = 0;
    for (i64 i = 0; i < n && k < limit; ++i) {
        if (suppressed[i]) continue;
        keep[k++] = i;
        for (i64 j = i + 1; j < n; ++j) {
            if (suppressed[j]) continue;
            const T w = maximum(minimum(x2[i], x2[j]) - maximum(x1[i], x1[j]) + T(1), T(0));
            const T h = maximum(minimum(y2[i], y2[j]) - maximum(y1[i], y1[j]) + T(1), T(0));
            const T inter = w * h;
            const T iou = inter / ((areas[i] + areas[j]) - inter);
            if (iou > thresh) suppressed[j] = 1;          // a NaN IoU suppresses nothing
        }
    }
    *kept = k;
}

}  // namespace

#define EXPORT(suffix, T)                                                                        \
    extern "C" void nms_##suffix(const T* x1, const T* y1, const T* x2, const T* y2,             \
                                 const T* areas, i64 n, double thresh, i64 limit,               \
                                 unsigned char* suppressed, i64* keep, i64* kept) {             \
        greedy<T>(x1, y1, x2, y2, areas, n, T(thresh), limit, suppressed, keep, kept);           \
    }

EXPORT(f32, float)
EXPORT(f64, double)
