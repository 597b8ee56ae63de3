/*
 * cjson_buf.c: owns the scratch buffer of lua-cjson's decode. cjson
 * mallocs it (strbuf_new, the input's length) and frees it when the decode
 * returns or raises one of its own errors; a Lua error raised inside the
 * decode (a run's memory limit, while the result is built) unwinds past it,
 * and the buffer was never freed: a run decoding a 20 MB string near its
 * limit left 20 MB behind, every time (tests/test_hostile_rv.py).
 * The link wraps strbuf_new and strbuf_free (-Wl,--wrap, Makefile), so that
 * the buffer of the decode in progress is known. Its only caller is the
 * decode, and decodes never nest (cjson calls no Lua code): a buffer still
 * held when the next decode starts, or when release() is called after a
 * failed decode, was left behind, and is freed then.
 * The link also wraps fpconv_strtod, which reads every number a decode
 * meets, to count the ones past a double's range (cjson makes them
 * infinity, which no JSON can carry back): a webhook refuses such a body
 * by this count instead of scanning its text for long numbers.
 */
#include <math.h>

#include "rill.h"

void *__real_strbuf_new(int len);
void __real_strbuf_free(void *s);
void *__wrap_strbuf_new(int len);
void __wrap_strbuf_free(void *s);

static void *held; /* the buffer of the decode in progress, or one left behind */

static void rill_cjson_buf_release(void) {
    if (held != NULL) {
        __real_strbuf_free(held);
        held = NULL;
    }
}

void *__wrap_strbuf_new(int len) {
    rill_cjson_buf_release();
    held = __real_strbuf_new(len);
    return held;
}

void __wrap_strbuf_free(void *s) {
    if (s == held)
        held = NULL;
    __real_strbuf_free(s);
}

double __real_fpconv_strtod(const char *nptr, char **endptr);
double __wrap_fpconv_strtod(const char *nptr, char **endptr);

static double infinities; /* numbers decoded as infinite since start */

double __wrap_fpconv_strtod(const char *nptr, char **endptr) {
    double v = __real_fpconv_strtod(nptr, endptr);
    if (isinf(v))
        infinities++;
    return v;
}

/* infinities() -> how many numbers decodes have read as infinite since start. */
static int l_infinities(lua_State *L) {
    lua_pushnumber(L, infinities);
    return 1;
}

static int l_release(lua_State *L) {
    (void)L;
    rill_cjson_buf_release();
    return 0;
}

int rill_cjson_buf_open(lua_State *L) {
    lua_newtable(L);
    lua_pushcfunction(L, l_release);
    lua_setfield(L, -2, "release");
    lua_pushcfunction(L, l_infinities);
    lua_setfield(L, -2, "infinities");
    return 1;
}
