/* Mean cross-entropy over rows of logits with a fused softmax, and its backward. */
#include "kernels/cpu/cpu_internal.h"

/* The number of rows whose target is not ignore_index. Any other target
 * outside [0, V) is fatal: it would index past the row. */
static int64_t count_targets(const mt_tensor *targets, int64_t vocab, int ignore_index, const char *kernel)
{
    int64_t rows = mt_numel(targets), count = 0;
    for (int64_t n = 0; n < rows; n++) {
        int32_t t = cpu_index(targets, n);
        if (t == ignore_index)
            continue;
        if (t < 0 || t >= vocab)
            mt_fatal("%s: row %lld has target %d, outside [0, %lld) and not ignore_index (%d)", kernel,
                     (long long)n, t, (long long)vocab, ignore_index);
        count++;
    }
    return count;
}

/* logits (N, V), targets (N) i32: lse (N) = logsumexp of each row, every row
 * including ignored ones; loss (1) = mean over non-ignored rows of
 * lse[n] - logits[n, t_n], or 0 when all are ignored. Rows run in parallel,
 * their losses are then summed in row order. */
void mt_cpu_cross_entropy_fwd(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                              const mt_tensor *logits, const mt_tensor *targets, int ignore_index)
{
    (void)be;
    int64_t rows = mt_rows(logits), vocab = mt_cols(logits);
    int64_t count = count_targets(targets, vocab, ignore_index, "cross_entropy_fwd");
    double *row_loss = cpu_temp_alloc(scratch, (size_t)rows * sizeof *row_loss);
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        const void *lr = cpu_row(logits, n);
        double max = -INFINITY, sum = 0.0;
        for (int64_t v = 0; v < vocab; v++)
            max = fmax(max, cpu_load(logits->dtype, lr, v));
        for (int64_t v = 0; v < vocab; v++)
            sum += exp(cpu_load(logits->dtype, lr, v) - max);
        double row_lse = max + log(sum);
        cpu_store(lse->dtype, lse->data, n, row_lse);
        int32_t t = cpu_index(targets, n);
        row_loss[n] = t == ignore_index ? 0.0 : row_lse - cpu_load(logits->dtype, lr, t);
    }
    double total = 0.0;
    for (int64_t n = 0; n < rows; n++)
        total += row_loss[n];
    cpu_store(loss->dtype, loss->data, 0, count ? total / (double)count : 0.0);
    cpu_temp_free(scratch, row_loss);
}

/* dlogits (N, V) += dloss * (softmax(logits[n]) - onehot(t_n)) / count, with
 * the softmax taken as exp(logits - lse); ignored rows get nothing. */
void mt_cpu_cross_entropy_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                              const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                              int ignore_index)
{
    (void)be;
    (void)scratch;
    int64_t rows = mt_rows(logits), vocab = mt_cols(logits);
    int64_t count = count_targets(targets, vocab, ignore_index, "cross_entropy_bwd");
    if (count == 0)
        return;
    double scale = cpu_load(dloss->dtype, dloss->data, 0) / (double)count;
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        int32_t t = cpu_index(targets, n);
        if (t == ignore_index)
            continue;
        const void *lr = cpu_row(logits, n);
        void *dr = cpu_row(dlogits, n);
        double row_lse = cpu_load(lse->dtype, lse->data, n);
        for (int64_t v = 0; v < vocab; v++) {
            double p = exp(cpu_load(logits->dtype, lr, v) - row_lse);
            cpu_accumulate(dlogits->dtype, dr, v, scale * (p - (v == t ? 1.0 : 0.0)));
        }
    }
}
