/*
 * utf8.c: UTF-8 validation, as rill.c.utf8.
 * cjson copies a JSON string's bytes as they are, so a webhook checks its
 * body is valid UTF-8 before decoding it. The check is one linear pass in
 * C: a body may be as large as max_body, which a Lua loop over bytes or a
 * pattern search (bounded by pattern_max_steps) cannot scan.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "rill.h"

/* The length of the prefix of s[0..n) that is pure ASCII, in steps of 64
 * bytes (SSE2, x86-64's baseline: four 16-byte loads OR'ed, one movemask),
 * or 32 elsewhere (four words OR'ed); the byte-wise loop below does the rest. */
static size_t ascii_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    while (i + 64 <= n) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(s + i + 48));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) != 0)
            break;
        i += 64;
    }
#endif
    while (i + 32 <= n) {
        uint64_t w[4];
        memcpy(w, s + i, 32);
        if ((w[0] | w[1] | w[2] | w[3]) & UINT64_C(0x8080808080808080))
            break;
        i += 32;
    }
    return i;
}

/* The offset of the first byte of s that does not start a valid UTF-8
 * sequence (RFC 3629: no overlong forms, no UTF-16 surrogates, nothing past
 * U+10FFFF), or n when all of it is valid. */
static size_t first_invalid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII in long steps, then eight bytes at a time: most bodies
         * are mostly ASCII */
        i += ascii_prefix(s + i, n - i);
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return i;
        if (n - i <= more || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += more + 1;
    }
    return n;
}

int rill_utf8_valid(const char *s, size_t n) {
    return first_invalid((const unsigned char *)s, n) == n;
}

/* first_invalid(s) -> the 1-based position of the first byte that is not
 * valid UTF-8, or nil. */
static int l_first_invalid(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    size_t at = first_invalid((const unsigned char *)s, n);
    if (at == n)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)at + 1);
    return 1;
}

int rill_utf8_open(lua_State *L) {
    static const luaL_Reg funcs[] = {{"first_invalid", l_first_invalid}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
