/*
 * test_batch.c: handing a batch's outcome to the run that waits for it
 * (batch.c), on a real loop: the rows become Lua values charged to the run,
 * and when they cannot, the run is told why. Each test ends by checking
 * that the loop closes cleanly.
 */
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "t.h"
#include "t_state.h"
#include "batch.h"
#include "watchdog.h"

static lua_State *L;

static void free_timer(uv_handle_t *h) {
    free(h);
}

/* Delivers the batch a fake backend "ran", on the next loop turn, as a
 * backend delivers from its I/O callbacks. */
static void deliver(uv_timer_t *h) {
    batch *b = h->data;
    batch_deliver(b, "fake");
    batch_free(b);
    uv_close((uv_handle_t *)h, free_timer);
}

/* fake_rows(n): a statement's result of n rows of no column (no cells in
 * C), delivered to the calling task. */
static int l_fake_rows(lua_State *L) {
    rill_task *t = rill_task_check(L, "fake_rows");
    batch *b = calloc(1, sizeof *b);
    b->stmts = calloc(1, sizeof *b->stmts);
    b->nstmts = 1;
    b->cb_ref = LUA_NOREF;
    b->task = t;
    b->stmts[0].nrows = (int)luaL_checkinteger(L, 1);
    uv_timer_t *timer = malloc(sizeof *timer);
    uv_timer_init(rill_loop(), timer);
    timer->data = b;
    uv_timer_start(timer, deliver, 0, 0);
    return batch_return(L, b);
}

static void open_state(void) {
    L = t_state_open();
    lua_register(L, "fake_rows", l_fake_rows);
    T_EQ_INT(luaL_dostring(L, "task = require 'rill.c.task'"), 0);
}

static void close_state(void) {
    t_state_close(L);
}

static const char *global_str(const char *name) {
    lua_getfield(L, LUA_GLOBALSINDEX, name);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the global */
    return s;
}

/* A metered run's rows that became Lua values. */
static void test_rows_reach_a_metered_run(void) {
    open_state();
    T_EQ_INT(luaL_dostring(L, "task.spawn(function() local r = fake_rows(3) return #r[1] end,"
                              "  function(_, ok, v) got = tostring(ok) .. ':' .. tostring(v) end,"
                              "  { memory = 64 * 1024 * 1024 })"),
             0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_STR(global_str("got"), "true:3");
    close_state();
}

/* A result Lua cannot hold for a reason other than memory (more rows than
 * a LuaJIT table may have, refused before anything is allocated) is an
 * error that says so, not "over the run's memory limit": the run was under
 * it, and was told to look at the wrong setting. */
static void test_a_result_that_fails_for_another_reason_says_why(void) {
    open_state();
    T_EQ_INT(
        luaL_dostring(L, "task.spawn(function() return fake_rows(2^27 + 2) end,"
                         "  function(_, ok, v, err) got = tostring(v) .. '|' .. tostring(err) end,"
                         "  { memory = 64 * 1024 * 1024 })"),
        0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    const char *got = global_str("got");
    T_CHECK(got != NULL && strstr(got, "nil|fake: ") == got);
    T_CHECK(got != NULL && strstr(got, "table overflow") != NULL);
    T_CHECK(got != NULL && strstr(got, "run_memory_limit") == NULL);
    if (got)
        fprintf(stderr, "  (the error: %s)\n", got);
    close_state();
}

/* read_batch(_, stmts, callback): the batch batch_from_call reads from
 * stmts, compared, once stmts and its strings are collected, with the same
 * statements made again (make()), then freed; "ok" or what differed. */
static int l_read_batch(lua_State *L) {
    batch *b = batch_from_call(L, "read");
    luaL_unref(L, LUA_REGISTRYINDEX, b->cb_ref);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_getglobal(L, "make");
    lua_call(L, 0, 1);
    const char *why = NULL;
    for (int i = 0; i < b->nstmts && why == NULL; i++) {
        const stmt_req *s = &b->stmts[i];
        lua_rawgeti(L, 1, i + 1);
        lua_rawgeti(L, -1, 1);
        if (strcmp(s->sql, lua_tostring(L, -1)) != 0)
            why = "a statement's SQL";
        lua_pop(L, 1);
        for (int p = 0; p < s->nparams && why == NULL; p++) {
            const value *v = &s->params[p];
            lua_rawgeti(L, -1, p + 2);
            size_t n;
            const char *text = lua_tolstring(L, -1, &n);
            if (text != NULL && (v->type != VAL_TEXT || v->u.s.n != n ||
                                 memcmp(v->u.s.p, text, n) != 0 || v->u.s.p[n]))
                why = "a text parameter";
            else if (text == NULL && v->type != VAL_NULL)
                why = "a nil parameter";
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    batch_free(b);
    lua_pushstring(L, why ? why : "ok");
    return 1;
}

/* The texts of a batch (SQL, parameters: small ones, a big one between
 * them, many statements) are its own copies: right after the Lua strings
 * are collected, and freed with it (ASan and valgrind run this file). */
static void test_a_batch_keeps_its_own_copy_of_every_text(void) {
    open_state();
    lua_register(L, "read_batch", l_read_batch);
    T_EQ_INT(
        luaL_dostring(L, "function make()\n"
                         "  local stmts = {}\n"
                         "  for i = 1, 40 do\n"
                         "    stmts[i] = { 'UPDATE t SET a = $1, b = $2 WHERE id = $3 -- ' .. i,\n"
                         "      ('a'):rep(i * 7), i % 5 == 0 and ('big' .. i):rep(9000) or nil, "
                         "'id-' .. i, n = 3 }\n"
                         "  end\n"
                         "  return stmts\n"
                         "end\n"
                         "got = read_batch(nil, make(), function() end)"),
        0);
    T_EQ_STR(global_str("got"), "ok");
    close_state();
}

int main(void) {
    T_RUN(test_rows_reach_a_metered_run);
    T_RUN(test_a_result_that_fails_for_another_reason_says_why);
    T_RUN(test_a_batch_keeps_its_own_copy_of_every_text);
    return T_END();
}
