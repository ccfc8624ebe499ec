// Helpers shared by the CPU kernels: threads, aligned buffers, output
// poisoning. Plain C++ with no vector types, so any translation unit may
// include it (the bindings do, for num_threads()); the SIMD helpers are in
// vec.h, which only the kernel sources include.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <thread>
#include <vector>

namespace mmkeras {

// Threads the kernels use (MMKERAS_NUM_THREADS, else all hardware threads).
inline int num_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("MMKERAS_NUM_THREADS")) {
      int v = std::atoi(env);
      if (v > 0) return v;
    }
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

// A framework's thread pool, lent to the kernels for the calls of one
// thread (ScopedTaskPool): a framework whose pool threads wait by spinning
// (TensorFlow's) would otherwise take the cores from threads of ours.
class TaskPool {
 public:
  virtual ~TaskPool() = default;
  virtual int num_threads() const = 0;
  // Runs work(i) for every i in [0, n) and returns when all are done.
  virtual void run(int64_t n, const std::function<void(int64_t)>& work) = 0;
};

// The pool lent to the calling thread, or nullptr (defined in dispatch.cc,
// so that an adapter and the kernel library see the same one).
TaskPool* task_pool();
void set_task_pool(TaskPool* pool);

// Lends `pool` to the kernels this thread calls while it is in scope.
class ScopedTaskPool {
 public:
  explicit ScopedTaskPool(TaskPool* pool) : saved_(task_pool()) {
    set_task_pool(pool);
  }
  ~ScopedTaskPool() { set_task_pool(saved_); }
  ScopedTaskPool(const ScopedTaskPool&) = delete;
  ScopedTaskPool& operator=(const ScopedTaskPool&) = delete;

 private:
  TaskPool* saved_;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Runs fn(i) for i in [0, n) on up to num_threads() threads (at most
// max_workers when that is positive; the lent pool's size when there is
// one), dynamically scheduled. Without a lent pool, threads are created per
// call, which costs tens of microseconds: callers with little work pass
// max_workers = 1.
template <typename F>
void parallel_for(int64_t n, F fn, int max_workers = 0) {
  TaskPool* lent = task_pool();
  const int threads = lent ? lent->num_threads() : num_threads();
  const int64_t cap = max_workers > 0 ? std::min(max_workers, threads)
                                      : threads;
  int64_t workers = std::min<int64_t>(cap, n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t i = next++; i < n; i = next++) fn(i);
  };
  if (lent) {
    lent->run(workers, [&](int64_t) { work(); });
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int64_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// How many contiguous ranges parallel_ranges splits [0, n) into: at most one
// per thread, each of at least `grain` items (so small calls stay on the
// calling thread and pay no thread start-up).
inline int64_t num_ranges(int64_t n, int64_t grain) {
  if (n <= 0) return 0;
  const int64_t by_grain = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  return std::min<int64_t>({n, by_grain, num_threads()});
}

// Runs fn(range, lo, hi) over the num_ranges(n, grain) contiguous ranges
// [lo, hi) of [0, n), one per thread; `range` indexes per-range scratch.
template <typename F>
void parallel_ranges(int64_t n, int64_t grain, F fn) {
  const int64_t ranges = num_ranges(n, grain);
  parallel_for(ranges, [&](int64_t c) {
    fn(c, c * n / ranges, (c + 1) * n / ranges);
  });
}

// 64-byte aligned buffer of n T's, zero-filled; empty (nullptr) when n == 0.
template <typename T>
struct AlignedBuffer {
  T* ptr = nullptr;
  explicit AlignedBuffer(int64_t n) {
    if (n <= 0) return;
    size_t bytes = round_up(n * sizeof(T), 64);
    ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
    if (!ptr) throw std::bad_alloc();
    std::memset(ptr, 0, bytes);
  }
  ~AlignedBuffer() { std::free(ptr); }
  AlignedBuffer(AlignedBuffer&& other) noexcept : ptr(other.ptr) {
    other.ptr = nullptr;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};
using Buffer = AlignedBuffer<float>;

// Tests set MMKERAS_POISON_OUTPUTS=1 so that outputs start as NaN: any
// element a kernel forgets to write shows up.
inline void poison(float* data, int64_t n) {
  static const bool enabled = std::getenv("MMKERAS_POISON_OUTPUTS") != nullptr;
  if (enabled && data)
    std::fill(data, data + n, std::numeric_limits<float>::quiet_NaN());
}

}  // namespace mmkeras
