/* The pre_tokenizer of a tokenizer.json: how normalized text is cut into
 * words before the BPE model sees them. Supported: null (the text is one
 * word), ByteLevel (add_prefix_space; use_regex with the GPT-2 regex; then
 * every byte becomes one character of GPT-2's byte-to-unicode map), Split
 * (a Regex or String pattern, every behavior, invert) and a Sequence of
 * these, each applied to the words of the one before, as tokenizers does.
 *
 * Regexes run on PCRE2 in UTF and UCP mode (\p{L}, \p{N}, lookahead).
 * tokenizers uses Oniguruma, whose \s (the Unicode White_Space property)
 * and \w (letters, marks, numbers, connector punctuation) differ from
 * PCRE2's a little, so those are rewritten as Oniguruma has them before
 * compiling; \b still follows PCRE2's \w. */
#ifndef MT_TEXT_PRE_TOKENIZER_H
#define MT_TEXT_PRE_TOKENIZER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mt_pre_tokenizer mt_pre_tokenizer;

/* Reads the "pre_tokenizer" value j (NULL or null: no pre-tokenizer);
 * errors name path and the key. */
mt_pre_tokenizer *mt_pre_tokenizer_load(const json_t *j, const char *path, char *err, size_t errlen);
void mt_pre_tokenizer_free(mt_pre_tokenizer *p);

/* Receives one word (n > 0 bytes of valid UTF-8). */
typedef bool (*mt_word_fn)(void *ctx, const char *word, size_t n, char *err, size_t errlen);

/* Cuts s[0, n) (valid UTF-8) into words and hands each to emit in order.
 * Fails when emit does, or when a regex exceeds PCRE2's match limits. */
bool mt_pre_tokenize(const mt_pre_tokenizer *p, const char *s, size_t n, mt_word_fn emit, void *ctx, char *err,
                     size_t errlen);

/* GPT-2's byte-to-unicode map: byte b stands for this character (printable
 * bytes for themselves, the others for U+0100..U+0143), and back: the byte
 * that character cp stands for, or -1. */
uint32_t mt_byte_level_char(uint8_t b);
int mt_byte_level_byte(uint32_t cp);

#endif
