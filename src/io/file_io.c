#include "io/file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"

bool mt_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        /* Linux writes at most about 2 GiB per call; ask for no more. */
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

bool mt_fsync_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mt_errorf(err, errlen, "%s: cannot open to fsync: %s", path, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return mt_errorf(err, errlen, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return mt_errorf(err, errlen, "%s: close failed: %s", path, strerror(errno));
    return true;
}

bool mt_write_file_synced(const char *path, const void *data, size_t n, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return mt_errorf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
    const char *what = "write";
    bool ok = mt_write_all(fd, data, n);
    if (ok && fsync(fd) != 0) {
        what = "fsync";
        ok = false;
    }
    int e = errno;
    if (close(fd) != 0 && ok) {
        what = "close";
        e = errno;
        ok = false;
    }
    if (!ok) {
        unlink(path);
        return mt_errorf(err, errlen, "%s: %s failed: %s", path, what, strerror(e));
    }
    return true;
}

bool mt_file_crc32(const char *path, uint64_t *size, uint32_t *crc, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    const size_t block = (size_t)4 << 20;
    unsigned char *buf = malloc(block);
    if (!buf) {
        close(fd);
        return mt_errorf(err, errlen, "%s: out of memory for the checksum buffer", path);
    }
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    bool ok = true;
    for (;;) {
        ssize_t r = read(fd, buf, block);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            ok = mt_errorf(err, errlen, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        c = crc32(c, buf, (uInt)r);
        total += (uint64_t)r;
    }
    free(buf);
    close(fd); /* read-only: a close error cannot lose data */
    *size = total;
    *crc = (uint32_t)c;
    return ok;
}

bool mt_path_join(char *out, size_t len, const char *dir, const char *name, char *err, size_t errlen)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return n >= 0 && (size_t)n < len ? true : mt_errorf(err, errlen, "%s/%s: path too long", dir, name);
}

char *mt_read_file(const char *path, size_t max_bytes, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        mt_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf && (max_bytes == 0 || n <= max_bytes)) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *bigger = realloc(buf, 2 * cap + 1);
        if (!bigger)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    const bool failed = !buf || ferror(f) || (max_bytes > 0 && n > max_bytes);
    if (failed)
        mt_errorf(err, errlen, "%s: %s", path, !buf ? "out of memory reading it" : ferror(f) ? "cannot read (a directory?)"
                                                                                       : "too large");
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}
