/*
 * task.h: tasks, the Lua coroutines that flow runs, flow loads and scripts
 * execute as, and the one yield/resume cycle every waiting primitive uses.
 *
 * A yielding primitive follows one pattern (see timer.c's sleep):
 *   rill_task *t = rill_task_check(L, "sleep");    raises outside a task
 *   ...start the I/O, remembering t...
 *   return rill_task_wait(L, t, cancel_fn, op);     yields the coroutine
 * and its completion callback pushes its results on t->co and calls
 * rill_task_resume(t, nresults). If the task is killed first (deadline,
 * shutdown), cancel_fn(op) runs instead and must make sure the completion
 * never resumes the task.
 */
#ifndef RILL_TASK_H
#define RILL_TASK_H

#include "alloc.h"
#include "rill.h"

typedef void (*rill_cancel_fn)(void *op);

typedef struct rill_task {
    lua_State *co;         /* the coroutine; anchored by co_ref until done */
    int co_ref;            /* registry refs, LUA_NOREF when released */
    int self_ref;          /* keeps this userdata alive while the task lives */
    int done_ref;          /* on_done(data, ok, ...) */
    int data_ref;          /* what rill.c.task.current() returns */
    uint64_t deadline;     /* absolute uv_hrtime() ns; 0 means none */
    uv_timer_t timer;      /* the deadline while waiting; initialised lazily */
    rill_cancel_fn cancel; /* the pending operation, NULL when none */
    void *op;
    struct rill_task *ready_next; /* in the ready queue after a preempted slice */
    unsigned char state;          /* TASK_RUNNING, TASK_WAITING or TASK_DONE */
    unsigned char timer_init;     /* timer was uv_timer_init'ed and needs closing */
    unsigned char preempt;        /* runs in time slices (flow runs); not flow loads */
    uint32_t meter;               /* the allocator's meter its blocks are charged to (alloc.h) */
    char *kill;                   /* NULL or "" while it may run; why it must end once written
                                   * (its deadline, its memory limit): from then on nothing of it
                                   * runs. Made only then (rill_kill_buffer): few runs are ended */
    char label[96];               /* "flow F run R": names it in the last line of defence */
} rill_task;

/* The task whose coroutine is executing now, or NULL. */
rill_task *rill_task_current(void);

/* The task L belongs to, for a primitive called `what` that must wait.
 * Raises a Lua error when L is not a task's own coroutine. */
rill_task *rill_task_check(lua_State *L, const char *what);

/* Records the pending operation and yields; use as `return rill_task_wait(...)`. */
int rill_task_wait(lua_State *L, rill_task *t, rill_cancel_fn cancel, void *op);

/* Resumes a waiting task with the nargs values on top of t->co's stack.
 * The pending operation is forgotten first: its completion owns it now. */
void rill_task_resume(rill_task *t, int nargs);

/* Ends a task that is waiting: cancels its pending operation and reports
 * on_done(data, false, reason). No effect on a finished task. */
void rill_task_kill(rill_task *t, const char *reason);

/* Sleeps zero seconds: puts t at the back of the ready queue and yields,
 * so that every run and request waiting now goes first. */
int rill_task_yield_turn(lua_State *L, rill_task *t);

/* The allocator refused the running task: end it as soon as possible. */
void rill_task_on_memory_refused(void);

/* How many tasks are alive (started and not finished). */
int rill_task_count(void);

/* Memory this large, held by a run or by a request's body, is followed by
 * two GC cycles in short steps and the allocators' trim (task.c): LuaJIT
 * waits for its heap to double before a cycle, and a heap that held 80 MB
 * while one ended would keep that much resident until it doubled again. */
#define RILL_GIVE_BACK_AFTER (32u << 20)
void rill_task_give_back_soon(void);

/* Makes L, the main Lua state, the one that on_done callbacks and timers
 * run on. Called once by rill_modules_register. */
void rill_task_init(lua_State *L);

/* The state that on_done callbacks and timers run on. */
lua_State *rill_task_main_state(void);

#endif
