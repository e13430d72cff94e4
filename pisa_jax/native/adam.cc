// XLA FFI handler (CPU): one Adam step with coupled L2 weight decay (torch.optim.Adam's
// weight_decay) for one parameter, in one pass over memory. Built and loaded by
// pisa_jax/native/adam.py.
//
// XLA CPU computes optax's chain (add_decayed_weights, scale_by_adam, scale_by_learning_rate,
// apply_updates) as three loops per parameter, which read the parameter three times and the new
// moments once more: ~12 float passes where this loop makes 7 (read p, g, mu, nu; write p, mu,
// nu, in place where XLA aliases them). Each operation is optax's, in its order, rounded to
// float32 (no fused multiply-adds: the build passes -ffp-contract=off). XLA contracts some of
// them into FMAs and rewrites the divisions depending on the schedule, so the two differ by an
// ulp in some elements (tests/native/test_adam.py).
//
// Args: p, g, mu, nu (same shape), coefficients f32[3] = (-learning rate, 1 - b1^t, 1 - b2^t);
// attributes b1, b2, eps, weight_decay (float64, rounded to float32 as JAX rounds Python floats).
// Results: p, mu, nu.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pool_chunks.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Constants {
  float decay, one_minus_b1, b1, one_minus_b2, b2, eps, neg_lr, correction1, correction2;
};

// The clones let one build vectorise for the CPU it runs on (AVX-512, AVX2 or SSE2).
__attribute__((target_clones("avx512f", "avx2", "default")))
void Step(int64_t n, const float* __restrict p, const float* __restrict g,
          const float* __restrict mu, const float* __restrict nu, float* __restrict p_out,
          float* __restrict mu_out, float* __restrict nu_out, Constants c) {
  for (int64_t i = 0; i < n; ++i) {
    const float grad = g[i] + c.decay * p[i];                         // add_decayed_weights
    const float m = c.one_minus_b1 * grad + c.b1 * mu[i];             // update_moment
    const float v = c.one_minus_b2 * (grad * grad) + c.b2 * nu[i];    // ... per_elem_norm
    const float update = (m / c.correction1) / (std::sqrt(v / c.correction2) + c.eps);
    p_out[i] = p[i] + c.neg_lr * update;                              // schedule, apply_updates
    mu_out[i] = m;
    nu_out[i] = v;
  }
}

// Large parameters are split into up to one chunk per thread of XLA's intra-op pool, so that
// the update runs on every core like XLA's own loops, and the handler returns at once with a
// future (no XLA thread waits for another).
constexpr int64_t kChunk = int64_t(1) << 18;  // elements (1 MB) at least per chunk

ffi::Future Adam(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p, ffi::Buffer<ffi::F32> g,
                 ffi::Buffer<ffi::F32> mu, ffi::Buffer<ffi::F32> nu,
                 ffi::Buffer<ffi::F32> coefficients, ffi::ResultBuffer<ffi::F32> p_out,
                 ffi::ResultBuffer<ffi::F32> mu_out, ffi::ResultBuffer<ffi::F32> nu_out,
                 double b1, double b2, double eps, double weight_decay) {
  const int64_t n = p.element_count();
  if (g.element_count() != n || mu.element_count() != n || nu.element_count() != n ||
      coefficients.element_count() != 3) {
    return Failed("Adam: mismatched buffer sizes");
  }
  const float* k = coefficients.typed_data();
  // As JAX computes `(1 - b1) * g`: the Python float 1 - b1, rounded to float32 once.
  const Constants c{static_cast<float>(weight_decay), static_cast<float>(1.0 - b1),
                    static_cast<float>(b1), static_cast<float>(1.0 - b2),
                    static_cast<float>(b2), static_cast<float>(eps), k[0], k[1], k[2]};
  const float *pp = p.typed_data(), *gp = g.typed_data(), *mp = mu.typed_data(),
              *vp = nu.typed_data();
  float *po = p_out->typed_data(), *mo = mu_out->typed_data(), *vo = nu_out->typed_data();
  auto run = [=](int64_t begin, int64_t end) {
    Step(end - begin, pp + begin, gp + begin, mp + begin, vp + begin, po + begin, mo + begin,
         vo + begin, c);
  };
  const int64_t chunks = std::max<int64_t>(1, std::min(pool.num_threads(), n / kChunk));
  const int64_t size = (n + chunks - 1) / chunks;
  return RunChunks(
      pool, chunks, [=](int64_t i) { run(i * size, std::min(n, (i + 1) * size)); }, []() {});
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PisaAdamStep, Adam,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<double>("b1")
                                  .Attr<double>("b2")
                                  .Attr<double>("eps")
                                  .Attr<double>("weight_decay"));
