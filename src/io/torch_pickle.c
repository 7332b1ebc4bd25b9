#include "io/torch_pickle.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Caps against hostile input. A state dict nests MARKs two or three deep and
 * keeps at most ~1000 items on the stack (SETITEMS batches), so these only
 * stop a crafted file early; memo indices are also below the pickle's length
 * (see memo_put). */
#define MAX_STACK (1u << 20)
#define MAX_MARKS 1024
#define MAX_GLOBAL_NAME 256

/* Every pickle opcode, for naming the rejected ones. */
static const char *const op_name[256] = {
    ['('] = "MARK", ['.'] = "STOP", ['0'] = "POP", ['1'] = "POP_MARK", ['2'] = "DUP", ['F'] = "FLOAT",
    ['I'] = "INT", ['J'] = "BININT", ['K'] = "BININT1", ['L'] = "LONG", ['M'] = "BININT2", ['N'] = "NONE",
    ['P'] = "PERSID", ['Q'] = "BINPERSID", ['R'] = "REDUCE", ['S'] = "STRING", ['T'] = "BINSTRING",
    ['U'] = "SHORT_BINSTRING", ['V'] = "UNICODE", ['X'] = "BINUNICODE", ['a'] = "APPEND", ['b'] = "BUILD",
    ['c'] = "GLOBAL", ['d'] = "DICT", ['}'] = "EMPTY_DICT", ['e'] = "APPENDS", ['g'] = "GET", ['h'] = "BINGET",
    ['i'] = "INST", ['j'] = "LONG_BINGET", ['l'] = "LIST", [']'] = "EMPTY_LIST", ['o'] = "OBJ", ['p'] = "PUT",
    ['q'] = "BINPUT", ['r'] = "LONG_BINPUT", ['s'] = "SETITEM", ['t'] = "TUPLE", [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS", ['G'] = "BINFLOAT", ['B'] = "BINBYTES", ['C'] = "SHORT_BINBYTES", [0x80] = "PROTO",
    [0x81] = "NEWOBJ", [0x82] = "EXT1", [0x83] = "EXT2", [0x84] = "EXT4", [0x85] = "TUPLE1", [0x86] = "TUPLE2",
    [0x87] = "TUPLE3", [0x88] = "NEWTRUE", [0x89] = "NEWFALSE", [0x8a] = "LONG1", [0x8b] = "LONG4",
    [0x8c] = "SHORT_BINUNICODE", [0x8d] = "BINUNICODE8", [0x8e] = "BINBYTES8", [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS", [0x91] = "FROZENSET", [0x92] = "NEWOBJ_EX", [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE",
    [0x95] = "FRAME", [0x96] = "BYTEARRAY8", [0x97] = "NEXT_BUFFER", [0x98] = "READONLY_BUFFER",
};

typedef enum { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR } kind;
static const char *const kind_name[] = {"None", "bool", "int", "float", "str", "tuple", "dict", "global",
                                        "storage", "tensor"};

typedef enum { G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_TENSOR, G_STORAGE } gkind;

/* The only globals a state dict may name. */
static const struct {
    const char *module, *name;
    gkind g;
    mt_st_dtype dtype; /* G_STORAGE */
} allowed[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0},
    {"torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR, 0},
    {"torch", "FloatStorage", G_STORAGE, MT_ST_F32},   {"torch", "HalfStorage", G_STORAGE, MT_ST_F16},
    {"torch", "BFloat16Storage", G_STORAGE, MT_ST_BF16}, {"torch", "DoubleStorage", G_STORAGE, MT_ST_F64},
    {"torch", "LongStorage", G_STORAGE, MT_ST_I64},    {"torch", "IntStorage", G_STORAGE, MT_ST_I32},
    {"torch", "ShortStorage", G_STORAGE, MT_ST_I16},   {"torch", "CharStorage", G_STORAGE, MT_ST_I8},
    {"torch", "ByteStorage", G_STORAGE, MT_ST_U8},     {"torch", "BoolStorage", G_STORAGE, MT_ST_BOOL},
};

typedef struct obj obj;
struct obj {
    kind k;
    union {
        int64_t i;                                  /* K_BOOL, K_INT */
        double f;                                   /* K_FLOAT */
        struct { char *s; size_t len; } str;        /* K_STR: a NUL-terminated copy (may hold NULs) */
        struct { obj **items; size_t n, cap; } seq; /* K_TUPLE: n items; K_DICT: n (key, value) pairs */
        int global;                                 /* K_GLOBAL: index into allowed[] */
        struct { mt_st_dtype dtype; const char *key; int64_t numel; } sto; /* K_STORAGE */
        mt_torch_tensor *t;                         /* K_TENSOR: name NULL, storage points into the arena */
    } u;
};

/* Objects live in an arena freed at once: memo references share them freely
 * (a tied weight is one tensor object under two keys) and no ownership is
 * tracked, so even a crafted cycle (a dict that holds itself) frees cleanly. */
typedef struct block {
    struct block *next;
    size_t used, cap;
    max_align_t data[];
} block;

typedef struct up {
    const unsigned char *p;
    size_t len, pos, at; /* at: the current opcode's offset, for messages */
    int op;
    const char *what;
    char *err;
    size_t errlen;
    block *arena;
    obj **stack;
    size_t n, cap;
    size_t marks[MAX_MARKS];
    int nmarks;
    obj **memo;
    size_t memo_cap, memo_count;
} up;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static bool fail(up *u, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mt_errorf(u->err, u->errlen, "%s: %s (opcode at byte %zu)", u->what, msg, u->at);
}

static const char *opname(int op)
{
    return op_name[op] ? op_name[op] : "unknown";
}

static void *arena_alloc(up *u, size_t bytes)
{
    const size_t align = _Alignof(max_align_t);
    bytes = (bytes + align - 1) / align * align;
    if (!u->arena || u->arena->cap - u->arena->used < bytes) {
        size_t cap = bytes > 65536 ? bytes : 65536;
        block *b = malloc(sizeof *b + cap);
        if (!b) {
            fail(u, "out of memory");
            return NULL;
        }
        b->next = u->arena;
        b->used = 0;
        b->cap = cap;
        u->arena = b;
    }
    void *p = (char *)u->arena->data + u->arena->used;
    u->arena->used += bytes;
    return p;
}

static obj *new_obj(up *u, kind k)
{
    obj *o = arena_alloc(u, sizeof *o);
    if (o) {
        memset(o, 0, sizeof *o);
        o->k = k;
    }
    return o;
}

static obj *new_int(up *u, kind k, int64_t v)
{
    obj *o = new_obj(u, k);
    if (o)
        o->u.i = v;
    return o;
}

static obj *new_str(up *u, const unsigned char *s, size_t len)
{
    obj *o = new_obj(u, K_STR);
    char *copy = o ? arena_alloc(u, len + 1) : NULL;
    if (!copy)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    o->u.str.s = copy;
    o->u.str.len = len;
    return o;
}

/* A tuple of the n objects at items (copied). */
static obj *new_tuple(up *u, obj *const *items, size_t n)
{
    obj *o = new_obj(u, K_TUPLE);
    obj **copy = o ? arena_alloc(u, (n ? n : 1) * sizeof *copy) : NULL;
    if (!copy)
        return NULL;
    if (n)
        memcpy(copy, items, n * sizeof *copy);
    o->u.seq.items = copy;
    o->u.seq.n = o->u.seq.cap = n;
    return o;
}

/* Appends a pair, so a repeated key is kept twice: the state dict's keys are
 * checked for repeats at the end, where the error can name the key. Growth
 * leaves the old array in the arena, at most doubling what the dict uses. */
static bool dict_add(up *u, obj *d, obj *key, obj *value)
{
    if (d->u.seq.n == d->u.seq.cap) {
        size_t cap = d->u.seq.cap ? 2 * d->u.seq.cap : 8;
        obj **items = arena_alloc(u, 2 * cap * sizeof *items);
        if (!items)
            return false;
        if (d->u.seq.n)
            memcpy(items, d->u.seq.items, 2 * d->u.seq.n * sizeof *items);
        d->u.seq.items = items;
        d->u.seq.cap = cap;
    }
    d->u.seq.items[2 * d->u.seq.n] = key;
    d->u.seq.items[2 * d->u.seq.n + 1] = value;
    d->u.seq.n++;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Stack, marks, memo. As in CPython, MARK starts a new stack frame: opcodes
 * see only the items pushed since the last MARK. */

static size_t frame_base(const up *u)
{
    return u->nmarks ? u->marks[u->nmarks - 1] : 0;
}

static bool push(up *u, obj *o)
{
    if (!o)
        return false; /* its allocation failed and said so */
    if (u->n == u->cap) {
        if (u->cap >= MAX_STACK)
            return fail(u, "stack deeper than %u items", MAX_STACK);
        size_t cap = u->cap ? 2 * u->cap : 256;
        obj **s = realloc(u->stack, cap * sizeof *s);
        if (!s)
            return fail(u, "out of memory");
        u->stack = s;
        u->cap = cap;
    }
    u->stack[u->n++] = o;
    return true;
}

static obj *pop(up *u)
{
    if (u->n == frame_base(u)) {
        fail(u, "%s on an empty stack", opname(u->op));
        return NULL;
    }
    return u->stack[--u->n];
}

static obj *top(up *u)
{
    if (u->n == frame_base(u)) {
        fail(u, "%s on an empty stack", opname(u->op));
        return NULL;
    }
    return u->stack[u->n - 1];
}

static bool pop_mark(up *u, size_t *mark)
{
    if (u->nmarks == 0)
        return fail(u, "%s without a MARK", opname(u->op));
    *mark = u->marks[--u->nmarks];
    return true;
}

/* A pickler numbers memo entries from 0 as it stores objects, and each
 * stored object costs at least a byte, so an index at or past the pickle's
 * length is forged: refusing it caps the memo at the pickle's size. */
static bool memo_put(up *u, size_t idx)
{
    obj *o = top(u);
    if (!o)
        return false;
    if (idx >= u->len)
        return fail(u, "memo index %zu is out of range", idx);
    if (idx >= u->memo_cap) {
        size_t cap = u->memo_cap ? u->memo_cap : 64;
        while (cap <= idx)
            cap *= 2;
        obj **m = realloc(u->memo, cap * sizeof *m);
        if (!m)
            return fail(u, "out of memory");
        memset(m + u->memo_cap, 0, (cap - u->memo_cap) * sizeof *m);
        u->memo = m;
        u->memo_cap = cap;
    }
    u->memo_count += u->memo[idx] == NULL;
    u->memo[idx] = o;
    return true;
}

static bool memo_get(up *u, size_t idx)
{
    if (idx >= u->memo_cap || !u->memo[idx])
        return fail(u, "memo index %zu was never set", idx);
    return push(u, u->memo[idx]);
}

/* ------------------------------------------------------------------------ */
/* Reading the opcodes' arguments, every read bounds-checked. */

static bool need(up *u, size_t k)
{
    return u->len - u->pos >= k || fail(u, "truncated: %s needs %zu more bytes", opname(u->op), k);
}

static uint64_t take_le(up *u, int k) /* after need(u, k) */
{
    uint64_t v = 0;
    for (int i = 0; i < k; i++)
        v |= (uint64_t)u->p[u->pos + (size_t)i] << (8 * i);
    u->pos += (size_t)k;
    return v;
}

/* A string whose length is a k-byte little-endian count. */
static bool push_str(up *u, int k)
{
    if (!need(u, (size_t)k))
        return false;
    uint64_t len = take_le(u, k);
    if (!need(u, len))
        return false;
    const unsigned char *s = u->p + u->pos;
    u->pos += (size_t)len;
    return push(u, new_str(u, s, (size_t)len));
}

/* LONG1: n bytes of little-endian two's complement, n <= 8 here. */
static bool push_long1(up *u)
{
    if (!need(u, 1))
        return false;
    int n = u->p[u->pos++];
    if (n > 8)
        return fail(u, "LONG1 of %d bytes does not fit 64 bits", n);
    if (!need(u, (size_t)n))
        return false;
    uint64_t v = take_le(u, n);
    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~0ull << (8 * n); /* sign-extend */
    int64_t s = (v >> 63) ? -(int64_t)~v - 1 : (int64_t)v;
    return push(u, new_int(u, K_INT, s));
}

static bool push_global(up *u, const char *mod, size_t mlen, const char *name, size_t nlen)
{
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (strlen(allowed[i].module) == mlen && memcmp(allowed[i].module, mod, mlen) == 0 &&
            strlen(allowed[i].name) == nlen && memcmp(allowed[i].name, name, nlen) == 0) {
            obj *o = new_obj(u, K_GLOBAL);
            if (o)
                o->u.global = (int)i;
            return push(u, o);
        }
    int ml = mlen > MAX_GLOBAL_NAME ? MAX_GLOBAL_NAME : (int)mlen;
    int nl = nlen > MAX_GLOBAL_NAME ? MAX_GLOBAL_NAME : (int)nlen;
    return fail(u, "global %.*s.%.*s is not allowed in a state dict", ml, mod, nl, name);
}

/* GLOBAL's argument: "module\nname\n". */
static bool read_line(up *u, const char **s, size_t *len)
{
    const unsigned char *start = u->p + u->pos, *nl = memchr(start, '\n', u->len - u->pos);
    if (!nl || nl - start > MAX_GLOBAL_NAME)
        return fail(u, "GLOBAL without a newline-terminated name of at most %d bytes", MAX_GLOBAL_NAME);
    *s = (const char *)start;
    *len = (size_t)(nl - start);
    u->pos += *len + 1;
    return true;
}

/* ------------------------------------------------------------------------ */
/* The callables. */

static bool is_int_tuple(const obj *o, size_t n)
{
    if (o->k != K_TUPLE || o->u.seq.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (o->u.seq.items[i]->k != K_INT)
            return false;
    return true;
}

static bool is_empty_dict(const obj *o)
{
    return o->k == K_DICT && o->u.seq.n == 0;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
 * backward_hooks[, metadata]) or _rebuild_tensor(storage, offset, size,
 * stride). requires_grad does not change the values; hooks must be empty
 * (non-empty ones would be functions); metadata, which torch adds only when
 * non-empty (the conj / neg view bits), would change the values, so only
 * None or {} is accepted. Whether the view fits its storage is checked at
 * the end, where the message can name the key. */
static obj *rebuild_tensor(up *u, const char *fn, obj *args, bool v2)
{
    size_t n = args->u.seq.n;
    obj **a = args->u.seq.items;
    if (v2 ? n != 6 && n != 7 : n != 4) {
        fail(u, "%s takes %s arguments, not %zu", fn, v2 ? "6 or 7" : "4", n);
        return NULL;
    }
    if (a[0]->k != K_STORAGE || a[1]->k != K_INT || a[2]->k != K_TUPLE) {
        fail(u, "%s needs (storage, int offset, size tuple, ...), got (%s, %s, %s, ...)", fn, kind_name[a[0]->k],
             kind_name[a[1]->k], kind_name[a[2]->k]);
        return NULL;
    }
    size_t ndim = a[2]->u.seq.n;
    if (ndim > MT_ST_MAX_DIMS) {
        fail(u, "%s: a tensor of %zu dims (at most %d are read)", fn, ndim, MT_ST_MAX_DIMS);
        return NULL;
    }
    if (!is_int_tuple(a[2], ndim) || !is_int_tuple(a[3], ndim)) {
        fail(u, "%s: size and stride must be tuples of ints of one length", fn);
        return NULL;
    }
    if (v2 && (a[4]->k != K_BOOL || !is_empty_dict(a[5]))) {
        fail(u, "%s: requires_grad must be a bool and backward_hooks empty", fn);
        return NULL;
    }
    if (v2 && n == 7 && a[6]->k != K_NONE && !is_empty_dict(a[6])) {
        fail(u, "%s: tensor metadata (a conj or neg view bit) is not supported", fn);
        return NULL;
    }
    obj *o = new_obj(u, K_TENSOR);
    mt_torch_tensor *t = o ? arena_alloc(u, sizeof *t) : NULL;
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    t->dtype = a[0]->u.sto.dtype;
    t->storage = (char *)a[0]->u.sto.key;
    t->storage_numel = a[0]->u.sto.numel;
    t->offset = a[1]->u.i;
    t->ndim = (int)ndim;
    for (size_t d = 0; d < ndim; d++) {
        t->shape[d] = a[2]->u.seq.items[d]->u.i;
        t->stride[d] = a[3]->u.seq.items[d]->u.i;
    }
    o->u.t = t;
    return o;
}

static bool reduce(up *u)
{
    obj *args = pop(u), *fn = args ? pop(u) : NULL;
    if (!fn)
        return false;
    if (fn->k != K_GLOBAL)
        return fail(u, "REDUCE calls a %s; only allowed globals can be called", kind_name[fn->k]);
    char name[80];
    snprintf(name, sizeof name, "%s.%s", allowed[fn->u.global].module, allowed[fn->u.global].name);
    if (args->k != K_TUPLE)
        return fail(u, "%s called with a %s, not an argument tuple", name, kind_name[args->k]);
    switch (allowed[fn->u.global].g) {
    case G_ORDERED_DICT: /* pickle's OrderedDict reduce: OrderedDict(), then SETITEMS */
        if (args->u.seq.n != 0)
            return fail(u, "%s called with arguments", name);
        return push(u, new_obj(u, K_DICT));
    case G_REBUILD_TENSOR_V2:
    case G_REBUILD_TENSOR:
        return push(u, rebuild_tensor(u, name, args, allowed[fn->u.global].g == G_REBUILD_TENSOR_V2));
    case G_STORAGE:
        break;
    }
    return fail(u, "%s cannot be called in a state dict (it is only a persistent id's storage type)", name);
}

/* BINPERSID: ('storage', storage type, key, location, numel) as torch.save's
 * persistent_id writes it; the location ('cpu', 'cuda:0') is ignored. */
static bool persistent_load(up *u)
{
    obj *pid = pop(u);
    if (!pid)
        return false;
    obj **a = pid->u.seq.items;
    if (pid->k != K_TUPLE || pid->u.seq.n != 5 || a[0]->k != K_STR || strcmp(a[0]->u.str.s, "storage") != 0 ||
        a[1]->k != K_GLOBAL || a[2]->k != K_STR || a[3]->k != K_STR || a[4]->k != K_INT)
        return fail(u, "a persistent id must be ('storage', storage type, key, location, numel)");
    if (allowed[a[1]->u.global].g != G_STORAGE)
        return fail(u, "persistent id: %s.%s is not a storage type", allowed[a[1]->u.global].module,
                    allowed[a[1]->u.global].name);
    if (a[2]->u.str.len == 0 || strlen(a[2]->u.str.s) != a[2]->u.str.len || a[4]->u.i < 0)
        return fail(u, "persistent id: an empty storage key, one with a NUL byte, or a negative numel");
    obj *o = new_obj(u, K_STORAGE);
    if (o) {
        o->u.sto.dtype = allowed[a[1]->u.global].dtype;
        o->u.sto.key = a[2]->u.str.s;
        o->u.sto.numel = a[4]->u.i;
    }
    return push(u, o);
}

/* ------------------------------------------------------------------------ */
/* The interpreter loop. Returns the object STOP pops, or NULL. */

static obj *run(up *u)
{
    for (;;) {
        u->at = u->pos;
        if (u->pos >= u->len) {
            fail(u, "the pickle ends without STOP");
            return NULL;
        }
        u->op = u->p[u->pos++];
        bool ok = true;
        size_t m = 0;
        obj *o, *k, *v;
        switch (u->op) {
        case 0x80: /* PROTO */
            ok = need(u, 1);
            if (ok && (u->p[u->pos] < 2 || u->p[u->pos] > 5))
                ok = fail(u, "pickle protocol %d (2 to 5 are read)", u->p[u->pos]);
            u->pos++;
            break;
        case 0x95: /* FRAME: a length hint; the whole pickle is in memory */
            ok = need(u, 8);
            u->pos += 8;
            break;
        case '.': /* STOP */
            if (u->nmarks != 0 || u->n != 1) {
                fail(u, "STOP leaves %zu objects and %d MARKs on the stack, not one object", u->n, u->nmarks);
                return NULL;
            }
            return u->stack[0];
        case '(': /* MARK */
            if (u->nmarks == MAX_MARKS)
                ok = fail(u, "MARKs nested deeper than %d", MAX_MARKS);
            else
                u->marks[u->nmarks++] = u->n;
            break;
        case '}': ok = push(u, new_obj(u, K_DICT)); break;
        case ')': ok = push(u, new_tuple(u, NULL, 0)); break;
        case 't': /* TUPLE */
            if ((ok = pop_mark(u, &m))) {
                o = new_tuple(u, u->stack + m, u->n - m);
                u->n = m;
                ok = push(u, o);
            }
            break;
        case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
            m = (size_t)(u->op - 0x84);
            if (u->n - frame_base(u) < m)
                ok = fail(u, "%s needs %zu items on the stack", opname(u->op), m);
            else {
                o = new_tuple(u, u->stack + u->n - m, m);
                u->n -= m;
                ok = push(u, o);
            }
            break;
        case 's': /* SETITEM */
            v = pop(u);
            k = v ? pop(u) : NULL;
            o = k ? top(u) : NULL;
            ok = o && (o->k == K_DICT || fail(u, "SETITEM on a %s, not a dict", kind_name[o->k])) &&
                 dict_add(u, o, k, v);
            break;
        case 'u': /* SETITEMS */
            if (!(ok = pop_mark(u, &m)))
                break;
            if (m == frame_base(u) || u->stack[m - 1]->k != K_DICT || (u->n - m) % 2 != 0) {
                ok = fail(u, "SETITEMS needs a dict below its MARK and key, value pairs above it");
                break;
            }
            for (size_t i = m; ok && i < u->n; i += 2)
                ok = dict_add(u, u->stack[m - 1], u->stack[i], u->stack[i + 1]);
            u->n = m;
            break;
        case 'q': ok = need(u, 1) && memo_put(u, (size_t)take_le(u, 1)); break;  /* BINPUT */
        case 'r': ok = need(u, 4) && memo_put(u, (size_t)take_le(u, 4)); break;  /* LONG_BINPUT */
        case 0x94: ok = memo_put(u, u->memo_count); break;                      /* MEMOIZE */
        case 'h': ok = need(u, 1) && memo_get(u, (size_t)take_le(u, 1)); break;  /* BINGET */
        case 'j': ok = need(u, 4) && memo_get(u, (size_t)take_le(u, 4)); break;  /* LONG_BINGET */
        case 'J': /* BININT: signed 32-bit, two's complement */
            if ((ok = need(u, 4))) {
                int64_t x = (int64_t)take_le(u, 4);
                ok = push(u, new_int(u, K_INT, x >= 0x80000000LL ? x - 0x100000000LL : x));
            }
            break;
        case 'K': ok = need(u, 1) && push(u, new_int(u, K_INT, (int64_t)take_le(u, 1))); break;
        case 'M': ok = need(u, 2) && push(u, new_int(u, K_INT, (int64_t)take_le(u, 2))); break;
        case 0x8a: ok = push_long1(u); break;
        case 'N': ok = push(u, new_obj(u, K_NONE)); break;
        case 0x88: ok = push(u, new_int(u, K_BOOL, 1)); break;
        case 0x89: ok = push(u, new_int(u, K_BOOL, 0)); break;
        case 'G': /* BINFLOAT: a big-endian double */
            if ((ok = need(u, 8))) {
                uint64_t bits = 0;
                for (int i = 0; i < 8; i++)
                    bits = bits << 8 | u->p[u->pos++];
                if ((ok = push(u, new_obj(u, K_FLOAT))))
                    memcpy(&u->stack[u->n - 1]->u.f, &bits, sizeof bits);
            }
            break;
        case 'X': ok = push_str(u, 4); break;    /* BINUNICODE */
        case 0x8c: ok = push_str(u, 1); break;   /* SHORT_BINUNICODE */
        case 0x8d: ok = push_str(u, 8); break;   /* BINUNICODE8 */
        case 'U': ok = push_str(u, 1); break;    /* SHORT_BINSTRING */
        case 'T': /* BINSTRING: a signed 32-bit length */
            ok = need(u, 4) && (u->p[u->pos + 3] < 0x80 || fail(u, "BINSTRING of negative length")) &&
                 push_str(u, 4);
            break;
        case 'c': { /* GLOBAL */
            const char *mod = NULL, *name = NULL;
            size_t ml = 0, nl = 0;
            ok = read_line(u, &mod, &ml) && read_line(u, &name, &nl) && push_global(u, mod, ml, name, nl);
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            v = pop(u);
            k = v ? pop(u) : NULL;
            ok = k && ((k->k == K_STR && v->k == K_STR) || fail(u, "STACK_GLOBAL needs two strings")) &&
                 push_global(u, k->u.str.s, k->u.str.len, v->u.str.s, v->u.str.len);
            break;
        case 'R': ok = reduce(u); break;
        case 'b': /* BUILD: only the state an OrderedDict carries (state_dict()'s
                   * _metadata, module versions), which holds no weights */
            v = pop(u);
            o = v ? top(u) : NULL;
            ok = o && ((o->k == K_DICT && (v->k == K_DICT || v->k == K_NONE)) ||
                       fail(u, "BUILD of a %s with a %s state; only a dict's state is accepted", kind_name[o->k],
                            kind_name[v->k]));
            break;
        case 'Q': ok = persistent_load(u); break;
        default:
            if (op_name[u->op])
                ok = fail(u, "opcode %s (0x%02x) is not allowed in a state dict", op_name[u->op], u->op);
            else
                ok = fail(u, "unknown opcode 0x%02x", u->op);
        }
        if (!ok)
            return NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* The state dict out of the result. */

/* numel >= 0 and the storage elements t views lie in [0, storage_numel). */
static bool check_tensor(const char *what, const mt_torch_tensor *t, char *err, size_t errlen)
{
    const char *name = t->name;
    int64_t numel = 1, last = t->offset;
    if (t->offset < 0)
        return mt_errorf(err, errlen, "%s: tensor \"%s\": negative storage offset", what, name);
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || t->stride[d] < 0)
            return mt_errorf(err, errlen, "%s: tensor \"%s\": negative size or stride in dim %d", what, name, d);
        if (t->shape[d] > 0 && numel > INT64_MAX / t->shape[d])
            return mt_errorf(err, errlen, "%s: tensor \"%s\": its element count overflows", what, name);
        numel *= t->shape[d];
    }
    if (numel > INT64_MAX / (int64_t)mt_st_dtype_size(t->dtype))
        return mt_errorf(err, errlen, "%s: tensor \"%s\": its byte count overflows", what, name);
    if (numel == 0)
        return t->offset <= t->storage_numel ||
               mt_errorf(err, errlen, "%s: tensor \"%s\": offset %lld past storage \"%s\" of %lld elements", what,
                         name, (long long)t->offset, t->storage, (long long)t->storage_numel);
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] > 1 && t->stride[d] > (INT64_MAX - last) / (t->shape[d] - 1))
            return mt_errorf(err, errlen, "%s: tensor \"%s\": its last element's offset overflows", what, name);
        last += (t->shape[d] - 1) * t->stride[d];
    }
    if (last >= t->storage_numel)
        return mt_errorf(err, errlen, "%s: tensor \"%s\" runs past its storage: it reaches element %lld, storage "
                         "\"%s\" has %lld", what, name, (long long)last, t->storage, (long long)t->storage_numel);
    return true;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The tensors of the dict `root`, copied out of the arena. Values that are
 * not tensors (a version number, a config string) carry no weights and are
 * skipped; a dict of tensors under one key is refused, since that is a
 * wrapped state dict ({"model": ...}) whose weights would otherwise vanish. */
static bool collect(const char *what, const obj *root, mt_torch_tensor **out, int *nout, char *err, size_t errlen)
{
    if (root->k != K_DICT)
        return mt_errorf(err, errlen, "%s: the pickle holds a %s, not a state dict (a dict of tensors)", what,
                         kind_name[root->k]);
    size_t n = root->u.seq.n, count = 0;
    if (n > INT32_MAX)
        return mt_errorf(err, errlen, "%s: too many keys", what);
    mt_torch_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    const char **names = calloc(n ? n : 1, sizeof *names);
    bool ok = ts && names;
    if (!ok)
        mt_errorf(err, errlen, "%s: out of memory", what);
    for (size_t i = 0; ok && i < n; i++) {
        const obj *key = root->u.seq.items[2 * i], *val = root->u.seq.items[2 * i + 1];
        if (key->k != K_STR || strlen(key->u.str.s) != key->u.str.len) {
            ok = mt_errorf(err, errlen, "%s: a key of the state dict is a %s, not a string without NULs", what,
                           key->k == K_STR ? "string with a NUL byte" : kind_name[key->k]);
            break;
        }
        if (val->k == K_DICT)
            for (size_t j = 0; ok && j < val->u.seq.n; j++)
                if (val->u.seq.items[2 * j + 1]->k == K_TENSOR)
                    ok = mt_errorf(err, errlen, "%s: \"%s\" holds a dict of tensors: a state dict wrapped in "
                                   "another dict is not read; save the state dict itself", what, key->u.str.s);
        if (!ok || val->k != K_TENSOR)
            continue;
        mt_torch_tensor *t = &ts[count];
        *t = *val->u.t;
        t->name = key->u.str.s;
        if (!(ok = check_tensor(what, t, err, errlen)))
            break;
        t->name = strdup(key->u.str.s);
        t->storage = strdup(val->u.t->storage);
        count++;
        if (!t->name || !t->storage)
            ok = mt_errorf(err, errlen, "%s: out of memory", what);
        else
            names[count - 1] = t->name;
    }
    if (ok) {
        qsort(names, count, sizeof *names, by_string);
        for (size_t i = 1; ok && i < count; i++)
            if (strcmp(names[i - 1], names[i]) == 0)
                ok = mt_errorf(err, errlen, "%s: key \"%s\" appears twice in the state dict", what, names[i]);
    }
    free(names);
    if (!ok) {
        mt_torch_free_tensors(ts, (int)count);
        return false;
    }
    *out = ts;
    *nout = (int)count;
    return true;
}

bool mt_torch_unpickle(const unsigned char *data, size_t len, const char *what, mt_torch_tensor **tensors, int *n,
                       char *err, size_t errlen)
{
    up u = {.p = data, .len = len, .what = what, .err = err, .errlen = errlen};
    obj *root = run(&u);
    bool ok = root && collect(what, root, tensors, n, err, errlen);
    while (u.arena) {
        block *next = u.arena->next;
        free(u.arena);
        u.arena = next;
    }
    free(u.stack);
    free(u.memo);
    return ok;
}

void mt_torch_free_tensors(mt_torch_tensor *tensors, int n)
{
    if (!tensors)
        return;
    for (int i = 0; i < n; i++) {
        free(tensors[i].name);
        free(tensors[i].storage);
    }
    free(tensors);
}
