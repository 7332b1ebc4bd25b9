/* Token embedding lookup and its scatter-add backward. */
#include <stdlib.h>

#include "kernels/cpu/cpu_internal.h"

/* A bad id would read or write outside the table, so it is fatal in both directions. */
static void check_ids(const mt_tensor *ids, int64_t vocab, const char *kernel)
{
    int64_t n_ids = mt_numel(ids);
    for (int64_t n = 0; n < n_ids; n++) {
        int32_t id = cpu_index(ids, n);
        if (id < 0 || id >= vocab)
            mt_fatal("%s: ids[%lld] = %d is outside the vocabulary [0, %lld)", kernel, (long long)n, id,
                     (long long)vocab);
    }
}

/* Whether id is one of weight's rows [first_id, first_id + rows). */
static bool in_slice(int32_t id, int64_t first_id, int64_t rows)
{
    return id >= first_id && id - first_id < rows;
}

/* out (N, D): row n is row ids[n] - first_id of weight (V, D) when that is
 * one of its rows, else zeros. */
void mt_cpu_embedding_fwd(mt_backend *be, mt_tensor *out, const mt_tensor *weight, const mt_tensor *ids,
                          int64_t first_id, int64_t vocab)
{
    (void)be;
    int64_t n_ids = mt_numel(ids), dim = mt_cols(weight), rows = mt_rows(weight);
    check_ids(ids, vocab, "embedding_fwd");
#pragma omp parallel for
    for (int64_t n = 0; n < n_ids; n++) {
        int32_t id = cpu_index(ids, n);
        const void *src = in_slice(id, first_id, rows) ? cpu_row(weight, id - first_id) : NULL;
        void *dst = cpu_row(out, n);
        for (int64_t d = 0; d < dim; d++)
            cpu_store(out->dtype, dst, d, src ? cpu_load(weight->dtype, src, d) : 0.0);
    }
}

typedef struct {
    int32_t id;
    int64_t n;
} id_position;

static int by_id_then_position(const void *pa, const void *pb)
{
    const id_position *a = pa, *b = pb;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return (a->n > b->n) - (a->n < b->n);
}

/* dweight (V, D) [ids[n] - first_id, :] += dout (N, D) [n, :] for the ids
 * among dweight's rows.
 * Positions are grouped by id so that each touched row of dweight adds its dout
 * rows in order of n, in double, and is rounded once; groups are independent,
 * so they run in parallel without changing any sum. */
void mt_cpu_embedding_bwd(mt_backend *be, mt_arena *scratch, mt_tensor *dweight, const mt_tensor *dout,
                          const mt_tensor *ids, int64_t first_id, int64_t vocab)
{
    (void)be;
    int64_t n_ids = mt_numel(ids), dim = mt_cols(dweight), rows = mt_rows(dweight);
    check_ids(ids, vocab, "embedding_bwd");
    if (n_ids == 0)
        return;

    id_position *order = cpu_temp_alloc(scratch, (size_t)n_ids * sizeof *order);
    int64_t *group_start = cpu_temp_alloc(scratch, (size_t)(n_ids + 1) * sizeof *group_start);
    int64_t n_mine = 0;
    for (int64_t n = 0; n < n_ids; n++) {
        int32_t id = cpu_index(ids, n);
        if (in_slice(id, first_id, rows))
            order[n_mine++] = (id_position){(int32_t)(id - first_id), n};
    }
    qsort(order, (size_t)n_mine, sizeof *order, by_id_then_position);
    int64_t n_groups = 0;
    for (int64_t i = 0; i < n_mine; i++)
        if (i == 0 || order[i].id != order[i - 1].id)
            group_start[n_groups++] = i;
    group_start[n_groups] = n_mine;

#pragma omp parallel for
    for (int64_t g = 0; g < n_groups; g++) {
        void *dst = cpu_row(dweight, order[group_start[g]].id);
        for (int64_t d = 0; d < dim; d++) {
            double sum = cpu_load(dweight->dtype, dst, d);
            for (int64_t i = group_start[g]; i < group_start[g + 1]; i++)
                sum += cpu_load(dout->dtype, cpu_row(dout, order[i].n), d);
            cpu_store(dweight->dtype, dst, d, sum);
        }
    }
    cpu_temp_free(scratch, group_start);
    cpu_temp_free(scratch, order);
}
