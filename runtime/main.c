/*
 * main.c: the rill process. Creates the loop and the Lua state, registers
 * the modules, hands the command line to the stdlib's rill.engine.main (which
 * parses it and sets everything up), runs the loop until something stops
 * it, then winds down and exits with the code rill.engine.main chose.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <lualib.h>

#include "log.h"
#include "stdlib_embed.h"
#include "task.h"
#include "watchdog.h"

static void close_handle(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int traceback(lua_State *L) {
    lua_getfield(L, LUA_GLOBALSINDEX, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

/* An error outside any protected call: a bug in rill, never a flow's doing
 * (runs and loads are protected). */
static int panic(lua_State *L) {
    fprintf(stderr, "rill: fatal Lua error: %s\n", lua_tostring(L, -1));
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = rill_loop();
    /* Every Lua allocation goes through alloc.c, which charges it to the
     * run making it (memory limits, docs/architecture.md). */
    lua_State *L =
        rill_alloc_init(rill_task_on_memory_refused) == 0 ? lua_newstate(rill_alloc, NULL) : NULL;
    if (L == NULL) {
        fprintf(stderr,
                "rill: cannot create a Lua state (LuaJIT must be built with GC64 on x86_64)\n");
        return 1;
    }
    lua_atpanic(L, panic);
    luaL_openlibs(L);
    rill_modules_register(L, rill_stdlib_files);
    if (rill_watchdog_start(L) != 0) {
        fprintf(stderr, "rill: cannot start the watchdog thread\n");
        return 1;
    }

    lua_pushcfunction(L, traceback);
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "rill.engine.main");
    int rc = lua_pcall(L, 1, 1, 1);
    if (rc == 0) {
        lua_getfield(L, -1, "main");
        lua_createtable(L, argc, 0);
        for (int i = 1; i < argc; i++) {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, i);
        }
        rc = lua_pcall(L, 1, 0, 1);
    }
    if (rc != 0) {
        rill_log_flush(2000); /* the log's lines first, then this one */
        fprintf(stderr, "rill: %s\n", lua_tostring(L, -1));
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);

    /* Wind down: what has owners closes through them, then what is left
     * closes so that close callbacks run once. No run goes on meanwhile. */
    rill_task_wind_down();
    rill_http_server_wind_down();
    rill_sqlite_wind_down(); /* the timers that would interrupt them close next */
    rill_timer_wind_down();
    uv_walk(loop, close_handle, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    rill_log_flush(2000); /* what the log holds, if its reader reads within 2 s */
    rill_watchdog_stop();
    int code = rill_os_exit_code();
    lua_close(L);
    uv_loop_close(loop);
    /* held on lists LeakSanitizer counts as reachable */
    if (rill_http_server_live() > 0)
        fprintf(stderr, "rill: %d HTTP servers or connections not freed at exit\n",
                rill_http_server_live());
    if (rill_http_server_spares() > 0)
        fprintf(stderr, "rill: %d HTTP spare buffers not freed at exit\n",
                rill_http_server_spares());
    return code;
}
