// Shared by every tinyrcnn kernel.
//
// Each kernel is written as a grid-stride loop over its work items: thread t of the grid
// handles items t, t + T, t + 2T, ... where T is the total number of threads. On the GPU the
// launch picks the grid size; on the CPU (kernels/compat.h) there is one "thread" with T = 1,
// so the same loop visits every item in order and the same source can be tested without a GPU.
// kernels/compat_threads.h runs the loop on several real threads instead, to find races.
#pragma once

#define KERNEL_LOOP(i, n)                                                          \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);    \
       i += (long long)blockDim.x * gridDim.x)

typedef long long index_t;
