// XLA FFI handlers (CPU) that run a 3D max-pool and its gradient with oneDNN, in float32 or
// bfloat16. Built and loaded by pisa_jax/native/onednn.py, beside onednn_conv.cc; called from
// pisa_jax/native/onednn_pool.py.
//
// Layouts are the project's: [N, D, H, W, C] (oneDNN's ndhwc); 2D pools come here as D = 1.
// Attributes: window, strides, pad_lo, pad_hi (3 each, D H W). The forward pass also writes
// oneDNN's workspace (where each window's maximum is, in a layout of oneDNN's), which the
// backward pass reads to route the gradient.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "onednn_common.h"

namespace {

struct PoolEntry {
  std::unique_ptr<dnnl::pooling_forward> forward;
  std::unique_ptr<dnnl::pooling_backward> backward;
  dnnl::memory::desc x, y, workspace;
};

std::mutex cache_mutex;
std::map<std::string, std::shared_ptr<PoolEntry>> pool_cache;

// The pool for these dims, made once; it and the caller's next execution run on all of
// OpenMP's threads (this thread's last bf16 convolution may have set fewer, and a primitive
// keeps the count it was made with, also when made for the workspace size at trace time).
std::shared_ptr<PoolEntry> Pool(dt type, const dims& x_dims, const dims& y_dims, const dims& k,
                                const dims& s, const dims& lo, const dims& hi) {
  UseThreads(kAllThreads);
  const std::string key = Key(0, {type}, {&x_dims, &y_dims, &k, &s, &lo, &hi});
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto found = pool_cache.find(key);
  if (found != pool_cache.end()) return found->second;
  auto entry = std::make_shared<PoolEntry>();
  entry->x = dnnl::memory::desc(x_dims, type, tag::ndhwc);
  entry->y = dnnl::memory::desc(y_dims, type, tag::ndhwc);
  const dims dilation = {0, 0, 0};
  auto forward = dnnl::pooling_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, entry->x,
      entry->y, s, k, dilation, lo, hi);
  auto backward = dnnl::pooling_backward::primitive_desc(
      Engine(), dnnl::algorithm::pooling_max, entry->x, entry->y, s, k, dilation, lo, hi, forward);
  entry->workspace = forward.workspace_desc();
  entry->forward = std::make_unique<dnnl::pooling_forward>(forward);
  entry->backward = std::make_unique<dnnl::pooling_backward>(backward);
  pool_cache.emplace(key, entry);
  return entry;
}

ffi::Error MaxPool(bool backward, ffi::DataType a_type, ffi::DataType out_type,
                   const dims& x_dims, const dims& y_dims, Ints k, Ints s, Ints lo, Ints hi,
                   void* a, void* workspace, void* out) {
  if (!Supported(a_type) || a_type != out_type) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN max-pool: float32 or bfloat16 input and output, alike");
  }
  try {
    auto entry = Pool(Type(a_type), x_dims, y_dims, Vector(k), Vector(s), Vector(lo), Vector(hi));
    thread_local dnnl::stream stream(Engine());
    dnnl::memory ws(entry->workspace, Engine(), workspace);
    if (backward) {
      dnnl::memory dy(entry->y, Engine(), a), dx(entry->x, Engine(), out);
      entry->backward->execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WORKSPACE, ws},
                                        {DNNL_ARG_DIFF_SRC, dx}});
    } else {
      dnnl::memory x(entry->x, Engine(), a), y(entry->y, Engine(), out);
      entry->forward->execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DST, y},
                                       {DNNL_ARG_WORKSPACE, ws}});
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN max-pool: ") + e.what());
  }
  return ffi::Error::Success();
}

// x and y [N, D, H, W, C], or [N, H, W, C] as D = 1; window, strides and pads 3 each (D H W).
ffi::Error MaxPoolShapes(Ints x, Ints y, Ints k, Ints s, Ints lo, Ints hi, dims* x_dims,
                         dims* y_dims) {
  const int spatial = x.size() == 4 ? 2 : 3;
  *x_dims = Activation(x, spatial);
  *y_dims = Activation(y, spatial);
  if (x_dims->empty() || y_dims->empty() || x.size() != y.size() || k.size() != 3 ||
      s.size() != 3 || lo.size() != 3 || hi.size() != 3) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "oneDNN max-pool: x and y [N, D, H, W, C] or [N, H, W, C], and 3 "
                      "window sizes, strides and pads");
  }
  return ffi::Error::Success();
}

ffi::Error MaxPoolForward(Any x, Out y, ffi::ResultBuffer<ffi::U8> ws, Ints k, Ints s, Ints lo,
                          Ints hi) {
  dims x_dims, y_dims;
  if (auto e = MaxPoolShapes(x.dimensions(), y->dimensions(), k, s, lo, hi, &x_dims, &y_dims);
      e.failure()) return e;
  return MaxPool(false, x.element_type(), y->element_type(), x_dims, y_dims, k, s, lo, hi,
                 x.untyped_data(), ws->typed_data(), y->untyped_data());
}

ffi::Error MaxPoolBackward(Any dy, ffi::Buffer<ffi::U8> ws, Out dx, Ints k, Ints s, Ints lo,
                           Ints hi) {
  dims x_dims, y_dims;
  if (auto e = MaxPoolShapes(dx->dimensions(), dy.dimensions(), k, s, lo, hi, &x_dims,
                             &y_dims); e.failure()) return e;
  return MaxPool(true, dy.element_type(), dx->element_type(), x_dims, y_dims, k, s, lo, hi,
                 dy.untyped_data(), ws.typed_data(), dx->untyped_data());
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaOnednnMaxPoolForward, MaxPoolForward,
                              ffi::Ffi::Bind().Arg<Any>().Ret<Any>().Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<Ints>("window").Attr<Ints>("strides")
                                  .Attr<Ints>("pad_lo").Attr<Ints>("pad_hi"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaOnednnMaxPoolBackward, MaxPoolBackward,
                              ffi::Ffi::Bind().Arg<Any>().Arg<ffi::Buffer<ffi::U8>>().Ret<Any>()
                                  .Attr<Ints>("window").Attr<Ints>("strides")
                                  .Attr<Ints>("pad_lo").Attr<Ints>("pad_hi"));

// The bytes of the max-pool's workspace for x [N, D, H, W, C] -> y (NDHWC dims, 5 each; window,
// strides, pads 3 each), in bfloat16 if `bfloat16` else float32, or -1 where oneDNN has no such
// max-pool.
extern "C" int64_t PisaOnednnMaxPoolWorkspaceBytes(int bfloat16, const int64_t* x,
                                                   const int64_t* y, const int64_t* k,
                                                   const int64_t* s, const int64_t* lo,
                                                   const int64_t* hi) {
  try {
    auto to = [](const int64_t* d, int n) { return dims(d, d + n); };
    auto entry = Pool(bfloat16 ? dt::bf16 : dt::f32, Activation(ffi::Span<const int64_t>(x, 5)),
                      Activation(ffi::Span<const int64_t>(y, 5)), to(k, 3), to(s, 3), to(lo, 3),
                      to(hi, 3));
    return static_cast<int64_t>(entry->workspace.get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}
