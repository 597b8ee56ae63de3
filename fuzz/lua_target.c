/*
 * lua_target.c: the libFuzzer driver of the Lua targets (fuzz/<target>.lua).
 * It builds one rill Lua state (the C modules and the embedded stdlib, as
 * main.c does), loads the target's file, which returns check(data), and
 * calls check with each input. check raises only when the code under test
 * misbehaved (a raise that is not a clean refusal, a wrong answer): that
 * aborts, and libFuzzer saves the input. The target is named at build time
 * (-DFUZZ_TARGET=\"cron\"), so each target is a binary of its own.
 *
 * Lua code gets no compiler coverage, so the driver makes its own: a line
 * hook (JIT off) counts edges between source lines in libFuzzer's extra
 * counters, and a count hook stops an input that runs away (a loop).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <luajit.h>
#include <lualib.h>

#include "rill.h"
#include "lua_alloc.h"
#include "stdlib_embed.h"

#ifndef FUZZ_TARGET
#error "build with -DFUZZ_TARGET=\"name\" (fuzz/name.lua)"
#endif
#ifndef FUZZ_DIR
#error "build with -DFUZZ_DIR=\"/path/to/fuzz\""
#endif

#define EDGES (1 << 16)
#define BUDGET_STEPS 1000         /* VM instructions between count hooks */
#define BUDGET_HOOKS (200 * 1000) /* 2e8 instructions: an input that runs longer loops */

/* libFuzzer reads every byte of this section as a coverage counter. */
__attribute__((section("__libfuzzer_extra_counters"), used)) static unsigned char lua_edges[EDGES];

static lua_State *L;
static int check_ref = LUA_NOREF;
static uintptr_t prev_line;
static unsigned long hooks_run;

static void hook(lua_State *l, lua_Debug *ar) {
    if (ar->event == LUA_HOOKCOUNT) {
        if (++hooks_run > BUDGET_HOOKS) {
            fprintf(stderr, "fuzz: %s: an input ran over %d million Lua instructions (a loop?)\n",
                    FUZZ_TARGET, BUDGET_HOOKS / 1000 * BUDGET_STEPS / 1000);
            abort();
        }
        return;
    }
    if (lua_getinfo(l, "S", ar) == 0)
        return;
    uintptr_t here = (uintptr_t)ar->source * 31 + (uintptr_t)ar->currentline * 2654435761u;
    lua_edges[(here ^ (prev_line >> 1)) % EDGES]++;
    prev_line = here;
}

static int traceback(lua_State *l) {
    const char *msg = lua_tostring(l, 1);
    luaL_traceback(l, l, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static void setup(void) {
    L = lua_newstate(fuzz_lua_alloc, NULL);
    if (L == NULL)
        abort();
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF); /* hooks see every line */
    rill_modules_register(L, rill_stdlib_files);
    lua_pushcfunction(L, traceback);
    const char *path = FUZZ_DIR "/" FUZZ_TARGET ".lua";
    if (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, -2) != 0) {
        fprintf(stderr, "fuzz: cannot load %s: %s\n", path, lua_tostring(L, -1));
        exit(1);
    }
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "fuzz: %s must return check(data)\n", path);
        exit(1);
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    lua_sethook(L, hook, LUA_MASKLINE | LUA_MASKCOUNT, BUDGET_STEPS);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static unsigned long runs;
    if (L == NULL)
        setup();
    hooks_run = 0;
    prev_line = 0;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, -3) != 0) {
        fprintf(stderr, "fuzz: %s: %s\n", FUZZ_TARGET, lua_tostring(L, -1));
        abort();
    }
    lua_pop(L, 1);
    if (++runs % 256 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0); /* keeps the heap, and so the speed, steady */
    return 0;
}
