// Adam's update of one parameter (optim.Adam.step) in one pass over its four arrays, where the
// NumPy version makes about a dozen. Each element goes through the very operations of the
// NumPy code, in its order and dtype (constants rounded to the dtype as there, sqrt correctly
// rounded in both), so the weights are bit-identical (tests/speed/test_speed.py). Build without
// -ffast-math; the baseline x86-64 target has no FMA to contract a product into a sum.
#include <cmath>

typedef long long i64;

namespace {

template <typename T>
void adam(T* p, const T* g, T* m, T* v, i64 n, T one_minus_b1, T b1, T b2, T c2, T eps, T step) {
    for (i64 i = 0; i < n; ++i) {
        T work = g[i] * one_minus_b1;                  // work = (1 - b1) g
        m[i] = m[i] * b1 + work;                       // m = b1 m + work   (two roundings)
        work = work * g[i];
        work = work * c2;                              // ((1 - b2) / (1 - b1)) (1 - b1) g^2
        v[i] = v[i] * b2 + work;
        work = std::sqrt(v[i]) + eps;
        work = m[i] / work;
        p[i] = p[i] - work * step;
    }
}

}  // namespace

#define EXPORT(suffix, T)                                                                      \
    extern "C" void adam_##suffix(T* p, const T* g, T* m, T* v, i64 n, double one_minus_b1,    \
                                  double b1, double b2, double c2, double eps, double step) {  \
        adam<T>(p, g, m, v, n, T(one_minus_b1), T(b1), T(b2), T(c2), T(eps), T(step));         \
    }

EXPORT(f32, float)
EXPORT(f64, double)
