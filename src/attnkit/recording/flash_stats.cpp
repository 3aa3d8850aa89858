// Fused CPU attention with streamed per-query statistics (attnkit.recording.kernel).
//
// One pass of flash attention (Dao et al. 2022; the online softmax of Milakov & Gimelshein 2018)
// over key blocks: per query it keeps the running maximum score m, l = Σ exp(s - m),
// t = Σ exp(s - m)·(s - m) and, for each key span, Σ exp(s - m) over the span. At the end
// lse = m + log l, entropy = log l - t / l, span mass = its sum / l, and the largest weight is
// exp(max score - lse), returned as it is (one operation fewer per call for the caller). With a logit soft-cap c (Gemma 2) each score is c · tanh(s / c) before
// the mask. Score tiles and P·V products go through MKL's sgemm; the per-row work is
// plain loops that the compiler vectorizes. Memory: one BQ × BK tile per thread (smaller for a
// decoding step's single query). Key spans are shared by the batch (``spans``) or given per
// example (``example_spans``, ``(S, B, 2)`` int64: a left-padded batch's own ranges).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n,
                       const int* k, const float* alpha, const float* a, const int* lda,
                       const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc);

namespace {

constexpr int64_t kBlockQ = 256;
constexpr int64_t kBlockK = 512;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 16 floats: AVX-512 registers where the machine has them, split by the compiler elsewhere.
typedef float vfloat __attribute__((vector_size(64)));
typedef int32_t vint __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, vfloat v) { std::memcpy(p, &v, sizeof(v)); }

inline float lane_sum(vfloat v) {
  float total = 0.0f;
  for (int64_t i = 0; i < kLanes; ++i) total += v[i];
  return total;
}

// max(x, -87) (exp of anything below is 0 here)
inline vfloat floor_exponent(vfloat x) {
  const vfloat low = vfloat{} - 87.0f;
  return x < low ? low : x;
}

// exp(x) for x <= 0 (Cephes' expf polynomial, relative error ~1e-7); exact 0 below -87.
inline vfloat exp_nonpositive(vfloat x) {
  const vfloat clamped = floor_exponent(x);
  // round to nearest: adding and removing 1.5 · 2^23 drops the fraction
  const vfloat n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const vfloat r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
  vfloat p = vfloat{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const vfloat y = p * r * r + r + 1.0f;
  const vint bits = (__builtin_convertvector(n, vint) + 127) << 23;
  const vfloat result = y * reinterpret_cast<const vfloat&>(bits);
  return x < -87.0f ? vfloat{} : result;
}

inline float exp_nonpositive(float x) { return exp_nonpositive(vfloat{} + x)[0]; }

// Σ s[lo:hi]
inline float range_sum(const float* s, int64_t lo, int64_t hi) {
  vfloat total = {};
  int64_t j = lo;
  for (; j + kLanes <= hi; j += kLanes) total += load(s + j);
  float rest = lane_sum(total);
  for (; j < hi; ++j) rest += s[j];
  return rest;
}

// Row-major C (rows × cols) = alpha · A (rows × inner) · B^T (cols × inner) + beta · C.
inline void gemm_abt(int rows, int cols, int inner, float alpha, const float* a, int lda,
                     const float* b, int ldb, float beta, float* c, int ldc) {
  // column-major view: C^T (cols × rows) = B (cols × inner) · A^T
  sgemm_("T", "N", &cols, &rows, &inner, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
}

// Row-major C (rows × cols) += A (rows × inner) · B (inner × cols).
inline void gemm_ab_acc(int rows, int cols, int inner, const float* a, int lda, const float* b,
                        int ldb, float* c, int ldc) {
  const float one = 1.0f;
  sgemm_("N", "N", &cols, &rows, &inner, &one, b, &ldb, a, &lda, &one, c, &ldc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>>
flash_stats(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const std::optional<at::Tensor>& mask, bool causal, double scale, at::IntArrayRef spans,
    bool want_argmax, std::optional<double> softcap,
    const std::optional<at::Tensor>& example_spans) {
  TORCH_CHECK(query.dtype() == at::kFloat && key.dtype() == at::kFloat &&
                  value.dtype() == at::kFloat,
              "flash_stats: float32 inputs only");
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4,
              "flash_stats: query, key, value must be (B, H, N, D)");
  TORCH_CHECK(spans.size() % 2 == 0, "flash_stats: spans must be start, stop pairs");
  // rows read in place wherever the feature axis is contiguous (Hugging Face hands over
  // transposed (B, N, H, D) storage): the matrix products take the row stride as leading dimension
  auto rows_in_place = [](const at::Tensor& t) {
    const bool in_place = t.stride(3) == 1 && (t.size(2) <= 1 || t.stride(2) >= t.size(3));
    return in_place ? t : t.contiguous();
  };
  const at::Tensor q = rows_in_place(query), k = rows_in_place(key), v = rows_in_place(value);
  const int64_t batch = q.size(0), heads = q.size(1), nq = q.size(2), dim = q.size(3);
  const int64_t kv_heads = k.size(1), nk = k.size(2), dv = v.size(3);
  TORCH_CHECK(heads % kv_heads == 0, "flash_stats: heads must be a multiple of kv heads");
  const int64_t group = heads / kv_heads;
  at::Tensor table;  // (S, B, 2) int64: example b's span n is [table[n, b, 0], table[n, b, 1])
  if (example_spans.has_value()) {
    TORCH_CHECK(example_spans->dtype() == at::kLong && example_spans->dim() == 3 &&
                    example_spans->size(1) == q.size(0) && example_spans->size(2) == 2,
                "flash_stats: example_spans must be int64 (S, B, 2)");
    table = example_spans->contiguous();
  }
  const int64_t num_spans =
      table.defined() ? table.size(0) : static_cast<int64_t>(spans.size()) / 2;
  const int64_t* table_data = table.defined() ? table.data_ptr<int64_t>() : nullptr;
  const int64_t offset = nk - nq;  // query i sits at key position offset + i

  at::Tensor allowed;
  const bool* mask_ptr = nullptr;
  int64_t mask_strides[4] = {0, 0, 0, 0};
  if (mask.has_value()) {
    TORCH_CHECK(mask->dtype() == at::kBool && mask->dim() == 4, "flash_stats: bool 4-d mask");
    allowed = mask->stride(3) == 1 ? *mask : mask->contiguous();
    allowed = allowed.expand({batch, heads, nq, nk});
    mask_ptr = allowed.data_ptr<bool>();
    for (int i = 0; i < 4; ++i) mask_strides[i] = allowed.stride(i);
  }

  auto opts = q.options();
  at::Tensor out = at::empty({batch, heads, nq, dv}, opts);
  at::Tensor lse = at::empty({batch, heads, nq}, opts);
  at::Tensor entropy = at::empty({batch, heads, nq}, opts);
  at::Tensor best = at::empty({batch, heads, nq}, opts);
  at::Tensor best_index = at::zeros({batch, heads, nq}, opts.dtype(at::kLong));
  std::vector<at::Tensor> masses;  // one (B, H, Q) tensor per span: no split needed after
  std::vector<float*> mass_data;
  for (int64_t n = 0; n < num_spans; ++n) {
    masses.push_back(at::empty({batch, heads, nq}, opts));
    mass_data.push_back(masses.back().data_ptr<float>());
  }

  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  // a length-1 axis may carry any stride: a row is then at least one feature vector apart
  const int64_t q_row = std::max(q.stride(2), q.size(3)), k_row = std::max(k.stride(2), k.size(3)),
                v_row = std::max(v.stride(2), v.size(3));
  float* out_data = out.data_ptr<float>();
  float* lse_data = lse.data_ptr<float>();
  float* entropy_data = entropy.data_ptr<float>();
  float* best_data = best.data_ptr<float>();
  int64_t* index_data = best_index.data_ptr<int64_t>();
  const int64_t q_blocks = (nq + kBlockQ - 1) / kBlockQ;
  const float fscale = static_cast<float>(scale);
  const bool capped = softcap.has_value();
  const float cap = capped ? static_cast<float>(*softcap) : 1.0f;
  TORCH_CHECK(!capped || cap > 0.0f, "flash_stats: softcap must be positive");

  // a tile as large as a task needs (a decoding step: one row of the keys), rows padded to
  // whole vectors; tasks split across threads only when each gets enough work to pay for it
  const int64_t tile_rows = std::min(kBlockQ, nq);
  const int64_t ld = (std::min(kBlockK, std::max<int64_t>(nk, 1)) + kLanes - 1) / kLanes * kLanes;
  const int64_t task_work = std::max<int64_t>(tile_rows * nk * (dim + dv), 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / task_work);
  at::parallel_for(0, batch * heads * q_blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> tile(tile_rows * ld), acc(tile_rows * dv);
    std::vector<float> run_max(kBlockQ), run_sum(kBlockQ), run_t(kBlockQ), top(kBlockQ);
    std::vector<int64_t> top_index(kBlockQ);
    std::vector<float> run_mass(kBlockQ * std::max<int64_t>(num_spans, 1));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t qb = task % q_blocks, bh = task / q_blocks;
      const int64_t b = bh / heads, h = bh % heads, hkv = h / group;
      const int64_t q0 = qb * kBlockQ, rows = std::min(kBlockQ, nq - q0);
      const float* qp = q_data + b * q.stride(0) + h * q.stride(1) + q0 * q_row;
      const float* kp = k_data + b * k.stride(0) + hkv * k.stride(1);
      const float* vp = v_data + b * v.stride(0) + hkv * v.stride(1);
      auto span_lo = [&](int64_t n) {
        return table_data != nullptr ? table_data[(n * batch + b) * 2] : spans[2 * n];
      };
      auto span_hi = [&](int64_t n) {
        return table_data != nullptr ? table_data[(n * batch + b) * 2 + 1] : spans[2 * n + 1];
      };
      std::fill(acc.begin(), acc.begin() + rows * dv, 0.0f);
      std::fill(run_max.begin(), run_max.end(), kNegInf);
      std::fill(run_sum.begin(), run_sum.end(), 0.0f);
      std::fill(run_t.begin(), run_t.end(), 0.0f);
      std::fill(top.begin(), top.end(), kNegInf);
      std::fill(top_index.begin(), top_index.end(), 0);
      std::fill(run_mass.begin(), run_mass.end(), 0.0f);
      // causal: the last row sees keys up to offset + q0 + rows - 1
      const int64_t key_end = causal ? std::min(nk, offset + q0 + rows) : nk;
      for (int64_t k0 = 0; k0 < key_end; k0 += kBlockK) {
        const int64_t cols = std::min(kBlockK, key_end - k0);
        gemm_abt(rows, cols, dim, fscale, qp, q_row, kp + k0 * k_row, k_row, 0.0f, tile.data(),
                 ld);
        for (int64_t i = 0; i < rows; ++i) {
          float* s = tile.data() + i * ld;
          int64_t limit = cols;  // keys of this tile the row may see
          if (causal) limit = std::clamp<int64_t>(offset + q0 + i + 1 - k0, 0, cols);
          if (capped)
            for (int64_t j = 0; j < limit; ++j) s[j] = cap * std::tanh(s[j] / cap);
          for (int64_t j = limit; j < cols; ++j) s[j] = kNegInf;
          if (mask_ptr != nullptr) {
            const bool* m = mask_ptr + b * mask_strides[0] + h * mask_strides[1] +
                            (q0 + i) * mask_strides[2] + k0;
            for (int64_t j = 0; j < limit; ++j) s[j] = m[j] ? s[j] : kNegInf;
          }
          // pad the row to whole vectors with -inf (the tile's row stride leaves room)
          const int64_t padded = (cols + kLanes - 1) / kLanes * kLanes;
          std::fill(s + cols, s + padded, kNegInf);
          float tile_max = kNegInf;
          int64_t tile_arg = 0;
          if (want_argmax) {
            for (int64_t j = 0; j < limit; ++j) {
              if (s[j] > tile_max) {
                tile_max = s[j];
                tile_arg = j;
              }
            }
          } else {
            vfloat top_v = vfloat{} + kNegInf;
            for (int64_t j = 0; j < padded; j += kLanes) {
              const vfloat v = load(s + j);
              top_v = v > top_v ? v : top_v;
            }
            for (int64_t l = 0; l < kLanes; ++l) tile_max = std::max(tile_max, top_v[l]);
          }
          if (tile_max == kNegInf) {  // nothing allowed here: a zero row of P
            std::fill(s, s + cols, 0.0f);
            continue;
          }
          if (tile_max > top[i]) {
            top[i] = tile_max;
            top_index[i] = k0 + tile_arg;
          }
          const float old_max = run_max[i];
          const float new_max = std::max(old_max, tile_max);
          const float alpha = old_max == kNegInf ? 0.0f : exp_nonpositive(old_max - new_max);
          vfloat sum_v = {}, t_v = {};
          for (int64_t j = 0; j < padded; j += kLanes) {
            const vfloat x = load(s + j) - new_max;  // -inf where masked
            const vfloat p = exp_nonpositive(x);
            store(s + j, p);
            sum_v += p;
            t_v += p * floor_exponent(x);  // 0 where p is 0
          }
          const float sum = lane_sum(sum_v);
          float t = lane_sum(t_v);
          // rescale to the new maximum: t' = α (t + l (m - m')) + new terms
          if (alpha > 0.0f) t += alpha * (run_t[i] + run_sum[i] * (old_max - new_max));
          run_t[i] = t;
          run_sum[i] = alpha * run_sum[i] + sum;
          run_max[i] = new_max;
          for (int64_t n = 0; n < num_spans; ++n) {
            const int64_t lo = std::max<int64_t>(span_lo(n) - k0, 0);
            const int64_t hi = std::min<int64_t>(span_hi(n) - k0, cols);
            const float inside = lo < hi ? range_sum(s, lo, hi) : 0.0f;
            float& mass = run_mass[n * kBlockQ + i];
            mass = alpha * mass + inside;
          }
          if (alpha != 1.0f) {
            float* row = acc.data() + i * dv;
            for (int64_t d = 0; d < dv; ++d) row[d] *= alpha;
          }
        }
        gemm_ab_acc(rows, dv, cols, tile.data(), ld, vp + k0 * v_row, v_row, acc.data(), dv);
      }
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t at = bh * nq + q0 + i;
        const float l = run_sum[i];
        float* o = out_data + at * dv;
        if (l == 0.0f) {  // no allowed key: zeros
          std::fill(o, o + dv, 0.0f);
          lse_data[at] = std::numeric_limits<float>::infinity();
          entropy_data[at] = 0.0f;
          best_data[at] = 0.0f;
          for (int64_t n = 0; n < num_spans; ++n) mass_data[n][at] = 0.0f;
          continue;
        }
        const float inv = 1.0f / l;
        for (int64_t d = 0; d < dv; ++d) o[d] = acc[i * dv + d] * inv;
        const float log_l = std::log(l);
        const float log_sum_exp = run_max[i] + log_l;
        lse_data[at] = log_sum_exp;
        entropy_data[at] = log_l - run_t[i] * inv;
        best_data[at] = std::exp(top[i] - log_sum_exp);
        index_data[at] = top_index[i];
        for (int64_t n = 0; n < num_spans; ++n)
          mass_data[n][at] = run_mass[n * kBlockQ + i] * inv;
      }
    }
  });
  return {out, lse, entropy, best, best_index, masses};
}

}  // namespace

// a Python module of its own (pybind11): a direct call costs a few microseconds less than a
// dispatcher op, and that is paid at every layer of every decoding step
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("flash_stats", &flash_stats, "fused attention with streamed per-query statistics");
}
