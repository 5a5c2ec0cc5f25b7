// CPU compatibility header: lets a tinyrcnn `.cu` file build with an ordinary C++ compiler,
//   g++ -x c++ -include compat.h -Dscalar_t=double -shared -fPIC kernel.cu
// so the tests run the kernels' own source on the CPU and compare it with the NumPy path.
// It models a launch as exactly one thread (blockIdx = threadIdx = 0, blockDim = gridDim = 1):
// every KERNEL_LOOP then walks all work items sequentially, atomics become plain updates, a
// __shared__ array is one static copy and __syncthreads has no one to wait for. A kernel is
// correct in this model when one thread doing every block-stride item of block 0 gives the
// answer, which is how the kernels are written (see common.cuh). Races need real threads:
// compat_threads.h is the model for that.
#pragma once
#include "compat_math.h"

struct tr_dim3 { unsigned int x, y, z; };
static const tr_dim3 threadIdx = {0, 0, 0};
static const tr_dim3 blockIdx = {0, 0, 0};
static const tr_dim3 blockDim = {1, 1, 1};
static const tr_dim3 gridDim = {1, 1, 1};

#define __shared__ static
inline void __syncthreads() {}

template <typename T>
inline T atomicAdd(T* address, T value) { T old = *address; *address += value; return old; }
