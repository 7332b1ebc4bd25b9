#include "text/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "io/json_file.h"
#include "text/alloc.h"
#include "text/bpe.h"
#include "text/pre_tokenizer.h"
#include "text/utf8.h"

typedef struct added_token {
    char *content; /* as in the file */
    /* What is matched in the text and what decoding turns back into bytes:
     * the content, normalized for a token with "normalized": true (as
     * tokenizers keeps it). */
    char *text;
    size_t text_len;
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} added_token;

/* The added tokens matched at one stage (raw text or normalized text). */
typedef struct match_set {
    int *members; /* indices into added */
    int n;
    bool first_byte[256]; /* some member starts with this byte */
} match_set;

typedef enum { DECODER_NONE, DECODER_BYTE_LEVEL } decoder_kind;

typedef struct id_index {
    int32_t id;
    int index; /* into added */
} id_index;

struct mt_tokenizer {
    char *path;
    mt_bpe *bpe;
    mt_pre_tokenizer *pre;
    utf8proc_option_t *normalizers; /* applied in order */
    int n_normalizers;
    added_token *added;
    int n_added;
    struct id_index *added_by_id; /* n_added, in ascending id, for decoding */
    match_set raw, normalized;
    decoder_kind decoder;
    int64_t vocab_size;
};

void mt_tokenizer_free(mt_tokenizer *t)
{
    if (!t)
        return;
    mt_bpe_free(t->bpe);
    mt_pre_tokenizer_free(t->pre);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].text);
    }
    free(t->added);
    free(t->added_by_id);
    free(t->raw.members);
    free(t->normalized.members);
    free(t->normalizers);
    free(t->path);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Loading */

/* The normalizers of j (at key) appended to t->normalizers. */
static bool read_normalizer(mt_tokenizer *t, const json_t *j, const char *key, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        utf8proc_option_t options;
    } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    const json_t *type = json_object_get(j, "type");
    if (!json_is_object(j) || !json_is_string(type))
        return mt_errorf(err, errlen, "%s: %s: expected null or an object with a \"type\"", t->path, key);
    const char *name = json_string_value(type);
    if (strcmp(name, "Sequence") == 0) {
        const json_t *list = json_object_get(j, "normalizers");
        if (!json_is_array(list))
            return mt_errorf(err, errlen, "%s: %s.normalizers: expected an array", t->path, key);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char member[300];
            snprintf(member, sizeof member, "%s.normalizers[%zu]", key, i);
            if (!read_normalizer(t, json_array_get(list, i), member, err, errlen))
                return false;
        }
        return true;
    }
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
        if (strcmp(name, forms[f].name) == 0) {
            t->normalizers = mt_text_realloc(t->normalizers, ((size_t)t->n_normalizers + 1) * sizeof *t->normalizers);
            t->normalizers[t->n_normalizers++] = forms[f].options;
            return true;
        }
    return mt_errorf(err, errlen, "%s: %s.type: %s is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)",
                     t->path, key, name);
}

/* s[0, n) through the normalizers: *out is s itself or a malloc'ed copy. */
static bool normalize(const mt_tokenizer *t, const char *s, size_t n, char **out, size_t *out_len, char *err,
                      size_t errlen)
{
    const char *cur = s;
    size_t cur_len = n;
    char *owned = NULL;
    for (int i = 0; i < t->n_normalizers; i++) {
        utf8proc_uint8_t *dst = NULL;
        const utf8proc_ssize_t len =
            utf8proc_map((const utf8proc_uint8_t *)cur, (utf8proc_ssize_t)cur_len, &dst, t->normalizers[i]);
        free(owned);
        if (len < 0) {
            *out = NULL;
            return mt_errorf(err, errlen, "%s: normalizer: cannot normalize a %zu-byte piece of text: %s", t->path,
                             cur_len, utf8proc_errmsg(len));
        }
        owned = (char *)dst;
        cur = owned;
        cur_len = (size_t)len;
    }
    *out = owned ? owned : (char *)s;
    *out_len = cur_len;
    return true;
}

/* A flag of added_tokens[i], def where absent. */
static bool added_flag(const mt_tokenizer *t, const json_t *a, size_t i, const char *name, bool def, bool *out,
                       char *err, size_t errlen)
{
    const json_t *v = json_object_get(a, name);
    *out = def;
    if (!v)
        return true;
    if (!json_is_boolean(v))
        return mt_errorf(err, errlen, "%s: added_tokens[%zu].%s: expected true or false", t->path, i, name);
    *out = json_is_true(v);
    return true;
}

static void add_to_set(match_set *set, const added_token *a, int index)
{
    set->members = mt_text_realloc(set->members, ((size_t)set->n + 1) * sizeof *set->members);
    set->members[set->n++] = index;
    set->first_byte[(uint8_t)a->text[0]] = true;
}

static int by_id(const void *a, const void *b)
{
    const int32_t x = ((const id_index *)a)->id, y = ((const id_index *)b)->id;
    return (x > y) - (x < y);
}

/* The added tokens get their ids as tokenizers gives them: the vocabulary's
 * id for a token in it, else the next one after the vocabulary (the file's
 * "id" is only checked by tokenizers, with a warning). A token listed again
 * keeps its id and takes the later flags. */
static bool read_added_tokens(mt_tokenizer *t, const json_t *list, char *err, size_t errlen)
{
    if (!list || json_is_null(list))
        return true;
    if (!json_is_array(list))
        return mt_errorf(err, errlen, "%s: added_tokens: expected an array", t->path);
    int32_t next_id = (int32_t)mt_bpe_count(t->bpe);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *a = json_array_get(list, i), *content = json_object_get(a, "content");
        if (!json_is_string(content))
            return mt_errorf(err, errlen, "%s: added_tokens[%zu].content: expected a string", t->path, i);
        const char *c = json_string_value(content);
        if (c[0] == '\0')
            continue; /* tokenizers ignores empty tokens */
        added_token tok = {0};
        if (!added_flag(t, a, i, "special", false, &tok.special, err, errlen) ||
            !added_flag(t, a, i, "single_word", false, &tok.single_word, err, errlen) ||
            !added_flag(t, a, i, "lstrip", false, &tok.lstrip, err, errlen) ||
            !added_flag(t, a, i, "rstrip", false, &tok.rstrip, err, errlen) ||
            !added_flag(t, a, i, "normalized", !tok.special, &tok.normalized, err, errlen))
            return false;
        int k = 0;
        while (k < t->n_added && strcmp(t->added[k].content, c) != 0)
            k++;
        if (k == t->n_added) {
            const int32_t in_vocab = mt_bpe_lookup(t->bpe, c, strlen(c));
            tok.id = in_vocab >= 0 ? in_vocab : next_id++;
            t->added = mt_text_realloc(t->added, ((size_t)t->n_added + 1) * sizeof *t->added);
            t->n_added++;
        } else {
            tok.id = t->added[k].id;
            free(t->added[k].content);
            free(t->added[k].text);
        }
        tok.content = mt_text_strdup(c);
        if (tok.normalized) {
            if (!normalize(t, c, strlen(c), &tok.text, &tok.text_len, err, errlen)) {
                free(tok.content);
                t->added[k] = (added_token){0};
                return false;
            }
            if (tok.text == c)
                tok.text = mt_text_strndup(c, tok.text_len);
        } else {
            tok.text = mt_text_strdup(c);
            tok.text_len = strlen(c);
        }
        t->added[k] = tok;
    }
    t->added_by_id = mt_text_realloc(NULL, (size_t)t->n_added * sizeof *t->added_by_id);
    for (int k = 0; k < t->n_added; k++) {
        t->added_by_id[k] = (id_index){t->added[k].id, k};
        /* A token normalized to nothing can never be matched. */
        if (t->added[k].text_len > 0)
            add_to_set(t->added[k].normalized ? &t->normalized : &t->raw, &t->added[k], k);
        if (t->added[k].id >= t->vocab_size)
            t->vocab_size = (int64_t)t->added[k].id + 1;
    }
    qsort(t->added_by_id, (size_t)t->n_added, sizeof *t->added_by_id, by_id);
    return true;
}

/* The "decoder": ByteLevel, or null (tokens joined by spaces, as tokenizers
 * does without a decoder). */
static bool read_decoder(mt_tokenizer *t, const json_t *j, char *err, size_t errlen)
{
    t->decoder = DECODER_NONE;
    if (!j || json_is_null(j))
        return true;
    const json_t *type = json_object_get(j, "type");
    if (!json_is_string(type))
        return mt_errorf(err, errlen, "%s: decoder: expected null or an object with a \"type\"", t->path);
    if (strcmp(json_string_value(type), "ByteLevel") != 0)
        return mt_errorf(err, errlen, "%s: decoder.type: %s is not supported (supported: ByteLevel, null)", t->path,
                         json_string_value(type));
    t->decoder = DECODER_BYTE_LEVEL;
    return true;
}

/* What tokenizers reads before the model, and the model's type. */
static bool check_top_level(const mt_tokenizer *t, const json_t *root, char *err, size_t errlen)
{
    if (!json_is_object(root))
        return mt_errorf(err, errlen, "%s: expected a JSON object (a tokenizer.json)", t->path);
    const json_t *version = json_object_get(root, "version");
    if (version && !(json_is_string(version) && strcmp(json_string_value(version), "1.0") == 0))
        return mt_errorf(err, errlen, "%s: version: only \"1.0\" is known", t->path);
    static const char *const unsupported[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, unsupported[i]);
        if (v && !json_is_null(v))
            return mt_errorf(err, errlen, "%s: %s: not supported (encoding here never truncates or pads); "
                             "set it to null", t->path, unsupported[i]);
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return mt_errorf(err, errlen, "%s: model: expected an object", t->path);
    /* Old files may leave out the type; tokenizers then tries each model. */
    const json_t *type = json_object_get(model, "type");
    if (type && !json_is_string(type))
        return mt_errorf(err, errlen, "%s: model.type: expected a string", t->path);
    if (type && strcmp(json_string_value(type), "BPE") != 0)
        return mt_errorf(err, errlen, "%s: model.type: %s is not supported (only BPE)", t->path,
                         json_string_value(type));
    return true;
}

mt_tokenizer *mt_tokenizer_load(const char *path, char *err, size_t errlen)
{
    json_t *root = mt_json_load_file(path, 0, err, errlen);
    if (!root)
        return NULL;
    mt_tokenizer *t = mt_text_realloc(NULL, sizeof *t);
    *t = (mt_tokenizer){.path = mt_text_strdup(path)};
    const json_t *normalizer = json_object_get(root, "normalizer");
    bool ok = check_top_level(t, root, err, errlen) &&
              (t->bpe = mt_bpe_load(json_object_get(root, "model"), path, err, errlen)) != NULL &&
              (!normalizer || json_is_null(normalizer) || read_normalizer(t, normalizer, "normalizer", err, errlen)) &&
              (t->pre = mt_pre_tokenizer_load(json_object_get(root, "pre_tokenizer"), path, err, errlen)) != NULL &&
              read_decoder(t, json_object_get(root, "decoder"), err, errlen);
    if (ok) {
        t->vocab_size = (int64_t)mt_bpe_max_id(t->bpe) + 1;
        ok = read_added_tokens(t, json_object_get(root, "added_tokens"), err, errlen);
    }
    json_decref(root);
    if (!ok) {
        mt_tokenizer_free(t);
        return NULL;
    }
    return t;
}

int64_t mt_tokenizer_vocab_size(const mt_tokenizer *t)
{
    return t->vocab_size;
}

int32_t mt_tokenizer_token_id(const mt_tokenizer *t, const char *token)
{
    for (int k = 0; k < t->n_added; k++)
        if (strcmp(t->added[k].content, token) == 0)
            return t->added[k].id;
    return mt_bpe_lookup(t->bpe, token, strlen(token));
}

/* ------------------------------------------------------------------------ */
/* Encoding */

typedef struct encode_ctx {
    const mt_tokenizer *t;
    bool special_as_text;
    mt_bpe_work work;
    mt_id_list out;
} encode_ctx;

typedef bool (*text_fn)(encode_ctx *c, const char *s, size_t n, char *err, size_t errlen);

/* Where the character that ends at s[end] (end > 0) starts; its code point
 * in *cp. */
static size_t char_before(const char *s, size_t end, uint32_t *cp)
{
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
        i--;
    mt_utf8_decode((const uint8_t *)s + i, end - i, cp);
    return i;
}

/* The leftmost match of a member of set in s[from, n), the longest there:
 * its index into added and where it starts; -1 when there is none. */
static int next_match(const mt_tokenizer *t, const match_set *set, const char *s, size_t n, size_t from,
                      size_t *start)
{
    for (size_t p = from; p < n; p++) {
        if (!set->first_byte[(uint8_t)s[p]])
            continue;
        int best = -1;
        for (int m = 0; m < set->n; m++) {
            const added_token *a = &t->added[set->members[m]];
            if (a->text_len <= n - p && memcmp(s + p, a->text, a->text_len) == 0 &&
                (best < 0 || a->text_len > t->added[best].text_len))
                best = set->members[m];
        }
        if (best >= 0) {
            *start = p;
            return best;
        }
    }
    return -1;
}

/* AddedVocabulary::find_matches of tokenizers: the added tokens of set are
 * cut out of s[0, n) (their ids appended), honouring single_word, lstrip
 * and rstrip, and the text between them goes to between(). */
static bool split_added(encode_ctx *c, const match_set *set, const char *s, size_t n, text_fn between, char *err,
                        size_t errlen)
{
    const mt_tokenizer *t = c->t;
    size_t done = 0, from = 0, match;
    int k;
    while (set->n > 0 && (k = next_match(t, set, s, n, from, &match)) >= 0) {
        const added_token *a = &t->added[k];
        size_t start = match, stop = match + a->text_len;
        from = stop;
        if (c->special_as_text && a->special)
            continue;
        uint32_t cp;
        if (a->single_word) {
            const bool word_before = start > 0 && (char_before(s, start, &cp), mt_utf8_is_word_char(cp));
            const bool word_after = stop < n && (mt_utf8_decode((const uint8_t *)s + stop, n - stop, &cp),
                                                 mt_utf8_is_word_char(cp));
            if (word_before || word_after)
                continue;
        }
        if (a->lstrip) {
            /* Take the white space before it, unless a token before took it. */
            size_t white = start;
            while (white > 0) {
                const size_t prev = char_before(s, white, &cp);
                if (!mt_utf8_is_white_space(cp))
                    break;
                white = prev;
            }
            start = white > done ? white : done;
        }
        while (a->rstrip && stop < n) {
            const int len = mt_utf8_decode((const uint8_t *)s + stop, n - stop, &cp);
            if (!mt_utf8_is_white_space(cp))
                break;
            stop += (size_t)len;
        }
        if (done < start && !between(c, s + done, start - done, err, errlen))
            return false;
        mt_id_list_push(&c->out, a->id);
        done = stop;
    }
    return done >= n || between(c, s + done, n - done, err, errlen);
}

static bool encode_word(void *ctx, const char *word, size_t n, char *err, size_t errlen)
{
    encode_ctx *c = ctx;
    return mt_bpe_tokenize(c->t->bpe, word, n, &c->work, &c->out, err, errlen);
}

/* Normalized text without added tokens: pre-tokenized, then the model. */
static bool encode_normalized(encode_ctx *c, const char *s, size_t n, char *err, size_t errlen)
{
    return mt_pre_tokenize(c->t->pre, s, n, encode_word, c, err, errlen);
}

/* Raw text between raw added tokens: normalized, then its normalized
 * added tokens cut out. */
static bool encode_raw(encode_ctx *c, const char *s, size_t n, char *err, size_t errlen)
{
    char *normalized;
    size_t len = 0;
    if (!normalize(c->t, s, n, &normalized, &len, err, errlen))
        return false;
    const bool ok = split_added(c, &c->t->normalized, normalized, len, encode_normalized, err, errlen);
    if (normalized != s)
        free(normalized);
    return ok;
}

bool mt_tokenizer_encode(const mt_tokenizer *t, const char *text, size_t len, bool special_as_text, int32_t **ids,
                         int64_t *n, char *err, size_t errlen)
{
    *ids = NULL;
    *n = 0;
    size_t bad;
    if (!mt_utf8_valid(text, len, &bad))
        return mt_errorf(err, errlen, "the text is not valid UTF-8 (byte %zu of %zu)", bad, len);
    encode_ctx c = {.t = t, .special_as_text = special_as_text};
    const bool ok = len == 0 || split_added(&c, &t->raw, text, len, encode_raw, err, errlen);
    mt_bpe_work_free(&c.work);
    if (!ok) {
        free(c.out.ids);
        return false;
    }
    *ids = c.out.ids;
    *n = c.out.n;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Decoding */

/* The text of id as decoding sees it (added tokens first, as in
 * tokenizers), or NULL. */
static const char *token_text(const mt_tokenizer *t, int32_t id, size_t *len)
{
    const id_index key = {id, 0};
    const id_index *hit = bsearch(&key, t->added_by_id, (size_t)t->n_added, sizeof key, by_id);
    if (hit) {
        *len = t->added[hit->index].text_len;
        return t->added[hit->index].text;
    }
    const char *s = mt_bpe_token(t->bpe, id);
    if (s)
        *len = strlen(s);
    return s;
}

typedef struct byte_buf {
    char *v;
    size_t n, cap;
} byte_buf;

static void append(byte_buf *b, const char *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = b->n + n > 2 * b->cap ? b->n + n : 2 * b->cap;
        b->v = mt_text_realloc(b->v, b->cap);
    }
    memcpy(b->v + b->n, s, n);
    b->n += n;
}

/* ByteLevel's decoding of one token: the bytes its characters stand for,
 * or, when one of them stands for none, the token's own UTF-8 (as added
 * tokens such as "<|endoftext|>" or runs of spaces are). */
static void append_byte_level(byte_buf *b, const char *s, size_t n)
{
    const size_t start = b->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)mt_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        const int byte = mt_byte_level_byte(cp);
        if (byte < 0) {
            b->n = start;
            append(b, s, n);
            return;
        }
        const char c = (char)byte;
        append(b, &c, 1);
    }
}

char *mt_tokenizer_decode(const mt_tokenizer *t, const int32_t *ids, int64_t n, size_t *len, char *err,
                          size_t errlen)
{
    byte_buf b = {0};
    for (int64_t i = 0; i < n; i++) {
        size_t tok_len;
        const char *tok = token_text(t, ids[i], &tok_len);
        if (!tok) {
            free(b.v);
            mt_errorf(err, errlen, "%s: id %d (ids[%lld]) is not a token (vocab_size %lld)", t->path, ids[i],
                      (long long)i, (long long)t->vocab_size);
            return NULL;
        }
        if (t->decoder == DECODER_BYTE_LEVEL)
            append_byte_level(&b, tok, tok_len);
        else {
            if (i > 0)
                append(&b, " ", 1);
            append(&b, tok, tok_len);
        }
    }
    char *text = mt_utf8_lossy((const uint8_t *)b.v, b.n, len);
    free(b.v);
    return text;
}
