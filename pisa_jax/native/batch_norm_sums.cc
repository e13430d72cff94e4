// XLA FFI handlers (CPU): the per-channel sums of a training-mode BatchNorm, each in one pass
// over its operands. Built and loaded by pisa_jax/native/batch_norm_sums.py.
//
// XLA CPU computes each [M, C] -> [C] column sum of pisa_jax/models/batch_norm.py as its own
// loop over a materialised operand: x, then x * x written out and read again in the forward
// pass; dy, then dy * x_hat written out and read again in the backward pass. Here the forward
// reads x once and the backward reads dy and x once, without writing anything of [M, C].
//
// Sums accumulate in float32 over blocks of 32 rows, then in float64 (each chunk of rows into
// its own accumulators, the chunks added in a fixed order, so a result depends only on the
// inputs and XLA's pool size), and are rounded to float32 once, at the end.
//
// PisaBatchNormMoments: x [..., C] = [M, C] (float32 or bfloat16) -> f32[2, C] = (sum x,
//   sum x^2) over M.
// PisaBatchNormGradientSums: dy, x [..., C] (one dtype, float32 or bfloat16), mean and
//   inverse_std f32[C] -> f32[2, C] = (sum dy, sum dy * (x - mean) * inverse_std).
// PisaBatchNormReluGradientSums: the same with a third [..., C] operand, the output of a ReLU
//   after the BatchNorm, and dy the gradient of that output: the sums of dy where it is > 0 (the
//   gradient of the BatchNorm's own output), without writing that masked dy out.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "pool_chunks.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {  // bfloat16: the high half of a float32
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// sums[0, c] += x, sums[1, c] += x^2 over rows [0, rows) of x [rows, C]; or, with y,
// sums[0, c] += y, sums[1, c] += y * (x - mean) (centred, so that nothing cancels later); with
// mask too, only where mask > 0 (y is then the gradient of a ReLU's output, mask that output).
// block: float32 scratch [2, C].
template <typename T>
__attribute__((always_inline)) inline void Accumulate(int64_t rows, int64_t channels,
                                                      const T* __restrict x,
                                                      const T* __restrict y,
                                                      const T* __restrict mask,
                                                      const float* __restrict mean,
                                                      float* __restrict block,
                                                      double* __restrict sums) {
  // float32 partial sums over blocks of kBlock rows (vectorised along C, in registers or L1),
  // added into the float64 accumulators after each block.
  constexpr int64_t kBlock = 32;
  float* __restrict block_first = block;
  float* __restrict block_second = block + channels;
  for (int64_t start = 0; start < rows; start += kBlock) {
    const int64_t stop = std::min(rows, start + kBlock);
    for (int64_t c = 0; c < channels; ++c) block_first[c] = block_second[c] = 0.0f;
    if (y == nullptr) {
      for (int64_t r = start; r < stop; ++r) {
        for (int64_t c = 0; c < channels; ++c) {
          const float v = Load(x, r * channels + c);
          block_first[c] += v;
          block_second[c] += v * v;
        }
      }
    } else if (mask != nullptr) {
      for (int64_t r = start; r < stop; ++r) {
        for (int64_t c = 0; c < channels; ++c) {
          const int64_t i = r * channels + c;
          const float gradient = Load(y, i);  // loaded unconditionally, so that it vectorises
          const float dy = Load(mask, i) > 0.0f ? gradient : 0.0f;
          block_first[c] += dy;
          block_second[c] += dy * (Load(x, i) - mean[c]);
        }
      }
    } else {
      for (int64_t r = start; r < stop; ++r) {
        for (int64_t c = 0; c < channels; ++c) {
          const float dy = Load(y, r * channels + c);
          block_first[c] += dy;
          block_second[c] += dy * (Load(x, r * channels + c) - mean[c]);
        }
      }
    }
    for (int64_t c = 0; c < channels; ++c) {
      sums[c] += block_first[c];
      sums[channels + c] += block_second[c];
    }
  }
}

// The clones let one build vectorise for the CPU it runs on (AVX-512, AVX2 or SSE2).
__attribute__((target_clones("avx512f", "avx2", "default")))
void AccumulateF32(int64_t rows, int64_t channels, const float* x, const float* y,
                   const float* mask, const float* mean, float* block, double* sums) {
  Accumulate(rows, channels, x, y, mask, mean, block, sums);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void AccumulateBF16(int64_t rows, int64_t channels, const uint16_t* x, const uint16_t* y,
                    const uint16_t* mask, const float* mean, float* block, double* sums) {
  Accumulate(rows, channels, x, y, mask, mean, block, sums);
}

// At least this many elements per chunk, so that small layers run on the calling thread.
constexpr int64_t kChunk = int64_t(1) << 17;

struct Call {
  int64_t rows, channels;
  bool bf16;
  const void* x;
  const void* y;             // dy for the gradient sums, else nullptr
  const void* mask;          // the ReLU's output for its gradient sums, else nullptr
  const float* mean;         // gradient sums only
  const float* inverse_std;  // gradient sums only
  float* out;                // [2, C]
};

// Sums the chunks' accumulators in order and writes the float32 result.
void Finish(const Call& call, const std::vector<double>& partial, int64_t chunks) {
  const int64_t c2 = 2 * call.channels;
  std::vector<double> total(partial.begin(), partial.begin() + c2);
  for (int64_t i = 1; i < chunks; ++i)
    for (int64_t k = 0; k < c2; ++k) total[k] += partial[i * c2 + k];
  for (int64_t c = 0; c < call.channels; ++c) {
    double second = total[call.channels + c];
    if (call.y != nullptr)
      second *= call.inverse_std[c];
    call.out[c] = static_cast<float>(total[c]);
    call.out[call.channels + c] = static_cast<float>(second);
  }
}

void RunChunk(const Call& call, int64_t begin, int64_t end, double* sums) {
  const int64_t offset = begin * call.channels;
  std::vector<float> block(2 * call.channels);
  if (call.bf16) {
    const auto* x = static_cast<const uint16_t*>(call.x);
    const auto* y = static_cast<const uint16_t*>(call.y);
    const auto* mask = static_cast<const uint16_t*>(call.mask);
    AccumulateBF16(end - begin, call.channels, x + offset, y ? y + offset : nullptr,
                   mask ? mask + offset : nullptr, call.mean, block.data(), sums);
  } else {
    const auto* x = static_cast<const float*>(call.x);
    const auto* y = static_cast<const float*>(call.y);
    const auto* mask = static_cast<const float*>(call.mask);
    AccumulateF32(end - begin, call.channels, x + offset, y ? y + offset : nullptr,
                  mask ? mask + offset : nullptr, call.mean, block.data(), sums);
  }
}

// Rows are split into up to one chunk per thread of XLA's intra-op pool; the chunk that ends
// last adds them up.
ffi::Future Run(ffi::ThreadPool pool, const Call& call) {
  const int64_t elements = call.rows * call.channels;
  const int64_t chunks = std::max<int64_t>(
      1, std::min({pool.num_threads(), elements / kChunk, call.rows}));
  // each chunk's float64 accumulators [2, C], summed in chunk order once all have run
  auto partial = std::make_shared<std::vector<double>>(chunks * 2 * call.channels, 0.0);
  const int64_t size = (call.rows + chunks - 1) / chunks;
  return RunChunks(
      pool, chunks,
      [call, partial, size](int64_t i) {
        RunChunk(call, i * size, std::min(call.rows, (i + 1) * size),
                 partial->data() + i * 2 * call.channels);
      },
      [call, partial, chunks]() { Finish(call, *partial, chunks); });
}

// x [..., C] (row-major, as XLA hands custom calls their operands) viewed as [M, C]: the caller
// passes a layer's activations as they are, since a reshape before the call is not always free
// (XLA CPU wrote a bf16 [M, C] copy of each one, through float32).
bool Columns(const ffi::AnyBuffer& x, int64_t* rows, int64_t* channels) {
  const auto d = x.dimensions();
  if (d.size() < 1 || d.back() < 1 ||
      (x.element_type() != ffi::DataType::F32 && x.element_type() != ffi::DataType::BF16))
    return false;
  *channels = d.back();
  *rows = static_cast<int64_t>(x.element_count()) / *channels;
  return true;
}

ffi::Future Moments(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out) {
  int64_t rows, channels;
  if (!Columns(x, &rows, &channels))
    return Failed("BatchNorm moments: x must be a float32 or bfloat16 [..., C]");
  return Run(pool, Call{rows, channels, x.element_type() == ffi::DataType::BF16,
                        x.untyped_data(), nullptr, nullptr, nullptr, nullptr,
                        static_cast<float*>(out->untyped_data())});
}

// `mask`: the ReLU's output, or nullptr.
ffi::Future Gradient(ffi::ThreadPool pool, const ffi::AnyBuffer& dy, const ffi::AnyBuffer& x,
                     const ffi::AnyBuffer* mask, const ffi::Buffer<ffi::F32>& mean,
                     const ffi::Buffer<ffi::F32>& inverse_std, ffi::Result<ffi::AnyBuffer>& out) {
  int64_t rows, channels;
  if (!Columns(x, &rows, &channels) || dy.element_type() != x.element_type() ||
      dy.element_count() != x.element_count() || mean.element_count() != channels ||
      inverse_std.element_count() != channels ||
      (mask != nullptr && (mask->element_type() != x.element_type() ||
                           mask->element_count() != x.element_count())))
    return Failed("BatchNorm gradient sums: mismatched operands");
  return Run(pool, Call{rows, channels, x.element_type() == ffi::DataType::BF16,
                        x.untyped_data(), dy.untyped_data(),
                        mask != nullptr ? mask->untyped_data() : nullptr, mean.typed_data(),
                        inverse_std.typed_data(), static_cast<float*>(out->untyped_data())});
}

ffi::Future GradientSums(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::AnyBuffer x,
                         ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> inverse_std,
                         ffi::Result<ffi::AnyBuffer> out) {
  return Gradient(pool, dy, x, nullptr, mean, inverse_std, out);
}

ffi::Future ReluGradientSums(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::AnyBuffer x,
                             ffi::AnyBuffer relu_output, ffi::Buffer<ffi::F32> mean,
                             ffi::Buffer<ffi::F32> inverse_std, ffi::Result<ffi::AnyBuffer> out) {
  return Gradient(pool, dy, x, &relu_output, mean, inverse_std, out);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaBatchNormMoments, Moments,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaBatchNormGradientSums, GradientSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaBatchNormReluGradientSums, ReluGradientSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>());
