#include "core/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/error.h"

size_t mt_dtype_size(mt_dtype dt)
{
    switch (dt) {
    case MT_F32: return 4;
    case MT_BF16: return 2;
    case MT_F64: return 8;
    case MT_I32: return 4;
    }
    return 0;
}

const char *mt_dtype_name(mt_dtype dt)
{
    switch (dt) {
    case MT_F32: return "f32";
    case MT_BF16: return "bf16";
    case MT_F64: return "f64";
    case MT_I32: return "i32";
    }
    return "?";
}

const char *mt_device_name(mt_device dev)
{
    return dev == MT_CUDA ? "cuda" : "cpu";
}

bool mt_dtype_is_float(mt_dtype dt)
{
    return dt == MT_F32 || dt == MT_BF16 || dt == MT_F64;
}

mt_dtype mt_accum_dtype(mt_dtype dt)
{
    return dt == MT_F64 ? MT_F64 : MT_F32;
}

int64_t mt_numel(const mt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t mt_nbytes(const mt_tensor *t)
{
    return (size_t)mt_numel(t) * mt_dtype_size(t->dtype);
}

void mt_tensor_init(mt_tensor *t, mt_dtype dt, mt_device dev, int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim > MT_MAX_DIMS)
        mt_fatal("tensor with %d dims: 1 to %d are supported", ndim, MT_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->device = dev;
    t->ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] < 0)
            mt_fatal("tensor dim %d is negative (%lld)", i, (long long)shape[i]);
        t->shape[i] = shape[i];
        t->stride[i] = s;
        s *= shape[i];
    }
}

bool mt_is_contiguous(const mt_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s)
            return false;
        s *= t->shape[i];
    }
    return true;
}

bool mt_is_row_major(const mt_tensor *t)
{
    int last = t->ndim - 1;
    if (t->shape[last] > 1 && t->stride[last] != 1)
        return false;
    int64_t s = mt_row_stride(t);
    for (int i = last - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s)
            return false;
        s *= t->shape[i];
    }
    return true;
}

int64_t mt_cols(const mt_tensor *t)
{
    return t->shape[t->ndim - 1];
}

int64_t mt_rows(const mt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim - 1; i++)
        n *= t->shape[i];
    return n;
}

int64_t mt_row_stride(const mt_tensor *t)
{
    return t->ndim > 1 ? t->stride[t->ndim - 2] : t->shape[0];
}

bool mt_same_shape(const mt_tensor *a, const mt_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

const char *mt_dims_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, ")");
    return buf;
}

const char *mt_shape_str(const mt_tensor *t, char *buf, size_t n)
{
    mt_dims_str(t->ndim, t->shape, buf, n);
    size_t k = strlen(buf);
    if (k < n)
        snprintf(buf + k, n - k, " %s %s", mt_dtype_name(t->dtype), mt_device_name(t->device));
    return buf;
}

mt_tensor mt_view_cols(const mt_tensor *t, int64_t start, int64_t len)
{
    int last = t->ndim - 1;
    if (start < 0 || len < 0 || start + len > t->shape[last])
        mt_fatal("view of columns [%lld, %lld) of a last dim of %lld", (long long)start,
                 (long long)(start + len), (long long)t->shape[last]);
    mt_tensor v = *t;
    v.data = (char *)t->data + (size_t)(start * t->stride[last]) * mt_dtype_size(t->dtype);
    v.shape[last] = len;
    v.grad = NULL;
    v.owns_data = false;
    v.is_param = false;
    v.base = NULL;
    return v;
}

mt_tensor *mt_tensor_new(mt_device dev, mt_dtype dt, int ndim, const int64_t *shape)
{
    mt_tensor *t = malloc(sizeof *t);
    if (!t)
        mt_fatal("out of host memory for a tensor header");
    mt_tensor_init(t, dt, dev, ndim, shape);
    t->data = mt_device_alloc(dev, mt_nbytes(t), "mt_tensor_new");
    t->owns_data = true;
    return t;
}

void mt_tensor_free(mt_tensor *t)
{
    if (!t)
        return;
    if (t->owns_data)
        mt_device_free(t->device, t->data);
    free(t);
}

void mt_tensor_copy(mt_tensor *dst, const mt_tensor *src)
{
    char a[96], b[96];
    if (dst->dtype != src->dtype || !mt_same_shape(dst, src))
        mt_fatal("mt_tensor_copy: dst %s and src %s differ", mt_shape_str(dst, a, sizeof a),
                 mt_shape_str(src, b, sizeof b));
    if (!mt_is_contiguous(dst) || !mt_is_contiguous(src))
        mt_fatal("mt_tensor_copy: dst %s and src %s must be contiguous", mt_shape_str(dst, a, sizeof a),
                 mt_shape_str(src, b, sizeof b));
    mt_device_copy(dst->device, dst->data, src->device, src->data, mt_nbytes(src));
}

/* Byte offset of flat (row-major logical) index i under t's strides. */
static size_t element_offset(const mt_tensor *t, int64_t i)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return (size_t)off * mt_dtype_size(t->dtype);
}

static void require_cpu(const mt_tensor *t, const char *fn)
{
    char s[96];
    if (t->device != MT_CPU)
        mt_fatal("%s: tensor %s is not on the CPU", fn, mt_shape_str(t, s, sizeof s));
}

double mt_get(const mt_tensor *t, int64_t i)
{
    require_cpu(t, "mt_get");
    const char *p = (const char *)t->data + element_offset(t, i);
    switch (t->dtype) {
    case MT_F32: return *(const float *)p;
    case MT_BF16: return mt_bf16_to_f32(*(const uint16_t *)p);
    case MT_F64: return *(const double *)p;
    case MT_I32: return *(const int32_t *)p;
    }
    return 0;
}

void mt_set(mt_tensor *t, int64_t i, double v)
{
    require_cpu(t, "mt_set");
    char *p = (char *)t->data + element_offset(t, i);
    switch (t->dtype) {
    case MT_F32: *(float *)p = (float)v; break;
    case MT_BF16: *(uint16_t *)p = mt_f32_to_bf16((float)v); break;
    case MT_F64: *(double *)p = v; break;
    case MT_I32: *(int32_t *)p = (int32_t)v; break;
    }
}

uint16_t mt_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mt_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
