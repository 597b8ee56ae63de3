/*
 * timer.c: time on the loop. `sleep(seconds)` parks the calling run on a
 * libuv timer (the model of every yielding primitive in rill), and
 * `after(seconds, fn)` calls fn on the main state later, for the scheduler's
 * own bookkeeping (cron, debounced reloads), outside any run.
 */
#include <stdio.h>
#include <stdlib.h>

#include "task.h"

#define TIMER_MT "rill.timer"

/* ---- sleep: a one-shot request owned by the sleeping task ---- */

typedef struct sleep_req {
    uv_timer_t timer;
    rill_task *task;
    struct sleep_req *prev, *next; /* on the armed list while the timer is not closing */
} sleep_req;

/* The armed sleeps: what rill_timer_wind_down closes at exit (runs still
 * asleep then, past the drain), each with the close callback that frees
 * it; closed by the loop's generic walk, they would be left allocated. */
static sleep_req *armed;

static void disarm(sleep_req *req) {
    if (req->prev)
        req->prev->next = req->next;
    else
        armed = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
}

static void sleep_free(uv_handle_t *h) {
    free(h->data);
}

static void sleep_close(sleep_req *req) {
    disarm(req);
    uv_close((uv_handle_t *)&req->timer, sleep_free);
}

static void sleep_done(uv_timer_t *timer) {
    sleep_req *req = timer->data;
    rill_task *t = req->task;
    sleep_close(req);
    rill_task_resume(t, 0);
}

static void sleep_cancel(void *op) {
    sleep_req *req = op;
    uv_timer_stop(&req->timer);
    sleep_close(req);
}

/* Set by rill_timer_wind_down: the loop's handles are closed and it runs a
 * last time. A run ending in that run (its statement interrupted) may ask
 * for a timer (a retry's wake-up, a sleep): armed, it held the exit for as
 * long as it lasted (9 s, a retry's back-off); it is never started instead. */
static int winding_down;

void rill_timer_wind_down(void) {
    winding_down = 1;
    while (armed != NULL) {
        sleep_req *req = armed;
        req->task->cancel = NULL; /* nothing may cancel it once it is freed */
        req->task->op = NULL;
        sleep_close(req);
    }
}

/* sleep(seconds): waits without blocking the loop. */
static int l_sleep(lua_State *L) {
    double seconds = luaL_checknumber(L, 1);
    luaL_argcheck(L, seconds >= 0, 1, "must not be negative");
    rill_task *t = rill_task_check(L, "sleep");
    if (seconds * 1000 < 0.5) /* sleep(0): a turn for the others, no timer (see task.h) */
        return rill_task_yield_turn(L, t);
    if (winding_down) /* as the sleeps armed at exit: it never wakes */
        return rill_task_wait(L, t, NULL, NULL);
    sleep_req *req = malloc(sizeof *req);
    if (req == NULL)
        return luaL_error(L, "sleep: out of memory");
    req->task = t;
    req->prev = NULL;
    req->next = armed;
    if (armed)
        armed->prev = req;
    armed = req;
    uv_timer_init(rill_loop(), &req->timer);
    req->timer.data = req;
    uv_timer_start(&req->timer, sleep_done, (uint64_t)(seconds * 1000 + 0.5), 0);
    return rill_task_wait(L, t, sleep_cancel, req);
}

/* ---- after: a handle the caller may stop; anchored while it is armed ---- */

typedef struct callback_timer {
    uv_timer_t timer;
    int fn_ref;   /* the callback, LUA_NOREF once fired or stopped */
    int self_ref; /* anchors the userdata until the handle is closed */
} callback_timer;

static void callback_timer_closed(uv_handle_t *h) {
    callback_timer *ct = h->data;
    luaL_unref(rill_task_main_state(), LUA_REGISTRYINDEX, ct->self_ref);
    ct->self_ref = LUA_NOREF;
}

static void callback_timer_release(callback_timer *ct) {
    lua_State *L = rill_task_main_state();
    luaL_unref(L, LUA_REGISTRYINDEX, ct->fn_ref);
    ct->fn_ref = LUA_NOREF;
    if (!uv_is_closing((uv_handle_t *)&ct->timer))
        uv_close((uv_handle_t *)&ct->timer, callback_timer_closed);
}

static void callback_timer_fire(uv_timer_t *timer) {
    callback_timer *ct = timer->data;
    lua_State *L = rill_task_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, ct->fn_ref);
    callback_timer_release(ct);
    if (lua_pcall(L, 0, 0, 0) != 0) {
        rill_log("error", "error in a timer callback: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* after(seconds, fn) -> handle with :stop() */
static int l_after(lua_State *L) {
    double seconds = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    callback_timer *ct = lua_newuserdata(L, sizeof *ct);
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 2);
    ct->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    ct->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_timer_init(rill_loop(), &ct->timer);
    ct->timer.data = ct;
    if (winding_down) { /* it would never fire before the exit, only hold it */
        callback_timer_release(ct);
        return 1;
    }
    uv_timer_start(&ct->timer, callback_timer_fire,
                   seconds > 0 ? (uint64_t)(seconds * 1000 + 0.5) : 0, 0);
    return 1;
}

static int l_timer_stop(lua_State *L) {
    callback_timer *ct = luaL_checkudata(L, 1, TIMER_MT);
    if (ct->fn_ref != LUA_NOREF)
        callback_timer_release(ct);
    return 0;
}

/* unref(): the timer no longer keeps the loop alive (for `rill run`). */
static int l_timer_unref(lua_State *L) {
    callback_timer *ct = luaL_checkudata(L, 1, TIMER_MT);
    if (!uv_is_closing((uv_handle_t *)&ct->timer))
        uv_unref((uv_handle_t *)&ct->timer);
    return 0;
}

int rill_timer_open(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"stop", l_timer_stop}, {"unref", l_timer_unref}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"sleep", l_sleep}, {"after", l_after}, {NULL, NULL}};
    winding_down = 0; /* a new state (the C tests open one per test on one loop) */
    rill_lua_metatable(L, TIMER_MT, methods);
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
