/* The synthetic tasks of the Mamba paper (selective copying, induction heads)
 * and byte-level text, as token streams for shards (docs/data-format.md).
 *
 * A synthetic example is exactly seq_len + 1 tokens: one training sample,
 * whose inputs are its first seq_len tokens and targets its last seq_len.
 * Each comes with a per-token answer mask, 1 on the tokens whose prediction
 * is scored. Example i of a task depends only on (seed, i) through the Philox
 * RNG of core/rng.h, so any example can be regenerated on its own.
 *
 * Vocabulary ids (vocab_size V counts every id, specials included):
 *   selective copying  0 = EOS, 1 = noise, 2 = copy marker, 3..V-1 = data
 *   induction heads    0 = EOS, 1 = trigger,                2..V-1 = data
 *   bytes              0..255 = the byte values, 256 = EOS (V = 257)
 * EOS never occurs inside a synthetic example: a sample is one whole example,
 * so one would only take a position; the id is what the shard's eos_id names.
 *
 * Selective copying, K = n_memorize, N = seq_len + 1:
 *   [0, N-K-1)   noise, with K data tokens at distinct random positions
 *   N-K-1        the copy marker
 *   [N-K, N)     the K data tokens in the order they appear    (mask 1)
 * Induction heads, N = seq_len + 1:
 *   [0, N-2)     random data tokens, except the trigger at one random
 *                position p <= N-4 followed by the data token X at p+1
 *   N-2, N-1     the trigger, then X                           (mask 1 on N-1) */
#ifndef MT_SYNTHETIC_H
#define MT_SYNTHETIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_SYNTH_EOS 0
#define MT_COPY_NOISE 1
#define MT_COPY_MARKER 2
#define MT_COPY_FIRST_DATA 3
#define MT_INDUCTION_TRIGGER 1
#define MT_INDUCTION_FIRST_DATA 2

#define MT_BYTES_VOCAB 257
#define MT_BYTES_EOS 256

typedef enum { MT_TASK_SELECTIVE_COPY, MT_TASK_INDUCTION } mt_synth_task;

typedef struct mt_synth_config {
    mt_synth_task task;
    int64_t vocab_size; /* every id, specials included */
    int64_t seq_len;    /* an example is seq_len + 1 tokens */
    int64_t n_memorize; /* selective copying: data tokens to copy; unused by induction */
    uint64_t seed;
} mt_synth_config;

/* The task's name as the CLI spells it and shards record it as their
 * tokenizer: "selective-copy" or "induction". */
const char *mt_synth_task_name(mt_synth_task task);

/* Checks that c describes examples that can be built (enough data tokens,
 * seq_len long enough for n_memorize, ...); false with the reason in err. */
bool mt_synth_validate(const mt_synth_config *c, char *err, size_t errlen);

/* Example index of task c (valid per mt_synth_validate): seq_len + 1 ids
 * into tokens and their answer mask into mask. */
void mt_synth_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask);
void mt_selective_copy_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask);
void mt_induction_example(const mt_synth_config *c, uint64_t index, int32_t *tokens, uint8_t *mask);

/* The generator's version, recorded in its shards: raise it whenever the
 * examples made from the same parameters change, so old shards are remade. */
#define MT_SYNTH_GENERATOR_VERSION 1

/* Writes n_examples examples of c to a shard at path: one document per
 * example, with /loss_mask, vocab_size c->vocab_size, eos_id MT_SYNTH_EOS,
 * the task's name as tokenizer, and the generator's parameters as the
 * attributes synthetic_version, synthetic_seq_len, synthetic_memorize,
 * synthetic_seed and synthetic_examples (docs/data-format.md). */
bool mt_synth_write_shard(const mt_synth_config *c, int64_t n_examples, const char *path, char *err, size_t errlen);

/* Makes sure path holds the shard mt_synth_write_shard(c, n_examples) would
 * write. A missing shard is written; one whose recorded parameters equal the
 * requested ones is kept; one made with others (or by another generator
 * version) is written anew, after one line on stdout naming what differs.
 * The new file replaces the old by rename, so path never holds half a
 * shard. A file at path that is not a synthetic shard (not HDF5, or without
 * synthetic_version) is left alone: false, with err saying to move it away. */
bool mt_synth_ensure_shard(const mt_synth_config *c, int64_t n_examples, const char *path, char *err, size_t errlen);

/* Byte-level tokens: id = byte value. */
void mt_bytes_to_tokens(const uint8_t *bytes, int64_t n, int32_t *tokens);
/* The bytes of n tokens, EOS dropped; returns how many were written to bytes
 * (room for n), or -1 at an id outside [0, MT_BYTES_VOCAB). */
int64_t mt_tokens_to_bytes(const int32_t *tokens, int64_t n, uint8_t *bytes);

typedef enum {
    MT_DOC_PER_FILE,       /* each input file is one document */
    MT_DOC_PER_PARAGRAPH,  /* runs of non-blank lines; blank (whitespace-only) lines separate and are dropped */
} mt_doc_sep;

/* Calls emit(doc, len, arg) for each document of text under sep, in order;
 * stops at the first false from emit and returns false then. Paragraphs keep
 * their bytes, the newline of their last line included. */
bool mt_text_documents(const uint8_t *text, int64_t n, mt_doc_sep sep,
                       bool (*emit)(const uint8_t *doc, int64_t len, void *arg), void *arg);

/* Writes the byte-level shard of the n_inputs files: vocab MT_BYTES_VOCAB,
 * eos MT_BYTES_EOS, tokenizer "bytes", each document followed by EOS and
 * starting an entry of /doc_offsets. Fails naming a file that cannot be read
 * or holds no document. */
bool mt_text_write_shard(const char *const *inputs, int n_inputs, mt_doc_sep sep, const char *path, char *err,
                         size_t errlen);

#endif
