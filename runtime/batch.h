/*
 * batch.h: statement batches, what the two store backends (sqlite.c, pg.c)
 * share: a batch is a list of SQL statements with their parameters, from one
 * caller, run in one transaction. This module owns the C values a batch
 * carries (so the work can happen away from Lua: on a worker thread, or
 * across several loop turns), reading a batch from Lua, and handing its
 * outcome back to the waiting task or callback.
 *
 * Lua form: stmts = { {sql, p1, p2, ..., n = nparams}, ... }; the outcome is
 * a list of results, one per statement, each a list of rows (tables keyed by
 * column name, NULL columns absent) with the fields `changes` (rows changed,
 * or returned), `columns` (the column names, in order) and, on Postgres,
 * `command` (the command tag's first word: a COMMIT of a transaction that
 * an error aborted answers "ROLLBACK", without an error); or nil and an
 * error message.
 */
#ifndef RILL_BATCH_H
#define RILL_BATCH_H

#include "task.h"

enum { VAL_NULL, VAL_INT, VAL_FLOAT, VAL_TEXT, VAL_BOOL, VAL_JSON /* text, decoded for Lua */ };

#define BATCH_MAX_PARAMS 64 /* parameters of one statement */

typedef struct value {
    int type;
    union {
        int64_t i; /* VAL_INT, VAL_BOOL (0 or 1) */
        double d;
        struct {
            char *p; /* NUL-terminated copy */
            size_t n;
        } s;
    } u;
} value;

typedef struct stmt_req {
    char *sql; /* in the batch's chunks, as its params and their texts */
    int nparams;
    value *params;
    /* results, filled by the backend */
    int ncols;
    char **cols;
    int nrows, cap;
    value *cells; /* nrows * ncols */
    int64_t changes;
    char command[16]; /* the command tag's first word, "" when the backend gives none */
    int skip;         /* backend scratch: results to pass over before this one's */
    int slot;         /* backend scratch: its prepared statement, -1 for none */
} stmt_req;

typedef struct batch {
    struct batch *next;
    rill_task *task; /* the waiting task, or NULL */
    int cb_ref;      /* or the callback, or LUA_NOREF (none, or cancelled) */
    int arg_ref;     /* the callback's last argument, or LUA_NOREF (none given) */
    int nstmts;
    stmt_req *stmts;
    int writes;                 /* some statement is not a SELECT */
    int left_out;               /* backend scratch: failed for good, not run again with its group */
    uint64_t queued_at;         /* loop time (ms) it was queued: a backend fails it when the
                                 * store cannot take it in time */
    size_t run_left;            /* the memory its run had left when it asked (SIZE_MAX: no run, or
                                 * no limit): a statement's result is kept in C up to that */
    char *error;                /* NULL on success */
    struct batch_chunk *chunks; /* the statements' SQL and parameters (batch.c) */
} batch;

/* A hash of a statement's text, for the backends' caches of prepared
 * statements: eight bytes at a time (it runs at every use of a statement,
 * and the run's INSERT is 400 bytes long). */
unsigned batch_hash_sql(const char *sql);

/* Copies n bytes at p into v as text; 0, or -1 when out of memory. */
int value_set_text(value *v, const char *p, size_t n);
void value_free(value *v);

/* The arguments of conn:batch(stmts [, callback [, arg]]) (stmts at 2): a
 * new batch with its callback (called as callback(results) or
 * callback(nil, err), or with arg given, callback(results, nil, arg) or
 * callback(nil, err, arg): a caller's state without a closure per call), or
 * else the calling task as the one that waits. */
batch *batch_from_call(lua_State *L, const char *who);

/* Appends b to the queue head..tail. */
void batch_queue(batch **head, batch **tail, batch *b);

/* What conn:batch returns once b is queued: nothing (a callback will have
 * the outcome), or the outcome itself, the task waiting for it. */
int batch_return(lua_State *L, batch *b);

/* Prepares s to receive ncols columns named by names(i, ctx); -1 on OOM. */
int stmt_set_columns(stmt_req *s, int ncols, const char *(*name)(int i, void *ctx), void *ctx);

/* A new row of s to fill (ncols values); NULL when out of memory. */
value *stmt_add_row(stmt_req *s);

/* What a row of ncols values, ntext of them text of text_bytes in all,
 * weighs against a result's bound (batch_result_bound): about what it will
 * take as a Lua table in the run (its table and slot, a hash node per
 * column, a string header per text), more than it takes in C, so that a
 * result the run could not hold fails before it is all kept. */
size_t batch_row_weight(int ncols, int ntext, size_t text_bytes);

/* The most one statement's result of b may weigh (batch_row_weight) on a
 * backend whose results are bounded by max_result (> 0): max_result, or less, what
 * b's run had left of its memory when it asked (a result it could not hold
 * as Lua values fails while it arrives, as an error the flow may catch). */
size_t batch_result_bound(const batch *b, size_t max_result);

/* The error of a statement whose result passed bound (batch_result_bound),
 * naming run_memory_limit, which max_result comes from (db.lua). */
void batch_result_too_large(char *msg, size_t n, size_t bound, size_t max_result);

/* Records a failure of the batch (the first one counts). */
void batch_fail(batch *b, const char *why);

/* Forgets the results of b (before running it again). */
void batch_reset(batch *b);

/* Gives b's outcome to its task or callback (`who` prefixes its error). */
void batch_deliver(batch *b, const char *who);

void batch_free(batch *b);

/* The cancel function of a task waiting on a batch: the work goes on; its
 * outcome is dropped. */
void batch_cancel(void *op);

#endif
