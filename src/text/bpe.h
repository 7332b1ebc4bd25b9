/* The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), as the
 * Hugging Face tokenizers library applies it to one pre-token (a word):
 * the word's characters are looked up in the vocabulary (with
 * continuing_subword_prefix, end_of_word_suffix, byte_fallback and unk_token
 * where set), then the adjacent pair of lowest merge rank is merged until
 * none is left (a priority queue: O(n log n) in the word's length). With
 * ignore_merges, a word that is itself in the vocabulary is that one token.
 * BPE dropout (random merges) is refused; there is no per-word cache. */
#ifndef MT_TEXT_BPE_H
#define MT_TEXT_BPE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_bpe mt_bpe;

/* A growing list of token ids. */
typedef struct mt_id_list {
    int32_t *ids;
    int64_t n, cap;
} mt_id_list;

void mt_id_list_push(mt_id_list *l, int32_t id);

/* Scratch space reused from word to word within one encode call (so that
 * the model itself is never written to and may be shared by threads).
 * Zero-initialize it; mt_bpe_work_free releases it. */
typedef struct mt_bpe_work {
    struct mt_bpe_symbol *symbols;
    struct mt_bpe_merge *heap;
    char *buf;
    size_t symbols_cap, heap_cap, buf_cap;
} mt_bpe_work;

void mt_bpe_work_free(mt_bpe_work *w);

/* Reads the model object; errors name path and the key under "model". */
mt_bpe *mt_bpe_load(const json_t *model, const char *path, char *err, size_t errlen);
void mt_bpe_free(mt_bpe *b);

/* The id of the token s[0, n), or -1. */
int32_t mt_bpe_lookup(const mt_bpe *b, const char *s, size_t n);
/* The token of id (NUL-terminated), or NULL. */
const char *mt_bpe_token(const mt_bpe *b, int32_t id);
/* The number of tokens, and the largest id (-1 when empty). */
int64_t mt_bpe_count(const mt_bpe *b);
int32_t mt_bpe_max_id(const mt_bpe *b);

/* Appends the ids of word[0, n) (valid UTF-8) to out. Fails only when a
 * character needs unk_token and unk_token is not in the vocabulary. */
bool mt_bpe_tokenize(const mt_bpe *b, const char *word, size_t n, mt_bpe_work *w, mt_id_list *out, char *err,
                     size_t errlen);

#endif
