// XLA FFI handlers (CPU) that run a 3D convolution with oneDNN, in float32 or bfloat16: the
// forward pass, the weight gradient and the input gradient (the max-pool: onednn_pool.cc).
// Built and loaded by pisa_jax/native/onednn.py.
//
// Layouts are the project's: activations [N, D, H, W, C] (oneDNN's ndhwc), kernels
// [kd, kh, kw, I, O] (oneDNN's dhwio). 2D convolutions come with kernels [kh, kw, I, O] and
// activations [..., H, W, C] (every leading dim a batch one) and run as D = 1. oneDNN may want the
// kernel in a blocked layout of its own; it is reordered into (or, for the weight gradient, out
// of) a per-thread buffer on every call, by a reorder primitive made once with the convolution.
// Activations are float32 or bfloat16 (both of a call's the same); a kernel or weight gradient
// may be float32 beside bfloat16 activations: the reorder converts it (oneDNN's bfloat16
// convolutions accumulate in float32 and write a float32 weight gradient where asked).
// Attributes: strides, pad_lo, pad_hi (3 each, D H W).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "onednn_common.h"

namespace {

enum Kind { kForward = 0, kWeightGradient = 1, kInputGradient = 2 };

// A primitive and the layouts it wants, made once per kind and shape (making one JIT-compiles
// its kernel). Its scratchpad is the calling thread's: XLA may run two convolutions at once.
struct Entry {
  std::unique_ptr<dnnl::primitive> primitive;
  dnnl::memory::desc weights;  // the primitive's (weights or weight gradient)
  dnnl::memory::desc scratchpad;
  // Between the project's dhwio kernel and `weights` where they differ (null where they don't):
  // into the primitive's layout for the forward pass and the input gradient, out of it for the
  // weight gradient.
  std::unique_ptr<dnnl::reorder> reorder;
  dnnl::memory::desc reorder_scratchpad;
};

std::mutex cache_mutex;
std::map<std::string, std::shared_ptr<Entry>> cache;

// OpenMP threads for a call. XLA runs independent convolutions at once (the two backbones, a
// layer's two gradients), and an OpenMP team of all threads per call then oversubscribes the
// cores. bfloat16 calls take half the threads: the AMX calls are short, and two teams of all
// threads on the same cores stalled each other (the R18 + R18 bf16 step on 2 cores, one thread
// against two per call, interleaved in one process: 330 against 344 ms at the paper's shapes,
// 217 against 246 ms at one clip and 112^2 spectrograms), except the long ones, of
// kBf16AllThreadsFlops or more (the visual stem's there: all threads made the step 1.07-1.10x
// and 1.04x faster again; a threshold of 2 GFLOP 1.08-1.12x and 0.99x). float32 calls take
// all: with one the float32 step took 874 against 656 ms. The count follows from the call's
// type and shape (a oneDNN result may depend on it), not from what else runs, so that two runs
// compute the same bits.
constexpr double kBf16AllThreadsFlops = 10e9;

// y_dims: (N, O, [D,] H, W); w_dims: (O, I, [kd,] kh, kw).
int Threads(dt activations, const dims& y_dims, const dims& w_dims) {
  double flops = 2.0;  // a multiply and an add per kernel tap, input channel and output
  for (auto d : y_dims) flops *= static_cast<double>(d);
  for (size_t i = 1; i < w_dims.size(); ++i) flops *= static_cast<double>(w_dims[i]);
  if (activations != dt::bf16 || flops >= kBf16AllThreadsFlops) return kAllThreads;
  return std::max(1, kAllThreads / 2);
}

// The kernel the convolution itself reads is of the activations' type (the reorder converts the
// project's); the weight gradient is written in the project's kernel type (oneDNN accumulates a
// bfloat16 one in float32 and can write it so).
std::shared_ptr<Entry> Make(int kind, const dnnl::memory::desc& x, const dnnl::memory::desc& w_user,
                            const dnnl::memory::desc& y, const dims& s, const dims& lo,
                            const dims& hi) {
  const dnnl::memory::desc w_any(w_user.get_dims(), x.get_data_type(), tag::any);
  const dnnl::memory::desc dw_any(w_user.get_dims(), w_user.get_data_type(), tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto forward = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x, w_any,
      y, s, lo, hi, attr);
  auto entry = std::make_shared<Entry>();
  if (kind == kForward) {
    entry->weights = forward.weights_desc();
    entry->scratchpad = forward.scratchpad_desc();
    entry->primitive = std::make_unique<dnnl::convolution_forward>(forward);
  } else if (kind == kWeightGradient) {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, x, dw_any, y, s, lo, hi, forward, attr);
    entry->weights = pd.diff_weights_desc();
    entry->scratchpad = pd.scratchpad_desc();
    entry->primitive = std::make_unique<dnnl::convolution_backward_weights>(pd);
  } else {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, x, w_any, y, s, lo, hi, forward, attr);
    entry->weights = pd.weights_desc();
    entry->scratchpad = pd.scratchpad_desc();
    entry->primitive = std::make_unique<dnnl::convolution_backward_data>(pd);
  }
  if (entry->weights != w_user) {
    auto pd = kind == kWeightGradient
        ? dnnl::reorder::primitive_desc(Engine(), entry->weights, Engine(), w_user, attr)
        : dnnl::reorder::primitive_desc(Engine(), w_user, Engine(), entry->weights, attr);
    entry->reorder_scratchpad = pd.scratchpad_desc();
    entry->reorder = std::make_unique<dnnl::reorder>(pd);
  }
  return entry;
}

// The buffer, grown to hold `desc` (64-byte aligned), as a pointer oneDNN can use.
void* Grow(std::vector<char>& buffer, const dnnl::memory::desc& desc) {
  const size_t size = desc.get_size() + 64;
  if (buffer.size() < size) buffer.resize(size);
  auto address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<void*>((address + 63) & ~uintptr_t(63));
}

// kForward: out = conv(a = x, b = w); kWeightGradient: out = dw from (a = x, b = dy);
// kInputGradient: out = dx from (a = dy, b = w). `activations`: x's and y's type; `kernel`: the
// project's kernel's (or weight gradient's) type.
ffi::Error RunPrimitive(int kind, dt activations, dt kernel, const dims& x_dims,
                        const dims& w_dims, const dims& y_dims, const dims& s, const dims& lo,
                        const dims& hi, void* a, void* b, void* out) {
  try {
    const bool flat = x_dims.size() == 4;  // a 2D convolution: (N, C, H, W)
    const tag activation_tag = flat ? tag::nhwc : tag::ndhwc;
    dnnl::memory::desc x(x_dims, activations, activation_tag);
    dnnl::memory::desc y(y_dims, activations, activation_tag);
    dnnl::memory::desc w_user(w_dims, kernel, flat ? tag::hwio : tag::dhwio);
    // This XLA thread's next OpenMP team; a primitive keeps the count it was made with, which
    // the key's types and dims fix.
    UseThreads(Threads(activations, y_dims, w_dims));
    const std::string key = Key(kind, {activations, kernel}, {&x_dims, &w_dims, &s, &lo, &hi});
    std::shared_ptr<Entry> entry;
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto found = cache.find(key);
      if (found != cache.end()) entry = found->second;
    }
    if (!entry) {
      entry = Make(kind, x, w_user, y, s, lo, hi);
      std::lock_guard<std::mutex> lock(cache_mutex);
      cache.emplace(key, entry);
    }
    // Per thread, reused: a stream, and the buffers for the scratchpad and reordered weights
    // (allocating them per call cost more than the convolution itself at small shapes).
    thread_local dnnl::stream stream(Engine());
    thread_local std::vector<char> scratch_buffer, weights_buffer, reorder_buffer;
    dnnl::memory scratchpad(entry->scratchpad, Engine(), Grow(scratch_buffer, entry->scratchpad));
    dnnl::memory reorder_scratchpad(entry->reorder_scratchpad, Engine(),
                                    Grow(reorder_buffer, entry->reorder_scratchpad));
    if (kind == kWeightGradient) {
      dnnl::memory x_mem(x, Engine(), a), dy_mem(y, Engine(), b), dw_user(w_user, Engine(), out);
      dnnl::memory dw = entry->reorder ? dnnl::memory(entry->weights, Engine(),
                                                      Grow(weights_buffer, entry->weights))
                                       : dw_user;
      entry->primitive->execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_DST, dy_mem},
                                         {DNNL_ARG_DIFF_WEIGHTS, dw},
                                         {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (entry->reorder) {
        entry->reorder->execute(stream, {{DNNL_ARG_FROM, dw}, {DNNL_ARG_TO, dw_user},
                                         {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
      }
    } else {
      dnnl::memory w_mem(w_user, Engine(), b);
      dnnl::memory w = w_mem;
      if (entry->reorder) {
        w = dnnl::memory(entry->weights, Engine(), Grow(weights_buffer, entry->weights));
        entry->reorder->execute(stream, {{DNNL_ARG_FROM, w_mem}, {DNNL_ARG_TO, w},
                                         {DNNL_ARG_SCRATCHPAD, reorder_scratchpad}});
      }
      if (kind == kForward) {
        dnnl::memory x_mem(x, Engine(), a), y_mem(y, Engine(), out);
        entry->primitive->execute(stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w},
                                           {DNNL_ARG_DST, y_mem},
                                           {DNNL_ARG_SCRATCHPAD, scratchpad}});
      } else {
        dnnl::memory dy_mem(y, Engine(), a), dx_mem(x, Engine(), out);
        entry->primitive->execute(stream, {{DNNL_ARG_DIFF_DST, dy_mem}, {DNNL_ARG_WEIGHTS, w},
                                           {DNNL_ARG_DIFF_SRC, dx_mem},
                                           {DNNL_ARG_SCRATCHPAD, scratchpad}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

// The depth taps that some output frame reads inside the input: [first, first + count).
struct Taps {
  int64_t first, count;
};

Taps UsedDepthTaps(int64_t d_in, int64_t d_out, int64_t kd, int64_t stride, int64_t pad_lo) {
  int64_t first = kd, last = -1;
  for (int64_t k = 0; k < kd; ++k) {
    for (int64_t j = 0; j < d_out; ++j) {
      const int64_t i = j * stride + k - pad_lo;
      if (i >= 0 && i < d_in) {
        first = std::min(first, k);
        last = std::max(last, k);
        break;
      }
    }
  }
  return last < first ? Taps{0, kd} : Taps{first, last - first + 1};
}

// x (channels last, logical dims x_dims = (N, C, [D,] H, W)) at the positions a 1x1(x1) kernel
// with strides `s` reads for an output of y_dims, gathered into `buffer`: each position's C
// channels are one contiguous run. A 2D convolution is the 1-deep case.
void* Subsample(const void* x, const dims& x_dims, const dims& y_dims, const dims& s,
                size_t element, std::vector<char>& buffer) {
  const bool deep = x_dims.size() == 5;
  const int64_t x_d = deep ? x_dims[2] : 1, x_h = x_dims[x_dims.size() - 2],
                x_w = x_dims.back();
  const int64_t y_d = deep ? y_dims[2] : 1, y_h = y_dims[y_dims.size() - 2],
                y_w = y_dims.back();
  const int64_t s_d = deep ? s[0] : 1, s_h = s[s.size() - 2], s_w = s.back();
  const size_t run = static_cast<size_t>(x_dims[1]) * element;
  buffer.resize(std::max(buffer.size(), y_dims[0] * y_d * y_h * y_w * run));
  const char* source = static_cast<const char*>(x);
  char* target = buffer.data();
  for (int64_t n = 0; n < y_dims[0]; ++n)
    for (int64_t d = 0; d < y_d; ++d)
      for (int64_t h = 0; h < y_h; ++h)
        for (int64_t w = 0; w < y_w; ++w, target += run) {
          const int64_t at = ((n * x_d + d * s_d) * x_h + h * s_h) * x_w + w * s_w;
          std::memcpy(target, source + at * run, run);
        }
  return buffer.data();
}

// RunPrimitive without the depth taps that only ever read the zero padding (at one frame, two
// of a 3x3x3 kernel's three: the paper's last stage): they add nothing to y or dx, so the
// primitive is made without them (less of the kernel reordered, a third of the work), and their
// weight gradient is zero. A call left 1 deep (2D convolutions, one-frame clips) runs as a 2D
// convolution (the same bytes: ndhwc with D = 1 is nhwc, dhwio is hwio). oneDNN 3.2's AMX bf16
// weight gradient of 1-deep 3D convolutions is wrong (the aural stem at 224^2: 15-54 % off or
// NaN, depending on the batch and the thread count; its layer 1 at one thread: 13 % off), and
// its 2D form right at every batch and thread count probed.
ffi::Error Run(int kind, dt activations, dt kernel, const dims& x_dims, const dims& w_dims,
               const dims& y_dims, const dims& s, const dims& lo, const dims& hi, void* a,
               void* b, void* out) {
  const int64_t kd = w_dims[2];  // w_dims: (O, I, D, H, W)
  Taps taps = UsedDepthTaps(x_dims[2], y_dims[2], kd, s[0], lo[0]);
  dims w_used = w_dims, lo_used = lo, hi_used = hi;
  w_used[2] = taps.count;
  lo_used[0] -= taps.first;
  hi_used[0] -= kd - taps.first - taps.count;
  if (lo_used[0] < 0 || hi_used[0] < 0) {  // not a trim oneDNN can express: keep every tap
    taps = Taps{0, kd};
    w_used = w_dims, lo_used = lo, hi_used = hi;
  }
  dims x_used = x_dims, y_used = y_dims, s_used = s;
  if (x_dims[2] == 1 && y_dims[2] == 1 && w_used[2] == 1 && lo_used[0] == 0 &&
      hi_used[0] == 0) {
    auto flat = [](const dims& d) { return dims{d[0], d[1], d[3], d[4]}; };
    x_used = flat(x_dims), y_used = flat(y_dims), w_used = flat(w_used);
    s_used = {s[1], s[2]}, lo_used = {lo[1], lo[2]}, hi_used = {hi[1], hi[2]};
  }
  // A strided 1x1(x1) kernel's weight gradient reads x only at the strided positions: hand
  // oneDNN those positions as a unit-stride problem. Its own strided form of it (jit_1x1's
  // "reduce to unit stride" copy) writes past its buffer where the input has fewer channels
  // than its block, on nhwc sources (oneDNN 3.2, AVX2: a 1x1 stride-2 conv with 4 input
  // channels got a weight gradient 84 % off, different each run, and a correct one on 1 thread).
  void* x_data = a;
  if (kind == kWeightGradient) {
    bool one_by_one = true, strided = false;
    for (size_t i = 2; i < w_used.size(); ++i) {
      one_by_one = one_by_one && w_used[i] == 1 && lo_used[i - 2] == 0 && hi_used[i - 2] == 0;
      strided = strided || s_used[i - 2] > 1;
    }
    if (one_by_one && strided) {
      thread_local std::vector<char> subsampled;
      x_data = Subsample(a, x_used, y_used, s_used,
                         dnnl::memory::data_type_size(activations), subsampled);
      x_used = y_used;
      x_used[1] = x_dims[1];  // (N, C, [D,] H, W): the input's channels at the output's positions
      std::fill(s_used.begin(), s_used.end(), 1);
    }
  }
  // The kernel (or, for the weight gradient, its gradient) from the first tap used on; dhwio:
  // one depth tap is a contiguous [kh, kw, I, O] block.
  char* kernel_base = static_cast<char*>(kind == kWeightGradient ? out : b);
  char* kernel_used = kernel_base;
  if (taps.count != kd) {
    const size_t tap_bytes =
        static_cast<size_t>(w_dims[0] * w_dims[1] * w_dims[3] * w_dims[4]) *
        dnnl::memory::data_type_size(kernel);
    kernel_used += taps.first * tap_bytes;
    if (kind == kWeightGradient) {  // the taps left out get a zero gradient
      std::memset(kernel_base, 0, taps.first * tap_bytes);
      std::memset(kernel_used + taps.count * tap_bytes, 0,
                  (kd - taps.first - taps.count) * tap_bytes);
    }
  }
  return RunPrimitive(kind, activations, kernel, x_used, w_used, y_used, s_used, lo_used,
                      hi_used, x_data, kind == kWeightGradient ? b : kernel_used,
                      kind == kWeightGradient ? kernel_used : out);
}

// The types a call may have: activations float32 or bfloat16, all alike; the kernel (or weight
// gradient) the activations' type or float32.
ffi::Error CheckTypes(const char* what, ffi::DataType a, ffi::DataType b, ffi::DataType kernel) {
  if (Supported(a) && a == b && (kernel == a || kernel == ffi::DataType::F32)) {
    return ffi::Error::Success();
  }
  return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                    std::string("oneDNN convolution ") + what +
                        ": activations must be float32 or bfloat16, all alike, and the kernel "
                        "theirs or float32");
}

// The checked dims of a call, in oneDNN's order; the kernel's rank says whether it is 2D
// (activations [..., H, W, C]) or 3D (NDHWC).
ffi::Error Shapes(const char* what, Ints x, Ints w, Ints y, Ints s, Ints lo, Ints hi,
                  dims* x_dims, dims* w_dims, dims* y_dims) {
  *w_dims = Kernel(w);
  const int spatial = w.size() == 4 ? 2 : 3;
  *x_dims = Activation(x, spatial);
  *y_dims = Activation(y, spatial);
  if (w_dims->empty() || x_dims->empty() || y_dims->empty() || s.size() != 3 ||
      lo.size() != 3 || hi.size() != 3 || (*x_dims)[0] != (*y_dims)[0]) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      std::string("oneDNN convolution ") + what +
                          ": a kernel [kd, kh, kw, I, O] with activations [N, D, H, W, C], or "
                          "[kh, kw, I, O] with [..., H, W, C], and 3 strides and pads");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(Any x, Any w, Out y, Ints s, Ints lo, Ints hi) {
  if (auto e = CheckTypes("forward", x.element_type(), y->element_type(), w.element_type());
      e.failure()) return e;
  dims x_dims, w_dims, y_dims;
  if (auto e = Shapes("forward", x.dimensions(), w.dimensions(), y->dimensions(), s, lo, hi,
                      &x_dims, &w_dims, &y_dims); e.failure()) return e;
  return Run(kForward, Type(x.element_type()), Type(w.element_type()), x_dims, w_dims, y_dims,
             Vector(s), Vector(lo), Vector(hi), x.untyped_data(), w.untyped_data(),
             y->untyped_data());
}

ffi::Error WeightGradient(Any x, Any dy, Out dw, Ints s, Ints lo, Ints hi) {
  if (auto e = CheckTypes("weight gradient", x.element_type(), dy.element_type(),
                          dw->element_type()); e.failure()) return e;
  dims x_dims, w_dims, y_dims;
  if (auto e = Shapes("weight gradient", x.dimensions(), dw->dimensions(), dy.dimensions(), s,
                      lo, hi, &x_dims, &w_dims, &y_dims); e.failure()) return e;
  return Run(kWeightGradient, Type(x.element_type()), Type(dw->element_type()), x_dims, w_dims,
             y_dims, Vector(s), Vector(lo), Vector(hi), x.untyped_data(), dy.untyped_data(),
             dw->untyped_data());
}

ffi::Error InputGradient(Any dy, Any w, Out dx, Ints s, Ints lo, Ints hi) {
  if (auto e = CheckTypes("input gradient", dy.element_type(), dx->element_type(),
                          w.element_type()); e.failure()) return e;
  dims x_dims, w_dims, y_dims;
  if (auto e = Shapes("input gradient", dx->dimensions(), w.dimensions(), dy.dimensions(), s,
                      lo, hi, &x_dims, &w_dims, &y_dims); e.failure()) return e;
  return Run(kInputGradient, Type(dy.element_type()), Type(w.element_type()), x_dims, w_dims,
             y_dims, Vector(s), Vector(lo), Vector(hi), dy.untyped_data(), w.untyped_data(),
             dx->untyped_data());
}

}  // namespace

#define PISA_BIND                                                                      \
  ffi::Ffi::Bind().Arg<Any>().Arg<Any>().Ret<Any>().Attr<Ints>("strides").Attr<Ints>( \
      "pad_lo").Attr<Ints>("pad_hi")

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaOnednnConvForward, Forward, PISA_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaOnednnConvWeightGradient, WeightGradient, PISA_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaOnednnConvInputGradient, InputGradient, PISA_BIND);

extern "C" int PisaOnednnMajorVersion() { return dnnl_version()->major; }

// 1 where oneDNN runs its AVX-512 kernels on this CPU (the ISA masks are cumulative).
extern "C" int PisaOnednnHasAvx512() {
  return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
}

// 1 where this CPU has bfloat16 instructions oneDNN uses (AVX-512 BF16, AMX included), so its
// bfloat16 convolutions do not emulate them.
extern "C" int PisaOnednnHasBf16() {
  return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) ==
         dnnl_cpu_isa_avx512_core_bf16;
}
