#include "text/bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/alloc.h"
#include "text/utf8.h"

/* A symbol of the word being merged: a token id over len bytes, linked to
 * its neighbours; len 0 marks one merged into its left neighbour. */
typedef struct mt_bpe_symbol {
    int32_t id, prev, next;
    int64_t len;
} mt_bpe_symbol;

/* A queued merge of the symbol at pos with its right neighbour. */
typedef struct mt_bpe_merge {
    uint32_t rank;
    int32_t pos, new_id;
} mt_bpe_merge;

/* Open addressing tables; capacities are powers of two at least twice the
 * entries, so probing always ends at an empty slot. */
typedef struct vocab_slot {
    const char *token; /* NULL: empty */
    uint32_t len;
    int32_t id;
} vocab_slot;

typedef struct merge_slot {
    uint64_t pair; /* EMPTY_PAIR: empty; ids are below 2^31, so no pair equals it */
    uint32_t rank;
    int32_t new_id;
} merge_slot;

#define EMPTY_PAIR UINT64_MAX

struct mt_bpe {
    char *path;
    char *pool;          /* every token's text, NUL-terminated, one after another */
    const char **by_id;  /* max_id + 1 entries; NULL where no token has the id */
    vocab_slot *vocab;
    merge_slot *merges;
    size_t vocab_mask, merges_mask;
    int64_t count;
    int32_t max_id;
    char *unk_token, *prefix, *suffix; /* NULL where unset */
    int32_t unk_id;                    /* -1: unk_token is not in the vocabulary */
    bool fuse_unk, byte_fallback, ignore_merges;
};

void mt_id_list_push(mt_id_list *l, int32_t id)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = mt_text_realloc(l->ids, (size_t)l->cap * sizeof *l->ids);
    }
    l->ids[l->n++] = id;
}

void mt_bpe_work_free(mt_bpe_work *w)
{
    free(w->symbols);
    free(w->heap);
    free(w->buf);
    *w = (mt_bpe_work){0};
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3u;
    return h;
}

static uint64_t hash_pair(uint64_t pair)
{
    pair ^= pair >> 33; /* the 64-bit finalizer of MurmurHash3 */
    pair *= 0xff51afd7ed558ccdu;
    pair ^= pair >> 33;
    pair *= 0xc4ceb9fe1a85ec53u;
    return pair ^ (pair >> 33);
}

static size_t table_capacity(size_t entries)
{
    size_t cap = 16;
    while (cap < 2 * entries)
        cap *= 2;
    return cap;
}

int32_t mt_bpe_lookup(const mt_bpe *b, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & b->vocab_mask;; i = (i + 1) & b->vocab_mask) {
        const vocab_slot *v = &b->vocab[i];
        if (!v->token)
            return -1;
        if (v->len == n && memcmp(v->token, s, n) == 0)
            return v->id;
    }
}

/* The merge of the pair (a, b), or NULL. */
static const merge_slot *find_merge(const mt_bpe *b, int32_t left, int32_t right)
{
    const uint64_t pair = (uint64_t)left << 32 | (uint32_t)right;
    for (size_t i = hash_pair(pair) & b->merges_mask;; i = (i + 1) & b->merges_mask) {
        const merge_slot *m = &b->merges[i];
        if (m->pair == EMPTY_PAIR)
            return NULL;
        if (m->pair == pair)
            return m;
    }
}

/* Records the merge; a pair listed again takes the later rank, as in tokenizers. */
static void add_merge(mt_bpe *b, int32_t left, int32_t right, uint32_t rank, int32_t new_id)
{
    const uint64_t pair = (uint64_t)left << 32 | (uint32_t)right;
    size_t i = hash_pair(pair) & b->merges_mask;
    while (b->merges[i].pair != EMPTY_PAIR && b->merges[i].pair != pair)
        i = (i + 1) & b->merges_mask;
    b->merges[i] = (merge_slot){pair, rank, new_id};
}

const char *mt_bpe_token(const mt_bpe *b, int32_t id)
{
    return id >= 0 && id <= b->max_id ? b->by_id[id] : NULL;
}

int64_t mt_bpe_count(const mt_bpe *b)
{
    return b->count;
}

int32_t mt_bpe_max_id(const mt_bpe *b)
{
    return b->max_id;
}

void mt_bpe_free(mt_bpe *b)
{
    if (!b)
        return;
    free(b->path);
    free(b->pool);
    free(b->by_id);
    free(b->vocab);
    free(b->merges);
    free(b->unk_token);
    free(b->prefix);
    free(b->suffix);
    free(b);
}

/* A key that is a string or null (*out stays NULL). */
static bool optional_string(const mt_bpe *b, const json_t *model, const char *key, char **out, char *err,
                            size_t errlen)
{
    const json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return mt_errorf(err, errlen, "%s: model.%s: expected a string or null", b->path, key);
    *out = mt_text_strdup(json_string_value(v));
    return true;
}

/* A key that is true, false or null (false). */
static bool optional_bool(const mt_bpe *b, const json_t *model, const char *key, bool *out, char *err,
                          size_t errlen)
{
    const json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v))
        return mt_errorf(err, errlen, "%s: model.%s: expected true, false or null", b->path, key);
    *out = json_is_true(v);
    return true;
}

static bool read_vocab(mt_bpe *b, const json_t *vocab, char *err, size_t errlen)
{
    if (!json_is_object(vocab))
        return mt_errorf(err, errlen, "%s: model.vocab: expected an object of token: id", b->path);
    const char *key;
    const json_t *value;
    size_t pool_bytes = 0;
    b->max_id = -1;
    json_object_foreach((json_t *)vocab, key, value) {
        const json_int_t id = json_is_integer(value) ? json_integer_value(value) : -1;
        if (id < 0 || id >= INT32_MAX)
            return mt_errorf(err, errlen, "%s: model.vocab[\"%s\"]: expected an id in [0, 2^31 - 1)", b->path, key);
        pool_bytes += strlen(key) + 1;
        b->max_id = id > b->max_id ? (int32_t)id : b->max_id;
    }
    b->count = (int64_t)json_object_size(vocab);
    b->pool = mt_text_realloc(NULL, pool_bytes);
    b->by_id = mt_text_realloc(NULL, ((size_t)b->max_id + 1) * sizeof *b->by_id);
    memset(b->by_id, 0, ((size_t)b->max_id + 1) * sizeof *b->by_id);
    const size_t cap = table_capacity((size_t)b->count);
    b->vocab = mt_text_realloc(NULL, cap * sizeof *b->vocab);
    memset(b->vocab, 0, cap * sizeof *b->vocab);
    b->vocab_mask = cap - 1;
    char *p = b->pool;
    json_object_foreach((json_t *)vocab, key, value) {
        const int32_t id = (int32_t)json_integer_value(value);
        const size_t len = strlen(key);
        if (b->by_id[id])
            return mt_errorf(err, errlen, "%s: model.vocab: id %d is given to both \"%s\" and \"%s\"", b->path, id,
                             b->by_id[id], key);
        memcpy(p, key, len + 1);
        b->by_id[id] = p;
        /* jansson keeps one entry per key, so every token is new here. */
        size_t i = hash_bytes(p, len) & b->vocab_mask;
        while (b->vocab[i].token)
            i = (i + 1) & b->vocab_mask;
        b->vocab[i] = (vocab_slot){p, (uint32_t)len, id};
        p += len + 1;
    }
    return true;
}

/* The two tokens of merges[i]: "a b" (exactly one space) or ["a", "b"].
 * *skip is set for the "#version" line of old merges.txt files. */
static bool merge_parts(const mt_bpe *b, const json_t *m, size_t i, char **left, char **right, bool *skip,
                        char *err, size_t errlen)
{
    *skip = false;
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *left = mt_text_strdup(json_string_value(json_array_get(m, 0)));
        *right = mt_text_strdup(json_string_value(json_array_get(m, 1)));
        return true;
    }
    if (!json_is_string(m))
        return mt_errorf(err, errlen, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", b->path, i);
    const char *s = json_string_value(m);
    if (strncmp(s, "#version", 8) == 0) {
        *skip = true;
        return true;
    }
    const char *space = strchr(s, ' ');
    if (!space || strchr(space + 1, ' '))
        return mt_errorf(err, errlen, "%s: model.merges[%zu]: \"%s\" is not two tokens separated by one space",
                         b->path, i, s);
    *left = mt_text_strdup(s);
    (*left)[space - s] = '\0';
    *right = mt_text_strdup(space + 1);
    return true;
}

static bool read_merges(mt_bpe *b, const json_t *merges, char *err, size_t errlen)
{
    if (!json_is_array(merges))
        return mt_errorf(err, errlen, "%s: model.merges: expected an array", b->path);
    const size_t n = json_array_size(merges), prefix_len = b->prefix ? strlen(b->prefix) : 0;
    const size_t cap = table_capacity(n);
    b->merges = mt_text_realloc(NULL, cap * sizeof *b->merges);
    for (size_t i = 0; i < cap; i++)
        b->merges[i].pair = EMPTY_PAIR;
    b->merges_mask = cap - 1;
    uint32_t rank = 0;
    for (size_t i = 0; i < n; i++) {
        char *left = NULL, *right = NULL;
        bool skip;
        if (!merge_parts(b, json_array_get(merges, i), i, &left, &right, &skip, err, errlen))
            return false;
        if (skip)
            continue;
        /* The merged token drops the right part's continuing_subword_prefix. */
        const size_t left_len = strlen(left), right_len = strlen(right);
        const size_t cut = right_len >= prefix_len ? prefix_len : right_len;
        char *merged = mt_text_realloc(NULL, left_len + right_len - cut + 1);
        memcpy(merged, left, left_len);
        memcpy(merged + left_len, right + cut, right_len - cut + 1);
        const int32_t a = mt_bpe_lookup(b, left, left_len), c = mt_bpe_lookup(b, right, right_len);
        const int32_t new_id = mt_bpe_lookup(b, merged, strlen(merged));
        const char *missing = a < 0 ? left : c < 0 ? right : new_id < 0 ? merged : NULL;
        if (missing)
            mt_errorf(err, errlen, "%s: model.merges[%zu]: token \"%s\" is not in model.vocab", b->path, i, missing);
        else
            add_merge(b, a, c, rank++, new_id);
        free(left);
        free(right);
        free(merged);
        if (missing)
            return false;
    }
    return true;
}

mt_bpe *mt_bpe_load(const json_t *model, const char *path, char *err, size_t errlen)
{
    mt_bpe *b = mt_text_realloc(NULL, sizeof *b);
    *b = (mt_bpe){.path = mt_text_strdup(path), .unk_id = -1};
    const json_t *dropout = json_object_get(model, "dropout");
    bool ok = true;
    if (dropout && !json_is_null(dropout) && !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        ok = mt_errorf(err, errlen,
                       "%s: model.dropout: BPE dropout (random merges, for training a tokenizer) is not supported; "
                       "set it to null",
                       path);
    ok = ok && optional_string(b, model, "unk_token", &b->unk_token, err, errlen) &&
         optional_string(b, model, "continuing_subword_prefix", &b->prefix, err, errlen) &&
         optional_string(b, model, "end_of_word_suffix", &b->suffix, err, errlen) &&
         optional_bool(b, model, "fuse_unk", &b->fuse_unk, err, errlen) &&
         optional_bool(b, model, "byte_fallback", &b->byte_fallback, err, errlen) &&
         optional_bool(b, model, "ignore_merges", &b->ignore_merges, err, errlen);
    if (ok && (!json_object_get(model, "vocab") || !json_object_get(model, "merges")))
        ok = mt_errorf(err, errlen, "%s: model: a BPE model needs both \"vocab\" and \"merges\"", path);
    ok = ok && read_vocab(b, json_object_get(model, "vocab"), err, errlen) &&
         read_merges(b, json_object_get(model, "merges"), err, errlen);
    if (!ok) {
        mt_bpe_free(b);
        return NULL;
    }
    if (b->unk_token)
        b->unk_id = mt_bpe_lookup(b, b->unk_token, strlen(b->unk_token));
    return b;
}

/* ------------------------------------------------------------------------ */

static void add_symbol(mt_bpe_work *w, size_t *n, int32_t id, int64_t len)
{
    if (*n == w->symbols_cap) {
        w->symbols_cap = w->symbols_cap ? 2 * w->symbols_cap : 64;
        w->symbols = mt_text_realloc(w->symbols, w->symbols_cap * sizeof *w->symbols);
    }
    if (*n > 0)
        w->symbols[*n - 1].next = (int32_t)*n;
    w->symbols[*n] = (mt_bpe_symbol){id, (int32_t)*n - 1, -1, len};
    (*n)++;
}

/* Heap order: the lowest rank first, then the leftmost position. */
static bool merge_before(const mt_bpe_merge *a, const mt_bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(mt_bpe_work *w, size_t *n, mt_bpe_merge m)
{
    if (*n == w->heap_cap) {
        w->heap_cap = w->heap_cap ? 2 * w->heap_cap : 64;
        w->heap = mt_text_realloc(w->heap, w->heap_cap * sizeof *w->heap);
    }
    size_t i = (*n)++;
    while (i > 0 && merge_before(&m, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = m;
}

static mt_bpe_merge heap_pop(mt_bpe_work *w, size_t *n)
{
    const mt_bpe_merge top = w->heap[0], last = w->heap[--*n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n)
            break;
        if (child + 1 < *n && merge_before(&w->heap[child + 1], &w->heap[child]))
            child++;
        if (!merge_before(&w->heap[child], &last))
            break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (*n > 0)
        w->heap[i] = last;
    return top;
}

static void queue_pair(const mt_bpe *b, mt_bpe_work *w, size_t *n_heap, int32_t pos)
{
    const mt_bpe_symbol *s = &w->symbols[pos];
    const merge_slot *m = find_merge(b, s->id, w->symbols[s->next].id);
    if (m)
        heap_push(w, n_heap, (mt_bpe_merge){m->rank, pos, m->new_id});
}

/* Word::merge_all of tokenizers, step for step: a queued merge whose pair
 * has changed since is dropped unless the new pair makes the same token. */
static void merge_all(const mt_bpe *b, mt_bpe_work *w, size_t n_symbols)
{
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n_symbols; i++)
        queue_pair(b, w, &n_heap, (int32_t)i);
    while (n_heap > 0) {
        const mt_bpe_merge top = heap_pop(w, &n_heap);
        mt_bpe_symbol *s = &w->symbols[top.pos];
        if (s->len == 0 || s->next < 0)
            continue;
        mt_bpe_symbol *right = &w->symbols[s->next];
        const merge_slot *m = find_merge(b, s->id, right->id);
        if (!m || m->new_id != top.new_id)
            continue;
        s->id = top.new_id;
        s->len += right->len;
        s->next = right->next;
        right->len = 0;
        if (s->next >= 0)
            w->symbols[s->next].prev = top.pos;
        if (s->prev >= 0)
            queue_pair(b, w, &n_heap, s->prev);
        if (s->next >= 0)
            queue_pair(b, w, &n_heap, top.pos);
    }
}

/* w->buf sized for n bytes. */
static char *work_buf(mt_bpe_work *w, size_t n)
{
    if (n > w->buf_cap) {
        w->buf_cap = n > 2 * w->buf_cap ? n : 2 * w->buf_cap;
        w->buf = mt_text_realloc(w->buf, w->buf_cap);
    }
    return w->buf;
}

/* The id of the byte token <0xHH> of c, or -1. */
static int32_t byte_token(const mt_bpe *b, char c)
{
    char code[8];
    snprintf(code, sizeof code, "<0x%02X>", (uint8_t)c);
    return mt_bpe_lookup(b, code, 6);
}

static bool has_byte_tokens(const mt_bpe *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (byte_token(b, s[i]) < 0)
            return false;
    return true;
}

bool mt_bpe_tokenize(const mt_bpe *b, const char *word, size_t n, mt_bpe_work *w, mt_id_list *out, char *err,
                     size_t errlen)
{
    if (n == 0)
        return true;
    if (b->ignore_merges) {
        const int32_t id = mt_bpe_lookup(b, word, n);
        if (id >= 0) {
            mt_id_list_push(out, id);
            return true;
        }
    }
    const size_t prefix_len = b->prefix ? strlen(b->prefix) : 0, suffix_len = b->suffix ? strlen(b->suffix) : 0;
    size_t n_symbols = 0;
    /* A character that is not in the vocabulary waits as unk_len bytes of
     * unk_token (pending_unk), so that fuse_unk can join the next one. */
    bool pending_unk = false;
    int64_t unk_len = 0;
    for (size_t i = 0; i < n;) {
        const size_t len = (size_t)mt_utf8_char_len((uint8_t)word[i]);
        const bool first = i == 0, last = i + len == n;
        char *s = work_buf(w, prefix_len + len + suffix_len);
        size_t s_len = 0;
        if (!first && b->prefix) {
            memcpy(s, b->prefix, prefix_len);
            s_len = prefix_len;
        }
        memcpy(s + s_len, word + i, len);
        s_len += len;
        if (last && b->suffix) {
            memcpy(s + s_len, b->suffix, suffix_len);
            s_len += suffix_len;
        }
        i += len;
        const int32_t id = mt_bpe_lookup(b, s, s_len);
        if (id >= 0) {
            if (pending_unk)
                add_symbol(w, &n_symbols, b->unk_id, unk_len);
            pending_unk = false;
            add_symbol(w, &n_symbols, id, (int64_t)len);
            continue;
        }
        /* As in tokenizers, byte tokens go before a pending unknown. */
        if (b->byte_fallback && has_byte_tokens(b, s, s_len)) {
            for (size_t k = 0; k < s_len; k++)
                add_symbol(w, &n_symbols, byte_token(b, s[k]), 1);
            continue;
        }
        if (!b->unk_token)
            continue; /* tokenizers drops the character */
        if (b->unk_id < 0)
            return mt_errorf(err, errlen, "%s: model.unk_token \"%s\" is needed for \"%.*s\" but is not in model.vocab",
                             b->path, b->unk_token, (int)len, word + i - len);
        if (pending_unk && b->fuse_unk) {
            unk_len += (int64_t)len;
            continue;
        }
        if (pending_unk)
            add_symbol(w, &n_symbols, b->unk_id, unk_len);
        pending_unk = true;
        unk_len = (int64_t)len;
    }
    if (pending_unk)
        add_symbol(w, &n_symbols, b->unk_id, unk_len);
    merge_all(b, w, n_symbols);
    for (size_t i = 0; i < n_symbols; i++)
        if (w->symbols[i].len != 0)
            mt_id_list_push(out, w->symbols[i].id);
    return true;
}
