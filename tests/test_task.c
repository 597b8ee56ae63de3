/*
 * test_task.c: tasks, their resume cycle, deadlines and time slices
 * (task.c, watchdog.c, timer.c), driven from Lua on a real loop. Each test
 * ends by checking that the loop closes cleanly, with nothing left behind.
 */
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "t.h"
#include "t_state.h"
#include "rill.h"
#include "watchdog.h"

static lua_State *L;

static void open_state(void) {
    L = t_state_open();
    T_EQ_INT(luaL_dostring(L, "task = require 'rill.c.task'; timer = require 'rill.c.timer'"), 0);
}

static void close_state(void) {
    t_state_close(L);
}

/* Runs Lua code; returns 0 or prints the error and returns -1. */
static int run(const char *code) {
    if (luaL_dostring(L, code) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static const char *global_str(const char *name) {
    lua_getfield(L, LUA_GLOBALSINDEX, name);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* still referenced by the global */
    return s;
}

static void test_results_reach_on_done_at_once(void) {
    open_state();
    T_EQ_INT(run("task.spawn(function(a, b) return a .. b end,"
                 "  function(_, ok, v) got = tostring(ok) .. ':' .. v end, nil, nil, 'x', 'y')"),
             0);
    T_EQ_STR(global_str("got"), "true:xy");
    close_state();
}

static void test_sleepers_wake_in_deadline_order(void) {
    open_state();
    T_EQ_INT(run("order = ''\n"
                 "for _, d in ipairs{0.03, 0.01, 0.02} do\n"
                 "  task.spawn(function() timer.sleep(d) return d end,\n"
                 "    function(_, ok, v) order = order .. v .. ' ' end)\n"
                 "end"),
             0);
    T_EQ_STR(global_str("order"), "");
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_STR(global_str("order"), "0.01 0.02 0.03 ");
    close_state();
}

static void test_deadline_while_waiting_cancels_the_sleep(void) {
    open_state();
    T_EQ_INT(
        run("calls = 0\n"
            "task.spawn(function() timer.sleep(30) return 'late' end,\n"
            "  function(_, ok, v) calls = calls + 1; got = tostring(ok) .. ':' .. v end, 0.02)"),
        0);
    uint64_t start = uv_hrtime();
    uv_run(rill_loop(), UV_RUN_DEFAULT); /* returns once the sleep is cancelled */
    T_CHECK(uv_hrtime() - start < 5000000000ULL);
    T_EQ_STR(global_str("got"), "false:deadline exceeded while waiting");
    T_EQ_INT(run("assert(calls == 1)"), 0);
    close_state();
}

static void test_endless_loop_is_stopped_with_its_place(void) {
    open_state();
    T_EQ_INT(run("local spin = loadstring('local n = 0\\nwhile true do\\n  n = n + 1\\nend', "
                 "'@spin.lua')\n"
                 "jit.off(spin, true)\n"
                 "task.spawn(spin, function(_, ok, v) got = tostring(ok) .. ':' .. v end, 0.1)"),
             0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    const char *prefix = "false:deadline exceeded: code still running at spin.lua:";
    const char *got = global_str("got");
    T_CHECK(got && strncmp(got, prefix, strlen(prefix)) == 0);
    close_state();
}

static void test_slices_let_timers_run_during_a_computation(void) {
    open_state();
    /* The computation ends when the timers have fired five times, which only
     * happens if it is sliced, or after 3e8 turns as a safety net. (No
     * os.clock() in the loop: under valgrind, signals then arrive late.) */
    T_EQ_INT(run("ticks, busy = 0, true\n"
                 "local f = loadstring('local n = 0 '\n"
                 "  .. 'while ticks < 5 and n < 3e8 do n = n + 1 end')\n"
                 "jit.off(f, true)\n"
                 "task.spawn(f, function() busy = false end, 5)\n"
                 "local function tick() if busy then ticks = ticks + 1 timer.after(0.005, tick) "
                 "end end\n"
                 "tick()"),
             0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_INT(run("assert(not busy and ticks >= 5, 'ticks ' .. ticks)"), 0);
    close_state();
}

static void test_waiter_and_kill(void) {
    open_state();
    T_EQ_INT(
        run("w = task.waiter()\n"
            "task.spawn(function() return w:wait() end, function(_, ok, a, b) got = a .. b end)\n"
            "timer.after(0.01, function() w:wake('he', 'llo') end)\n"
            "victim = task.spawn(function() timer.sleep(30) end,\n"
            "  function(_, ok, v) killed = v end)\n"
            "timer.after(0.01, function() victim:kill('stopped by test') end)"),
        0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_STR(global_str("got"), "hello");
    T_EQ_STR(global_str("killed"), "stopped by test");
    T_EQ_INT(run("assert(task.count() == 0 and not victim:alive())"), 0);
    close_state();
}

/* rill's exit, past the drain, with a run still asleep (main.c's wind
 * down): the sleep is closed with its own close callback, which frees it;
 * the loop's generic walk alone closed it and left the request allocated
 * (LeakSanitizer, in `make asan`, and valgrind report it). */
static void test_a_sleep_left_at_exit_is_freed(void) {
    open_state();
    T_EQ_INT(run("task.spawn(function() timer.sleep(3600) end, function() end)"), 0);
    rill_timer_wind_down();
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    t_state_close(L);
}

/* A run that ends during main.c's wind down (its SQLite statement,
 * interrupted by rill_sqlite_wind_down, answers in the loop's last run):
 * its deadline timer was closed by the loop's generic walk, and closing it
 * again aborted rill (libuv's assertion `!uv__is_closing(handle)`, exit
 * 134, at a SIGTERM past the drain). */
static void test_a_run_ending_during_the_wind_down(void) {
    open_state();
    T_EQ_INT(run("w = task.waiter()\n"
                 "task.spawn(function() return w:wait() end,\n"
                 "  function(_, ok, v) ended = tostring(ok) .. ':' .. v end, 3600)"),
             0);
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    T_EQ_INT(run("w:wake('late')"), 0);
    T_EQ_STR(global_str("ended"), "true:late");
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    t_state_close(L);
}

/* The same run, ended during the wind down, asks for a timer (a retry's
 * wake-up, a sleep): none is armed, so the loop's last run ends at once;
 * armed, it held rill's exit for as long as it lasted (9 s, a back-off). */
static void test_no_timer_holds_the_wind_down(void) {
    open_state();
    T_EQ_INT(run("w = task.waiter()\n"
                 "task.spawn(function() w:wait(); timer.sleep(5) end, function() end, 3600)\n"),
             0);
    rill_timer_wind_down();
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    T_EQ_INT(run("w:wake()\n"
                 "timer.after(5, function() fired = true end)"),
             0);
    uint64_t start = uv_hrtime();
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_CHECK(uv_hrtime() - start < 1000000000ULL);
    t_state_close(L);
}

/* Once main.c's wind down has begun, no run goes on: one whose wait ends
 * then (its SQLite statement interrupted) stays suspended. It went on, on a
 * loop whose timers were closed: it stored a failure and a retry for a run
 * the drain had put back in the queue, and its next HTTP call held the exit
 * for that call's timeout. */
static void test_no_run_goes_on_during_the_wind_down(void) {
    open_state();
    T_EQ_INT(run("w = task.waiter()\n"
                 "task.spawn(function() w:wait(); went_on = true end, function() end, 3600)\n"),
             0);
    rill_task_wind_down();
    rill_timer_wind_down();
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    T_EQ_INT(run("w:wake()"), 0);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_INT(run("assert(not went_on, 'the run went on')"), 0);
    t_state_close(L);
}

static void test_primitives_refuse_to_run_outside_a_task(void) {
    open_state();
    T_EQ_INT(run("local ok, e = pcall(timer.sleep, 1)\n"
                 "assert(not ok and e:find('can only be called from a run'), e)"),
             0);
    close_state();
}

int main(void) {
    T_RUN(test_results_reach_on_done_at_once);
    T_RUN(test_sleepers_wake_in_deadline_order);
    T_RUN(test_deadline_while_waiting_cancels_the_sleep);
    T_RUN(test_endless_loop_is_stopped_with_its_place);
    T_RUN(test_slices_let_timers_run_during_a_computation);
    T_RUN(test_waiter_and_kill);
    T_RUN(test_a_sleep_left_at_exit_is_freed);
    T_RUN(test_a_run_ending_during_the_wind_down);
    T_RUN(test_no_timer_holds_the_wind_down);
    T_RUN(test_no_run_goes_on_during_the_wind_down);
    T_RUN(test_primitives_refuse_to_run_outside_a_task);
    return T_END();
}
