#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pre_tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/alloc.h"
#include "text/utf8.h"

/* The regex of GPT-2's encoder.py that ByteLevel's use_regex applies. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Oniguruma's \s (the Unicode White_Space characters) and \w (letters,
 * marks, numbers, connector punctuation), as the inside of a class. */
static const char white_space_set[] = "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                      "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
static const char word_set[] = "\\p{L}\\p{M}\\p{N}\\p{Pc}";

typedef enum { STEP_BYTE_LEVEL, STEP_SPLIT } step_kind;

/* tokenizers' SplitDelimiterBehavior: what becomes of a match and the text
 * around it. */
typedef enum {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
    SPLIT_CONTIGUOUS,
} split_behavior;

static const char *const behavior_names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                             "Contiguous"};

typedef struct step {
    step_kind kind;
    pcre2_code *re; /* ByteLevel without use_regex: NULL */
    bool add_prefix_space;
    split_behavior behavior;
    bool invert;
} step;

struct mt_pre_tokenizer {
    char *path;
    step *steps;
    int n_steps;
};

/* A piece of the text being split: [start, end), and whether the pattern
 * matched it (before a behavior is applied) or whether it is dropped (after). */
typedef struct segment {
    size_t start, end;
    bool flag;
} segment;

typedef struct segment_list {
    segment *v;
    size_t n, cap;
} segment_list;

static void push_segment(segment_list *l, size_t start, size_t end, bool flag)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->v = mt_text_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (segment){start, end, flag};
}

/* The bytes that are not printable (the 33 up to the space, the 34 from DEL
 * to the no-break space, the soft hyphen) take U+0100 on, in that order. */
uint32_t mt_byte_level_char(uint8_t b)
{
    if (b <= 0x20)
        return 0x100 + b;
    if (b >= 0x7F && b <= 0xA0)
        return 0x100 + 33 + (b - 0x7F);
    if (b == 0xAD)
        return 0x143;
    return b;
}

int mt_byte_level_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xFF && cp != 0xAD))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142)
        return (int)(cp - 0x121 + 0x7F);
    return cp == 0x143 ? 0xAD : -1;
}

/* pattern with \s, \S, \w and \W as Oniguruma has them (malloc'ed):
 * PCRE2's \s also matches U+180E, and its \w lacks marks and connector
 * punctuation other than '_'. Inside a character class \s and \w become
 * the sets; \S and \W there are left to PCRE2 (no byte-level tokenizer's
 * pattern has them). */
static char *rewrite_classes(const char *pattern)
{
    const size_t n = strlen(pattern);
    char *out = mt_text_realloc(NULL, n + (n / 2 + 1) * (sizeof white_space_set + 3) + 1);
    size_t o = 0;
    bool in_class = false;
    for (size_t i = 0; i < n;) {
        const char c = pattern[i];
        if (c == '\\' && i + 1 < n) {
            const char d = pattern[i + 1];
            const bool lower = d == 's' || d == 'w', upper = d == 'S' || d == 'W';
            if (lower || (upper && !in_class))
                o += (size_t)sprintf(out + o, in_class ? "%s" : lower ? "[%s]" : "[^%s]",
                                     d == 's' || d == 'S' ? white_space_set : word_set);
            else {
                out[o++] = c;
                out[o++] = d;
            }
            i += 2;
            continue;
        }
        if (!in_class && c == '[') {
            /* A ']' right after '[' or '[^' is a literal, not the end. */
            in_class = true;
            out[o++] = pattern[i++];
            if (i < n && pattern[i] == '^')
                out[o++] = pattern[i++];
            if (i < n && pattern[i] == ']')
                out[o++] = pattern[i++];
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && pattern[i + 1] == ':') {
            const char *end = strstr(pattern + i + 2, ":]"); /* a POSIX class such as [:alpha:] */
            const size_t len = end ? (size_t)(end + 2 - (pattern + i)) : 1;
            memcpy(out + o, pattern + i, len);
            o += len;
            i += len;
            continue;
        }
        if (in_class && c == ']')
            in_class = false;
        out[o++] = pattern[i++];
    }
    out[o] = '\0';
    return out;
}

/* Compiles a regex (literal: the text itself); errors name key. */
static pcre2_code *compile(const char *path, const char *key, const char *pattern, bool literal, char *err,
                           size_t errlen)
{
    /* Oniguruma's default (Ruby) syntax, which tokenizers uses, has ^ and $
     * match at every line: PCRE2_MULTILINE. */
    char *rewritten = literal ? NULL : rewrite_classes(pattern);
    const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(literal ? pattern : rewritten), PCRE2_ZERO_TERMINATED, options,
                                   &code, &offset, NULL);
    free(rewritten);
    if (!re) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "PCRE2 error %d", code);
        mt_errorf(err, errlen, "%s: %s: cannot compile the regex /%s/: %s (near character %zu)", path, key, pattern,
                  (const char *)msg, (size_t)offset);
    }
    return re;
}

/* Every match of re in s[0, n), with the text between them, as tokenizers'
 * Pattern::find_matches over Oniguruma's find_iter: an empty match right
 * where the previous match ended is skipped by one character. */
static bool find_matches(const mt_pre_tokenizer *p, const pcre2_code *re, pcre2_match_data *md, const char *s,
                         size_t n, segment_list *out, char *err, size_t errlen)
{
    out->n = 0;
    size_t prev = 0, search = 0;
    bool matched_before = false;
    size_t last_match_end = 0;
    while (search <= n) {
        const int rc = pcre2_match(re, (PCRE2_SPTR)s, n, search, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            if (pcre2_get_error_message(rc, msg, sizeof msg) < 0)
                snprintf((char *)msg, sizeof msg, "PCRE2 error %d", rc);
            return mt_errorf(err, errlen, "%s: pre_tokenizer: a regex failed on a %zu-byte piece of text: %s", p->path,
                             n, (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        const size_t start = ov[0], end = ov[1];
        if (start == end && matched_before && last_match_end == end) {
            search += search < n ? (size_t)mt_utf8_char_len((uint8_t)s[search]) : 1;
            continue;
        }
        search = end;
        matched_before = true;
        last_match_end = end;
        if (prev != start)
            push_segment(out, prev, start, false);
        push_segment(out, start, end, true);
        prev = end;
    }
    if (prev != n)
        push_segment(out, prev, n, false);
    return true;
}

/* NormalizedString::split's behaviors: matches (flag: matched) become the
 * pieces to keep or drop (flag: dropped). */
static void apply_behavior(segment_list *l, split_behavior behavior)
{
    size_t o = 0;
    bool previous_match = false;
    switch (behavior) {
    case SPLIT_REMOVED:
        return; /* matched pieces are exactly the dropped ones */
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < l->n; i++)
            l->v[i].flag = false;
        return;
    case SPLIT_CONTIGUOUS:
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < l->n; i++) {
            const segment s = l->v[i];
            const bool join = behavior == SPLIT_CONTIGUOUS ? s.flag == previous_match : s.flag && !previous_match;
            if (join && o > 0)
                l->v[o - 1].end = s.end;
            else
                l->v[o++] = (segment){s.start, s.end, false};
            previous_match = s.flag;
        }
        l->n = o;
        return;
    case SPLIT_MERGED_WITH_NEXT:
        /* The same from the right, keeping the kept pieces at the end. */
        o = l->n;
        for (size_t i = l->n; i-- > 0;) {
            const segment s = l->v[i];
            if (s.flag && !previous_match && o < l->n)
                l->v[o].start = s.start;
            else
                l->v[--o] = (segment){s.start, s.end, false};
            previous_match = s.flag;
        }
        memmove(l->v, l->v + o, (l->n - o) * sizeof *l->v);
        l->n -= o;
        return;
    }
}

typedef struct run_ctx {
    const mt_pre_tokenizer *p;
    pcre2_match_data *md;
    mt_word_fn emit;
    void *emit_ctx;
} run_ctx;

static bool run_step(const run_ctx *r, int k, const char *s, size_t n, char *err, size_t errlen);

/* Hands the kept, non-empty pieces of s to step k + 1. */
static bool run_pieces(const run_ctx *r, int k, const segment_list *l, const char *s, bool byte_level, char *err,
                       size_t errlen)
{
    char *mapped = NULL;
    bool ok = true;
    for (size_t i = 0; ok && i < l->n; i++) {
        const segment g = l->v[i];
        if (g.flag || g.end == g.start)
            continue;
        if (!byte_level) {
            ok = run_step(r, k + 1, s + g.start, g.end - g.start, err, errlen);
            continue;
        }
        /* Each byte becomes a character of at most two bytes. */
        mapped = mt_text_realloc(mapped, 2 * (g.end - g.start));
        size_t m = 0;
        for (size_t j = g.start; j < g.end; j++)
            m += (size_t)mt_utf8_encode(mt_byte_level_char((uint8_t)s[j]), mapped + m);
        ok = run_step(r, k + 1, mapped, m, err, errlen);
    }
    free(mapped);
    return ok;
}

static bool run_step(const run_ctx *r, int k, const char *s, size_t n, char *err, size_t errlen)
{
    if (k == r->p->n_steps)
        return r->emit(r->emit_ctx, s, n, err, errlen);
    const step *st = &r->p->steps[k];
    segment_list l = {0};
    char *prefixed = NULL;
    bool ok = true;
    if (st->kind == STEP_BYTE_LEVEL && st->add_prefix_space && s[0] != ' ') {
        prefixed = mt_text_realloc(NULL, n + 1);
        prefixed[0] = ' ';
        memcpy(prefixed + 1, s, n);
        s = prefixed;
        n++;
    }
    if (st->re)
        ok = find_matches(r->p, st->re, r->md, s, n, &l, err, errlen);
    else
        push_segment(&l, 0, n, false);
    if (ok) {
        /* invert swaps what the pattern matched and what it did not. */
        for (size_t i = 0; st->invert && i < l.n; i++)
            l.v[i].flag = !l.v[i].flag;
        apply_behavior(&l, st->kind == STEP_BYTE_LEVEL ? SPLIT_ISOLATED : st->behavior);
        ok = run_pieces(r, k, &l, s, st->kind == STEP_BYTE_LEVEL, err, errlen);
    }
    free(l.v);
    free(prefixed);
    return ok;
}

bool mt_pre_tokenize(const mt_pre_tokenizer *p, const char *s, size_t n, mt_word_fn emit, void *ctx, char *err,
                     size_t errlen)
{
    if (n == 0)
        return true;
    /* Only the whole match is read, and each match is read before the next
     * search, so one match block serves every step. */
    run_ctx r = {p, pcre2_match_data_create(1, NULL), emit, ctx};
    if (!r.md)
        mt_fatal("out of host memory for a PCRE2 match block");
    const bool ok = run_step(&r, 0, s, n, err, errlen);
    pcre2_match_data_free(r.md);
    return ok;
}

void mt_pre_tokenizer_free(mt_pre_tokenizer *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_steps; i++)
        pcre2_code_free(p->steps[i].re);
    free(p->steps);
    free(p->path);
    free(p);
}

/* A boolean key of a pre-tokenizer, def when absent or null. */
static bool read_bool(const mt_pre_tokenizer *p, const json_t *j, const char *key, const char *name, bool def,
                      bool *out, char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, name);
    *out = def;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v))
        return mt_errorf(err, errlen, "%s: %s.%s: expected true or false", p->path, key, name);
    *out = json_is_true(v);
    return true;
}

static bool read_split(const mt_pre_tokenizer *p, const json_t *j, const char *key, step *st, char *err,
                       size_t errlen)
{
    const json_t *pattern = json_object_get(j, "pattern");
    const json_t *regex = json_object_get(pattern, "Regex"), *string = json_object_get(pattern, "String");
    if (!json_is_object(pattern) || json_object_size(pattern) != 1 ||
        !(json_is_string(regex) || json_is_string(string)))
        return mt_errorf(err, errlen, "%s: %s.pattern: expected {\"Regex\": \"...\"} or {\"String\": \"...\"}",
                         p->path, key);
    const json_t *behavior = json_object_get(j, "behavior");
    const char *name = json_is_string(behavior) ? json_string_value(behavior) : "";
    int b = 0;
    while (b < 5 && strcmp(name, behavior_names[b]) != 0)
        b++;
    if (b == 5)
        return mt_errorf(err, errlen,
                         "%s: %s.behavior: expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                         "Contiguous",
                         p->path, key);
    st->behavior = (split_behavior)b;
    if (!read_bool(p, j, key, "invert", false, &st->invert, err, errlen))
        return false;
    char pattern_key[300];
    snprintf(pattern_key, sizeof pattern_key, "%s.pattern.%s", key, regex ? "Regex" : "String");
    st->re = compile(p->path, pattern_key, json_string_value(regex ? regex : string), !regex, err, errlen);
    return st->re != NULL;
}

/* Appends the steps of pre-tokenizer j, found at key; a Sequence appends
 * those of its members. */
static bool read_steps(mt_pre_tokenizer *p, const json_t *j, const char *key, char *err, size_t errlen)
{
    const json_t *type = json_object_get(j, "type");
    if (!json_is_object(j) || !json_is_string(type))
        return mt_errorf(err, errlen, "%s: %s: expected an object with a \"type\"", p->path, key);
    const char *name = json_string_value(type);
    if (strcmp(name, "Sequence") == 0) {
        const json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list))
            return mt_errorf(err, errlen, "%s: %s.pretokenizers: expected an array", p->path, key);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char member[300];
            snprintf(member, sizeof member, "%s.pretokenizers[%zu]", key, i);
            if (!read_steps(p, json_array_get(list, i), member, err, errlen))
                return false;
        }
        return true;
    }
    if (strcmp(name, "ByteLevel") != 0 && strcmp(name, "Split") != 0)
        return mt_errorf(err, errlen, "%s: %s.type: %s is not supported (supported: ByteLevel, Split, Sequence)",
                         p->path, key, name);
    p->steps = mt_text_realloc(p->steps, ((size_t)p->n_steps + 1) * sizeof *p->steps);
    step *st = &p->steps[p->n_steps++];
    *st = (step){.kind = strcmp(name, "Split") == 0 ? STEP_SPLIT : STEP_BYTE_LEVEL};
    if (st->kind == STEP_SPLIT)
        return read_split(p, j, key, st, err, errlen);
    bool use_regex;
    if (!read_bool(p, j, key, "add_prefix_space", true, &st->add_prefix_space, err, errlen) ||
        !read_bool(p, j, key, "use_regex", true, &use_regex, err, errlen))
        return false;
    if (use_regex && !(st->re = compile(p->path, key, gpt2_pattern, false, err, errlen)))
        return false;
    return true;
}

mt_pre_tokenizer *mt_pre_tokenizer_load(const json_t *j, const char *path, char *err, size_t errlen)
{
    mt_pre_tokenizer *p = mt_text_realloc(NULL, sizeof *p);
    *p = (mt_pre_tokenizer){0};
    p->path = mt_text_strdup(path);
    if (j && !json_is_null(j) && !read_steps(p, j, "pre_tokenizer", err, errlen)) {
        mt_pre_tokenizer_free(p);
        return NULL;
    }
    return p;
}
