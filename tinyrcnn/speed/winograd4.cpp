// The four tile transforms of Winograd's F(4x4, 3x3) (speed/winograd4.py), each one pass over
// memory. Every value is made by winograd4.py's `_combine` sequence: the first nonzero term as
// c * t, then + t, - t or + (c * t), left to right. Built with -ffp-contract=off (no fused
// multiply-adds) and without -ffast-math, the results are bit-identical to the NumPy version
// (tests/speed/test_winograd4.py).
//
// Shapes (C-contiguous), with Th x Tw tiles of 4x4 outputs and T = N * Th * Tw tiles:
//   x, gx (N, C, H, W)    V, gV (36, C, T)    M, gM (36, K, T)    y, gy (N, K, Ho, Wo)
// Tile (n, i, j) reads rows 4i..4i+5 and columns 4j..4j+5 of the input padded by p (zeros).
// Each function covers channels c0 <= c < c1, so two threads can split a layer.
#include <algorithm>
#include <vector>

typedef long long i64;

namespace {

const int BT[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
const int AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0},
                      {0, 1, -1, 8, -8, 1}};

// out[j] = sum over k of c[k] * term[k][j], j < n, in _combine's order. c[k] is read with a
// stride (a row or a column of BT or AT).
template <typename T>
void combine(const int* c, int stride, int terms, const T* const* term, T* out, i64 n) {
    bool first = true;
    for (int k = 0; k < terms; ++k) {
        const int ck = c[k * stride];
        const T* t = term[k];
        if (ck == 0) continue;
        const T s = T(ck);
        if (first)
            for (i64 j = 0; j < n; ++j) out[j] = t[j] * s;
        else if (ck == 1)
            for (i64 j = 0; j < n; ++j) out[j] = out[j] + t[j];
        else if (ck == -1)
            for (i64 j = 0; j < n; ++j) out[j] = out[j] - t[j];
        else
            for (i64 j = 0; j < n; ++j) out[j] = out[j] + t[j] * s;
        first = false;
    }
}

// For each of a row's Tw tiles, its 6 columns split into 6 rows of Tw: cols[q][j] = row[4j + q].
template <typename T>
void columns_of(const T* row, i64 Tw, T* cols) {
    for (int q = 0; q < 6; ++q)
        for (i64 j = 0; j < Tw; ++j) cols[q * Tw + j] = row[4 * j + q];
}

template <typename T>
void input_tiles(const T* x, T* V, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                 i64 c0, i64 c1) {
    const i64 Wp = 4 * Tw + 2, tiles = N * Th * Tw, plane = C * tiles;
    std::vector<T> d(6 * Wp), t(6 * Wp), cols(6 * Tw);
    const T *rows[6], *tc[6];
    for (int q = 0; q < 6; ++q) rows[q] = &d[q * Wp], tc[q] = &cols[q * Tw];
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            const T* xc = x + (n * C + c) * H * W;
            for (i64 i = 0; i < Th; ++i) {
                for (int k = 0; k < 6; ++k) {                 // padded rows 4i+k, zeros outside
                    T* row = &d[k * Wp];
                    const i64 r = 4 * i + k - p;
                    std::fill(row, row + Wp, T(0));
                    if (r >= 0 && r < H)
                        for (i64 col = std::max<i64>(0, -p); col < W && col + p < Wp; ++col)
                            row[col + p] = xc[r * W + col];
                }
                const i64 base = c * tiles + (n * Th + i) * Tw;
                for (int k = 0; k < 6; ++k) {                 // B^T along the tile's rows
                    combine(BT[k], 1, 6, rows, &t[k * Wp], Wp);
                    columns_of(&t[k * Wp], Tw, &cols[0]);
                    for (int l = 0; l < 6; ++l)               // ... and along its columns
                        combine(BT[l], 1, 6, tc, V + (6 * k + l) * plane + base, Tw);
                }
            }
        }
}

template <typename T>
void output_tiles(const T* M, const T* b, T* y, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                  i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles;
    std::vector<T> r(24 * Tw), o(Tw);                       // r[q][l][j]
    const T *m[6], *rq[6];
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                const T* base = M + k * tiles + (n * Th + i) * Tw;
                for (int q = 0; q < 4; ++q)                   // A^T along the tile's rows
                    for (int l = 0; l < 6; ++l) {
                        for (int kk = 0; kk < 6; ++kk) m[kk] = base + (6 * kk + l) * plane;
                        combine(AT[q], 1, 6, m, &r[(6 * q + l) * Tw], Tw);
                    }
                for (int q = 0; q < 4 && 4 * i + q < Ho; ++q) {   // ... and its columns, into y
                    for (int l = 0; l < 6; ++l) rq[l] = &r[(6 * q + l) * Tw];
                    T* out = y + ((n * K + k) * Ho + 4 * i + q) * Wo;
                    for (int s = 0; s < 4; ++s) {
                        combine(AT[s], 1, 6, rq, &o[0], Tw);
                        if (b)
                            for (i64 j = 0; j < Tw; ++j) o[j] = o[j] + b[k];
                        for (i64 j = 0; j < Tw && 4 * j + s < Wo; ++j) out[4 * j + s] = o[j];
                    }
                }
            }
}

template <typename T>
void output_tiles_adjoint(const T* gy, T* gM, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                          i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles;
    std::vector<T> g(16 * Tw), r(24 * Tw);                  // g[q][s][j], r[kk][s][j]
    const T *gq[4], *rk[4];
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                std::fill(g.begin(), g.end(), T(0));
                for (int q = 0; q < 4 && 4 * i + q < Ho; ++q) {
                    const T* row = gy + ((n * K + k) * Ho + 4 * i + q) * Wo;
                    for (i64 col = 0; col < Wo; ++col) g[(4 * q + col % 4) * Tw + col / 4] = row[col];
                }
                for (int s = 0; s < 4; ++s) {                 // A along the tile's rows
                    for (int q = 0; q < 4; ++q) gq[q] = &g[(4 * q + s) * Tw];
                    for (int kk = 0; kk < 6; ++kk)
                        combine(&AT[0][kk], 6, 4, gq, &r[(4 * kk + s) * Tw], Tw);
                }
                T* out = gM + k * tiles + (n * Th + i) * Tw;
                for (int kk = 0; kk < 6; ++kk) {              // ... and along its columns
                    for (int s = 0; s < 4; ++s) rk[s] = &r[(4 * kk + s) * Tw];
                    for (int l = 0; l < 6; ++l)
                        combine(&AT[0][l], 6, 4, rk, out + (6 * kk + l) * plane, Tw);
                }
            }
}

template <typename T>
void input_tiles_adjoint(const T* gV, T* gx, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                         i64 c0, i64 c1) {
    const i64 Wp = 4 * Tw + 2, Hp = 4 * Th + 2, tiles = N * Th * Tw, plane = C * tiles;
    std::vector<T> u(6 * Th * Wp), d(Hp * Wp), s(std::max(Tw, Wp));   // u[k][i][column]
    const T *g[6], *uk[6];
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            std::fill(u.begin(), u.end(), T(0));
            for (int k = 0; k < 6; ++k)                       // B along the tile's columns
                for (i64 i = 0; i < Th; ++i) {
                    for (int l = 0; l < 6; ++l) g[l] = gV + (6 * k + l) * plane + c * tiles + (n * Th + i) * Tw;
                    T* row = &u[(k * Th + i) * Wp];
                    for (int q = 0; q < 6; ++q) {
                        combine(&BT[0][q], 6, 6, g, &s[0], Tw);
                        for (i64 j = 0; j < Tw; ++j) row[4 * j + q] = row[4 * j + q] + s[j];
                    }
                }
            std::fill(d.begin(), d.end(), T(0));
            for (i64 i = 0; i < Th; ++i) {                    // ... and along its rows
                for (int k = 0; k < 6; ++k) uk[k] = &u[(k * Th + i) * Wp];
                for (int r = 0; r < 6; ++r) {
                    combine(&BT[0][r], 6, 6, uk, &s[0], Wp);
                    T* row = &d[(4 * i + r) * Wp];
                    for (i64 col = 0; col < Wp; ++col) row[col] = row[col] + s[col];
                }
            }
            for (i64 h = 0; h < H; ++h)
                std::copy(&d[(h + p) * Wp + p], &d[(h + p) * Wp + p] + W, gx + ((n * C + c) * H + h) * W);
        }
}

}  // namespace

#define EXPORT(suffix, T)                                                                         \
    extern "C" void winograd4_input_##suffix(const T* x, T* V, i64 N, i64 C, i64 H, i64 W, i64 p,\
                                             i64 Th, i64 Tw, i64 c0, i64 c1) {                   \
        input_tiles<T>(x, V, N, C, H, W, p, Th, Tw, c0, c1);                                     \
    }                                                                                             \
    extern "C" void winograd4_output_##suffix(const T* M, const T* b, T* y, i64 N, i64 K, i64 Ho, \
                                              i64 Wo, i64 Th, i64 Tw, i64 k0, i64 k1) {           \
        output_tiles<T>(M, b, y, N, K, Ho, Wo, Th, Tw, k0, k1);                                  \
    }                                                                                             \
    extern "C" void winograd4_output_adjoint_##suffix(const T* gy, T* gM, i64 N, i64 K, i64 Ho,   \
                                                      i64 Wo, i64 Th, i64 Tw, i64 k0, i64 k1) {   \
        output_tiles_adjoint<T>(gy, gM, N, K, Ho, Wo, Th, Tw, k0, k1);                           \
    }                                                                                             \
    extern "C" void winograd4_input_adjoint_##suffix(const T* gV, T* gx, i64 N, i64 C, i64 H,     \
                                                     i64 W, i64 p, i64 Th, i64 Tw, i64 c0,        \
                                                     i64 c1) {                                    \
        input_tiles_adjoint<T>(gV, gx, N, C, H, W, p, Th, Tw, c0, c1);                           \
    }

EXPORT(f32, float)
EXPORT(f64, double)
