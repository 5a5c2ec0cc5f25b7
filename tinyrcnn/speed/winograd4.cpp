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
//
// Each stage of a transform is one loop over a row of tiles (or of padded columns) that loads
// a tile's terms, applies a whole matrix (`apply`) and stores its results: the coefficients are
// compile-time constants, so the compiler unrolls `apply` into straight-line arithmetic and
// vectorises the loop across tiles.
#include <algorithm>
#include <vector>

typedef long long i64;

namespace {

constexpr int BT[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                          {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr int AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0},
                          {0, 1, -1, 8, -8, 1}};

// The matrices as `apply` reads them: R results from S terms, coefficient c(r, s).
struct Bt { enum { R = 6, S = 6 }; static constexpr int c(int r, int s) { return BT[r][s]; } };
struct B { enum { R = 6, S = 6 }; static constexpr int c(int r, int s) { return BT[s][r]; } };
struct At { enum { R = 4, S = 6 }; static constexpr int c(int r, int s) { return AT[r][s]; } };
struct A { enum { R = 6, S = 4 }; static constexpr int c(int r, int s) { return AT[s][r]; } };

// out[r] = sum over s of c(r, s) * in[s], in _combine's order.
template <class Mat, typename T>
inline void apply(const T* in, T* out) {
#pragma GCC unroll 6
    for (int r = 0; r < Mat::R; ++r) {
        T acc = T(0);
        bool first = true;
#pragma GCC unroll 6
        for (int s = 0; s < Mat::S; ++s) {
            const int c = Mat::c(r, s);
            if (c == 0) continue;
            if (first) acc = in[s] * T(c);
            else if (c == 1) acc = acc + in[s];
            else if (c == -1) acc = acc - in[s];
            else acc = acc + in[s] * T(c);
            first = false;
        }
        out[r] = acc;
    }
}

// dst[r][j] = (Mat applied to src[0..S)[j])[r] for j < n; src[s] and dst[r] are row pointers,
// and no dst row overlaps a src row (which `ivdep` lets the compiler assume).
template <class Mat, typename T>
inline void apply_rows(const T* const* src, T* const* dst, i64 n) {
#pragma GCC ivdep
    for (i64 j = 0; j < n; ++j) {
        T in[Mat::S], out[Mat::R];
        for (int s = 0; s < Mat::S; ++s) in[s] = src[s][j];
        apply<Mat>(in, out);
        for (int r = 0; r < Mat::R; ++r) dst[r][j] = out[r];
    }
}

template <typename T>
void input_tiles(const T* x, T* V, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                 i64 c0, i64 c1) {
    const i64 Wp = 4 * Tw + 2, tiles = N * Th * Tw, plane = C * tiles;
    const i64 lo = std::max<i64>(0, -p), hi = std::min(W, Wp - p);   // the columns inside
    std::vector<T> d(6 * Wp), t(6 * Wp), cols(6 * Tw);
    const T *rows[6], *tc[6];
    T *tk[6], *v[6];
    for (int q = 0; q < 6; ++q) rows[q] = &d[q * Wp], tk[q] = &t[q * Wp], tc[q] = &cols[q * Tw];
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            const T* xc = x + (n * C + c) * H * W;
            for (i64 i = 0; i < Th; ++i) {
                for (int k = 0; k < 6; ++k) {                 // padded rows 4i+k, zeros outside
                    T* row = &d[k * Wp];
                    const i64 r = 4 * i + k - p;
                    if (r >= 0 && r < H && lo < hi) {
                        std::fill(row, row + lo + p, T(0));
                        std::copy(xc + r * W + lo, xc + r * W + hi, row + lo + p);
                        std::fill(row + hi + p, row + Wp, T(0));
                    } else {
                        std::fill(row, row + Wp, T(0));
                    }
                }
                apply_rows<Bt>(rows, tk, Wp);                 // B^T along the tile's rows
                const i64 base = c * tiles + (n * Th + i) * Tw;
                for (int k = 0; k < 6; ++k) {                 // ... and along its columns
                    for (int q = 0; q < 6; ++q)               // column q of every tile
                        for (i64 j = 0; j < Tw; ++j) cols[q * Tw + j] = t[k * Wp + 4 * j + q];
                    for (int l = 0; l < 6; ++l) v[l] = V + (6 * k + l) * plane + base;
                    apply_rows<Bt>(tc, v, Tw);
                }
            }
        }
}

template <typename T>
void output_tiles(const T* M, const T* b, T* y, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                  i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles, whole = std::min(Tw, Wo / 4);
    std::vector<T> r(24 * Tw), o(4 * Tw);                   // r[q][l][j], o[s][j]
    const T *m[6], *rq[6];
    T *rl[4], *os[4] = {&o[0], &o[Tw], &o[2 * Tw], &o[3 * Tw]};
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                const T* base = M + k * tiles + (n * Th + i) * Tw;
                for (int l = 0; l < 6; ++l) {                 // A^T along the tile's rows
                    for (int kk = 0; kk < 6; ++kk) m[kk] = base + (6 * kk + l) * plane;
                    for (int q = 0; q < 4; ++q) rl[q] = &r[(6 * q + l) * Tw];
                    apply_rows<At>(m, rl, Tw);
                }
                for (int q = 0; q < 4 && 4 * i + q < Ho; ++q) {   // ... and its columns, into y
                    for (int l = 0; l < 6; ++l) rq[l] = &r[(6 * q + l) * Tw];
                    T* out = y + ((n * K + k) * Ho + 4 * i + q) * Wo;
                    apply_rows<At>(rq, os, Tw);
                    if (b)
                        for (int s = 0; s < 4; ++s)
                            for (i64 j = 0; j < Tw; ++j) os[s][j] = os[s][j] + b[k];
                    for (i64 j = 0; j < whole; ++j)           // column s of every whole tile
                        for (int s = 0; s < 4; ++s) out[4 * j + s] = os[s][j];
                    for (i64 col = 4 * whole; col < Wo; ++col) out[col] = os[col % 4][col / 4];
                }
            }
}

template <typename T>
void output_tiles_adjoint(const T* gy, T* gM, i64 N, i64 K, i64 Ho, i64 Wo, i64 Th, i64 Tw,
                          i64 k0, i64 k1) {
    const i64 tiles = N * Th * Tw, plane = K * tiles, whole = std::min(Tw, Wo / 4);
    std::vector<T> g(16 * Tw), r(24 * Tw);                  // g[q][s][j], r[kk][s][j]
    const T *gq[4], *rk[4];
    T *rs[6], *out[6];
    for (i64 k = k0; k < k1; ++k)
        for (i64 n = 0; n < N; ++n)
            for (i64 i = 0; i < Th; ++i) {
                std::fill(g.begin(), g.end(), T(0));
                for (int q = 0; q < 4 && 4 * i + q < Ho; ++q) {
                    const T* row = gy + ((n * K + k) * Ho + 4 * i + q) * Wo;
                    for (int s = 0; s < 4; ++s)               // column s of every whole tile
                        for (i64 j = 0; j < whole; ++j) g[(4 * q + s) * Tw + j] = row[4 * j + s];
                    for (i64 col = 4 * whole; col < Wo; ++col)     // a cropped last tile
                        g[(4 * q + col % 4) * Tw + col / 4] = row[col];
                }
                for (int s = 0; s < 4; ++s) {                 // A along the tile's rows
                    for (int q = 0; q < 4; ++q) gq[q] = &g[(4 * q + s) * Tw];
                    for (int kk = 0; kk < 6; ++kk) rs[kk] = &r[(4 * kk + s) * Tw];
                    apply_rows<A>(gq, rs, Tw);
                }
                T* base = gM + k * tiles + (n * Th + i) * Tw;
                for (int kk = 0; kk < 6; ++kk) {              // ... and along its columns
                    for (int s = 0; s < 4; ++s) rk[s] = &r[(4 * kk + s) * Tw];
                    for (int l = 0; l < 6; ++l) out[l] = base + (6 * kk + l) * plane;
                    apply_rows<A>(rk, out, Tw);
                }
            }
}

template <typename T>
void input_tiles_adjoint(const T* gV, T* gx, i64 N, i64 C, i64 H, i64 W, i64 p, i64 Th, i64 Tw,
                         i64 c0, i64 c1) {
    const i64 Wp = 4 * Tw + 2, Hp = 4 * Th + 2, tiles = N * Th * Tw, plane = C * tiles;
    std::vector<T> u(6 * Th * Wp), d(Hp * Wp), s(6 * std::max(Tw, Wp));   // u[k][i][column]
    const T *g[6], *uk[6];
    T *sq[6], *dr[6];
    for (int q = 0; q < 6; ++q) sq[q] = &s[q * Tw];
    for (i64 c = c0; c < c1; ++c)
        for (i64 n = 0; n < N; ++n) {
            std::fill(u.begin(), u.end(), T(0));
            for (int k = 0; k < 6; ++k)                       // B along the tile's columns
                for (i64 i = 0; i < Th; ++i) {
                    for (int l = 0; l < 6; ++l) g[l] = gV + (6 * k + l) * plane + c * tiles + (n * Th + i) * Tw;
                    apply_rows<B>(g, sq, Tw);
                    T* row = &u[(k * Th + i) * Wp];
                    for (int q = 0; q < 6; ++q)               // overlapping tiles add, q by q
                        for (i64 j = 0; j < Tw; ++j)
                            row[4 * j + q] = row[4 * j + q] + s[q * Tw + j];
                }
            std::fill(d.begin(), d.end(), T(0));
            for (i64 i = 0; i < Th; ++i) {                    // ... and along its rows
                for (int k = 0; k < 6; ++k) uk[k] = &u[(k * Th + i) * Wp];
#pragma GCC ivdep
                for (i64 col = 0; col < Wp; ++col) {
                    T in[6], o[6];
                    for (int k = 0; k < 6; ++k) in[k] = uk[k][col];
                    apply<B>(in, o);
                    for (int r = 0; r < 6; ++r) {
                        T& out = d[(4 * i + r) * Wp + col];
                        out = out + o[r];
                    }
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
