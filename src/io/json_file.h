/* JSON files as Python writes them: besides strict JSON, the bare tokens
 * NaN, Infinity and -Infinity where a number goes (what Python's json module
 * writes for non-finite floats by default, and so transformers 4 in every
 * Mamba-2 config.json: "time_step_limit": [0.0, Infinity]); transformers 5
 * writes {"__float__": "Infinity"} instead, which is read as the number too.
 *
 * jansson holds only finite reals, so such a number lives in the JSON tree
 * as the string "NaN", "Infinity" or "-Infinity"; mt_json_number reads it
 * back as a double, and mt_json_dumps writes those strings as the bare
 * tokens again. A string value that is exactly one of the three therefore
 * also writes as the token: the files written here hold none. */
#ifndef MT_JSON_FILE_H
#define MT_JSON_FILE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Parses the file at path (jansson flags, e.g. JSON_REJECT_DUPLICATES);
 * NULL with the path and the line in err when it cannot. */
json_t *mt_json_load_file(const char *path, size_t flags, char *err, size_t errlen);

/* A number's value: an integer, a real, one of the non-finite strings, or
 * an object {"__float__": one of them}. */
bool mt_json_number(const json_t *v, double *out);

/* A [low, high] pair of numbers, low finite; high may be Infinity or null
 * (no bound) where unbounded_ok, else finite. name is the key, for the
 * message. */
bool mt_json_interval(const json_t *v, const char *name, bool unbounded_ok, double *lo, double *hi, char *err,
                      size_t errlen);

/* v as a JSON value: a real, or the string standing for NaN or an infinity. */
json_t *mt_json_real(double v);

/* json_dumps with the non-finite strings as bare tokens (the caller frees). */
char *mt_json_dumps(const json_t *j, size_t flags);

#endif
