/*
 * t_state.h: for the C tests that run Lua code with tasks on rill's loop:
 * a state with rill's modules and the watchdog, and its end, which runs
 * the loop dry, closes every handle left and checks that none stays.
 */
#ifndef RILL_T_STATE_H
#define RILL_T_STATE_H

#include <lauxlib.h>
#include <lualib.h>

#include "rill.h"
#include "t.h"
#include "watchdog.h"

static lua_State *t_state_open(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    rill_modules_register(L, NULL);
    rill_watchdog_start(L);
    return L;
}

static void t_state_close_handle(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void t_state_close(lua_State *L) {
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    rill_watchdog_stop();
    lua_close(L);
    T_EQ_INT(uv_loop_alive(rill_loop()), 0);
}

#endif
