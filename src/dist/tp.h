/* Tensor parallelism (TP) for Mamba-2, as the reference's
 * mamba_ssm/distributed: a TP group of `size` ranks runs one model whose
 * heads are split over the ranks. Per Mamba-2 mixer, rank r holds
 *   in_proj (column-parallel): its slice of each output segment
 *     [z: d_inner | x: d_inner | B: G*N | C: G*N | dt: nheads]
 *     (z, x, dt: d_inner/size or nheads/size rows; B and C split by groups
 *     when ngroups % size == 0, else every rank holds all of them);
 *   conv1d weight and bias: the rows of its x, B and C channels, alike;
 *   dt_bias, A_log, D, norm.weight: its heads' and channels' slices;
 *   out_proj (row-parallel): its d_inner/size input columns,
 * under the full model's parameter names with local shapes. The embedding
 * and the lm_head (tied or not) are vocab-parallel: rank r holds rows
 * [r * V/size, (r + 1) * V/size) of the padded vocabulary V, each rank's
 * lookups are summed and the cross-entropy combines the ranks' row
 * statistics (autograd/ops_tp.h), so no rank computes the whole logits. The
 * block norms and norm_f are replicated on every rank. With B and C
 * replicated, size must be a multiple of ngroups so that each rank's heads
 * read one group (group rank * ngroups / size); their gradients on a rank
 * are only its heads' part (MT_PARAM_TP_PARTIAL_GRAD) and the gated norm's
 * groups span ranks, so the norm sums its statistics over the group
 * (autograd/ops_tp.h). Sharded parameters carry MT_PARAM_TP_SHARDED.
 *
 * Per step, on every rank of the TP group: forward and backward (the
 * boundary ops all-reduce activations' sums inside), then
 * mt_tp_reduce_partial_grads, then the data-parallel reduction if any, then
 * mt_tp_grad_norm and the optimizer step on the local parameters. Replicated
 * parameters get the same gradient on every rank, so their updates agree. */
#ifndef MT_TP_H
#define MT_TP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/params.h"
#include "dist/comm.h"
#include "kernels/backend.h"
#include "layers/config.h"

/* A rank's place in its TP group; comm->world == size. size 1 (or a NULL
 * mt_tp where one is taken) is the plain model. */
typedef struct mt_tp {
    mt_comm *comm;
    int rank, size;
} mt_tp;

/* What one rank of a TP group of `size` holds of a Mamba-2 mixer. */
typedef struct mt_tp_dims {
    int64_t d_inner, nheads; /* its channels and heads */
    int64_t bc;              /* its columns of each of B and C: d_state times its groups */
    bool bc_sharded;         /* B and C split by groups (ngroups % size == 0), else replicated */
    int groups;              /* its groups of B and C: ngroups / size, or ngroups when replicated */
    int head_group;          /* replicated: the group its heads read (and its norm group) */
} mt_tp_dims;

/* Whether cfg can be split over tp_size ranks; else false and err names the
 * setting (layer, nheads, ngroups). */
bool mt_tp_check(const mt_model_config *cfg, int tp_size, char *err, size_t errlen);

/* Rank `rank`'s dims; cfg must pass mt_tp_check for size. */
mt_tp_dims mt_tp_dims_of(const mt_model_config *cfg, int size, int rank);

/* Where a parameter's local elements lie in the full parameter: `rows`
 * rows of local_row (locally) and full_row (in the full parameter) elements,
 * in each row n segments of len[i] elements at local[i] and full[i]. The
 * local elements [partial_begin, partial_begin + partial_count) are
 * replicated ones with partial gradients. */
typedef struct mt_tp_layout {
    int n;
    int64_t local[5], full[5], len[5];
    int64_t rows, local_row, full_row;
    int64_t partial_begin, partial_count;
} mt_tp_layout;

/* The layout of the parameter called name (a reference key) on rank `rank`
 * of `size`; false for a replicated parameter (the whole of it on every rank). */
bool mt_tp_layout_of(const mt_model_config *cfg, int size, int rank, const char *name, mt_tp_layout *l);

/* Copies between one parameter's local and full elements on dev (es bytes
 * each): local = its slice of full, or (to_full) the slice written back. */
void mt_tp_copy_param(const mt_tp_layout *l, mt_device dev, void *local, void *full, size_t es, bool to_full);

/* Host flat buffers (values, or Adam's m or v) in the stores' dtype, laid out
 * as `full` (the single-rank model's store) and `local` (rank `rank`'s of a
 * TP group of `size`): local_buf = rank's slice of full_buf. False when the
 * stores do not fit cfg (a name missing, a size that differs, dtypes). */
bool mt_tp_slice(const mt_model_config *cfg, int size, int rank, const mt_params *full, const void *full_buf,
                 const mt_params *local, void *local_buf, char *err, size_t errlen);

/* The inverse: rank's local_buf written into its places of full_buf
 * (replicated parameters whole; every rank writes the same values). A
 * checkpoint gathers every rank's flat buffer (all the same size: the comm's
 * all_gather) and unslices each. */
bool mt_tp_unslice(const mt_model_config *cfg, int size, int rank, const mt_params *local, const void *local_buf,
                   const mt_params *full, void *full_buf, char *err, size_t errlen);

/* Sums the gradients of MT_PARAM_TP_PARTIAL_GRAD parameters' partial
 * elements over the TP group (one all-reduce per parameter); a no-op for a
 * NULL comm or one rank. */
bool mt_tp_reduce_partial_grads(mt_comm *tp, mt_params *local, char *err, size_t errlen);

/* The L2 norm of the whole model's gradient from a rank's local store,
 * after mt_tp_reduce_partial_grads: the sharded elements' sums of squares
 * summed over the group, plus the replicated ones' (the same on every
 * rank) once. The same value on every rank. */
bool mt_tp_grad_norm(mt_comm *tp, mt_backend *be, const mt_params *local, double *norm, char *err, size_t errlen);

/* The sums of squares of the gradient elements [begin, end) of the flat
 * buffer, added to sq[0] (sharded elements) and sq[1] (replicated ones):
 * the pieces of mt_tp_grad_norm for a rank that owns only part of the
 * buffer (a ZeRO-1 shard). */
void mt_tp_grad_sumsq(mt_backend *be, const mt_params *local, size_t begin, size_t end, double sq[2]);

#endif
