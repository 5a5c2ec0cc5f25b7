// A second CPU model of a CUDA launch, with REAL threads, for finding data races.
//
// compat.h runs a launch as one thread, so a kernel that forgets an atomicAdd or a
// __syncthreads still gives the right answer there. Here a launch of gridDim x blockDim runs
// that many std::threads at once, each with its own blockIdx/threadIdx (thread_local, so the
// grid-stride loop of common.cuh hands each thread its own items), atomics are real atomics and
// __syncthreads is a barrier per block. Built with g++ -fsanitize=thread, ThreadSanitizer then
// reports any two threads touching the same memory, one of them writing, with nothing ordering
// them: exactly the bugs that on a GPU show up as rare, unrepeatable wrong numbers.
//
// kernels/cpu.py (run_threaded) builds a program from a kernel source: each
// `extern "C" __global__ void name(...)` becomes `name_body`, and a wrapper `name(...)` hands
// that body to tr_launch. Limits of the model, all of them deliberate:
//   * a __shared__ array is ONE static copy for the whole grid, which is right only for a kernel
//     whose shared memory is used by a single block (nms_reduce); two blocks using it would
//     race on it, which ThreadSanitizer reports, so the model fails loudly rather than silently;
//   * every thread of a block must reach each __syncthreads (as on the GPU), or the barrier
//     waits forever; a kernel may return early only for a whole block;
//   * atomics are relaxed, like CUDA's atomicAdd, so they order nothing else.
#pragma once
#include "compat_math.h"
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

struct tr_dim3 { unsigned int x, y, z; };
// Each thread's own coordinates, set by tr_launch before the thread runs the kernel.
inline thread_local tr_dim3 threadIdx = {0, 0, 0};
inline thread_local tr_dim3 blockIdx = {0, 0, 0};
// The launch shape: written before the threads start (thread creation orders it), then only read.
inline tr_dim3 blockDim = {1, 1, 1};
inline tr_dim3 gridDim = {1, 1, 1};
inline unsigned int tr_grid = 2, tr_block = 4;     // the shape of every launch; see tr_set_launch

// A barrier made of two atomics rather than pthread_barrier_t, for ThreadSanitizer's sake: TSan
// models a pthread barrier as one lock-like object that every phase releases into, so a thread
// that wakes late from phase p also "acquires" what faster threads did after it, in phase p + 1,
// and real races across the barrier go unreported (seen with a __syncthreads removed from
// nms_reduce). Here a thread arriving at phase p takes ticket p * count + k (acq_rel), the last
// one publishes generation p + 1 (release) and the others wait for it (acquire): each phase
// orders exactly the work before it against the work after it.
struct tr_barrier {
  std::atomic<unsigned long long> arrivals{0}, generation{0};
  unsigned long long count = 1;
  void wait() {
    const unsigned long long ticket = arrivals.fetch_add(1, std::memory_order_acq_rel);
    const unsigned long long phase = ticket / count;
    if (ticket % count == count - 1) {
      generation.store(phase + 1, std::memory_order_release);
    } else {
      // Spin (politely): a blocking wait would synchronise through a shared lock and so hide races.
      while (generation.load(std::memory_order_acquire) <= phase) std::this_thread::yield();
    }
  }
};
inline tr_barrier* tr_barriers = nullptr;          // one per block, for __syncthreads

#define __shared__ static

inline void __syncthreads() { tr_barriers[blockIdx.x].wait(); }

template <typename T>
inline T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

extern "C" void tr_set_launch(unsigned int grid, unsigned int block) {
  tr_grid = grid;
  tr_block = block;
}

// Run body() on tr_grid x tr_block threads and wait for all of them: one kernel launch.
template <typename Body>
void tr_launch(const Body& body) {
  gridDim = {tr_grid, 1, 1};
  blockDim = {tr_block, 1, 1};
  std::vector<tr_barrier> barriers(tr_grid);
  for (tr_barrier& b : barriers) b.count = tr_block;
  tr_barriers = barriers.data();
  std::vector<std::thread> threads;
  for (unsigned int b = 0; b < tr_grid; ++b) {
    for (unsigned int t = 0; t < tr_block; ++t) {
      threads.emplace_back([&body, b, t] {
        blockIdx = {b, 0, 0};
        threadIdx = {t, 0, 0};
        body();
      });
    }
  }
  for (std::thread& t : threads) t.join();
}

// ----- the host side of a test program (written by kernels/cpu.py) -----------------------------
// All arrays of a run live in one buffer, read from a file before the launches and written back
// after them; a tr_ptr converts to whatever pointer type the kernel parameter has.
struct tr_ptr {
  void* p;
  template <typename T> operator T*() const { return static_cast<T*>(p); }
};

inline std::vector<char> tr_read(const char* path) {
  std::vector<char> data;
  FILE* f = std::fopen(path, "rb");
  if (!f) { std::perror(path); std::exit(2); }
  char chunk[1 << 16];
  for (size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) data.insert(data.end(), chunk, chunk + n);
  std::fclose(f);
  return data;
}

inline void tr_write(const char* path, const std::vector<char>& data) {
  FILE* f = std::fopen(path, "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size()) { std::perror(path); std::exit(2); }
  std::fclose(f);
}
