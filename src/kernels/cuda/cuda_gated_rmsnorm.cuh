/* What the gated RMSNorm files share: the team path's launchers, in
 * cuda_gated_rmsnorm_team.cu, which the host launchers of
 * cuda_gated_rmsnorm.cu try before the general path. They take their
 * callers' arguments, already checked, and launch nothing where the team
 * path does not apply. See cuda_gated_rmsnorm.cu for the shapes. */
#ifndef MT_CUDA_GATED_RMSNORM_CUH
#define MT_CUDA_GATED_RMSNORM_CUH

#include "kernels/cuda/cuda_common.cuh"

/* The forward, with the group sums of squares over ncols columns taken from
 * sumsq when given; false where the path does not apply. */
bool grms_fwd_team(mt_backend *be, const char *op, mt_tensor *out, mt_tensor *rstd, const mt_tensor *y,
                   const mt_tensor *z, const mt_tensor *weight, const mt_tensor *sumsq, int ngroups, double ncols,
                   double eps);
/* The group sums of u^2, or of w * dout * u when dout is given; false where
 * the path does not apply. */
bool grms_sums_team(mt_backend *be, const char *op, mt_tensor *sums, const mt_tensor *y, const mt_tensor *z,
                    const mt_tensor *weight, const mt_tensor *dout, int ngroups);
/* The backward; returns the partial dweight rows it leaves in partial (one
 * per block), 0 where the path does not apply. */
int64_t grms_bwd_team(mt_backend *be, const char *op, mt_arena *scratch, float **partial, mt_tensor *dy, mt_tensor *dz,
                      bool need_dweight, const mt_tensor *dout, const mt_tensor *y, const mt_tensor *z,
                      const mt_tensor *weight, const mt_tensor *rstd, const mt_tensor *wdu, int ngroups,
                      double ncols);

#endif
