/* The one interface every backend implements: each op's forward and backward
 * kernel. Op wrappers in src/autograd/ validate shapes and dtypes, allocate
 * outputs, and call these through a backend; layers never call them directly.
 *
 * Conventions for every kernel:
 * - Tensors arrive validated: matching shapes, supported dtypes, every tensor
 *   on the backend's device, each row-major (mt_is_row_major: rows of the last
 *   dim, row_stride apart; see tensor.h).
 * - Backward kernels ACCUMULATE (+=) into gradient tensors, which the caller has
 *   zeroed or holds from earlier ops. A NULL gradient means "not needed".
 * - Gradients have the dtype of the tensor they belong to.
 * - Float dtypes: f32 and bf16 on every backend, f64 on CPU only. Arithmetic is
 *   done in double on the CPU and in fp32 on CUDA, whatever the storage dtype;
 *   the one exception is the CPU linear, which is OpenBLAS sgemm (fp32
 *   accumulation) for f32 and bf16 and dgemm for f64.
 * - Where a tensor below is said to be f32 (norm weights, A_log, dt_bias, D,
 *   states) it is the accumulation dtype: f64 when the op runs in f64.
 * - Kernels are deterministic: the same inputs give the same bits on the same
 *   device (fixed reduction order, no float atomics).
 * - scratch is the ctx's scratch arena, for temporaries that live until the kernel
 *   returns (the next call reuses them: kernels run in stream order).
 */
#ifndef MT_BACKEND_H
#define MT_BACKEND_H

#include "core/arena.h"
#include "core/tensor.h"

typedef struct mt_backend mt_backend;

/* Each op's signature is declared once, as a function type under its
 * contract. The struct's fields point at these types and each backend
 * declares its kernels through them (mt_rmsnorm_fwd_fn mt_cpu_rmsnorm_fwd;),
 * so a kernel defined with another signature does not build. */

/* Frees the backend and everything it holds. */
typedef void mt_destroy_fn(mt_backend *be);
/* Returns once every op queued on the backend has finished. */
typedef void mt_synchronize_fn(mt_backend *be);

/* t[i] = uniform [lo, hi) or normal(mean, std) from Philox (core/rng.h),
 * element i of a contiguous t using counter i. */
typedef void mt_fill_uniform_fn(mt_backend *be, mt_tensor *t, uint64_t seed, double lo, double hi);
typedef void mt_fill_normal_fn(mt_backend *be, mt_tensor *t, uint64_t seed, double mean, double std);

/* A table of `vocab` rows of which weight (V, D) holds rows [first_id,
 * first_id + V): the whole table for first_id 0 and V = vocab, else one
 * rank's slice of a vocab-parallel embedding. ids (N) are i32 in [0, vocab).
 * out (N, D) [n] = weight [ids[n] - first_id] for an id in the slice,
 * zeros for another id of the table. The CPU fails naming an id outside
 * [0, vocab); CUDA, which cannot stop, writes a NaN row (the data loader
 * validates ids before they reach the device). */
typedef void mt_embedding_fwd_fn(mt_backend *be, mt_tensor *out, const mt_tensor *weight, const mt_tensor *ids,
                                 int64_t first_id, int64_t vocab);
/* dweight [ids[n] - first_id] += dout [n] for the ids in the slice,
 * summed in a fixed order per row; other ids add nothing. */
typedef void mt_embedding_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dweight, const mt_tensor *dout,
                                 const mt_tensor *ids, int64_t first_id, int64_t vocab);

/* y (M, N) = x (M, K) . w (N, K)^T + b (N); b may be NULL. x, w, y share a dtype. */
typedef void mt_linear_fwd_fn(mt_backend *be, mt_tensor *y, const mt_tensor *x, const mt_tensor *w, const mt_tensor *b);
/* dx += dy . w;  dw += dy^T . x;  db += sum over rows of dy. Any of dx, dw, db may be NULL. */
typedef void mt_linear_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dw, mt_tensor *db,
                              const mt_tensor *dy, const mt_tensor *x, const mt_tensor *w);

/* Elementwise over equal shapes: out = a + b, out = a * b. */
typedef void mt_add_fwd_fn(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b);
typedef void mt_mul_fwd_fn(mt_backend *be, mt_tensor *out, const mt_tensor *a, const mt_tensor *b);
/* da += dout; db += dout. */
typedef void mt_add_bwd_fn(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout);
/* da += dout * b; db += dout * a. */
typedef void mt_mul_bwd_fn(mt_backend *be, mt_tensor *da, mt_tensor *db, const mt_tensor *dout, const mt_tensor *a,
                           const mt_tensor *b);

/* y = x * sigmoid(x);  dx += dy * sigmoid(x) * (1 + x * (1 - sigmoid(x))). */
typedef void mt_silu_fwd_fn(mt_backend *be, mt_tensor *y, const mt_tensor *x);
typedef void mt_silu_bwd_fn(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x);
/* y = log(1 + exp(x)) computed as max(x, 0) + log1p(exp(-|x|));  dx += dy * sigmoid(x). */
typedef void mt_softplus_fwd_fn(mt_backend *be, mt_tensor *y, const mt_tensor *x);
typedef void mt_softplus_bwd_fn(mt_backend *be, mt_tensor *dx, const mt_tensor *dy, const mt_tensor *x);

/* Fused residual add + RMSNorm over the last dim D, per row:
 *   r = x + residual (residual may be NULL: r = x), stored in residual_out
 *   rstd = 1 / sqrt(mean(r^2) + eps), stored in rstd (rows)
 *   y = r * rstd * weight
 * x and y share a dtype; residual, residual_out, weight and rstd use the
 * accumulation dtype (f32, or f64 for f64). residual_out and rstd may be
 * NULL (not stored); y then has the bits it has with them (on CUDA, with
 * residual_out's rows 16-byte aligned, as a step tensor's are). */
typedef void mt_rmsnorm_fwd_fn(mt_backend *be, mt_tensor *y, mt_tensor *residual_out, mt_tensor *rstd,
                               const mt_tensor *x, const mt_tensor *residual, const mt_tensor *weight, double eps);
/* y = residual_out * rstd * weight per row, from residual_out and rstd as
 * rmsnorm_fwd stored them: y gets the bits rmsnorm_fwd gave it. The
 * backward recomputes y this way, reading neither x nor residual. */
typedef void mt_rmsnorm_apply_fn(mt_backend *be, mt_tensor *y, const mt_tensor *residual_out, const mt_tensor *rstd,
                                 const mt_tensor *weight);
/* With g = dresidual_out + dr where dr = rstd * (weight*dy - r * rstd^2 * mean(weight*dy*r)):
 *   dx += g; dresidual += g; dweight += sum over rows of dy * r * rstd.
 * dy or dresidual_out may be NULL (zero); dx, dresidual, dweight may be NULL (not needed). */
typedef void mt_rmsnorm_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dresidual,
                               mt_tensor *dweight, const mt_tensor *dy, const mt_tensor *dresidual_out,
                               const mt_tensor *residual_out, const mt_tensor *rstd, const mt_tensor *weight);

/* Cross-entropy with a fused softmax, in two steps so that the vocabulary
 * may be split over ranks. logits (N, V) are columns [first_col,
 * first_col + V) of a vocabulary of `vocab` columns (the whole for
 * first_col 0 and V = vocab); targets (N) i32; rows whose target equals
 * ignore_index contribute nothing. Per row n, into stats (N, 3) in the
 * accumulation dtype:
 *   stats[n] = (m, s, x): m = max_v logits[n, v], s = sum_v exp(logits[n, v] - m),
 *              x = logits[n, t_n - first_col] if t_n lies in the columns, else 0;
 * ignored rows get (0, 0, 0). */
typedef void mt_cross_entropy_stats_fn(mt_backend *be, mt_tensor *stats, const mt_tensor *logits,
                                       const mt_tensor *targets, int64_t first_col, int ignore_index);
/* stats (S, N, 3): the stats of S column slices that together make the
 * vocabulary (rank order). lse (N) = M + log(sum_r s_r exp(m_r - M)),
 * M = max_r m_r, 0 for ignored rows; loss (a 1-element tensor, the
 * accumulation dtype) = sum over non-ignored rows of (lse[n] - sum_r x_r)
 * / count, count being the non-ignored rows; 0 when count = 0. A target
 * outside [0, vocab) that is not ignore_index: the CPU fails naming it,
 * CUDA gives a NaN loss. */
typedef void mt_cross_entropy_combine_fn(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                                         const mt_tensor *stats, const mt_tensor *targets, int64_t vocab,
                                         int ignore_index);
/* dlogits[n, v] += dloss * (exp(logits[n, v] - lse[n]) - [v + first_col == t_n]) / count;
 * ignored rows get nothing. dloss is a 1-element tensor; logits, vocab
 * and first_col as in cross_entropy_stats. dlogits may be logits itself
 * (the same storage): the gradient then replaces the logits (= instead of
 * +=, ignored rows 0). */
typedef void mt_cross_entropy_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                                     const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                                     int64_t first_col, int64_t vocab, int ignore_index);

/* out = x converted to out's dtype (round to nearest even into bf16);
 * cast_bwd: dx += dout converted to dx's dtype. */
typedef void mt_cast_fwd_fn(mt_backend *be, mt_tensor *out, const mt_tensor *x);
typedef void mt_cast_bwd_fn(mt_backend *be, mt_tensor *dx, const mt_tensor *dout);

/* Causal depthwise conv1d over time with bias and fused SiLU, channels last:
 *   out[b, t, c] = silu(bias[c] + sum_{k<W} weight[c, k] * x[b, t - (W-1) + k, c])
 * x (B, L, C) in T (rows may be row_stride apart: a column view), weight
 * (C, W) f32, bias (C) f32 or NULL, W <= 4, out (B, L, C) in T.
 * A tap at time t' < 0 reads init_state[b, c, t' + W - 1] when init_state
 * (B, C, W-1) f32 is given, else 0. With seq_idx (B, L) i32, a tap whose
 * time t' >= 0 has seq_idx[b, t'] != seq_idx[b, t] reads 0, and so does a
 * tap at t' < 0 unless seq_idx[b, t] == seq_idx[b, 0]. */
typedef void mt_conv1d_fwd_fn(mt_backend *be, mt_tensor *out, const mt_tensor *x, const mt_tensor *weight,
                              const mt_tensor *bias, const mt_tensor *init_state, const mt_tensor *seq_idx);
/* Given dout (B, L, C): dx += d/dx, dweight += d/dweight, dbias += d/dbias,
 * dinit_state += d/dinit_state (each may be NULL). Recomputes the
 * pre-activation from x. Sums over (b, t) in a fixed order. */
typedef void mt_conv1d_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dx, mt_tensor *dweight, mt_tensor *dbias,
                              mt_tensor *dinit_state, const mt_tensor *dout, const mt_tensor *x,
                              const mt_tensor *weight, const mt_tensor *bias, const mt_tensor *init_state,
                              const mt_tensor *seq_idx);
/* The conv1d state after x, what conv1d_fwd of the steps that follow x
 * reads as init_state: final[b, c, k] = s[b, L + k, c] for k < W-1, where
 * s is init_state (B, C, W-1) f32 (zeros when NULL) followed by x (B, L, C)
 * in T over time: the last W-1 inputs. final (B, C, W-1) f32. */
typedef void mt_conv1d_final_state_fwd_fn(mt_backend *be, mt_tensor *final, const mt_tensor *x,
                                          const mt_tensor *init_state);
/* Given dfinal: dx += and dinit_state += their elements of it (each may be NULL). */
typedef void mt_conv1d_final_state_bwd_fn(mt_backend *be, mt_tensor *dx, mt_tensor *dinit_state,
                                          const mt_tensor *dfinal, const mt_tensor *x);

/* The SSD (Mamba-2) scan. Shapes: x (B, L, H*P) with head h in columns
 * [h*P, (h+1)*P); dt (B, L, H); Bm and Cm (B, L, G*N), group g in columns
 * [g*N, (g+1)*N), head h reading group h / (H/G); all in T, rows possibly
 * row_stride apart (column views of one projection). A_log, dt_bias (H)
 * f32; D f32 (H) or (H*P) or NULL; z (B, L, H*P) in T or NULL; init_state
 * and final_state (B, H, P, N) f32 or NULL; seq_idx (B, L) i32 or NULL.
 * y (B, L, H*P) in T, contiguous.
 *
 * Per (b, h), in fp32 (double on the CPU), with A = -exp(A_log[h]):
 *   delta_t = clamp(softplus(dt[b,t,h] + dt_bias[h]), dt_min, dt_max)
 *   S_t = exp(delta_t * A) * S_{t-1} + delta_t * x_t (P) outer Bm_t (N)   (S is P x N)
 *   y_t = S_t Cm_t + D * x_t;  y_t *= silu(z_t) when z is given
 * S_{-1} = init_state[b, h] or 0. With seq_idx, at every t > 0 where
 * seq_idx[b, t] != seq_idx[b, t-1] the state restarts: S_{t-1} reads as 0.
 * final_state = S_{L-1}. chunk_size is how the CUDA kernels tile time; the
 * result does not depend on it (the CPU runs the recurrence directly). */
typedef struct mt_ssd_config {
    int headdim;           /* P */
    int ngroups;           /* G, dividing the number of heads */
    int chunk_size;        /* time tile of the CUDA kernels (256) */
    double dt_min, dt_max; /* clamp of softplus(dt + dt_bias): 0 and INFINITY for none */
} mt_ssd_config;
/* The scan's inputs, which its backward reads again; optional ones NULL. */
typedef struct mt_ssd_inputs {
    const mt_tensor *x, *dt, *A_log, *Bm, *Cm, *D, *z, *dt_bias, *init_state, *seq_idx;
    mt_ssd_config cfg;
} mt_ssd_inputs;
typedef void mt_ssd_fwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *final_state,
                           const mt_ssd_inputs *in);
/* Given dy (B, L, H*P) and dfinal_state (B, H, P, N) f32 (either may be
 * NULL, reading as zero), accumulates every input's gradient (each may be
 * NULL): dx, ddt (w.r.t. the raw dt; zero where the clamp is active),
 * dA_log, dBm, dCm, dD, dz, ddt_bias, dinit_state. Sums over b and t in a
 * fixed order. */
typedef struct mt_ssd_grads {
    mt_tensor *dx, *ddt, *dA_log, *dBm, *dCm, *dD, *dz, *ddt_bias, *dinit_state;
} mt_ssd_grads;
typedef void mt_ssd_bwd_fn(mt_backend *be, mt_arena *scratch, const mt_ssd_grads *grads, const mt_tensor *dy,
                           const mt_tensor *dfinal_state, const mt_ssd_inputs *in);

/* The selective scan (Mamba-1); NULL on a backend without a kernel for
 * it, which mt_selective_scan reports. Shapes: u, delta
 * (B, L, D); Bm and Cm (B, L, G*N), group g in columns [g*N, (g+1)*N),
 * channel d reading group d / (D/G); all in T, rows possibly row_stride
 * apart (column views of one projection). A_log (D, N) f32, contiguous;
 * D_skip and delta_bias (D) f32 or NULL; z (B, L, D) in T or NULL.
 * y (B, L, D) in T, contiguous.
 *
 * Per (b, d, n), in fp32 (double on the CPU), with A = -exp(A_log[d, n]):
 *   dlt_t = softplus(delta[b,t,d] + delta_bias[d]) with delta_softplus,
 *           else delta[b,t,d] + delta_bias[d]   (a NULL delta_bias reads as 0)
 *   h_t = exp(dlt_t A) h_{t-1} + dlt_t Bm_t[n] u_t,  h_{-1} = 0
 *   y_t[d] = sum_n Cm_t[n] h_t[n] + D_skip[d] u_t;  y_t *= silu(z_t) when z is given
 * checkpoint, when not NULL, is a contiguous f32 tensor of
 * selective_scan_checkpoint(...) elements that receives what the backward
 * needs to skip rerunning the recurrence (on CUDA: the state entering each
 * tile of time steps). */
typedef void mt_selective_scan_fwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *y, mt_tensor *checkpoint,
                                      const mt_tensor *u, const mt_tensor *delta, const mt_tensor *A_log,
                                      const mt_tensor *Bm, const mt_tensor *Cm, const mt_tensor *D_skip,
                                      const mt_tensor *z, const mt_tensor *delta_bias, int ngroups,
                                      bool delta_softplus);
/* f32 elements of the forward's checkpoint for these sizes (batch, seqlen,
 * channels D, d_state N); NULL on a backend that keeps none. */
typedef int64_t mt_selective_scan_checkpoint_fn(mt_backend *be, int64_t batch, int64_t seqlen, int64_t channels,
                                                int64_t d_state);
/* Given dy (B, L, D), accumulates every input's gradient (each may be
 * NULL): du, ddelta (w.r.t. the raw delta, through softplus when on),
 * dA_log (through A = -exp(A_log)), dBm, dCm (summed over the channels of
 * a group), dD_skip, dz, ddelta_bias. A backend with
 * selective_scan_checkpoint reads the states from the forward's
 * checkpoint (required); one without recomputes them from the inputs.
 * Sums over b, t and channels in a fixed order. */
typedef void mt_selective_scan_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *du, mt_tensor *ddelta,
                                      mt_tensor *dA_log, mt_tensor *dBm, mt_tensor *dCm, mt_tensor *dD_skip,
                                      mt_tensor *dz, mt_tensor *ddelta_bias, const mt_tensor *dy,
                                      const mt_tensor *checkpoint, const mt_tensor *u, const mt_tensor *delta,
                                      const mt_tensor *A_log, const mt_tensor *Bm, const mt_tensor *Cm,
                                      const mt_tensor *D_skip, const mt_tensor *z, const mt_tensor *delta_bias,
                                      int ngroups, bool delta_softplus);

/* Gated RMSNorm (Mamba-2's output norm, norm_before_gate = false), per row
 * of y (R, E) and each of its G groups of E/G columns:
 *   u = y * silu(z);  rstd = 1 / sqrt(mean over the group of u^2 + eps)
 *   out = u * rstd * weight
 * y, z, out in T (y, z rows possibly row_stride apart); weight (E) f32;
 * rstd (R, G) f32 saved for the backward. */
typedef void mt_gated_rmsnorm_fwd_fn(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                                     const mt_tensor *z, const mt_tensor *weight, int ngroups, double eps);
/* dy += d/dy, dz += d/dz, dweight += sum over rows (fixed order); any may be NULL. */
typedef void mt_gated_rmsnorm_bwd_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                                     mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                                     const mt_tensor *weight, const mt_tensor *rstd, int ngroups);

/* The gated RMSNorm of a tensor-parallel rank that holds only some of
 * each group's columns: the kernels below take the per-row group sums
 * over all ranks' columns from the caller, which adds the ranks' sums
 * (a collective) between the phases. Per row r of y (R, E) and each of
 * its G groups of E/G columns, with u = y * silu(z):
 *   sums[r, g] = sum over the group's columns of u^2                 (dout NULL: the forward's)
 *   sums[r, g] = sum over the group's columns of weight * dout * u   (the backward's)
 * sums (R, G) f32, rows possibly row_stride apart (a column view). */
typedef void mt_gated_rmsnorm_sums_fn(mt_backend *be, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                                      const mt_tensor *weight, const mt_tensor *dout, int ngroups);
/* gated_rmsnorm_fwd with each group's sum of squares given, over
 * group_cols columns in all (these E/G and the other ranks'):
 * rstd = 1 / sqrt(sumsq / group_cols + eps). sumsq (R, G) f32 like sums. */
typedef void mt_gated_rmsnorm_fwd_sums_fn(mt_backend *be, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                                          const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq,
                                          int ngroups, int64_t group_cols, double eps);
/* gated_rmsnorm_bwd with the group mean of weight * dout * u taken as
 * wdu / group_cols, wdu (R, G) f32 the backward's sums over all ranks. */
typedef void mt_gated_rmsnorm_bwd_sums_fn(mt_backend *be, mt_arena *scratch, mt_tensor *dy, mt_tensor *dz,
                                          mt_tensor *dweight, const mt_tensor *dout, const mt_tensor *y,
                                          const mt_tensor *z, const mt_tensor *weight, const mt_tensor *rstd,
                                          const mt_tensor *wdu, int ngroups, int64_t group_cols);

/* y += alpha * x over contiguous tensors of equal size and dtype (plain SGD
 * over the flat parameter buffer). */
typedef void mt_axpy_fn(mt_backend *be, mt_tensor *y, const mt_tensor *x, double alpha);

/* One AdamW update (optim/adamw.h) over contiguous flat buffers of equal
 * size and dtype: values, m and v updated in place from grads. decay holds
 * one byte per element on the backend's device, nonzero where weight decay
 * applies. Per element, with g = grad_scale * grad:
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   value = value - lr * (m / bias_correction1) / (sqrt(v / bias_correction2) + eps)
 *                 - [decay] lr * weight_decay * value     (value before the update)
 * f32 on CUDA (fp32 masters); f32 or f64 on the CPU. */
typedef void mt_adamw_step_fn(mt_backend *be, mt_tensor *values, const mt_tensor *grads, mt_tensor *m, mt_tensor *v,
                              const uint8_t *decay, double lr, double beta1, double beta2, double eps,
                              double weight_decay, double bias_correction1, double bias_correction2, double grad_scale);
/* The sum of squares of a contiguous tensor's elements, summed in an
 * order fixed by its size alone; returned to the host (so it waits for
 * the device). f32 on CUDA (summed in double); any float dtype on the CPU. */
typedef double mt_sumsq_fn(mt_backend *be, const mt_tensor *x);
/* out[i] = sumsq of elements [begin[i], begin[i] + count[i]) of the
 * contiguous 1-D x, the same bits as sumsq over each range's view, with
 * one wait for the device instead of n (a tensor-parallel gradient
 * norm's many runs). out is on the host. */
typedef void mt_sumsq_ranges_fn(mt_backend *be, const mt_tensor *x, int n, const size_t *begin, const size_t *count,
                                double *out);

struct mt_backend {
    const char *name;
    mt_device device;
    void *state; /* backend-private: on CUDA the stream, cuBLASLt handle and workspace */

    /* The ops; each one's contract is at its type above. */
    mt_destroy_fn *destroy;
    mt_synchronize_fn *synchronize;

    mt_fill_uniform_fn *fill_uniform;
    mt_fill_normal_fn *fill_normal;

    mt_embedding_fwd_fn *embedding_fwd;
    mt_embedding_bwd_fn *embedding_bwd;

    mt_linear_fwd_fn *linear_fwd;
    mt_linear_bwd_fn *linear_bwd;

    mt_add_fwd_fn *add_fwd;
    mt_mul_fwd_fn *mul_fwd;
    mt_add_bwd_fn *add_bwd;
    mt_mul_bwd_fn *mul_bwd;

    mt_silu_fwd_fn *silu_fwd;
    mt_silu_bwd_fn *silu_bwd;
    mt_softplus_fwd_fn *softplus_fwd;
    mt_softplus_bwd_fn *softplus_bwd;

    mt_rmsnorm_fwd_fn *rmsnorm_fwd;
    mt_rmsnorm_apply_fn *rmsnorm_apply;
    mt_rmsnorm_bwd_fn *rmsnorm_bwd;

    mt_cross_entropy_stats_fn *cross_entropy_stats;
    mt_cross_entropy_combine_fn *cross_entropy_combine;
    mt_cross_entropy_bwd_fn *cross_entropy_bwd;

    mt_cast_fwd_fn *cast_fwd;
    mt_cast_bwd_fn *cast_bwd;

    mt_conv1d_fwd_fn *conv1d_fwd;
    mt_conv1d_bwd_fn *conv1d_bwd;
    mt_conv1d_final_state_fwd_fn *conv1d_final_state_fwd;
    mt_conv1d_final_state_bwd_fn *conv1d_final_state_bwd;

    mt_ssd_fwd_fn *ssd_fwd;
    mt_ssd_bwd_fn *ssd_bwd;

    mt_selective_scan_fwd_fn *selective_scan_fwd;
    mt_selective_scan_checkpoint_fn *selective_scan_checkpoint;
    mt_selective_scan_bwd_fn *selective_scan_bwd;

    mt_gated_rmsnorm_fwd_fn *gated_rmsnorm_fwd;
    mt_gated_rmsnorm_bwd_fn *gated_rmsnorm_bwd;

    mt_gated_rmsnorm_sums_fn *gated_rmsnorm_sums;
    mt_gated_rmsnorm_fwd_sums_fn *gated_rmsnorm_fwd_sums;
    mt_gated_rmsnorm_bwd_sums_fn *gated_rmsnorm_bwd_sums;

    mt_axpy_fn *axpy;

    mt_adamw_step_fn *adamw_step;
    mt_sumsq_fn *sumsq;
    mt_sumsq_ranges_fn *sumsq_ranges;
};

mt_backend *mt_backend_cpu_create(void);

/* Returns NULL (and writes why into why[n]) when this build has no CUDA or no
 * device is present. */
mt_backend *mt_backend_cuda_create(int device_index, char *why, size_t n);

/* A CUDA backend's stream (a cudaStream_t) and device index, for work
 * that must be ordered with its ops (the NCCL communicator). */
void *mt_backend_cuda_stream(mt_backend *be);
int mt_backend_cuda_device(mt_backend *be);

#endif
