// CPU compatibility header: lets a tinyrcnn `.cu` file build with an ordinary C++ compiler,
//   g++ -x c++ -include compat.h -Dscalar_t=double -shared -fPIC kernel.cu
// so the tests run the kernels' own source on the CPU and compare it with the NumPy path.
// It models a launch with exactly one thread (blockIdx = threadIdx = 0, blockDim = gridDim = 1):
// every KERNEL_LOOP then walks all work items sequentially, and atomics become plain updates.
// It does not emulate shared memory or __syncthreads, so kernels that are tested this way
// avoid them.
#pragma once
#include <cmath>
#include <cfloat>
#include <climits>
#include <algorithm>

struct tr_dim3 { unsigned int x, y, z; };
static const tr_dim3 threadIdx = {0, 0, 0};
static const tr_dim3 blockIdx = {0, 0, 0};
static const tr_dim3 blockDim = {1, 1, 1};
static const tr_dim3 gridDim = {1, 1, 1};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

template <typename T>
inline T atomicAdd(T* address, T value) { T old = *address; *address += value; return old; }

using std::floor; using std::ceil; using std::fmax; using std::fmin; using std::sqrt;
using std::exp; using std::log;
inline float floorf(float x) { return std::floor(x); }
inline float ceilf(float x) { return std::ceil(x); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fminf(float a, float b) { return std::fmin(a, b); }
inline double __ll2double_rn(long long x) { return (double)x; }
