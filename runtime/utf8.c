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

#include "rill.h"

/* The offset of the first byte of s that does not start a valid UTF-8
 * sequence (RFC 3629: no overlong forms, no UTF-16 surrogates, nothing past
 * U+10FFFF), or n when all of it is valid. */
static size_t first_invalid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII 32 bytes at a time, then eight: most bodies are mostly
         * ASCII, and four words OR'ed together cost one test, not four */
        while (i + 32 <= n) {
            uint64_t w[4];
            memcpy(w, s + i, 32);
            if ((w[0] | w[1] | w[2] | w[3]) & UINT64_C(0x8080808080808080))
                break;
            i += 32;
        }
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
