// What the compiler-only FFI handlers (adam.cc, batch_norm_sums.cc, frame_stack.cc) share: work
// split into chunks over XLA's intra-op thread pool, the handler returning at once with a
// future, and a future that has already failed. Each library gets its own copy (everything here
// is internal to the including file); pisa_jax/native/build.py's load_handlers hashes this file
// into every build.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace {

namespace pool_chunks_ffi = xla::ffi;

// A future that has failed with `message` (an invalid argument).
inline pool_chunks_ffi::Future Failed(const char* message) {
  pool_chunks_ffi::Promise failed;
  failed.SetError(
      pool_chunks_ffi::Error(pool_chunks_ffi::ErrorCode::kInvalidArgument, message));
  return pool_chunks_ffi::Future(failed);
}

// Runs chunk(i) for every i in [0, chunks), chunk 0 on the calling thread and the others on
// `pool`, then finish() on the thread whose chunk ended last; the future completes after it.
template <typename Chunk, typename Finish>
pool_chunks_ffi::Future RunChunks(pool_chunks_ffi::ThreadPool pool, int64_t chunks, Chunk chunk,
                                  Finish finish) {
  struct State {
    explicit State(int64_t n) : remaining(n) {}
    std::atomic<int64_t> remaining;
    pool_chunks_ffi::Promise done;
  };
  auto state = std::make_shared<State>(chunks);
  pool_chunks_ffi::Future result(state->done);
  auto run = [state, chunk, finish](int64_t i) {
    chunk(i);
    if (state->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      finish();
      state->done.SetAvailable();
    }
  };
  for (int64_t i = 1; i < chunks; ++i) pool.Schedule([run, i]() { run(i); });
  run(0);
  return result;
}

}  // namespace
