/* A tokenizer read from a Hugging Face tokenizer.json of the byte-level BPE
 * kind (GPT-2, GPT-NeoX and so the released Mamba models, Llama 3), giving
 * the ids that the tokenizers library gives for encode(text,
 * add_special_tokens=False) and the text of decode(ids,
 * skip_special_tokens=False). docs/tokenizer.md lists what is supported.
 *
 * Encoding goes as in tokenizers: the added tokens that are not normalized
 * (special tokens such as <|endoftext|>) are found in the raw text first,
 * longest match first, and are never split; the rest is normalized (NFC,
 * NFD, NFKC, NFKD or a Sequence of them), normalized added tokens are found
 * in it, and what remains is cut into words by the pre-tokenizer and each
 * word into tokens by the BPE model. The post_processor is not applied (it
 * only adds tokens with add_special_tokens=True), nor truncation and
 * padding (refused where set).
 *
 * A loaded tokenizer is read-only: several threads may encode and decode
 * with one. Failures return false (NULL) with a message in err naming the
 * file and the key; nothing here exits except on running out of memory. */
#ifndef MT_TEXT_TOKENIZER_H
#define MT_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_tokenizer mt_tokenizer;

mt_tokenizer *mt_tokenizer_load(const char *path, char *err, size_t errlen);
void mt_tokenizer_free(mt_tokenizer *t);

/* The ids of text[0, len), which must be valid UTF-8, in *ids (malloc'ed,
 * *n of them; the caller frees it; NULL when *n is 0). special_as_text
 * treats special added tokens in the text as plain text (tokenizers'
 * encode_special_tokens = True); false is tokenizers' default. */
bool mt_tokenizer_encode(const mt_tokenizer *t, const char *text, size_t len, bool special_as_text, int32_t **ids,
                         int64_t *n, char *err, size_t errlen);

/* The text of ids[0, n) (malloc'ed, NUL-terminated, *len bytes without the
 * NUL; it may hold NUL bytes). Bytes that are not valid UTF-8 become U+FFFD
 * as in tokenizers. Unlike tokenizers, which skips them, an id that no
 * token has is an error. */
char *mt_tokenizer_decode(const mt_tokenizer *t, const int32_t *ids, int64_t n, size_t *len, char *err,
                          size_t errlen);

/* One more than the largest id (model vocabulary and added tokens): the
 * rows an embedding needs. */
int64_t mt_tokenizer_vocab_size(const mt_tokenizer *t);

/* The id of the token spelled token (an added token such as "<|endoftext|>",
 * else a vocabulary entry), or -1. */
int32_t mt_tokenizer_token_id(const mt_tokenizer *t, const char *token);

#endif
