/*
 * watchdog.c: time slices and deadlines for Lua code that never yields.
 * The loop thread publishes when the resume in progress must stop (one
 * relaxed atomic store per resume, no system call); a thread polls it every
 * few milliseconds and, once it has passed, signals the loop thread. The
 * handler installs a count hook, the way luajit.c stops a script on Ctrl-C;
 * the hook yields the coroutine where that is allowed.
 */
#include "watchdog.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* SIGURG is ignored by default and used by nothing else in rill, which makes
 * it a safe doorbell (Go's runtime preempts goroutines with it too). */
#define WATCHDOG_SIGNAL SIGURG
#define POLL_NS 5000000ULL   /* how often the thread looks */
#define SLICE_NS 20000000ULL /* how long one resume may run before others get a turn */
#define HOOK_EVERY 1000      /* instructions between two checks once armed */

static lua_State *hook_state;
static pthread_t loop_thread, watch_thread;
static rill_watch *current;            /* loop thread only */
static _Atomic uint64_t current_until; /* min(deadline, slice end) of `current`, 0 for none */
static atomic_int armed;               /* the signal was sent and the hook not yet removed */
static atomic_int running;             /* the watch thread should keep going */
static pthread_mutex_t stop_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static const void *pcall_fn, *xpcall_fn;
static int soon; /* the hook runs at every instruction (rill_watchdog_check_soon) */

/* Whether co can yield here: no C function other than pcall/xpcall may sit
 * between this point and the coroutine's base (a table.sort comparator, a
 * gsub callback, a __tostring called by tostring cannot yield). */
static int can_yield(lua_State *L, int from) {
    lua_Debug ar;
    for (int level = from; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "f", &ar);
        const void *fn = lua_topointer(L, -1);
        int is_c = lua_iscfunction(L, -1);
        lua_pop(L, 1);
        if (is_c && fn != pcall_fn && fn != xpcall_fn)
            return 0;
    }
    return 1;
}

static void stop_hook(lua_State *L, lua_Debug *ar);

void rill_watchdog_check_soon(void) {
    if (atomic_load_explicit(&armed, memory_order_relaxed) && !soon && current != NULL) {
        soon = 1;
        lua_sethook(hook_state, stop_hook, LUA_MASKCOUNT, 1);
    }
}

static void stop_hook(lua_State *L, lua_Debug *ar) {
    rill_watch *w = current;
    if (w == NULL || L != w->co)
        return;
    uint64_t now = uv_hrtime();
    int why = w->deadline && now >= w->deadline ? RILL_WATCHDOG_DEADLINE
              : now >= w->slice_end             ? RILL_WATCHDOG_SLICE
                                                : RILL_WATCHDOG_NONE;
    if (why == RILL_WATCHDOG_NONE)
        return; /* the signal was meant for a resume that has ended since */
    if (ar->event == LUA_HOOKCOUNT && soon) { /* back to the usual pace if it cannot yield */
        soon = 0;
        lua_sethook(L, stop_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
    if (why == RILL_WATCHDOG_DEADLINE && w->where[0] == '\0' && lua_getinfo(L, "Sl", ar))
        snprintf(w->where, sizeof w->where, "%s:%d", ar->short_src, ar->currentline);
    if (!can_yield(L, 0)) {
        if (why == RILL_WATCHDOG_DEADLINE) /* unwind to where it can yield */
            luaL_error(L, "deadline exceeded");
        return; /* a slice can wait for the next check */
    }
    w->stopped = why;
    lua_yield(L, 0); /* yielding from a hook: a LuaJIT feature */
}

static void on_signal(int sig) {
    (void)sig;
    if (atomic_load_explicit(&current_until, memory_order_relaxed) != 0)
        lua_sethook(hook_state, stop_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static void *watch(void *arg) {
    (void)arg;
    pthread_mutex_lock(&stop_mutex);
    while (atomic_load(&running)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)POLL_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&stop_cond, &stop_mutex, &until);
        uint64_t limit = atomic_load_explicit(&current_until, memory_order_relaxed);
        if (limit != 0 && uv_hrtime() >= limit && !atomic_exchange(&armed, 1))
            pthread_kill(loop_thread, WATCHDOG_SIGNAL);
    }
    pthread_mutex_unlock(&stop_mutex);
    return NULL;
}

int rill_watchdog_start(lua_State *L) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(WATCHDOG_SIGNAL, &sa, NULL) != 0)
        return -1;
    hook_state = L;
    lua_getfield(L, LUA_GLOBALSINDEX, "pcall");
    pcall_fn = lua_topointer(L, -1);
    lua_getfield(L, LUA_GLOBALSINDEX, "xpcall");
    xpcall_fn = lua_topointer(L, -1);
    lua_pop(L, 2);
    loop_thread = pthread_self();
    atomic_store(&running, 1);
    if (pthread_create(&watch_thread, NULL, watch, NULL) != 0) {
        atomic_store(&running, 0);
        return -1;
    }
    return 0;
}

void rill_watchdog_stop(void) {
    if (!atomic_load(&running))
        return;
    pthread_mutex_lock(&stop_mutex);
    atomic_store(&running, 0);
    pthread_cond_signal(&stop_cond);
    pthread_mutex_unlock(&stop_mutex);
    pthread_join(watch_thread, NULL);
}

static void publish(rill_watch *w) {
    uint64_t until = 0;
    if (w && (w->deadline || w->slice_end != UINT64_MAX)) {
        until = w->slice_end;
        if (w->deadline && w->deadline < until)
            until = w->deadline;
    }
    atomic_store_explicit(&current_until, until, memory_order_relaxed);
}

void rill_watchdog_enter(rill_watch *w, lua_State *co, uint64_t deadline, int preempt) {
    w->co = co;
    w->deadline = deadline;
    w->slice_end = preempt ? uv_hrtime() + SLICE_NS : UINT64_MAX;
    w->stopped = RILL_WATCHDOG_NONE;
    w->where[0] = '\0';
    w->outer = current;
    current = w;
    publish(w);
}

void rill_watchdog_leave(rill_watch *w) {
    current = w->outer;
    publish(current);
    if (atomic_load(&armed)) {
        lua_sethook(hook_state, NULL, 0, 0);
        atomic_store(&armed, 0);
        soon = 0;
    }
}

int rill_watchdog_due(void) {
    rill_watch *w = current;
    if (w == NULL || w->deadline == 0 || !atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    return uv_hrtime() >= w->deadline;
}

/* Where a C function called from Lua was stopped: the first caller outside
 * rill's stdlib (the flow's line, not bounded.lua's). */
static void note_where(lua_State *L, rill_watch *w) {
    lua_Debug ar;
    for (int level = 1; w->where[0] == '\0' && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 &&
            strstr(ar.short_src, "stdlib/rill/") == NULL)
            snprintf(w->where, sizeof w->where, "%s:%d", ar.short_src, ar.currentline);
    }
}

int rill_watchdog_stop_run(lua_State *L) {
    rill_watch *w = current;
    if (w != NULL && L == w->co && can_yield(L, 1)) {
        w->stopped = RILL_WATCHDOG_DEADLINE;
        note_where(L, w);
        return lua_yield(L, 0);
    }
    return luaL_error(L, "deadline exceeded");
}
