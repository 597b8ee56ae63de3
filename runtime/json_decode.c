/*
 * json_decode.c: JSON text to Lua values, as rill.c.json.decode: the one
 * decoder of webhook bodies, flows' json.decode and the store's json
 * columns (batch.c).
 * It reads the language lua-cjson 2.1.0 reads, with the same values (null
 * as a NULL light userdata, numbers as doubles read by the same strtod,
 * strings byte for byte) and the same error messages ("Expected X but
 * found Y at character N", which json.where turns into a line and column),
 * and it is made for the loop's hot path:
 *  - a string without escapes is pushed straight from the text (cjson
 *    copies every string into a scratch buffer first), found 16 bytes at a
 *    time;
 *  - a container's members wait on the Lua stack and its table is made at
 *    its final size (cjson makes it empty and LuaJIT regrows the hash part
 *    1, 2, 4, 8 slots as keys come: four blocks made, three freed, for an
 *    object of eight keys); past CHUNK members it is made and filled as it
 *    goes;
 *  - no buffer outside the Lua heap: every byte it makes is charged to the
 *    run that decodes (alloc.c), and an error (a refused allocation, a
 *    syntax error) leaves nothing behind.
 * One difference on purpose: cjson ends the text at its first NUL byte
 * (`{}\0anything` decoded as {}); here bytes after the value must all be
 * whitespace, so that a body's signature covers what is decoded, and
 * nothing more.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "rill.h"

#define MAX_DEPTH 100 /* as json.lua's cjson.decode_max_depth(100) */
/* Members kept on the stack before their table is made. LuaJIT lets a C
 * function hold at most LUAI_MAXCSTACK (8000) slots: at MAX_DEPTH levels
 * of 2 * CHUNK + 3 slots each that bound holds. */
#define CHUNK 32

/* lua-cjson's number reader (fpconv.c, in its archive; the link wraps it
 * to count the numbers read as infinite: cjson_buf.c). */
double fpconv_strtod(const char *nptr, char **endptr);

typedef struct parser {
    lua_State *L;
    const char *text; /* the whole text, NUL-terminated (a Lua string) */
    const char *end;  /* text + its length */
    const char *p;    /* the next byte to read */
    int depth;
} parser;

static __attribute__((noreturn)) void fail(parser *ps, const char *expected, const char *found,
                                           const char *at) {
    luaL_error(ps->L, "Expected %s but found %s at character %d", expected, found,
               (int)(at - ps->text) + 1);
    __builtin_unreachable();
}

/* JSON's four whitespace bytes. */
static inline const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* The first of '"', '\\' or NUL at or after p (the text ends with a NUL:
 * one is always found). */
static inline const char *string_stop(const char *p, const char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                  zero = _mm_setzero_si128();
    while (p + 16 <= end) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i hit =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                         _mm_cmpeq_epi8(v, zero));
        int mask = _mm_movemask_epi8(hit);
        if (mask != 0)
            return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
#else
    (void)end;
#endif
    while (*p != '"' && *p != '\\' && *p != '\0')
        p++;
    return p;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = rill_hex_digit((unsigned char)p[i]);
        if (d < 0)
            return -1; /* a NUL too: never read past the text */
        v = v << 4 | d;
    }
    return v;
}

/* \uXXXX at p (a surrogate pair: two of them) as UTF-8 into out; returns
 * the bytes written and sets *next past the escape, or 0 when invalid
 * (cjson's rules: a high surrogate followed by a low one, nothing else). */
static int unicode_escape(const char *p, char out[4], const char **next) {
    int cp = hex4(p + 2);
    if (cp < 0)
        return 0;
    *next = p + 6;
    if ((cp & 0xF800) == 0xD800) {
        if (cp & 0x400 || p[6] != '\\' || p[7] != 'u')
            return 0;
        int low = hex4(p + 8);
        if (low < 0 || (low & 0xFC00) != 0xDC00)
            return 0;
        cp = (((cp & 0x3FF) << 10) | (low & 0x3FF)) + 0x10000;
        *next = p + 12;
    }
    if (cp <= 0x7F) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp <= 0x7FF) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp <= 0xFFFF) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The rest of a string with escapes, from the first backslash at p, built
 * in a luaL_Buffer (the Lua heap; nothing else is pushed meanwhile). */
static __attribute__((noinline)) void push_escaped(parser *ps, const char *start, const char *p,
                                                   const char *expected) {
    luaL_Buffer b;
    /* the buffer pushes its pieces above the container's members */
    luaL_checkstack(ps->L, LUA_MINSTACK, "JSON string");
    luaL_buffinit(ps->L, &b);
    luaL_addlstring(&b, start, (size_t)(p - start));
    for (;;) {
        if (*p == '"')
            break;
        if (*p == '\0')
            fail(ps, expected, "unexpected end of string", p);
        if (*p != '\\') {
            const char *stop = string_stop(p, ps->end);
            luaL_addlstring(&b, p, (size_t)(stop - p));
            p = stop;
            continue;
        }
        char c;
        switch (p[1]) {
        case '"':
            c = '"';
            break;
        case '\\':
            c = '\\';
            break;
        case '/':
            c = '/';
            break;
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            char utf8[4];
            const char *next;
            int n = unicode_escape(p, utf8, &next);
            if (n == 0)
                fail(ps, expected, "invalid unicode escape code", p);
            luaL_addlstring(&b, utf8, (size_t)n);
            p = next;
            continue;
        }
        default:
            fail(ps, expected, "invalid escape code", p);
        }
        luaL_addchar(&b, c);
        p += 2;
    }
    ps->p = p + 1;
    luaL_pushresult(&b);
}

/* The string whose opening quote is at `at`, pushed. */
static inline void push_string(parser *ps, const char *at, const char *expected) {
    const char *start = at + 1;
    const char *stop = string_stop(start, ps->end);
    if (*stop == '"') {
        lua_pushlstring(ps->L, start, (size_t)(stop - start));
        ps->p = stop + 1;
    } else if (*stop == '\\') {
        push_escaped(ps, start, stop, expected);
    } else {
        fail(ps, expected, "unexpected end of string", stop);
    }
}

/* cjson's json_is_invalid_number: strtod reads more than JSON's numbers;
 * these it would read wrongly (hex, leading zeros, inf and nan). */
static int invalid_number(const char *p) {
    if (*p == '-')
        p++;
    if (*p == '0')
        return (p[1] | 0x20) == 'x' || (p[1] >= '0' && p[1] <= '9');
    if (*p <= '9')
        return 0;
    return strncasecmp(p, "inf", 3) == 0 || strncasecmp(p, "nan", 3) == 0;
}

/* What cjson's lexer would name the token at `at`, found where another
 * was expected, and where it says it is: a string or a number is read to
 * the byte that makes it invalid, as cjson reads every token whole. */
static const char *token_name(parser *ps, const char **at) {
    const char *p = *at;
    switch (*p) {
    case '{':
        return "T_OBJ_BEGIN";
    case '}':
        return "T_OBJ_END";
    case '[':
        return "T_ARR_BEGIN";
    case ']':
        return "T_ARR_END";
    case ':':
        return "T_COLON";
    case ',':
        return "T_COMMA";
    case '\0':
        return "T_END"; /* as cjson names it, even before the end */
    case '"':
        for (p++;;) {
            p = string_stop(p, ps->end);
            if (*p == '"')
                return "T_STRING";
            if (*p == '\0') {
                *at = p;
                return "unexpected end of string";
            }
            char utf8[4];
            const char *next;
            if (p[1] == 'u') {
                if (unicode_escape(p, utf8, &next) == 0) {
                    *at = p;
                    return "invalid unicode escape code";
                }
                p = next;
            } else if (p[1] && strchr("\"\\/bfnrt", p[1])) {
                p += 2;
            } else {
                *at = p;
                return "invalid escape code";
            }
        }
    default:
        break;
    }
    if (*p == '-' || (*p >= '0' && *p <= '9')) {
        char *stop;
        return invalid_number(p) || (fpconv_strtod(p, &stop), stop == p) ? "invalid number"
                                                                         : "T_NUMBER";
    }
    if (strncmp(p, "true", 4) == 0 || strncmp(p, "false", 5) == 0)
        return "T_BOOLEAN";
    if (strncmp(p, "null", 4) == 0)
        return "T_NULL";
    return "invalid token";
}

/* Raises cjson's error for the token at `at`, found where `expected` was. */
static __attribute__((noreturn)) void unexpected(parser *ps, const char *expected, const char *at) {
    const char *found = token_name(ps, &at);
    fail(ps, expected, found, at);
}

/* The number at `at`, pushed. An integer of up to 15 digits (the common
 * case: ids, amounts, times) is read here, exactly; any other through
 * cjson's strtod, so that every value and every refusal is cjson's. */
static void push_number(parser *ps, const char *at, const char *expected) {
    if (invalid_number(at))
        fail(ps, expected, "invalid number", at);
    const char *p = at + (*at == '-');
    uint64_t v = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9' && p - digits < 16)
        v = v * 10 + (uint64_t)(*p++ - '0');
    int n = (int)(p - digits);
    if (n > 0 && n <= 15 && *p != '.' && (*p | 0x20) != 'e' && !(*p >= '0' && *p <= '9')) {
        double d = (double)v;
        lua_pushnumber(ps->L, *at == '-' ? -d : d);
        ps->p = p;
        return;
    }
    char *stop;
    double d = fpconv_strtod(at, &stop);
    if (stop == at)
        fail(ps, expected, "invalid number", at);
    lua_pushnumber(ps->L, d);
    ps->p = stop;
}

static void push_value(parser *ps, const char *expected);

/* Entering a container whose opening byte is at `at`: cjson's depth bound
 * and message, and the stack slots its members need. */
static void descend(parser *ps, const char *at, int slots) {
    if (++ps->depth > MAX_DEPTH || !lua_checkstack(ps->L, slots))
        luaL_error(ps->L, "Found too many nested data structures (%d) at character %d", ps->depth,
                   (int)(at + 1 - ps->text));
}

/* Sets the n key-value pairs above the table at t, in order (a key given
 * twice keeps its last value, as cjson's), and pops them. */
static void set_pairs(lua_State *L, int t, int n) {
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, t + 1 + 2 * i);
        lua_pushvalue(L, t + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_settop(L, t);
}

static void push_object(parser *ps, const char *at) {
    lua_State *L = ps->L;
    descend(ps, at, 2 * CHUNK + 3);
    int base = lua_gettop(L); /* the table goes at base + 1 */
    int n = 0, made = 0;
    const char *p = skip_space(at + 1);
    if (*p == '}') {
        lua_createtable(L, 0, 0);
        ps->p = p + 1;
        ps->depth--;
        return;
    }
    for (;;) {
        if (*p != '"')
            unexpected(ps, "object key string", p);
        push_string(ps, p, "object key string");
        p = skip_space(ps->p);
        if (*p != ':')
            unexpected(ps, "colon", p);
        ps->p = p + 1;
        push_value(ps, "value");
        if (made) {
            lua_rawset(L, base + 1);
        } else if (++n == CHUNK) { /* a large object: made now, filled as it goes */
            lua_createtable(L, 0, CHUNK);
            lua_insert(L, base + 1);
            set_pairs(L, base + 1, n);
            made = 1;
        }
        p = skip_space(ps->p);
        if (*p == '}')
            break;
        if (*p != ',')
            unexpected(ps, "comma or object end", p);
        p = skip_space(p + 1);
    }
    if (!made) {
        lua_createtable(L, 0, n);
        lua_insert(L, base + 1);
        set_pairs(L, base + 1, n);
    }
    ps->p = p + 1;
    ps->depth--;
}

static void push_array(parser *ps, const char *at) {
    lua_State *L = ps->L;
    descend(ps, at, CHUNK + 3);
    int base = lua_gettop(L);
    int n = 0;
    const char *p = skip_space(at + 1);
    if (*p == ']') {
        lua_createtable(L, 0, 0);
        ps->p = p + 1;
        ps->depth--;
        return;
    }
    ps->p = p;
    for (;;) {
        push_value(ps, "value");
        n++;
        if (n > CHUNK) {
            lua_rawseti(L, base + 1, n);
        } else if (n == CHUNK) { /* a long array: made now, filled as it goes */
            lua_createtable(L, CHUNK, 0);
            lua_insert(L, base + 1);
            for (int i = n; i >= 1; i--)
                lua_rawseti(L, base + 1, i);
        }
        p = skip_space(ps->p);
        if (*p == ']')
            break;
        if (*p != ',')
            unexpected(ps, "comma or array end", p);
        ps->p = p + 1;
    }
    if (n < CHUNK) {
        lua_createtable(L, n, 0);
        lua_insert(L, base + 1);
        for (int i = n; i >= 1; i--)
            lua_rawseti(L, base + 1, i);
    }
    ps->p = p + 1;
    ps->depth--;
}

/* The value at ps->p (after whitespace), pushed; ps->p moves past it. */
static void push_value(parser *ps, const char *expected) {
    const char *at = skip_space(ps->p);
    switch (*at) {
    case '{':
        push_object(ps, at);
        return;
    case '[':
        push_array(ps, at);
        return;
    case '"':
        push_string(ps, at, expected);
        return;
    case 't':
        if (strncmp(at, "true", 4) == 0) {
            lua_pushboolean(ps->L, 1);
            ps->p = at + 4;
            return;
        }
        break;
    case 'f':
        if (strncmp(at, "false", 5) == 0) {
            lua_pushboolean(ps->L, 0);
            ps->p = at + 5;
            return;
        }
        break;
    case 'n':
        if (strncmp(at, "null", 4) == 0) {
            lua_pushlightuserdata(ps->L, NULL);
            ps->p = at + 4;
            return;
        }
        break;
    default:
        if (*at == '-' || (*at >= '0' && *at <= '9')) {
            push_number(ps, at, expected);
            return;
        }
        break;
    }
    unexpected(ps, expected, at);
}

/* decode(text) -> value; raises "Expected ... at character N" (cjson's
 * messages) on text that is not JSON. */
int rill_json_decode(lua_State *L) {
    size_t len;
    parser ps;
    luaL_argcheck(L, lua_gettop(L) == 1, 1, "expected 1 argument");
    ps.L = L;
    ps.text = luaL_checklstring(L, 1, &len);
    ps.end = ps.text + len;
    ps.p = ps.text;
    ps.depth = 0;
    if (len >= 2 && (ps.text[0] == '\0' || ps.text[1] == '\0'))
        luaL_error(L, "JSON parser does not support UTF-16 or UTF-32");
    push_value(&ps, "value");
    const char *p = skip_space(ps.p);
    if (p != ps.end) {
        if (*p == '\0') /* cjson's end of the text; not here: see the top */
            fail(&ps, "the end", "invalid token", p);
        unexpected(&ps, "the end", p);
    }
    return 1;
}

int rill_json_open(lua_State *L) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, rill_json_decode);
    lua_setfield(L, -2, "decode");
    return 1;
}
