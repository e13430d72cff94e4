// XLA FFI handler (CPU): the input of a "stacked" 3D convolution (pisa_jax/models/lowering.py),
// the kt frames that each output frame reads laid side by side on the channel axis, in one
// parallel pass. Built and loaded by pisa_jax/native/frame_stack.py.
//
// XLA CPU builds it from a temporal pad and kt strided slices concatenated on channels, one loop
// fusion that moves a pixel's 3 channels at a time: 13 ms of thread time for the bf16
// [4, 16, 112, 112, 21] input of the visual stem at the paper's first shapes, most of it while
// nothing else ran. Here each pixel's kt pieces are fixed-size copies, split over XLA's pool.
//
// PisaStackFrames: x [N, T, H, W, C] -> y [N, T', H, W, K * C], both float32 or both bfloat16,
//   y[n, j, h, w, k * C + c] = x[n, j * stride + k - pad, h, w, c], zero where that frame is
//   outside [0, T). Attributes: stride, pad; K and T' come from y's shape.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pool_chunks.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// One output frame: for each of `pixels` pixels, the `taps` source frames' pieces of `B` bytes
// (C channels), or zeros where a tap reads the padding (a null source). B is a compile-time
// constant for the stems' RGB frames, so that each piece is a couple of moves; 0: `bytes`.
template <int64_t B>
void StackFrame(const char* const* sources, int64_t taps, int64_t pixels, int64_t bytes,
                char* out) {
  const int64_t piece = B ? B : bytes;
  for (int64_t p = 0; p < pixels; ++p) {
    char* dst = out + p * taps * piece;
    for (int64_t k = 0; k < taps; ++k) {
      if (sources[k] != nullptr) {
        std::memcpy(dst + k * piece, sources[k] + p * piece, piece);
      } else {
        std::memset(dst + k * piece, 0, piece);
      }
    }
  }
}

struct Geometry {
  int64_t batch, frames, frames_out, pixels, taps, bytes, stride, pad;
};

// Output frames [begin, end) of x into y.
void StackFrames(const Geometry& g, const char* x, char* y, int64_t begin, int64_t end) {
  std::vector<const char*> sources(g.taps);
  const int64_t frame_bytes = g.pixels * g.bytes;
  for (int64_t f = begin; f < end; ++f) {
    const int64_t n = f / g.frames_out, j = f % g.frames_out;
    for (int64_t k = 0; k < g.taps; ++k) {
      const int64_t t = j * g.stride + k - g.pad;
      sources[k] = t >= 0 && t < g.frames ? x + (n * g.frames + t) * frame_bytes : nullptr;
    }
    char* out = y + f * g.taps * frame_bytes;
    switch (g.bytes) {
      case 6:  // 3 bfloat16 channels
        StackFrame<6>(sources.data(), g.taps, g.pixels, g.bytes, out);
        break;
      case 12:  // 3 float32 channels
        StackFrame<12>(sources.data(), g.taps, g.pixels, g.bytes, out);
        break;
      default:
        StackFrame<0>(sources.data(), g.taps, g.pixels, g.bytes, out);
    }
  }
}

ffi::Future Stack(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y,
                  int64_t stride, int64_t pad) {
  const auto xd = x.dimensions();
  const auto yd = y->dimensions();
  const bool typed = x.element_type() == y->element_type() &&
                     (x.element_type() == ffi::DataType::F32 ||
                      x.element_type() == ffi::DataType::BF16);
  if (!typed || xd.size() != 5 || yd.size() != 5 || xd[0] != yd[0] || xd[2] != yd[2] ||
      xd[3] != yd[3] || xd[4] < 1 || yd[4] % xd[4] != 0 || stride < 1 || pad < 0 ||
      (xd[1] + 2 * pad - yd[4] / xd[4]) / stride + 1 != yd[1]) {
    return Failed("frame stack: x [N, T, H, W, C] and y [N, T', H, W, K * C], both float32 or "
                  "both bfloat16, with T' = (T + 2 * pad - K) / stride + 1");
  }
  const int64_t element = x.element_type() == ffi::DataType::BF16 ? 2 : 4;
  const Geometry g{xd[0], xd[1], yd[1], xd[2] * xd[3], yd[4] / xd[4], xd[4] * element, stride,
                   pad};
  const char* source = static_cast<const char*>(x.untyped_data());
  char* out = static_cast<char*>(y->untyped_data());
  const int64_t total = g.batch * g.frames_out;
  // One chunk of output frames per thread of XLA's pool.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), total));
  const int64_t size = (total + chunks - 1) / chunks;
  return RunChunks(
      pool, chunks,
      [g, source, out, size, total](int64_t i) {
        StackFrames(g, source, out, std::min(total, i * size), std::min(total, (i + 1) * size));
      },
      []() {});
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaStackFrames, Stack,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad"));
