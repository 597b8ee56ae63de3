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

#include "alloc.h"
#include "rill.h"

/* Why the hook stopped a coroutine. */
enum { RILL_WATCHDOG_NONE, RILL_WATCHDOG_SLICE, RILL_WATCHDOG_KILLED };

/* The watch over one resume; the enclosing one is saved in it. */
typedef struct rill_watch {
    lua_State *co;     /* the coroutine being resumed */
    uint64_t deadline; /* absolute uv_hrtime() ns, 0 for none */
    uint64_t slice_end;
    char **kill;       /* the task's reason slot (rill_kill_buffer): empty while it may
                        * run. Once written (deadline, memory limit) the task is ended:
                        * the hook keeps raising or yielding until its resume returns. */
    const char *label; /* "flow F run R", for the last line of defence */
    int stopped;       /* RILL_WATCHDOG_*: why the hook yielded it */
    struct rill_watch *outer;
} rill_watch;

/* Starts the watchdog for Lua state L on this (the loop's) thread.
 * Returns 0 or -1. */
int rill_watchdog_start(lua_State *L);

/* Stops and joins the watchdog thread. */
void rill_watchdog_stop(void);

/* A resume of co with this deadline begins, in a time slice unless
 * preempt is 0; kill is the task's reason slot and label names it. w
 * lives on the caller's stack until rill_watchdog_leave(w), which removes
 * the hook and restores the enclosing watch. Afterwards w->stopped says why
 * the hook yielded, and kill why the task must end, if it must. */
void rill_watchdog_enter(rill_watch *w, lua_State *co, uint64_t deadline, int preempt, char **kill,
                         const char *label);
void rill_watchdog_leave(rill_watch *w);

/* The resume in progress must stop now (its kill reason was just written,
 * by the allocator): installs the hook without waiting for the thread. */
void rill_watchdog_stop_now(void);

/* How long code may go on past its deadline, stuck where the hook cannot
 * reach (inside a C function), before rill gives up on it: it writes one
 * line naming the run to stderr and exits with RILL_WATCHDOG_EXIT, for the
 * supervisor to restart it (durable runs are taken over as after a crash).
 * 0 disables it. */
void rill_watchdog_set_grace(double seconds);

/* How long a run in time slices may hold the loop past the end of its slice
 * where the hook cannot yield (a table.sort comparator, a message handler,
 * a __tostring called from C) before it is ended like at its deadline.
 * 0: until its deadline. */
void rill_watchdog_set_max_hold(double seconds);
#define RILL_WATCHDOG_EXIT 70

/* The file the last line of defence writes the stuck run's label to before
 * exiting (replaced each time), or "" for none. */
void rill_watchdog_set_stuck_file(const char *path);

/* Whether the resume in progress must end (past its deadline, or killed by
 * a limit): for C code that loops (the pattern matcher) and cannot be
 * stopped by the hook. Cheap: one relaxed load until the watch thread has
 * rung, then a clock read. */
int rill_watchdog_due(void);

/* For a C function that found rill_watchdog_due(): `return
 * rill_watchdog_stop_run(L);` ends its run as the hook does: it writes the
 * kill reason ("deadline exceeded: code still running at file:line", the
 * flow's line) unless one is set, and yields the coroutine, never to be
 * resumed. Where it cannot yield (a C function below it), it raises the
 * reason, which the pcall and xpcall flows see pass on (sandbox.lua). */
int rill_watchdog_stop_run(lua_State *L);

/* For a C function that may take milliseconds: once the watch thread has
 * rung (a slice or the deadline is over), makes the hook run at the next
 * instruction instead of 1,000 instructions later, which after slow C
 * calls would be seconds. One relaxed load when nothing is due. */
void rill_watchdog_check_soon(void);

/* For a primitive done in pieces (a gsub over a long subject), between two:
 * when the slice or the deadline is over, makes the hook run at the next
 * instruction without waiting for the watch thread to notice (on a loaded
 * machine it may not get a CPU for many slices). One clock read. */
void rill_watchdog_check_now(void);

#endif
