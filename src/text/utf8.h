/* UTF-8 as the tokenizer needs it: checking text, stepping over characters,
 * classifying them as Hugging Face tokenizers does, and turning arbitrary
 * bytes into text the way Rust's String::from_utf8_lossy does (each maximal
 * invalid subsequence becomes one U+FFFD). */
#ifndef MT_TEXT_UTF8_H
#define MT_TEXT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The character at s (n > 0 bytes left): its length in bytes, with the code
 * point in *cp; or, where s does not start a valid sequence, minus the length
 * of the invalid part that one U+FFFD replaces (1 to 3 bytes). */
int mt_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Writes cp (a Unicode scalar value) at out; returns its length (1 to 4). */
int mt_utf8_encode(uint32_t cp, char out[4]);

/* Whether s[0, n) is valid UTF-8; where not, *bad_at is the first bad byte. */
bool mt_utf8_valid(const char *s, size_t n, size_t *bad_at);

/* The length of the character that starts at s, in valid UTF-8. */
int mt_utf8_char_len(uint8_t lead);

/* s[0, n) with every invalid part replaced by U+FFFD, NUL-terminated
 * (malloc'ed; *out_len excludes the NUL). */
char *mt_utf8_lossy(const uint8_t *s, size_t n, size_t *out_len);

/* The Unicode White_Space property: Rust's char::is_whitespace, the regex
 * crate's \s and Oniguruma's \s in Unicode mode. */
bool mt_utf8_is_white_space(uint32_t cp);

/* A word character as the regex crate's Unicode \w has it (letters, marks,
 * decimal digits, connector punctuation, joiners), used for added tokens'
 * single_word flag. Letters stand in for the Alphabetic property, which adds
 * a few symbols such as circled letters. */
bool mt_utf8_is_word_char(uint32_t cp);

#endif
