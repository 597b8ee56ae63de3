/*
 * task.c: the life of a task, from rill.c.task.spawn to on_done. A task is a
 * coroutine anchored in the registry while it lives, resumed only through
 * task_run() below, which publishes its deadline to the watchdog, and ended
 * exactly once: when its function returns or raises, when its deadline
 * passes, or when it is killed. See task.h for the primitive's side.
 */
#include "task.h"

#include <stdio.h>
#include <string.h>

#include "watchdog.h"

#define TASK_MT "rill.task"
#define WAITER_MT "rill.waiter"
#define MAX_NESTING 64

enum { TASK_RUNNING, TASK_WAITING, TASK_DONE };

static lua_State *main_state;
static rill_task *ready_head, *ready_tail; /* preempted tasks, resumed in order */
static uv_idle_t ready_idle;               /* runs the ready queue between polls */
static int ready_idle_init;
static int ready_count;
static uint64_t slices_ended;           /* times a task was paused at the end of its slice */
static rill_task *running[MAX_NESTING]; /* the resume stack: running[depth-1] is current */
static int depth;
static int live_tasks;

/* Coroutines that returned normally are kept for the next tasks: creating a
 * thread and collecting it later costs more than the rest of a short run. */
#define THREAD_POOL 256
static struct {
    lua_State *co;
    int ref;
} thread_pool[THREAD_POOL];
static int pooled;

rill_task *rill_task_current(void) {
    return depth > 0 ? running[depth - 1] : NULL;
}

lua_State *rill_task_main_state(void) {
    return main_state;
}

int rill_task_count(void) {
    return live_tasks;
}

rill_task *rill_task_check(lua_State *L, const char *what) {
    rill_task *t = rill_task_current();
    if (t == NULL || t->co != L)
        luaL_error(L, "%s can only be called from a run (not at load time or from a coroutine)",
                   what);
    return t;
}

int rill_task_wait(lua_State *L, rill_task *t, rill_cancel_fn cancel, void *op) {
    t->cancel = cancel;
    t->op = op;
    return lua_yield(L, 0);
}

/* ---- Ending a task ---- */

static void on_timer_closed(uv_handle_t *h) {
    rill_task *t = h->data;
    luaL_unref(main_state, LUA_REGISTRYINDEX, t->self_ref);
    t->self_ref = LUA_NOREF;
}

/* Releases everything the task holds; the userdata itself goes to the GC
 * once the deadline timer, if any, has closed. */
static void task_release(rill_task *t, int reusable) {
    if (reusable && pooled < THREAD_POOL && lua_gettop(t->co) == 0) {
        thread_pool[pooled].co = t->co;
        thread_pool[pooled++].ref = t->co_ref;
    } else {
        luaL_unref(main_state, LUA_REGISTRYINDEX, t->co_ref);
    }
    luaL_unref(main_state, LUA_REGISTRYINDEX, t->done_ref);
    luaL_unref(main_state, LUA_REGISTRYINDEX, t->data_ref);
    t->co_ref = t->done_ref = t->data_ref = LUA_NOREF;
    t->co = NULL;
    live_tasks--;
    if (t->timer_init) {
        /* A run that ends during main.c's wind down (its SQLite statement
         * interrupted and answered in the loop's last run) finds its timer
         * closed by the loop's walk already: closing it again aborted rill.
         * Its userdata stays anchored then, freed by lua_close once the loop
         * is done with the handle. */
        if (!uv_is_closing((uv_handle_t *)&t->timer))
            uv_close((uv_handle_t *)&t->timer, on_timer_closed);
    } else {
        luaL_unref(main_state, LUA_REGISTRYINDEX, t->self_ref);
        t->self_ref = LUA_NOREF;
    }
}

/* ---- Giving memory back after a big run ---- */

/* A run that held RILL_GIVE_BACK_AFTER (or was ended), or a request whose
 * body was that large (http_server.c: its body and what it decoded to are
 * rill's, not a run's), is followed by two complete GC cycles (the first
 * may have marked the values while they were still reachable) and
 * malloc_trim, so that the process's RSS comes back down.
 * The cycles are done in steps of at most GIVE_BACK_SLICE_NS per loop
 * iteration: a full collection of a few hundred MiB at once would hold
 * every other request for half a second. */
#define GIVE_BACK_SLICE_NS 2000000ULL
static uv_timer_t give_back_timer;
static int give_back_init, give_back_cycles;

static void give_back(uv_timer_t *timer) {
    uint64_t until = uv_hrtime() + GIVE_BACK_SLICE_NS;
    while (uv_hrtime() < until) {
        if (lua_gc(main_state, LUA_GCSTEP, 256) && ++give_back_cycles == 2) {
            uv_timer_stop(timer);
            rill_alloc_give_back();
            return;
        }
    }
}

/* From the next loop iteration on: the run's values are unreferenced by then. */
void rill_task_give_back_soon(void) {
    if (!give_back_init) {
        uv_timer_init(rill_loop(), &give_back_timer);
        uv_unref((uv_handle_t *)&give_back_timer);
        give_back_init = 1;
    }
    give_back_cycles = 0;
    uv_timer_start(&give_back_timer, give_back, 0, 1);
}

/* Calls on_done(ok, ...) with the nvalues values on top of `from`'s stack. */
static void task_finish(rill_task *t, int ok, lua_State *from, int nvalues) {
    lua_State *L = main_state;
    int done_ref = t->done_ref;
    t->state = TASK_DONE;
    if (t->timer_init)
        uv_timer_stop(&t->timer);
    if (t->meter) {
        size_t most = rill_meter_close(t->meter);
        t->meter = 0;
        if (most >= RILL_GIVE_BACK_AFTER || rill_killed(&t->kill))
            rill_task_give_back_soon();
    }
    rill_kill_buffer_free(&t->kill); /* its reason was pushed, if it was ended */
    lua_rawgeti(L, LUA_REGISTRYINDEX, done_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->data_ref);
    lua_pushboolean(L, ok);
    if (nvalues > 0)
        lua_xmove(from, L, nvalues);
    /* Release before on_done runs, so that on_done sees an accurate count.
     * Only a coroutine that returned (ok, and whose values were moved off
     * it) can run another function. */
    t->done_ref = LUA_NOREF;
    task_release(t, ok && from == t->co);
    if (lua_pcall(L, nvalues + 2, 0, 0) != 0) {
        rill_log("error", "internal error in a task's on_done: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, done_ref);
}

static void task_fail(rill_task *t, const char *reason) {
    lua_checkstack(t->co, 1);
    lua_pushstring(t->co, reason);
    task_finish(t, 0, t->co, 1);
}

/* ---- Running a task ---- */

static void ready_remove(void *op);

static void on_deadline(uv_timer_t *timer) {
    rill_task *t = timer->data;
    lua_Debug ar;
    char msg[320];
    int level = 0, found = 0;
    /* in the ready queue: it was computing (or in sleep(0)); name the first
     * Lua line of its stack, not the C function it yielded in */
    while (t->cancel == ready_remove && lua_getstack(t->co, level++, &ar))
        if (lua_getinfo(t->co, "Sl", &ar) && ar.currentline > 0) {
            found = 1;
            break;
        }
    if (found)
        snprintf(msg, sizeof msg, "deadline exceeded: code still running at %s:%d", ar.short_src,
                 ar.currentline);
    else if (t->cancel == ready_remove)
        snprintf(msg, sizeof msg, "deadline exceeded: code still running");
    else
        snprintf(msg, sizeof msg, "deadline exceeded while waiting");
    rill_task_kill(t, msg);
}

static void arm_deadline(rill_task *t) {
    if (t->deadline == 0)
        return;
    if (!t->timer_init) {
        uv_timer_init(rill_loop(), &t->timer);
        t->timer.data = t;
        t->timer_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&t->timer)) {
        uint64_t now = uv_hrtime();
        uint64_t ms = t->deadline > now ? (t->deadline - now) / 1000000 + 1 : 0;
        uv_timer_start(&t->timer, on_deadline, ms, 0);
    }
}

/* ---- The ready queue: tasks whose time slice ended ---- */

static void task_run(rill_task *t, int nargs);

static void ready_remove(void *op) {
    rill_task *t = op, **p = &ready_head, *prev = NULL;
    while (*p && *p != t) {
        prev = *p;
        p = &(*p)->ready_next;
    }
    if (*p == NULL)
        return;
    *p = t->ready_next;
    if (ready_tail == t)
        ready_tail = prev;
    t->ready_next = NULL;
    ready_count--;
}

/* A pass of the ready tasks stops once it has run this long: a thousand
 * runs each spinning through its slice held every other client for the
 * thousand slices (seconds) before the loop polled for I/O again. */
#define READY_PASS_NS 4000000

/* Resumes the tasks queued before this pass, for READY_PASS_NS at most;
 * tasks preempted again during it, and those it did not reach, wait for
 * the next pass, after the loop has polled for I/O. */
static void ready_run(uv_idle_t *idle) {
    uint64_t stop = uv_hrtime() + READY_PASS_NS;
    for (int n = ready_count; n > 0 && ready_head && uv_hrtime() < stop; n--) {
        rill_task *t = ready_head;
        ready_head = t->ready_next;
        if (ready_head == NULL)
            ready_tail = NULL;
        t->ready_next = NULL;
        ready_count--;
        rill_task_resume(t, 0);
    }
    if (ready_head == NULL)
        uv_idle_stop(idle);
}

static void ready_push(rill_task *t) {
    if (!ready_idle_init) {
        uv_idle_init(rill_loop(), &ready_idle);
        ready_idle_init = 1;
    }
    t->ready_next = NULL;
    if (ready_tail)
        ready_tail->ready_next = t;
    else
        ready_head = t;
    ready_tail = t;
    ready_count++;
    t->state = TASK_WAITING;
    t->cancel = ready_remove;
    t->op = t;
    uv_idle_start(&ready_idle, ready_run);
}

/* ---- Resuming ---- */

/* The one place a task's coroutine is resumed. */
static void task_run(rill_task *t, int nargs) {
    if (depth == MAX_NESTING) {
        lua_pop(t->co, nargs);
        task_fail(t, "too many nested runs (a flow starting flows recursively?)");
        return;
    }
    running[depth++] = t;
    t->state = TASK_RUNNING;
    rill_watch w;
    rill_watchdog_enter(&w, t->co, t->deadline, t->preempt, &t->kill, t->label);
    uint32_t outer_meter = rill_meter_enter(t->meter);
    int rc = lua_resume(t->co, nargs);
    rill_meter_enter(outer_meter);
    rill_watchdog_leave(&w);
    depth--;

    if (rill_killed(&t->kill)) {
        /* Ended (deadline, memory limit) whatever it returned or caught. */
        if (rc == LUA_YIELD && t->cancel != NULL) {
            t->state = TASK_WAITING;
            rill_task_kill(t, t->kill);
        } else {
            task_fail(t, t->kill);
        }
    } else if (rc == LUA_YIELD && t->cancel != NULL) {
        t->state = TASK_WAITING;
        arm_deadline(t);
    } else if (rc == LUA_YIELD && w.stopped == RILL_WATCHDOG_SLICE) {
        slices_ended++;
        ready_push(t); /* others get a turn; it goes on at the next pass */
        arm_deadline(t);
    } else if (rc == LUA_YIELD) {
        task_fail(t, "a run yielded outside a primitive (coroutine.yield is not for flows)");
    } else if (rc == 0 && t->deadline && uv_hrtime() > t->deadline) {
        /* it returned past its deadline from C work the hook cannot see
         * (a table.insert shifting for seconds): not a success */
        task_fail(t, "deadline exceeded: the run ended after its deadline, in a call that "
                     "could not be stopped");
    } else if (rc == 0) {
        task_finish(t, 1, t->co, lua_gettop(t->co));
    } else {
        if (!lua_isstring(t->co, -1)) {
            lua_pop(t->co, 1);
            lua_pushliteral(t->co, "(error object is not a string)");
        }
        task_finish(t, 0, t->co, 1);
    }
}

int rill_task_yield_turn(lua_State *L, rill_task *t) {
    ready_push(t);
    t->state = TASK_RUNNING; /* until the yield below returns to task_run */
    return lua_yield(L, 0);
}

void rill_task_on_memory_refused(void) {
    rill_watchdog_stop_now();
}

/* Set by rill_task_wind_down (main.c, before the loop's handles close): no
 * task resumes after it. A run whose wait ended in the loop's last run (its
 * SQLite statement interrupted by the wind down) went on with its flow on a
 * loop whose timers were closed: it stored a failure and a retry for a run
 * the drain had put back in the queue, and an HTTP call it made next held
 * the exit for that call's timeout (20 s). It stays suspended instead, and
 * lua_close frees it. */
static int winding_down;

void rill_task_wind_down(void) {
    winding_down = 1;
}

void rill_task_resume(rill_task *t, int nargs) {
    if (t->state != TASK_WAITING || winding_down) {
        if (t->co)
            lua_pop(t->co, nargs);
        if (t->state == TASK_WAITING) { /* its operation is over: nothing may cancel it */
            t->cancel = NULL;
            t->op = NULL;
        }
        return;
    }
    t->cancel = NULL;
    t->op = NULL;
    if (t->timer_init)
        uv_timer_stop(&t->timer);
    task_run(t, nargs);
}

void rill_task_kill(rill_task *t, const char *reason) {
    if (t->state != TASK_WAITING)
        return;
    rill_cancel_fn cancel = t->cancel;
    void *op = t->op;
    t->cancel = NULL;
    t->op = NULL;
    if (cancel)
        cancel(op);
    task_fail(t, reason);
}

void rill_task_init(lua_State *L) {
    main_state = L;
    pooled = 0; /* threads of an earlier state died with it */
}

/* ---- Lua API ---- */

static rill_task *check_task(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, TASK_MT);
}

/* spawn's upvalues: the limits' field names and the task metatable, made
 * once. A name given as a C string (lua_getfield) is interned again at each
 * call: six hash-and-lookups on every run a sync webhook starts. */
enum { UP_DEADLINE = 1, UP_PREEMPT, UP_MEMORY, UP_LABEL, UP_LABEL_ID, UP_TASK_MT };

/* Pushes limits[name] (the limits table is argument 3). */
static void limit_field(lua_State *L, int name) {
    lua_pushvalue(L, lua_upvalueindex(name));
    lua_gettable(L, 3);
}

/* Writes a and b (b may be NULL) into out as one string, cut to fit cap
 * bytes with its NUL: what snprintf's "%s%s" made, without parsing a format
 * on every run a sync webhook starts. */
static void join_label(char *out, size_t cap, const char *a, size_t na, const char *b, size_t nb) {
    if (na > cap - 1)
        na = cap - 1;
    memcpy(out, a, na);
    if (b == NULL || nb > cap - 1 - na)
        nb = b == NULL ? 0 : cap - 1 - na;
    if (nb > 0)
        memcpy(out + na, b, nb);
    out[na + nb] = '\0';
}

/* spawn(fn, on_done, limits, data, ...) -> task
 * Runs fn(...) in a new coroutine at once; on_done(data, ok, ...) receives
 * fn's results, or false and a message. on_done may run before spawn
 * returns. (data comes first so that one on_done can serve every task.)
 * limits: a deadline in seconds, nil for none, or {deadline = s,
 * preempt = false (code that must run to its end in one go), memory =
 * bytes (its meter's limit), label = "flow F run ", label_id = "ID" (what
 * the last line of defence names it by: label and label_id joined)}.
 * Every field is read before fn starts, so a caller may reuse one table. */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    double seconds = 0, memory = 0;
    int preempt = 1;
    const char *label = NULL, *label_id = NULL;
    size_t label_len = 0, label_id_len = 0;
    if (lua_istable(L, 3)) {
        limit_field(L, UP_DEADLINE);
        seconds = luaL_optnumber(L, -1, 0);
        limit_field(L, UP_PREEMPT);
        preempt = lua_isnil(L, -1) || lua_toboolean(L, -1);
        limit_field(L, UP_MEMORY);
        memory = luaL_optnumber(L, -1, 0);
        limit_field(L, UP_LABEL);
        label = lua_tolstring(L, -1, &label_len);
        limit_field(L, UP_LABEL_ID);
        label_id = lua_tolstring(L, -1, &label_id_len);
        lua_pop(L, 5); /* the labels stay valid: the limits table holds the strings */
    } else {
        seconds = luaL_optnumber(L, 3, 0);
    }
    int nargs = lua_gettop(L) - 4;
    if (nargs < 0)
        nargs = 0;
    lua_settop(L, 4 + nargs);

    rill_task *t = lua_newuserdata(L, sizeof *t);
    memset(t, 0, sizeof *t);
    lua_pushvalue(L, lua_upvalueindex(UP_TASK_MT));
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    t->done_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 4);
    t->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (pooled > 0) {
        pooled--;
        t->co = thread_pool[pooled].co;
        t->co_ref = thread_pool[pooled].ref;
    } else {
        t->co = lua_newthread(L);
        t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    t->deadline = seconds > 0 ? uv_hrtime() + (uint64_t)(seconds * 1e9) : 0;
    t->preempt = (unsigned char)preempt;
    if (label)
        join_label(t->label, sizeof t->label, label, label_len, label_id, label_id_len);
    /* A task given a memory limit is metered (flow runs and loads); rill's
     * own tasks are charged to meter 0, which is never refused. */
    if (memory > 0)
        t->meter = rill_meter_open((size_t)memory, &t->kill);
    live_tasks++;

    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++)
        lua_pushvalue(L, 5 + i);
    lua_xmove(L, t->co, nargs + 1);
    t->state = TASK_WAITING; /* so that task_run's bookkeeping starts from rest */
    task_run(t, nargs);
    return 1; /* the userdata pushed above */
}

/* current() -> the data of the task running now, or nil. */
static int l_current(lua_State *L) {
    rill_task *t = rill_task_current();
    if (t == NULL)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->data_ref);
    return 1;
}

/* killed() -> why the task running now must end (its deadline, its memory
 * limit), or nil while it may run. pcall and xpcall as flows see them
 * (sandbox.lua) raise this again, so that no flow code can catch it. */
static int l_killed(lua_State *L) {
    rill_task *t = rill_task_current();
    if (t == NULL || !rill_killed(&t->kill))
        return 0;
    lua_pushstring(L, t->kill);
    return 1;
}

/* memory() -> bytes of Lua memory live now, and those charged to the
 * running task (nil outside a metered task). */
static int l_memory(lua_State *L) {
    rill_task *t = rill_task_current();
    lua_pushnumber(L, (lua_Number)rill_alloc_total());
    if (t == NULL || t->meter == 0)
        return 1;
    lua_pushnumber(L, (lua_Number)rill_meter_used(t->meter));
    return 2;
}

/* configure{process_memory = bytes, kill_grace = seconds, max_hold =
 * seconds, stuck_file = path}: the limit of all Lua memory together (0:
 * none), the last line of defence's grace and the file it names what was
 * stuck in, and the longest a run may hold the loop unpaused. */
static int l_configure(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "process_memory");
    if (!lua_isnil(L, -1))
        rill_alloc_set_process_limit((size_t)luaL_checknumber(L, -1));
    lua_getfield(L, 1, "kill_grace");
    if (!lua_isnil(L, -1))
        rill_watchdog_set_grace(luaL_checknumber(L, -1));
    lua_getfield(L, 1, "stuck_file");
    if (!lua_isnil(L, -1))
        rill_watchdog_set_stuck_file(luaL_checkstring(L, -1));
    lua_getfield(L, 1, "max_hold");
    if (!lua_isnil(L, -1))
        rill_watchdog_set_max_hold(luaL_checknumber(L, -1));
    return 0;
}

static int l_count(lua_State *L) {
    lua_pushinteger(L, live_tasks);
    return 1;
}

/* slices_ended() -> how many times a task was paused at the end of its time
 * slice so that the loop could serve others (a count, for /metrics). */
static int l_slices_ended(lua_State *L) {
    lua_pushnumber(L, (lua_Number)slices_ended);
    return 1;
}

static int l_task_kill(lua_State *L) {
    rill_task *t = check_task(L, 1);
    const char *reason = luaL_optstring(L, 2, "killed");
    if (t->state == TASK_RUNNING)
        return luaL_error(L, "a task cannot be killed while it runs");
    rill_task_kill(t, reason);
    return 0;
}

static int l_task_alive(lua_State *L) {
    lua_pushboolean(L, check_task(L, 1)->state != TASK_DONE);
    return 1;
}

static int l_task_waiting(lua_State *L) {
    lua_pushboolean(L, check_task(L, 1)->state == TASK_WAITING);
    return 1;
}

/* ---- Waiters: a task waiting for something Lua code will signal ---- */

typedef struct waiter {
    rill_task *t; /* the task waiting on this waiter, NULL when none */
} waiter;

static void waiter_cancel(void *op) {
    ((waiter *)op)->t = NULL;
}

/* waiter() -> a waiter the current run can wait on and anyone can wake. */
static int l_waiter(lua_State *L) {
    waiter *w = lua_newuserdata(L, sizeof *w);
    w->t = NULL;
    luaL_getmetatable(L, WAITER_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* waiter:wait() -> the values given to wake(). */
static int l_waiter_wait(lua_State *L) {
    waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    rill_task *t = rill_task_check(L, "wait");
    if (w->t != NULL)
        return luaL_error(L, "a waiter serves one wait at a time");
    w->t = t;
    return rill_task_wait(L, t, waiter_cancel, w);
}

/* waiter:wake(...) -> true if a run was waiting and has been resumed. */
static int l_waiter_wake(lua_State *L) {
    waiter *w = luaL_checkudata(L, 1, WAITER_MT);
    rill_task *t = w->t;
    if (t == NULL || t->state != TASK_WAITING || t->op != w) {
        lua_pushboolean(L, 0);
        return 1;
    }
    w->t = NULL;
    int n = lua_gettop(L) - 1;
    lua_checkstack(t->co, n);
    lua_xmove(L, t->co, n);
    rill_task_resume(t, n);
    lua_pushboolean(L, 1);
    return 1;
}

int rill_task_open(lua_State *L) {
    winding_down = 0; /* a new state (the C tests open one per test on one loop) */
    static const luaL_Reg methods[] = {
        {"kill", l_task_kill}, {"alive", l_task_alive}, {"waiting", l_task_waiting}, {NULL, NULL}};
    static const luaL_Reg waiter_methods[] = {
        {"wait", l_waiter_wait}, {"wake", l_waiter_wake}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"current", l_current},
                                     {"count", l_count},
                                     {"slices_ended", l_slices_ended},
                                     {"killed", l_killed},
                                     {"configure", l_configure},
                                     {"memory", l_memory},
                                     {"waiter", l_waiter},
                                     {NULL, NULL}};
    rill_lua_metatable(L, WAITER_MT, waiter_methods);
    lua_pop(L, 1);
    rill_lua_metatable(L, TASK_MT, methods);
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    lua_pushliteral(L, "deadline"); /* in the order of UP_* */
    lua_pushliteral(L, "preempt");
    lua_pushliteral(L, "memory");
    lua_pushliteral(L, "label");
    lua_pushliteral(L, "label_id");
    luaL_getmetatable(L, TASK_MT);
    lua_pushcclosure(L, l_spawn, UP_TASK_MT);
    lua_setfield(L, -2, "spawn");
    return 1;
}
