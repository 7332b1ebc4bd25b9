/* Tensors: a dtype, up to four dims with strides, and a pointer into memory
 * owned elsewhere (the step arena, the flat parameter buffer, or the tensor
 * itself when made with mt_tensor_new). */
#ifndef MT_TENSOR_H
#define MT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_MAX_DIMS 4

typedef enum { MT_F32, MT_BF16, MT_F64, MT_I32 } mt_dtype;
typedef enum { MT_CPU, MT_CUDA } mt_device;

typedef struct mt_tensor {
    mt_dtype dtype;
    mt_device device;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    int64_t stride[MT_MAX_DIMS]; /* in elements */
    void *data;                  /* the first element */
    struct mt_tensor *grad;      /* same shape, allocated by backward (or the parameter store) */
    bool requires_grad;
    bool is_param;               /* grad lives in the flat gradient buffer and persists */
    bool owns_data;              /* made by mt_tensor_new: mt_tensor_free releases data */
    struct mt_tensor *base;      /* a view's parent: the view's gradient is the same view of base's */
    const char *name;
} mt_tensor;

size_t mt_dtype_size(mt_dtype dt);
const char *mt_dtype_name(mt_dtype dt);
const char *mt_device_name(mt_device dev);
bool mt_dtype_is_float(mt_dtype dt);

/* The dtype that sums over a float dtype are computed and kept in (norm
 * statistics, the residual stream, losses): f64 stays f64, f32 and bf16 use f32. */
mt_dtype mt_accum_dtype(mt_dtype dt);

int64_t mt_numel(const mt_tensor *t);
size_t mt_nbytes(const mt_tensor *t);

/* Sets shape and contiguous strides. */
void mt_tensor_init(mt_tensor *t, mt_dtype dt, mt_device dev, int ndim, const int64_t *shape);

bool mt_is_contiguous(const mt_tensor *t);

/* Kernels see a tensor as a matrix of rows x cols where cols is the last dim,
 * elements of a row are adjacent and rows are row_stride apart. That holds for
 * contiguous tensors and for views that split the last dimension. */
bool mt_is_row_major(const mt_tensor *t);
int64_t mt_rows(const mt_tensor *t);
int64_t mt_cols(const mt_tensor *t);
int64_t mt_row_stride(const mt_tensor *t);

bool mt_same_shape(const mt_tensor *a, const mt_tensor *b);

/* Writes "(2, 3, 4) f32 cuda" into buf. */
const char *mt_shape_str(const mt_tensor *t, char *buf, size_t n);
/* "(d0, d1, ...)" of a bare shape into buf (n bytes); returns buf. */
const char *mt_dims_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* A view of columns [start, start + len) of the last dim; no copy. */
mt_tensor mt_view_cols(const mt_tensor *t, int64_t start, int64_t len);

/* Heap tensors for tests, loaders and tools, outside any step arena. */
mt_tensor *mt_tensor_new(mt_device dev, mt_dtype dt, int ndim, const int64_t *shape);
void mt_tensor_free(mt_tensor *t);

/* Copies between tensors of equal shape and dtype, on any devices. */
void mt_tensor_copy(mt_tensor *dst, const mt_tensor *src);

/* Element access on CPU tensors, as double, for references and tests. */
double mt_get(const mt_tensor *t, int64_t flat_index);
void mt_set(mt_tensor *t, int64_t flat_index, double v);

/* bf16 conversions with round-to-nearest-even, as the GPU does. */
uint16_t mt_f32_to_bf16(float f);
float mt_bf16_to_f32(uint16_t b);

#endif
