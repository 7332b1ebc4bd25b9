/* Fatal errors: print where and why, then exit(1). Used for failures that no
 * caller can recover from (out of memory, a CUDA or library call failing). */
#ifndef MT_ERROR_H
#define MT_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 3, 4)))
#endif
void mt_fatal_at(const char *file, int line, const char *fmt, ...);

/* Recoverable errors: writes the message into err (errlen bytes) and
 * returns false, so a check reads `return mt_errorf(err, errlen, ...)`. */
#include <stdbool.h>
#include <stddef.h>
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
bool mt_errorf(char *err, size_t errlen, const char *fmt, ...);

#ifdef __cplusplus
}
#endif

#define mt_fatal(...) mt_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
