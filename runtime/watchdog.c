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
#include <fcntl.h>
#include <unistd.h>

/* SIGURG is ignored by default and used by nothing else in rill, which makes
 * it a safe doorbell (Go's runtime preempts goroutines with it too). */
#define WATCHDOG_SIGNAL SIGURG
#define POLL_NS 2000000ULL /* how often the thread looks */
#define SLICE_NS                                                                                   \
    3000000ULL          /* how long one resume may run before others get a turn: with              \
                         * POLL_NS, a burning run holds the loop ~5 ms at a time */
#define HOOK_EVERY 1000 /* instructions between two checks once armed */

static lua_State *hook_state;
static pthread_t loop_thread, watch_thread;
static rill_watch *current;            /* loop thread only */
static _Atomic uint64_t current_until; /* min(deadline, slice end) of `current`, 0 for none */
static _Atomic uint64_t give_up_at;    /* earliest deadline + grace of the watches, 0 for none */
static uint64_t grace_ns = 10000000000ULL;
static char
    stuck_file[512]; /* where the last line of defence names what was stuck; "" for nowhere */
static uint64_t hold_ns =
    1000000000ULL;           /* max_hold: longest stretch past a slice that cannot yield */
static atomic_int armed;     /* the signal was sent and the hook not yet removed */
static int soon;             /* the hook runs at every instruction (rill_watchdog_check_soon) */
static atomic_int giving_up; /* the signal was sent for the last line of defence */
static atomic_int running;   /* the watch thread should keep going */
static pthread_mutex_t stop_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cond = PTHREAD_COND_INITIALIZER;
static const void *pcall_fn, *xpcall_fn;

/* Whether co can yield here: no C function other than pcall/xpcall may sit
 * between this point and the coroutine's base (a table.sort comparator, a
 * gsub callback, a __tostring called by tostring cannot yield), and no
 * message handler may be running. pcall_fn and xpcall_fn are LuaJIT's own:
 * the ones flows see (sandbox.lua) are Lua functions calling them. */
static int can_yield(lua_State *L, int from) {
    /* A message handler runs with the status LUA_ERRERR, called from C
     * inside LuaJIT's error machinery: no frame shows it, and a yield there
     * would fail the handler ("error in error handling"). */
    if (lua_status(L) != 0)
        return 0;
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

void rill_watchdog_check_now(void) {
    if (current == NULL || soon)
        return;
    uint64_t until = atomic_load_explicit(&current_until, memory_order_relaxed);
    if (!atomic_load_explicit(&armed, memory_order_relaxed)) {
        if (until == 0 || uv_hrtime() < until)
            return;
        /* as the watch thread would: it sends no signal once armed is set */
        atomic_store(&armed, 1);
    }
    rill_watchdog_check_soon();
}

static void stop_hook(lua_State *L, lua_Debug *ar) {
    rill_watch *w = current;
    if (w == NULL || L != w->co)
        return;
    if (ar->event == LUA_HOOKCOUNT && soon) { /* back to the usual pace if it cannot yield */
        soon = 0;
        lua_sethook(L, stop_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
    uint64_t now = uv_hrtime();
    if (!rill_killed(w->kill) && w->deadline && now >= w->deadline) {
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
            snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX,
                     "deadline exceeded: code still running at %s:%d", ar->short_src,
                     ar->currentline);
        else
            snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX,
                     "deadline exceeded: code still running");
    }
    if (rill_killed(w->kill)) {
        /* The task is ended: nothing of it may run on. Where it can yield,
         * it yields and task.c ends it; inside a C function (a sort
         * comparator, a message handler called by error) an error unwinds
         * to a point where it can. pcall and xpcall pass such errors on
         * (sandbox.lua), and the hook stays installed until the resume
         * returns, so a handler that loops is interrupted again. */
        if (can_yield(L, 0)) {
            w->stopped = RILL_WATCHDOG_KILLED;
            lua_yield(L, 0);
            return;
        }
        lua_pushstring(L, *w->kill);
        lua_error(L);
    }
    if (now < w->slice_end)
        return; /* the signal was meant for a resume that has ended since */
    if (!can_yield(L, 0)) {
        /* A slice can wait for the next check, but not for ever: code that
         * cannot be paused (a comparator, a message handler, a __tostring
         * called from C) holds every other run and request meanwhile.
         * Flows' code only: a run (named by its label, whatever its
         * deadline, deadline = 0 included) or a verify function (under a
         * deadline). rill's own tasks have neither (serve's start, the
         * admin API, the store's upkeep), and their first require of a
         * module is such code: ended by max_hold on a slow or starved
         * machine (or under valgrind), serve's start made rill exit 1. */
        if (hold_ns && (w->deadline || (w->label && w->label[0])) &&
            now - w->slice_end >= hold_ns) {
            if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
                snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX,
                         "held the loop longer than max_hold (%.3g s) where it cannot be paused "
                         "(a callback from C, a message handler) at %s:%d",
                         (double)hold_ns / 1e9, ar->short_src, ar->currentline);
            else
                snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX,
                         "held the loop longer than max_hold (%.3g s) where it cannot be paused "
                         "(a callback from C, a message handler)",
                         (double)hold_ns / 1e9);
            lua_pushstring(L, *w->kill);
            lua_error(L);
        }
        return;
    }
    w->stopped = RILL_WATCHDOG_SLICE;
    lua_yield(L, 0); /* yielding from a hook: a LuaJIT feature */
}

/* Appends s to the line being built in a signal handler (no stdio there). */
static size_t append(char *buf, size_t len, size_t cap, const char *s) {
    while (*s && len + 1 < cap)
        buf[len++] = *s++;
    return len;
}

/* The last line of defence, on the loop thread: a resume is still running
 * kill_grace past its deadline, so it is stuck where the hook cannot reach.
 * Nothing can stop it but ending the process. */
static void give_up(void) {
    uint64_t now = uv_hrtime();
    for (rill_watch *w = current; w; w = w->outer) {
        if (w->deadline == 0 || now < w->deadline + grace_ns)
            continue;
        char line[400];
        size_t n = append(line, 0, sizeof line, "rill: fatal: ");
        n = append(line, n, sizeof line, w->label && w->label[0] ? w->label : "a run");
        n = append(
            line, n, sizeof line,
            " could not be stopped: still running kill_grace past its deadline, stuck in C "
            "code the watchdog cannot interrupt; exiting for the supervisor to restart rill\n");
        ssize_t ignored = write(2, line, n);
        (void)ignored;
        if (stuck_file[0] != '\0') {
            /* what was stuck, for the next start (flows.lua does not load
             * the same version of a flow file again) */
            int fd = open(stuck_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                const char *label = w->label ? w->label : "";
                ignored = write(fd, label, strlen(label));
                close(fd);
            }
        }
        _exit(RILL_WATCHDOG_EXIT);
    }
}

static void on_signal(int sig) {
    (void)sig;
    if (atomic_exchange(&giving_up, 0))
        give_up();
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
        uint64_t now = uv_hrtime();
        if (limit != 0 && now >= limit && !atomic_exchange(&armed, 1))
            pthread_kill(loop_thread, WATCHDOG_SIGNAL);
        uint64_t last = atomic_load_explicit(&give_up_at, memory_order_relaxed);
        if (last != 0 && now >= last && !atomic_exchange(&giving_up, 1))
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
    uint64_t until = 0, last = 0;
    if (w && (w->deadline || w->slice_end != UINT64_MAX)) {
        until = w->slice_end;
        if (w->deadline && w->deadline < until)
            until = w->deadline;
    }
    if (w && rill_killed(w->kill))
        until = 1; /* already ended: the hook must act at once */
    for (rill_watch *o = w; o && grace_ns; o = o->outer)
        if (o->deadline && (last == 0 || o->deadline + grace_ns < last))
            last = o->deadline + grace_ns;
    atomic_store_explicit(&current_until, until, memory_order_relaxed);
    atomic_store_explicit(&give_up_at, last, memory_order_relaxed);
}

void rill_watchdog_enter(rill_watch *w, lua_State *co, uint64_t deadline, int preempt, char **kill,
                         const char *label) {
    w->co = co;
    w->deadline = deadline;
    w->slice_end = preempt ? uv_hrtime() + SLICE_NS : UINT64_MAX;
    w->kill = kill;
    w->label = label;
    w->stopped = RILL_WATCHDOG_NONE;
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
    if (w == NULL || !atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    if (rill_killed(w->kill))
        return 1; /* ended already (its memory limit, max_hold) */
    return w->deadline != 0 && uv_hrtime() >= w->deadline;
}

/* The kill reason of a run stopped inside a C function called from Lua: at
 * the first caller outside rill's stdlib (the flow's line, not bounded.lua's). */
static void note_deadline(lua_State *L, rill_watch *w) {
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 &&
            strstr(ar.short_src, "stdlib/rill/") == NULL) {
            snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX,
                     "deadline exceeded: code still running at %s:%d", ar.short_src,
                     ar.currentline);
            return;
        }
    }
    snprintf(rill_kill_buffer(w->kill), RILL_KILL_MAX, "deadline exceeded: code still running");
}

int rill_watchdog_stop_run(lua_State *L) {
    rill_watch *w = current;
    if (w == NULL || L != w->co)
        return luaL_error(L, "deadline exceeded");
    if (!rill_killed(w->kill))
        note_deadline(L, w);
    if (can_yield(L, 1)) {
        w->stopped = RILL_WATCHDOG_KILLED;
        return lua_yield(L, 0);
    }
    lua_pushstring(L, *w->kill);
    return lua_error(L);
}

void rill_watchdog_stop_now(void) {
    if (current == NULL || hook_state == NULL)
        return;
    atomic_store(&armed, 1);
    lua_sethook(hook_state, stop_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

void rill_watchdog_set_max_hold(double seconds) {
    hold_ns = seconds > 0 ? (uint64_t)(seconds * 1e9) : 0;
}

void rill_watchdog_set_stuck_file(const char *path) {
    snprintf(stuck_file, sizeof stuck_file, "%s", path ? path : "");
}

void rill_watchdog_set_grace(double seconds) {
    grace_ns = seconds > 0 ? (uint64_t)(seconds * 1e9) : 0;
}
