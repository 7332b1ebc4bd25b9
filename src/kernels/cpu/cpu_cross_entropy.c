/* Mean cross-entropy over rows of logits with a fused softmax, in two steps
 * (each column slice's row statistics, then their combination) so that the
 * vocabulary may be split over ranks, and its backward. */
#include "kernels/cpu/cpu_internal.h"

/* The number of rows whose target is not ignore_index. Any other target
 * outside [0, vocab) is fatal: it would index past the row. */
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

/* logits (N, V), columns [first_col, first_col + V) of the vocabulary;
 * stats (N, 3) = (max, sum of exp(logit - max), the target's logit or 0)
 * per row, (0, 0, 0) for ignored rows. */
void mt_cpu_cross_entropy_stats(mt_backend *be, mt_tensor *stats, const mt_tensor *logits, const mt_tensor *targets,
                                int64_t first_col, int ignore_index)
{
    (void)be;
    int64_t rows = mt_rows(logits), cols = mt_cols(logits);
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        int32_t t = cpu_index(targets, n);
        double max = 0.0, sum = 0.0, x = 0.0;
        if (t != ignore_index) {
            const void *lr = cpu_row(logits, n);
            max = -INFINITY;
            for (int64_t v = 0; v < cols; v++)
                max = fmax(max, cpu_load(logits->dtype, lr, v));
            for (int64_t v = 0; max > -INFINITY && v < cols; v++) /* no -inf - -inf */
                sum += exp(cpu_load(logits->dtype, lr, v) - max);
            if (t >= first_col && t - first_col < cols)
                x = cpu_load(logits->dtype, lr, t - first_col);
        }
        cpu_store(stats->dtype, stats->data, 3 * n, max);
        cpu_store(stats->dtype, stats->data, 3 * n + 1, sum);
        cpu_store(stats->dtype, stats->data, 3 * n + 2, x);
    }
}

/* stats (S, N, 3) of S column slices -> lse (N) and the mean loss over the
 * non-ignored rows; slices combine in order, rows run in parallel and their
 * losses are then summed in row order. */
void mt_cpu_cross_entropy_combine(mt_backend *be, mt_arena *scratch, mt_tensor *loss, mt_tensor *lse,
                                  const mt_tensor *stats, const mt_tensor *targets, int64_t vocab, int ignore_index)
{
    (void)be;
    int64_t rows = mt_numel(targets), slices = rows ? mt_numel(stats) / (3 * rows) : 0;
    int64_t count = count_targets(targets, vocab, ignore_index, "cross_entropy_combine");
    double *row_loss = cpu_temp_alloc(scratch, (size_t)(rows ? rows : 1) * sizeof *row_loss);
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        double row_lse = 0.0;
        row_loss[n] = 0.0;
        if (cpu_index(targets, n) != ignore_index) {
            double max = -INFINITY, sum = 0.0, x = 0.0;
            for (int64_t r = 0; r < slices; r++)
                max = fmax(max, cpu_load(stats->dtype, stats->data, 3 * (r * rows + n)));
            for (int64_t r = 0; r < slices; r++) {
                int64_t at = 3 * (r * rows + n);
                double s = cpu_load(stats->dtype, stats->data, at + 1);
                if (s != 0) /* a slice of -inf logits has max -inf; a NaN must show */
                    sum += s * exp(cpu_load(stats->dtype, stats->data, at) - max);
                x += cpu_load(stats->dtype, stats->data, at + 2);
            }
            row_lse = max + log(sum);
            row_loss[n] = row_lse - x;
        }
        cpu_store(lse->dtype, lse->data, n, row_lse);
    }
    double total = 0.0;
    for (int64_t n = 0; n < rows; n++)
        total += row_loss[n];
    cpu_store(loss->dtype, loss->data, 0, count ? total / (double)count : 0.0);
    cpu_temp_free(scratch, row_loss);
}

/* dlogits (N, V) += dloss * (softmax(logits[n]) - onehot(t_n - first_col)) / count,
 * with the softmax taken as exp(logits - lse); ignored rows get nothing.
 * When dlogits is logits itself, the gradient replaces the logits (ignored
 * rows 0). */
void mt_cpu_cross_entropy_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dlogits, const mt_tensor *dloss,
                              const mt_tensor *logits, const mt_tensor *lse, const mt_tensor *targets,
                              int64_t first_col, int64_t vocab, int ignore_index)
{
    (void)be;
    (void)scratch;
    int64_t rows = mt_rows(logits), cols = mt_cols(logits);
    int64_t count = count_targets(targets, vocab, ignore_index, "cross_entropy_bwd");
    const bool in_place = dlogits->data == logits->data;
    if (count == 0 && !in_place)
        return;
    double scale = count ? cpu_load(dloss->dtype, dloss->data, 0) / (double)count : 0.0;
#pragma omp parallel for
    for (int64_t n = 0; n < rows; n++) {
        int32_t t = cpu_index(targets, n);
        void *dr = cpu_row(dlogits, n);
        if (t == ignore_index) {
            for (int64_t v = 0; in_place && v < cols; v++)
                cpu_store(dlogits->dtype, dr, v, 0.0);
            continue;
        }
        const void *lr = cpu_row(logits, n);
        double row_lse = cpu_load(lse->dtype, lse->data, n);
        for (int64_t v = 0; v < cols; v++) {
            double g = scale * (exp(cpu_load(logits->dtype, lr, v) - row_lse) - (v + first_col == t ? 1.0 : 0.0));
            if (in_place)
                cpu_store(dlogits->dtype, dr, v, g);
            else
                cpu_accumulate(dlogits->dtype, dr, v, g);
        }
    }
}
