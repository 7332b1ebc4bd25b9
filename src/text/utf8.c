#include "text/utf8.h"

#include <string.h>
#include <utf8proc.h>

#include "text/alloc.h"

int mt_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    const uint8_t lead = s[0];
    if (lead < 0x80) {
        *cp = lead;
        return 1;
    }
    /* The second byte's range excludes overlong forms, surrogates and code
     * points above U+10FFFF; the later ones are plain continuation bytes. */
    int len;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (lead >= 0xC2 && lead <= 0xDF) {
        len = 2;
        c = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        len = 3;
        c = lead & 0x0F;
        lo = lead == 0xE0 ? 0xA0 : 0x80;
        hi = lead == 0xED ? 0x9F : 0xBF;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        len = 4;
        c = lead & 0x07;
        lo = lead == 0xF0 ? 0x90 : 0x80;
        hi = lead == 0xF4 ? 0x8F : 0xBF;
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi)
            return -i; /* the lead and the good continuation bytes so far */
        c = c << 6 | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = c;
    return len;
}

int mt_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool mt_utf8_valid(const char *s, size_t n, size_t *bad_at)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const int len = mt_utf8_decode(u + i, n - i, &cp);
        if (len < 0) {
            *bad_at = i;
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

int mt_utf8_char_len(uint8_t lead)
{
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

char *mt_utf8_lossy(const uint8_t *s, size_t n, size_t *out_len)
{
    /* A replacement is 3 bytes for at least 1 replaced. */
    char *out = mt_text_realloc(NULL, 3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const int len = mt_utf8_decode(s + i, n - i, &cp);
        if (len > 0) {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else {
            o += (size_t)mt_utf8_encode(0xFFFD, out + o);
            i += (size_t)-len;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

bool mt_utf8_is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

bool mt_utf8_is_word_char(uint32_t cp)
{
    if (cp == 0x200C || cp == 0x200D)
        return true;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}
