/* Durable file writes: every byte written, fsync'ed, errors reported with the
 * path. The pieces the atomic writers (checkpoints, safetensors) share. */
#ifndef MT_FILE_IO_H
#define MT_FILE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* write(2) until all n bytes are out (retrying short writes and EINTR). */
bool mt_write_all(int fd, const void *buf, size_t n);

/* fsync of a file or a directory by path (for a directory this makes the
 * renames and creations inside it durable). */
bool mt_fsync_path(const char *path, char *err, size_t errlen);

/* Creates (or truncates) path with the n bytes of data, fsync'ed and closed. */
bool mt_write_file_synced(const char *path, const void *data, size_t n, char *err, size_t errlen);

/* dir/name into out (len bytes); false (with a message) when it does not fit. */
bool mt_path_join(char *out, size_t len, const char *dir, const char *name, char *err, size_t errlen);

/* The whole of a file (or pipe) in a malloc'ed buffer with a NUL after its
 * *len bytes (len may be NULL); NULL with the path and the reason in err.
 * More than max_bytes (0: no limit) is an error too. */
char *mt_read_file(const char *path, size_t max_bytes, size_t *len, char *err, size_t errlen);

/* The size and CRC-32 (zlib's) of a file, read in blocks. */
bool mt_file_crc32(const char *path, uint64_t *size, uint32_t *crc, char *err, size_t errlen);

#endif
