// The four tile transforms of Winograd's F(2x2, 3x3) (speed/winograd.py), each one pass over
// memory: read the input once, write the output once. winograd.py's NumPy transforms make four
// to six passes over the same data; on a 2-core machine with ~10 GB/s that was a third of a
// VGG16 step. Every value is computed by the same additions, in the same order, as the NumPy
// version, so the results are bit-identical (tests/speed/test_winograd.py); build without
// -ffast-math.
//
// Shapes (C-contiguous), with Th x Tw tiles of 2x2 outputs and T = N * Th * Tw tiles:
//   x, gx (N, C, H, W)    V, gV (16, C, T)    M, gM (16, K, T)    y, gy (N, K, Ho, Wo)
// Tile (n, i, j) reads rows 2i..2i+3 and columns 2j..2j+3 of the input padded by p (zeros).
// Each function covers channels c0 <= c < c1, so two threads can split a layer.
#include <algorithm>
#include <vector>

typedef long long i64;

namespace {

// B^T along rows: the four combinations of four padded rows, for every padded column.
template <typename T>
void input_tiles(const T* x, T* V, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                 i64 c0, i64 c1) {
    const i64 Wp = 2 * Tw + 2, tiles = N * Th * Tw, plane = C * tiles;
    const i64 lo = std::max<i64>(0, -p), hi = std::min(W, Wp - p);   // the columns inside
    std::vector<T> d(4 * Wp), t(4 * Wp), e(Tw + 1), o(Tw + 1);
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            const T* xc = x + (n * C + c) * H * W;
            for (i64 i = 0; i < Th; ++i) {
                for (int k = 0; k < 4; ++k) {                 // padded rows 2i+k, zeros outside
                    T* row = &d[k * Wp];
                    const i64 r = 2 * i + k - p;
                    if (r >= 0 && r < H && lo < hi) {
                        std::fill(row, row + lo + p, T(0));
                        std::copy(xc + r * W + lo, xc + r * W + hi, row + lo + p);
                        std::fill(row + hi + p, row + Wp, T(0));
                    } else {
                        std::fill(row, row + Wp, T(0));
                    }
                }
                const T *d0 = &d[0], *d1 = &d[Wp], *d2 = &d[2 * Wp], *d3 = &d[3 * Wp];
                T *t0 = &t[0], *t1 = &t[Wp], *t2 = &t[2 * Wp], *t3 = &t[3 * Wp];
                for (i64 col = 0; col < Wp; ++col) {
                    t0[col] = d0[col] - d2[col];
                    t1[col] = d1[col] + d2[col];
                    t2[col] = d2[col] - d1[col];
                    t3[col] = d1[col] - d3[col];
                }
                const i64 base = c * tiles + (n * Th + i) * Tw;
                for (int a = 0; a < 4; ++a) {                 // ... and along columns, into V
                    const T* ta = &t[a * Wp];
                    T* v0 = V + (4 * a) * plane + base;
                    T *v1 = v0 + plane, *v2 = v1 + plane, *v3 = v2 + plane;
                    for (i64 j = 0; j <= Tw; ++j) e[j] = ta[2 * j], o[j] = ta[2 * j + 1];
#pragma GCC ivdep
                    for (i64 j = 0; j < Tw; ++j) {            // even and odd columns apart
                        v0[j] = e[j] - e[j + 1];
                        v1[j] = o[j] + e[j + 1];
                        v2[j] = e[j + 1] - o[j];
                        v3[j] = o[j] - o[j + 1];
                    }
                }
            }
        }
}

// y = A^T m A per tile (+ bias on m[1][1]); outputs past Ho x Wo are dropped. Row by row of
// tiles: A^T along the tile's rows into r (8 rows of Tw, in cache), then along its columns.
template <typename T>
void output_tiles(const T* M, const T* b, T* y, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                  i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles, pairs = Wo / 2;
    std::vector<T> r(8 * Tw), m11(Tw);
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                const T* m = M + k * tiles + (n * Th + i) * Tw;
                const T* v5 = m + 5 * plane;
                if (b) {
                    for (i64 j = 0; j < Tw; ++j) m11[j] = v5[j] + b[k];
                    v5 = &m11[0];
                }
                for (int q = 0; q < 4; ++q) {                 // A^T along the rows
                    const T *v0 = m + q * plane, *v1 = q == 1 ? v5 : m + (4 + q) * plane;
                    const T *v2 = m + (8 + q) * plane, *v3 = m + (12 + q) * plane;
                    T *r0 = &r[q * Tw], *r1 = &r[(4 + q) * Tw];
                    for (i64 j = 0; j < Tw; ++j) {
                        r0[j] = (v0[j] + v1[j]) + v2[j];
                        r1[j] = (v1[j] - v2[j]) - v3[j];
                    }
                }
                for (i64 a = 0; a < 2 && 2 * i + a < Ho; ++a) {   // ... and the columns
                    const T *r0 = &r[4 * a * Tw], *r1 = r0 + Tw, *r2 = r1 + Tw, *r3 = r2 + Tw;
                    T* o = y + ((n * K + k) * Ho + 2 * i + a) * Wo;
                    for (i64 j = 0; j < pairs; ++j) {
                        o[2 * j] = (r0[j] + r1[j]) + r2[j];
                        o[2 * j + 1] = (r1[j] - r2[j]) - r3[j];
                    }
                    if (Wo & 1) o[2 * pairs] = (r0[pairs] + r1[pairs]) + r2[pairs];
                }
            }
}

// dM = A dY A^T per tile: [g0, g1] -> [g0, g0 - (-g1), g0 + (-g1), -g1] along rows, then
// columns. The 2x2 blocks of a row of tiles are split into four rows of Tw first (zeros past
// Ho x Wo); then each of the sixteen outputs is one contiguous stream.
template <typename T>
void output_tiles_adjoint(const T* gy, T* gM, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                          i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles;
    std::vector<T> g(4 * Tw), r(8 * Tw);               // g[2 * row + column][j]; r[q][c][j]
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                std::fill(g.begin(), g.end(), T(0));
                for (i64 a = 0; a < 2 && 2 * i + a < Ho; ++a) {
                    const T* row = gy + ((n * K + k) * Ho + 2 * i + a) * Wo;
                    for (i64 j = 0; j < Wo / 2; ++j)
                        g[2 * a * Tw + j] = row[2 * j], g[(2 * a + 1) * Tw + j] = row[2 * j + 1];
                    if (Wo & 1) g[2 * a * Tw + Wo / 2] = row[Wo - 1];
                }
                for (int c = 0; c < 2; ++c) {                 // along the rows, per column
                    const T *g0 = &g[c * Tw], *g1 = &g[(2 + c) * Tw];
                    T *r0 = &r[c * Tw], *r1 = &r[(2 + c) * Tw], *r2 = &r[(4 + c) * Tw];
                    T* r3 = &r[(6 + c) * Tw];
                    for (i64 j = 0; j < Tw; ++j) {
                        r0[j] = g0[j];
                        r3[j] = -g1[j];
                        r1[j] = r0[j] - r3[j];
                        r2[j] = r0[j] + r3[j];
                    }
                }
                T* out = gM + k * tiles + (n * Th + i) * Tw;
                for (int q = 0; q < 4; ++q) {                 // ... then along the columns
                    const T *s0 = &r[2 * q * Tw], *s1 = s0 + Tw;
                    T *o0 = out + 4 * q * plane, *o1 = o0 + plane, *o2 = o1 + plane, *o3 = o2 + plane;
                    for (i64 j = 0; j < Tw; ++j) o0[j] = s0[j];
                    for (i64 j = 0; j < Tw; ++j) o3[j] = -s1[j];
                    for (i64 j = 0; j < Tw; ++j) o1[j] = s0[j] - (-s1[j]);
                    for (i64 j = 0; j < Tw; ++j) o2[j] = s0[j] + (-s1[j]);
                }
            }
}

// The adjoint of B^T's four rows t0..t3 over n tiles, as winograd._fold: tile i's rows go to
// padded rows 2i..2i+3 (even[i], odd[i], even[i+1], odd[i+1]); even and odd have n + 1
// entries, at `step` apart. Neighbouring tiles share rows and add.
template <typename T>
void fold(const T* t0, const T* t1, const T* t2, const T* t3, i64 n, T* even, T* odd, i64 step) {
    even[0] = t0[0];
    odd[0] = (t1[0] - t2[0]) + t3[0];
    for (i64 q = 1; q < n; ++q) {
        even[q * step] = (t0[q] + (t1[q - 1] + t2[q - 1])) - t0[q - 1];
        odd[q * step] = ((t1[q] - t2[q]) + t3[q]) - t3[q - 1];
    }
    even[n * step] = (T(0) + (t1[n - 1] + t2[n - 1])) - t0[n - 1];
    odd[n * step] = T(0) - t3[n - 1];
}

// dx = B dV B^T per tile, overlapping tiles added: along each tile's columns into f (all
// padded columns, for each of the tile's four rows), then along its rows, straight into gx.
template <typename T>
void input_tiles_adjoint(const T* gV, T* gx, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                         i64 c0, i64 c1) {
    const i64 Wp = 2 * Tw + 2, tiles = N * Th * Tw, plane = C * tiles;
    std::vector<T> f(4 * Th * Wp);                      // f[r][i][padded column]
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            for (int r = 0; r < 4; ++r)
                for (i64 i = 0; i < Th; ++i) {
                    const T* g = gV + 4 * r * plane + c * tiles + (n * Th + i) * Tw;
                    T* out = &f[(r * Th + i) * Wp];
                    fold(g, g + plane, g + 2 * plane, g + 3 * plane, Tw, out, out + 1, 2);
                }
            for (i64 k = 0; k <= Th; ++k) {                   // ... then along the rows
                const T *now[4], *before[4];                   // f[r][k], f[r][k - 1]
                for (int r = 0; r < 4; ++r) {
                    now[r] = &f[(r * Th + std::min(k, Th - 1)) * Wp + p];
                    before[r] = &f[(r * Th + std::max<i64>(k - 1, 0)) * Wp + p];
                }
                const i64 even = 2 * k - p, odd = even + 1;
                if (even >= 0 && even < H) {
                    T* o = gx + ((n * C + c) * H + even) * W;
                    if (k == 0)
                        for (i64 col = 0; col < W; ++col) o[col] = now[0][col];
                    else if (k < Th)
                        for (i64 col = 0; col < W; ++col)
                            o[col] = (now[0][col] + (before[1][col] + before[2][col])) - before[0][col];
                    else
                        for (i64 col = 0; col < W; ++col)
                            o[col] = (T(0) + (before[1][col] + before[2][col])) - before[0][col];
                }
                if (odd >= 0 && odd < H) {
                    T* o = gx + ((n * C + c) * H + odd) * W;
                    if (k == 0)
                        for (i64 col = 0; col < W; ++col) o[col] = (now[1][col] - now[2][col]) + now[3][col];
                    else if (k < Th)
                        for (i64 col = 0; col < W; ++col)
                            o[col] = ((now[1][col] - now[2][col]) + now[3][col]) - before[3][col];
                    else
                        for (i64 col = 0; col < W; ++col) o[col] = T(0) - before[3][col];
                }
            }
        }
}

}  // namespace

#define EXPORT(suffix, T)                                                                         \
    extern "C" void winograd_input_##suffix(const T* x, T* V, i64 N, i64 C, i64 H, i64 W, i64 p, \
                                            i64 Th, i64 Tw, i64 c0, i64 c1) {                    \
        input_tiles<T>(x, V, N, C, H, W, p, Th, Tw, c0, c1);                                     \
    }                                                                                             \
    extern "C" void winograd_output_##suffix(const T* M, const T* b, T* y, i64 N, i64 K, i64 Ho,  \
                                             i64 Wo, i64 Th, i64 Tw, i64 k0, i64 k1) {            \
        output_tiles<T>(M, b, y, N, K, Ho, Wo, Th, Tw, k0, k1);                                  \
    }                                                                                             \
    extern "C" void winograd_output_adjoint_##suffix(const T* gy, T* gM, i64 N, i64 K, i64 Ho,    \
                                                     i64 Wo, i64 Th, i64 Tw, i64 k0, i64 k1) {    \
        output_tiles_adjoint<T>(gy, gM, N, K, Ho, Wo, Th, Tw, k0, k1);                           \
    }                                                                                             \
    extern "C" void winograd_input_adjoint_##suffix(const T* gV, T* gx, i64 N, i64 C, i64 H,      \
                                                    i64 W, i64 p, i64 Th, i64 Tw, i64 c0,         \
                                                    i64 c1) {                                     \
        input_tiles_adjoint<T>(gV, gx, N, C, H, W, p, Th, Tw, c0, c1);                           \
    }

EXPORT(f32, float)
EXPORT(f64, double)
