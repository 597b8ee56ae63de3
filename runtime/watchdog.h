/*
 * watchdog.h: keeps Lua code that never yields from holding the loop.
 * A thread watches the resume in progress; when its time slice ends, or its
 * run's deadline passes, it signals the loop thread, whose handler installs
 * a count hook. The hook yields the coroutine at the next point where it
 * can: task.c then puts a preempted task back in the ready queue (so the
 * loop serves other work between slices) or ends a task past its deadline.
 * Flow code is loaded with the JIT off (flows.lua): traces never call hooks.
 */
#ifndef RILL_WATCHDOG_H
#define RILL_WATCHDOG_H

#include "rill.h"

/* Why the hook stopped a coroutine. */
enum { RILL_WATCHDOG_NONE, RILL_WATCHDOG_SLICE, RILL_WATCHDOG_DEADLINE };

/* The watch over one resume; the enclosing one is saved in it. */
typedef struct rill_watch {
    lua_State *co;     /* the coroutine being resumed */
    uint64_t deadline; /* absolute uv_hrtime() ns, 0 for none */
    uint64_t slice_end;
    int stopped;     /* RILL_WATCHDOG_*: why the hook yielded it */
    char where[200]; /* "file:line" where it was stopped */
    struct rill_watch *outer;
} rill_watch;

/* Starts the watchdog for Lua state L on this (the loop's) thread.
 * Returns 0 or -1. */
int rill_watchdog_start(lua_State *L);

/* Stops and joins the watchdog thread. */
void rill_watchdog_stop(void);

/* A resume of co with this deadline begins, in a time slice unless
 * preempt is 0; w lives on the caller's stack
 * until rill_watchdog_leave(w), which removes the hook and restores the
 * enclosing watch. Afterwards w->stopped and w->where say what happened. */
void rill_watchdog_enter(rill_watch *w, lua_State *co, uint64_t deadline, int preempt);
void rill_watchdog_leave(rill_watch *w);

/* Whether the resume in progress is past its deadline: for C code that
 * loops (the pattern matcher) and cannot be stopped by the hook. Cheap: one
 * relaxed load until the watch thread has rung, then a clock read. */
int rill_watchdog_due(void);

/* For a C function that found rill_watchdog_due(): `return
 * rill_watchdog_stop_run(L);` ends its run as the hook does, by yielding
 * the coroutine, never to be resumed (task.c reports "deadline exceeded:
 * code still running at file:line"), which no pcall can catch. Where it
 * cannot yield (a C function below it), it raises "deadline exceeded". */
int rill_watchdog_stop_run(lua_State *L);

/* For a C function that may take milliseconds: once the watch thread has
 * rung (a slice or the deadline is over), makes the hook run at the next
 * instruction instead of 1,000 instructions later, which after slow C
 * calls would be seconds. One relaxed load when nothing is due. */
void rill_watchdog_check_soon(void);

#endif
