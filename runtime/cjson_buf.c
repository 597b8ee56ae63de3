/*
 * cjson_buf.c: the memory of lua-cjson's buffers, and the numbers it reads.
 * rill links its own strbuf (the five functions lua_cjson.o calls), so that
 * the archive's strbuf.o is never linked: it mallocs outside the Lua heap
 * and calls exit() when malloc fails. Here every buffer comes from the Lua
 * state's allocator: it is charged to the run that made it (an encode
 * reserves six bytes per byte of a string, for escapes) and refused over
 * the run's memory limit, and a refusal raises a Lua error in the thread
 * that called cjson (guard()), which the run's limit then ends.
 * The link also wraps fpconv_strtod, which reads the numbers a decode
 * meets (json_decode.c reads short integers itself), to count the ones
 * past a double's range (read as infinity, which no JSON can carry back):
 * a webhook refuses such a body by this count instead of scanning its
 * text for long numbers.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rill.h"

/* ---- strbuf ----
 * lua-cjson 2.1.0's strbuf_t, field for field: lua_cjson.o reads and
 * writes buf, size and length itself (the header's inline functions), and
 * calls strbuf_resize when an append needs more than size - length - 1. */
typedef struct strbuf {
    char *buf;
    int size;      /* bytes at buf */
    int length;    /* bytes written; cjson keeps one byte after them for a NUL */
    int increment; /* cjson's growth policy: unused here */
    int dynamic;   /* cjson's: unused here (no struct is ever freed) */
    int reallocs;
    int debug;
} strbuf_t;

strbuf_t *strbuf_new(int len);
void strbuf_init(strbuf_t *s, int len);
void strbuf_free(strbuf_t *s);
void strbuf_resize(strbuf_t *s, int len);
void strbuf_append_string(strbuf_t *s, const char *str);

static lua_Alloc allocf; /* the Lua state's allocator (rill_alloc: metered) */
static void *alloc_ud;
static lua_State *caller; /* the thread inside a guarded cjson call, or NULL */
static strbuf_t *held;    /* the decode's buffer in progress, or one an error left behind */

/* Raises in the guarded caller: the allocation was refused (the run's or
 * the process's memory limit, which the run then ends with) or failed. */
static void refused(size_t n) {
    if (caller != NULL)
        luaL_error(caller, "json: a buffer of %f bytes could not be had (not enough memory)",
                   (double)n);
    /* Every entry into cjson is guarded (json.lua): this is a defect. */
    fprintf(stderr, "rill: cjson allocated %zu bytes outside a guarded call\n", n);
    abort();
}

static void *grow(void *p, size_t osize, size_t nsize) {
    void *q = allocf(alloc_ud, p, osize, nsize);
    if (q == NULL)
        refused(nsize);
    return q;
}

/* Sets s up with a buffer for len bytes (1024 when len is 0). Its fields
 * are set before the buffer is asked for: a refusal leaves s for
 * strbuf_free. */
void strbuf_init(strbuf_t *s, int len) {
    s->buf = NULL;
    s->size = s->length = s->reallocs = s->debug = s->dynamic = 0;
    s->increment = -2;
    size_t size = len > 0 ? (size_t)len + 1 : 1024;
    s->buf = grow(NULL, 0, size);
    s->size = (int)size;
    s->buf[0] = '\0';
}

static void held_release(void) {
    if (held != NULL) {
        strbuf_t *s = held;
        held = NULL;
        strbuf_free(s);
    }
}

/* The decode's buffer: cjson makes one (strbuf_new) per decode, for the
 * decoded strings, and decodes never nest, so its struct is this one, not
 * a block of the heap made and freed on every JSON webhook request (the
 * bytes it points to are, charged to the run as any). */
static strbuf_t decode_buf;

strbuf_t *strbuf_new(int len) {
    held_release(); /* decodes never nest: one still held was left behind */
    strbuf_t *s = &decode_buf;
    held = s; /* its buffer is freed by held_release if the setup below raises */
    strbuf_init(s, len);
    return s;
}

void strbuf_free(strbuf_t *s) {
    if (s == held)
        held = NULL;
    if (s->buf != NULL)
        allocf(alloc_ud, s->buf, (size_t)s->size, 0);
    s->buf = NULL;
    s->size = s->length = 0;
}

/* Room for len bytes and the NUL: at least half as much again as now, so
 * that many small appends stay linear; one long string gets what it asks. */
void strbuf_resize(strbuf_t *s, int len) {
    if (len < 0 || len >= INT_MAX)
        refused((size_t)INT_MAX + 1); /* cjson's int sizes overflowed */
    size_t need = (size_t)len + 1, size = (size_t)s->size + (size_t)s->size / 2;
    if (size < need)
        size = need;
    if (size >= INT_MAX)
        size = need;
    s->buf = grow(s->buf, (size_t)s->size, size); /* on failure, s is untouched */
    s->size = (int)size;
    s->reallocs++;
}

void strbuf_append_string(strbuf_t *s, const char *str) {
    size_t n = strlen(str);
    if (n >= (size_t)INT_MAX - (size_t)s->length)
        refused(n);
    if ((int)n > s->size - s->length - 1)
        strbuf_resize(s, s->length + (int)n);
    memcpy(s->buf + s->length, str, n);
    s->length += (int)n;
    s->buf[s->length] = '\0';
}

/* ---- Numbers ---- */

double __wrap_fpconv_strtod(const char *nptr, char **endptr);

static double infinities; /* numbers decoded as infinite since start */

/* rill never sets LC_NUMERIC: the C locale's decimal point is '.', and
 * strtod reads JSON numbers as they are (fpconv's copy for other locales
 * mallocs and aborts when that fails: it is never reached). */
double __wrap_fpconv_strtod(const char *nptr, char **endptr) {
    double v = strtod(nptr, endptr);
    if (isinf(v))
        infinities++;
    return v;
}

/* ---- Lua ---- */

/* The guarded call: f(...) with this thread as the one a refused buffer
 * raises in. An error (cjson's own, or a refusal) frees the decode's
 * buffer it unwound past, then goes on up. */
static int l_guarded(lua_State *L) {
    int n = lua_gettop(L);
    lua_State *outer = caller;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    caller = L;
    int status = lua_pcall(L, n, LUA_MULTRET, 0);
    caller = outer;
    if (status != 0) {
        held_release();
        return lua_error(L);
    }
    return lua_gettop(L);
}

/* guard(f) -> a function calling f, under which cjson may allocate. */
static int l_guard(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushcclosure(L, l_guarded, 1);
    return 1;
}

/* infinities() -> how many numbers decodes have read as infinite since start. */
static int l_infinities(lua_State *L) {
    lua_pushnumber(L, infinities);
    return 1;
}

int rill_cjson_buf_open(lua_State *L) {
    allocf = lua_getallocf(L, &alloc_ud);
    lua_newtable(L);
    lua_pushcfunction(L, l_infinities);
    lua_setfield(L, -2, "infinities");
    lua_pushcfunction(L, l_guard);
    lua_setfield(L, -2, "guard");
    return 1;
}
