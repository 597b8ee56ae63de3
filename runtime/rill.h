/*
 * rill.h: what every runtime module shares: the error convention, the debug
 * macro, and the one open function per Lua-facing module that modules.c
 * registers under package.preload["rill.c.<name>"].
 *
 * Error convention in C: a function returns 0 or a negative error code
 * (a libuv code, or -1), and writes a human sentence into a caller's buffer
 * when it takes one. At the Lua boundary a misuse raises (luaL_argcheck);
 * a runtime failure raises a Lua error with a clear message (docs/lua-api.md).
 */
#ifndef RILL_H
#define RILL_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#define RILL_VERSION "0.1.0"

/* RILL_DEBUG(fmt, ...) prints to stderr in debug builds and compiles to
 * nothing otherwise. */
#ifdef RILL_DEBUG_BUILD
#include <stdio.h>
#define RILL_DEBUG(...) (fprintf(stderr, "[debug] " __VA_ARGS__), fputc('\n', stderr))
#else
#define RILL_DEBUG(...) ((void)0)
#endif

/* Writes a log line (level "debug" | "info" | "warn" | "error"; a printf
 * format) in the shape of stdlib/rill/log.lua's lines, without blocking
 * (log.c: a line the output cannot take is buffered, or dropped and
 * counted). The way C code reports errors: never straight to stderr. */
void rill_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define RILL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The value of a hexadecimal digit (either case), or -1 for any other
 * byte, a NUL too (the hex of crypto.unhex, chunk sizes, JSON's \u). */
static inline int rill_hex_digit(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The process's one event loop. */
uv_loop_t *rill_loop(void);

/* Lua-facing modules: each pushes its function table and returns 1. */
int rill_task_open(lua_State *L);
/* At exit (main.c), before the loop's handles close: from then on no task
 * resumes; what a task waits for may still end, its task stays suspended. */
void rill_task_wind_down(void);
int rill_timer_open(lua_State *L);
/* Closes the sleeps still armed at exit (their runs never wake); from then
 * on sleep and after arm no timer (they would only hold the exit). */
void rill_timer_wind_down(void);
int rill_http_server_open(lua_State *L);
/* At exit: closes the listeners and connections still open (http_server.c). */
void rill_http_server_wind_down(void);
/* Servers and connections not freed yet. */
int rill_http_server_live(void);
/* Spare body and pipeline buffers held (none after the wind-down). */
int rill_http_server_spares(void);
int rill_crypto_open(lua_State *L);
int rill_tz_open(lua_State *L);
int rill_os_open(lua_State *L);
int rill_sqlite_open(lua_State *L);
/* At exit: interrupts the SQLite statements still executing (sqlite.c). */
void rill_sqlite_wind_down(void);
int rill_pg_open(lua_State *L);
int rill_http_client_open(lua_State *L);
int rill_pattern_open(lua_State *L);
/* rill.c.cjson_buf: guard(f) makes cjson's buffers raise in the caller, infinities()
 * counts the numbers decodes read as infinite (cjson_buf.c) */
int rill_cjson_buf_open(lua_State *L);
int rill_log_open(lua_State *L);
/* rill.c.json: decode(text) (json_decode.c); rill_json_decode is that
 * function, for C callers (batch.c) to call under lua_pcall. */
int rill_json_open(lua_State *L);
int rill_json_decode(lua_State *L);
int rill_utf8_open(lua_State *L);             /* rill.c.utf8: first_invalid(s) (utf8.c) */
int rill_utf8_valid(const char *s, size_t n); /* whether s is UTF-8 (RFC 3629) */
int rill_loopstat_open(lua_State *L); /* rill.c.loopstat: busy time per loop turn (loopstat.c) */

/* Creates the metatable `name` (once) with `methods` as its __index, and
 * leaves it on the stack, so a module can add __gc and friends. */
void rill_lua_metatable(lua_State *L, const char *name, const luaL_Reg *methods);

/* The exit code last set by rill.c.os.exit() (0 by default). */
int rill_os_exit_code(void);

struct rill_embedded_file;

/* Registers every module above in package.preload (as "rill.c.<name>"),
 * cjson as "cjson", and a loader that finds stdlib modules in `stdlib`
 * (the sources embedded in the binary), or in the directory named by the
 * environment variable RILL_STDLIB when it is set (for development). */
void rill_modules_register(lua_State *L, const struct rill_embedded_file *stdlib);

#endif
