// The part of a CUDA source that both CPU models of a launch need (compat.h: one thread;
// compat_threads.h: real threads): the qualifiers vanish and the device maths functions map onto
// the C++ standard library. Nothing here decides how threads are modelled.
#pragma once
#include <cmath>
#include <cfloat>
#include <climits>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

using std::floor; using std::ceil; using std::fmax; using std::fmin; using std::sqrt;
using std::exp; using std::log;
inline float floorf(float x) { return std::floor(x); }
inline float ceilf(float x) { return std::ceil(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline double __ll2double_rn(long long x) { return (double)x; }
// 1 + the position of the lowest set bit, 0 for 0 (CUDA's and POSIX's ffs convention).
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
