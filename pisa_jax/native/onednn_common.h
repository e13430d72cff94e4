// What the oneDNN handlers (onednn_conv.cc, onednn_pool.cc) share: the engine, primitive cache
// keys, and the mapping from XLA FFI buffers to oneDNN's dims and data types. Each library gets
// its own copy (everything here is internal to the including file).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dims = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;
using Any = ffi::AnyBuffer;
using Out = ffi::Result<ffi::AnyBuffer>;
using Ints = ffi::Span<const int64_t>;

// OpenMP's, from the runtime oneDNN's OpenMP builds link (the wheels': libgomp). Weak: with a
// oneDNN of another threading runtime they are null, and the thread counts below are left alone.
extern "C" int omp_get_max_threads() __attribute__((weak));
extern "C" void omp_set_num_threads(int) __attribute__((weak));

namespace {

// OpenMP's thread count for a parallel region as the process started with it (OMP_NUM_THREADS,
// else the cores it may use), read while the library loads, before any call has set its own.
const int kAllThreads = omp_get_max_threads ? omp_get_max_threads() : 1;

// The OpenMP team size of this thread's next parallel region (oneDNN's next primitive).
void UseThreads(int threads) {
  if (omp_set_num_threads) omp_set_num_threads(threads);
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A primitive's cache key: its kind, its data types and every dims list it is made from.
std::string Key(int kind, std::initializer_list<dt> types,
                std::initializer_list<const dims*> parts) {
  std::string key = std::to_string(kind);
  for (dt t : types) key += ':' + std::to_string(static_cast<int>(t));
  for (const dims* d : parts) {
    key += '|';
    for (auto v : *d) key += std::to_string(v) + ',';
  }
  return key;
}

// An activation's dims -> oneDNN's logical order (N, C, D, H, W): NDHWC for `spatial` 3; for
// `spatial` 2, [..., H, W, C] as D = 1, every leading dim a batch one (frames [N, T, H, W, C]
// are N * T images), so that the caller need not reshape: XLA CPU writes a copy of a bfloat16
// operand for a reshape between two custom calls. Empty where the rank does not fit.
dims Activation(Ints d, int spatial = 3) {
  const size_t rank = d.size();
  if (spatial == 3) return rank == 5 ? dims{d[0], d[4], d[1], d[2], d[3]} : dims{};
  if (spatial != 2 || rank < 3) return {};
  int64_t batch = 1;
  for (size_t i = 0; i + 3 < rank; ++i) batch *= d[i];
  return {batch, d[rank - 1], 1, d[rank - 3], d[rank - 2]};
}

// DHWIO -> (O, I, D, H, W); a 2D convolution's HWIO -> (O, I, 1, H, W); empty otherwise.
dims Kernel(Ints d) {
  if (d.size() == 5) return {d[4], d[3], d[0], d[1], d[2]};
  if (d.size() == 4) return {d[3], d[2], 1, d[0], d[1]};
  return {};
}
dims Vector(Ints v) { return dims(v.begin(), v.end()); }

// oneDNN's type for a buffer's (float32 or bfloat16; `Supported` refuses anything else first).
dt Type(ffi::DataType type) { return type == ffi::DataType::BF16 ? dt::bf16 : dt::f32; }

bool Supported(ffi::DataType type) {
  return type == ffi::DataType::F32 || type == ffi::DataType::BF16;
}

}  // namespace
