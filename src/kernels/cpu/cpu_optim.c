/* Optimizer kernels over the flat parameter buffers: the AdamW update and the
 * sum of squares behind the gradient norm. Both take any float storage (f32
 * masters, f64 for gradient checks) and compute in double. */
#include "kernels/cpu/cpu_internal.h"

/* Elements per partial sum in sumsq: a fixed split, so the order of the
 * additions depends on the size alone and never on the thread count. */
#define SUMSQ_CHUNK 4096

void mt_cpu_adamw_step(mt_backend *be, mt_tensor *values, const mt_tensor *grads, mt_tensor *m, mt_tensor *v,
                       const uint8_t *decay, double lr, double beta1, double beta2, double eps,
                       double weight_decay, double bias_correction1, double bias_correction2, double grad_scale)
{
    (void)be;
    int64_t n = mt_numel(values);
    mt_dtype dt = values->dtype;
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        double p = cpu_load(dt, values->data, i);
        double g = grad_scale * cpu_load(dt, grads->data, i);
        double mi = beta1 * cpu_load(dt, m->data, i) + (1.0 - beta1) * g;
        double vi = beta2 * cpu_load(dt, v->data, i) + (1.0 - beta2) * g * g;
        double updated = p - lr * (mi / bias_correction1) / (sqrt(vi / bias_correction2) + eps);
        if (decay[i])
            updated -= lr * weight_decay * p;
        cpu_store(dt, m->data, i, mi);
        cpu_store(dt, v->data, i, vi);
        cpu_store(dt, values->data, i, updated);
    }
}

void mt_cpu_sumsq_ranges(mt_backend *be, const mt_tensor *x, int n, const size_t *begin, const size_t *count,
                         double *out)
{
    for (int i = 0; i < n; i++) {
        mt_tensor r;
        mt_tensor_init(&r, x->dtype, x->device, 1, (int64_t[]){(int64_t)count[i]});
        r.data = (char *)x->data + begin[i] * mt_dtype_size(x->dtype);
        out[i] = mt_cpu_sumsq(be, &r);
    }
}

double mt_cpu_sumsq(mt_backend *be, const mt_tensor *x)
{
    (void)be;
    int64_t n = mt_numel(x), nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *partial = cpu_temp_alloc(NULL, (size_t)nchunks * sizeof *partial);
#pragma omp parallel for
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t end = (c + 1) * SUMSQ_CHUNK < n ? (c + 1) * SUMSQ_CHUNK : n;
        double s = 0;
        for (int64_t i = c * SUMSQ_CHUNK; i < end; i++) {
            double e = cpu_load(x->dtype, x->data, i);
            s += e * e;
        }
        partial[c] = s;
    }
    double total = 0;
    for (int64_t c = 0; c < nchunks; c++)
        total += partial[c];
    cpu_temp_free(NULL, partial);
    return total;
}
