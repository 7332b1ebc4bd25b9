#include "io/json_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/file_io.h"

#define MAX_JSON_BYTES ((size_t)256 << 20) /* configs are kilobytes, tokenizers megabytes */

static const char *const nonfinite[3] = {"NaN", "Infinity", "-Infinity"};

/* The non-finite token at p (n bytes left), ending where a token ends: its
 * index in nonfinite, or -1. */
static int nonfinite_at(const char *p, size_t n)
{
    for (int i = 0; i < 3; i++) {
        const size_t len = strlen(nonfinite[i]);
        if (n >= len && memcmp(p, nonfinite[i], len) == 0 &&
            (n == len || strchr(" \t\r\n,]}", p[len]) != NULL))
            return i;
    }
    return -1;
}

/* text with every bare non-finite token outside strings quoted (malloc'ed). */
static char *quote_nonfinite(const char *text, size_t n, size_t *out_n)
{
    char *out = malloc(2 * n + 1); /* "NaN" grows most: 3 bytes to 5 */
    if (!out)
        return NULL;
    size_t o = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        const char ch = text[i];
        if (in_string) {
            out[o++] = ch;
            if (ch == '\\' && i + 1 < n)
                out[o++] = text[++i];
            else if (ch == '"')
                in_string = false;
            continue;
        }
        const int k = nonfinite_at(text + i, n - i);
        if (k >= 0 && (i == 0 || strchr(" \t\r\n,:[", text[i - 1]) != NULL)) {
            o += (size_t)sprintf(out + o, "\"%s\"", nonfinite[k]);
            i += strlen(nonfinite[k]) - 1;
            continue;
        }
        in_string = ch == '"';
        out[o++] = ch;
    }
    out[o] = '\0';
    *out_n = o;
    return out;
}

json_t *mt_json_load_file(const char *path, size_t flags, char *err, size_t errlen)
{
    size_t n;
    char *text = mt_read_file(path, MAX_JSON_BYTES, &n, err, errlen);
    if (!text)
        return NULL;
    size_t qn;
    char *quoted = quote_nonfinite(text, n, &qn);
    free(text);
    if (!quoted)
        mt_fatal("out of host memory reading %s", path);
    json_error_t je;
    json_t *j = json_loadb(quoted, qn, flags, &je);
    free(quoted);
    if (!j)
        mt_errorf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
    return j;
}

bool mt_json_number(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return true;
    }
    if (json_is_object(v) && json_object_size(v) == 1)
        v = json_object_get(v, "__float__");
    static const double values[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; json_is_string(v) && i < 3; i++)
        if (strcmp(json_string_value(v), nonfinite[i]) == 0) {
            *out = values[i];
            return true;
        }
    return false;
}

bool mt_json_interval(const json_t *v, const char *name, bool unbounded_ok, double *lo, double *hi, char *err,
                      size_t errlen)
{
    json_t *high = json_array_get(v, 1);
    const bool open_high = unbounded_ok && json_is_null(high);
    if (open_high)
        *hi = INFINITY;
    if (!json_is_array(v) || json_array_size(v) != 2 || !mt_json_number(json_array_get(v, 0), lo) ||
        !isfinite(*lo) || !(open_high || mt_json_number(high, hi)) || isnan(*hi) ||
        (!unbounded_ok && isinf(*hi)))
        return mt_errorf(err, errlen, "%s: must be [low, high] of numbers%s", name,
                         unbounded_ok ? " (high may be Infinity or null: no bound)" : "");
    return true;
}

json_t *mt_json_real(double v)
{
    if (isnan(v))
        return json_string(nonfinite[0]);
    if (isinf(v))
        return json_string(nonfinite[v > 0 ? 1 : 2]);
    return json_real(v);
}

char *mt_json_dumps(const json_t *j, size_t flags)
{
    char *text = json_dumps(j, flags);
    if (!text)
        return NULL;
    /* Drop the quotes around each whole "NaN", "Infinity", "-Infinity"
     * value: jansson escapes a quote inside a string, so an unescaped quote,
     * one of them and a quote not followed by a colon (a key) is one. */
    char *o = text;
    for (const char *p = text; *p;) {
        int k = -1;
        for (int i = 0; *p == '"' && p > text && p[-1] != '\\' && i < 3 && k < 0; i++) {
            const size_t len = strlen(nonfinite[i]);
            if (strncmp(p + 1, nonfinite[i], len) == 0 && p[1 + len] == '"' && p[2 + len] != ':')
                k = i;
        }
        if (k < 0) {
            *o++ = *p++;
            continue;
        }
        const size_t len = strlen(nonfinite[k]);
        memmove(o, p + 1, len);
        o += len;
        p += len + 2;
    }
    *o = '\0';
    return text;
}
