/* Token shards: HDF5 files with /tokens, optional /doc_offsets and
 * /loss_mask, and the attributes format_version, vocab_size, eos_id,
 * tokenizer (docs/data-format.md). Reading selects ranges and checks every
 * id against vocab_size as it is read. Every failure returns false (or
 * NULL) with a message naming the file and what is wrong in err; nothing
 * here exits. HDF5 (the serial build) is not thread-safe: every call into it
 * from this file holds one lock, so shards may be read from several threads.
 *
 * Shards are trusted input: HDF5 is not hardened against crafted files.
 * Before HDF5 sees a file, it must be a regular file that carries the HDF5
 * signature and is long enough for its superblock, so a stray text file, an
 * empty or truncated file gets a plain error instead. */
#ifndef MT_SHARD_H
#define MT_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_SHARD_FORMAT_VERSION 1
/* Token ids are handed out as int32. */
#define MT_SHARD_MAX_VOCAB ((int64_t)1 << 31)
/* Extra root attributes one writer can record (mt_shard_writer_add_uint_attr). */
#define MT_SHARD_MAX_EXTRA_ATTRS 8

typedef struct mt_shard mt_shard;

typedef struct mt_shard_info {
    int64_t n_tokens;
    int64_t vocab_size;
    int64_t eos_id;
    int64_t n_docs;      /* entries of /doc_offsets; 0 when absent */
    int token_bytes;     /* 2 (uint16) or 4 (uint32) */
    bool has_loss_mask;
    char tokenizer[256];
} mt_shard_info;

/* Opens and validates a shard: the file exists and is HDF5 (not truncated),
 * /tokens is a 1-D uint16 or uint32 dataset, the attributes are present,
 * single values and consistent (vocab_size at most MT_SHARD_MAX_VOCAB),
 * /doc_offsets (read whole) starts at 0, ascends and has no more entries
 * than /tokens. */
mt_shard *mt_shard_open(const char *path, char *err, size_t errlen);
void mt_shard_close(mt_shard *s);
const mt_shard_info *mt_shard_get_info(const mt_shard *s);
const char *mt_shard_path(const mt_shard *s);
/* The document start offsets (n_docs of them), or NULL. */
const uint64_t *mt_shard_doc_offsets(const mt_shard *s);
/* Root attribute name as one unsigned integer. *present is false when the
 * shard has no such attribute; false with err when it has one of another
 * type or with more than one value. */
bool mt_shard_uint_attr(mt_shard *s, const char *name, uint64_t *value, bool *present, char *err, size_t errlen);

/* Tokens [start, start + count) as int32; fails on an id >= vocab_size,
 * naming its offset. */
bool mt_shard_read_tokens(mt_shard *s, int64_t start, int64_t count, int32_t *out, char *err, size_t errlen);
/* The loss mask over [start, start + count); all ones when the shard has none. */
bool mt_shard_read_loss_mask(mt_shard *s, int64_t start, int64_t count, uint8_t *out, char *err, size_t errlen);

/* Writing: tokens are gathered in memory and the file is written on close,
 * to PATH.tmp, fsync'ed and renamed, so a crash never leaves a partial shard
 * under the final name. */
typedef struct mt_shard_writer mt_shard_writer;

mt_shard_writer *mt_shard_writer_open(const char *path, int64_t vocab_size, int64_t eos_id, const char *tokenizer,
                                      bool with_loss_mask, char *err, size_t errlen);
/* Appends n tokens (and their mask when the writer has one; NULL: zeros).
 * doc_start: the first of them starts a document (recorded in /doc_offsets).
 * Fails on an id outside [0, vocab_size). */
bool mt_shard_writer_append(mt_shard_writer *w, const int32_t *tokens, const uint8_t *mask, int64_t n,
                            bool doc_start, char *err, size_t errlen);
int64_t mt_shard_writer_count(const mt_shard_writer *w);
/* Records one more root attribute, an unsigned 64-bit integer, written on
 * close. Fails on a name the format uses, a repeated name, or past
 * MT_SHARD_MAX_EXTRA_ATTRS of them. */
bool mt_shard_writer_add_uint_attr(mt_shard_writer *w, const char *name, uint64_t value, char *err, size_t errlen);
/* Writes the file; chunk > 0 makes /tokens chunked with that many tokens per
 * chunk (deflate-compressed when compress is set). Frees w either way. */
bool mt_shard_writer_close(mt_shard_writer *w, int64_t chunk, bool compress, char *err, size_t errlen);
/* Frees w without writing anything. */
void mt_shard_writer_abort(mt_shard_writer *w);

#endif
