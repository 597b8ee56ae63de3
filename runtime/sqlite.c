/*
 * sqlite.c: SQLite connections whose statements run off the loop thread.
 *
 * A connection owns one database handle and a queue of pending batches (a
 * batch: a list of statements with their parameters, from one caller). When
 * no work is executing, every pending batch goes, as one group, to a libuv
 * thread-pool worker that runs the whole group in one transaction, each batch
 * inside its own savepoint so that a failing batch is undone alone. Batches
 * that arrive while a group executes wait for the next one: commits are
 * shared by everything that arrived meanwhile (group commit), which is what
 * makes durable enqueues cheap.
 *
 * Parameters are copied into C values on the loop thread and results come
 * back as C values, turned into Lua tables on the loop thread: the worker
 * never touches a Lua state. Parameters are written $1, $2 ... in SQL, the
 * same as for Postgres.
 *
 * Opening (with its pragmas) and closing (which may checkpoint the WAL)
 * touch the disk too, so they run on a worker as well: the loop never
 * waits on SQLite. A group that runs longer than the connection's timeout
 * is interrupted (sqlite3_interrupt), so that a stalled disk or a held lock
 * fails its callers in bounded time; a full disk is logged (once a minute).
 *
 * Lua: sqlite.open(path, {synchronous = "normal"|"full"|"off", busy_ms = n,
 *                    raw = false, timeout = seconds, max_result = bytes})
 *                                    raw: no transaction around batches (the
 *                                    caller sends BEGIN and COMMIT: db.tx);
 *                                    max_result: a statement whose rows take
 *                                    more in C fails (default: no limit)
 *                   -> conn, or nil and the reason   (in a task: yields while it opens)
 *      conn:batch(stmts [, callback [, arg]]) -> results    (in a task: yields)
 *      conn:close()
 * stmts = { {sql, p1, p2, ..., n = nparams}, ... }; each result is a table
 * of rows (tables keyed by column name) with a field `changes`.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "batch.h"

#define CONN_MT "rill.sqlite"

static const char *SYNC_MODES[] = {"off", "normal", "full", NULL};
#define STMT_CACHE 64 /* prepared statements kept per connection */

typedef struct cached_stmt {
    char *sql;
    sqlite3_stmt *stmt;
    /* index[i]: SQLite's index of $i+1 (0 when unused), found at the first
     * bind; nindex of them known */
    int nindex;
    int index[BATCH_MAX_PARAMS];
} cached_stmt;

typedef struct sqlite_conn {
    sqlite3 *db;
    uv_work_t work;
    uv_timer_t *deadline; /* interrupts a group past timeout_ms; freed in its close callback */
    long timeout_ms;      /* 0: none */
    /* the group's end of timeout_ms (uv_hrtime), 0 for none: set before
     * the group is queued, read by the busy handler on the worker */
    uint64_t group_deadline;
    uint64_t busy_since; /* worker only: when the statement met the lock */
    int timed_out;       /* worker only: the busy handler gave up at group_deadline */
    size_t max_result;   /* bytes of one statement's rows kept in C; 0: no limit */
    int full;            /* the last group met a full disk (SQLITE_FULL) */
    /* opening, on the worker */
    rill_task *opener; /* the task waiting in sqlite.open, or NULL once cancelled */
    char *path;
    int sync, busy_ms;
    char *open_error;
    batch *pending, *pending_tail; /* waiting for the next group */
    batch *group;                  /* executing on a worker; NULL when idle */
    int closing;
    int raw;      /* batches run as they are: the caller's BEGIN and COMMIT hold */
    int self_ref; /* anchors the userdata while a group executes */
    struct sqlite_conn *next_busy, *prev_busy; /* on `busy` while a group executes */
    cached_stmt cache[STMT_CACHE];
} sqlite_conn;

/* The connections with a group executing, for the wind-down at exit: it
 * closes every handle (the groups' timeout timers too), then waits for the
 * work still queued, so a statement with no end (a flow's recursive query,
 * its run long past its deadline) would keep rill from exiting. */
static sqlite_conn *busy;

static void busy_add(sqlite_conn *c) {
    c->prev_busy = NULL;
    c->next_busy = busy;
    if (busy)
        busy->prev_busy = c;
    busy = c;
}

static void busy_remove(sqlite_conn *c) {
    if (c->prev_busy)
        c->prev_busy->next_busy = c->next_busy;
    else if (busy == c)
        busy = c->next_busy;
    if (c->next_busy)
        c->next_busy->prev_busy = c->prev_busy;
    c->next_busy = c->prev_busy = NULL;
}

void rill_sqlite_wind_down(void) {
    for (sqlite_conn *c = busy; c; c = c->next_busy)
        if (c->db)
            sqlite3_interrupt(c->db); /* thread-safe: the statement fails "interrupted" */
}

/* ---- the worker side: runs on a thread-pool thread, no Lua ---- */

/* Parameters are bound by number as $1, $2 ...: one written otherwise (?,
 * :name, @name), or numbered past the values given, would quietly be NULL
 * (Postgres refuses both). 0 when every one is $N with N <= nparams, else
 * -1 with a malloc'd reason in *err. */
static int check_params(sqlite3_stmt *st, int nparams, char **err) {
    int n = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        char msg[200];
        if (name == NULL || name[0] != '$' || name[1] < '1' || name[1] > '9' ||
            strspn(name + 1, "0123456789") != strlen(name + 1) || strlen(name) > 4) {
            snprintf(msg, sizeof msg,
                     "parameter %.40s: write parameters as $1, $2, ... (numbered, as for Postgres)",
                     name ? name : "?");
        } else if (atoi(name + 1) > nparams) {
            snprintf(msg, sizeof msg,
                     "parameter %s but %d value(s) given: write parameters as $1, $2, ... "
                     "up to the number of values",
                     name, nparams);
        } else {
            continue;
        }
        *err = strdup(msg);
        return -1;
    }
    return 0;
}

/* A prepared statement for sql, from the cache when it was seen before
 * (then *cached is its cache slot, else NULL); NULL with a malloc'd reason
 * in *err. */
static sqlite3_stmt *prepare(sqlite_conn *c, const char *sql, cached_stmt **cached, char **err) {
    unsigned h = batch_hash_sql(sql) % STMT_CACHE;
    cached_stmt *slot = &c->cache[h];
    *cached = NULL;
    if (slot->sql && strcmp(slot->sql, sql) == 0) {
        *cached = slot;
        return slot->stmt;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, &tail) != SQLITE_OK) {
        *err = strdup(sqlite3_errmsg(c->db));
        return NULL;
    }
    if (st == NULL || tail[strspn(tail, " \t\r\n;")] != '\0') {
        /* SQLite would quietly ignore what follows the first statement */
        sqlite3_finalize(st);
        *err =
            strdup(st ? "one statement per entry: there is more after the first" : "no statement");
        return NULL;
    }
    char *copy = strdup(sql);
    if (copy == NULL)
        return st;
    if (slot->sql) {
        sqlite3_finalize(slot->stmt);
        free(slot->sql);
    }
    slot->sql = copy;
    slot->stmt = st;
    slot->nindex = 0;
    *cached = slot;
    return st;
}

/* SQLite's index of parameter $i+1 of st (0 when the statement does not
 * use it), looked up by name once per cached statement. */
static int param_index(sqlite3_stmt *st, cached_stmt *cached, int i) {
    if (cached && i < cached->nindex)
        return cached->index[i];
    char name[16];
    snprintf(name, sizeof name, "$%d", i + 1);
    int idx = sqlite3_bind_parameter_index(st, name);
    if (cached && i == cached->nindex) {
        cached->index[i] = idx;
        cached->nindex++;
    }
    return idx;
}

static int bind_params(sqlite3_stmt *st, cached_stmt *cached, const stmt_req *s) {
    for (int i = 0; i < s->nparams; i++) {
        int idx = param_index(st, cached, i);
        if (idx == 0)
            continue; /* a parameter the statement does not use */
        const value *v = &s->params[i];
        int rc;
        switch (v->type) {
        case VAL_INT:
        case VAL_BOOL:
            rc = sqlite3_bind_int64(st, idx, v->u.i);
            break;
        case VAL_FLOAT:
            rc = sqlite3_bind_double(st, idx, v->u.d);
            break;
        case VAL_TEXT:
            rc = sqlite3_bind_text(st, idx, v->u.s.p, (int)v->u.s.n, SQLITE_STATIC);
            break;
        default:
            rc = sqlite3_bind_null(st, idx);
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int keep_row(stmt_req *s, sqlite3_stmt *st) {
    value *row = stmt_add_row(s);
    if (row == NULL)
        return -1;
    for (int i = 0; i < s->ncols; i++) {
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            row[i].type = VAL_INT;
            row[i].u.i = sqlite3_column_int64(st, i);
            break;
        case SQLITE_FLOAT:
            row[i].type = VAL_FLOAT;
            row[i].u.d = sqlite3_column_double(st, i);
            break;
        case SQLITE_NULL:
            break;
        default: {
            const char *p = (const char *)sqlite3_column_text(st, i);
            if (value_set_text(&row[i], p ? p : "", (size_t)sqlite3_column_bytes(st, i)) != 0)
                return -1;
        }
        }
    }
    return 0;
}

/* What a row weighs against the result's bound (batch_row_weight). (The
 * bytes of text and blobs only: asked of a number, sqlite3_column_bytes
 * converts it to text, and keep_row would then read its type as text.) */
static size_t row_bytes(stmt_req *s, sqlite3_stmt *st) {
    size_t text = 0;
    int ntext = 0;
    for (int i = 0; i < s->ncols; i++) {
        int type = sqlite3_column_type(st, i);
        if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
            text += (size_t)sqlite3_column_bytes(st, i);
            ntext++;
        }
    }
    return batch_row_weight(s->ncols, ntext, text);
}

static const char *column_name(int i, void *st) {
    return sqlite3_column_name(st, i);
}

/* SQLite's reason as a malloc'd message, saying so when the wait for a
 * lock was given up at the group's timeout (the lock's holder, not SQLite,
 * is then what to look at). */
static char *error_text(sqlite_conn *c, const char *msg) {
    if (!c->timed_out)
        return strdup(msg);
    char text[400];
    snprintf(text, sizeof text, "%.300s (waited %ld ms for another connection's lock: the timeout)",
             msg, c->timeout_ms);
    return strdup(text);
}

/* Runs one statement, keeping at most bound bytes of its rows (when
 * max_result is set); on failure returns a malloc'd message. */
static char *run_stmt(sqlite_conn *c, stmt_req *s, size_t bound) {
    cached_stmt *cached;
    char *err = NULL;
    sqlite3_stmt *st = prepare(c, s->sql, &cached, &err);
    if (st == NULL)
        return err ? err : strdup("out of memory");
    if (check_params(st, s->nparams, &err) != 0) {
        if (!cached)
            sqlite3_finalize(st);
        return err ? err : strdup("out of memory");
    }
    int rc = bind_params(st, cached, s);
    if (rc == SQLITE_OK && stmt_set_columns(s, sqlite3_column_count(st), column_name, st) != 0)
        err = strdup("out of memory");
    /* The rows are kept here, outside the Lua heap and its limits, until
     * the statement is done: max_result, or what the run had left, bounds
     * them (a flow's query of zeroblob(900000000) took rill's RSS to 1.8 GB
     * before its run failed) */
    size_t kept = 0;
    while (rc == SQLITE_OK && err == NULL) {
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            if (c->max_result > 0 && (kept += row_bytes(s, st)) > bound) {
                char msg[160];
                batch_result_too_large(msg, sizeof msg, bound, c->max_result);
                err = strdup(msg);
            } else if (keep_row(s, st) != 0) {
                err = strdup("out of memory");
            }
        } else if (step == SQLITE_DONE) {
            break;
        } else {
            rc = step;
        }
    }
    if (rc != SQLITE_OK && err == NULL)
        err = error_text(c, sqlite3_errmsg(c->db));
    if ((rc & 0xff) == SQLITE_FULL)
        c->full = 1;
    /* rows changed, or rows returned by a query (as Postgres counts) */
    s->changes = sqlite3_stmt_readonly(st) ? s->nrows : sqlite3_changes(c->db);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (!cached)
        sqlite3_finalize(st);
    return err;
}

static int exec_simple(sqlite_conn *c, const char *sql, char **err) {
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    if ((rc & 0xff) == SQLITE_FULL)
        c->full = 1;
    if (err && *err == NULL)
        *err = error_text(c, msg ? msg : sqlite3_errmsg(c->db));
    sqlite3_free(msg);
    return -1;
}

/* Runs a batch's statements, stopping at the first failure (recorded). */
static void run_batch(sqlite_conn *c, batch *b) {
    for (int i = 0; i < b->nstmts && b->error == NULL; i++) {
        char *err = run_stmt(c, &b->stmts[i], batch_result_bound(b, c->max_result));
        if (err) {
            const char *sql = b->stmts[i].sql;
            size_t n = strlen(err) + 80;
            b->error = malloc(n);
            if (b->error)
                snprintf(b->error, n, "%s (in: %.60s%s)", err, sql, strlen(sql) > 60 ? "..." : "");
            free(err);
        }
    }
}

static void fail_group(batch *group, const char *why) {
    for (batch *b = group; b; b = b->next)
        batch_fail(b, why);
}

/* Rolls the group's transaction back and fails every batch of it with why
 * and SQLite's reason (err, freed). */
static void abandon(sqlite_conn *c, batch *group, const char *why, char *err) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s; the group's transaction was rolled back", why,
             err ? err : "?");
    free(err);
    if (!sqlite3_get_autocommit(c->db))
        exec_simple(c, "ROLLBACK", NULL);
    fail_group(group, msg);
}

/* The pool's threads do the store's batch work, whose latency a whole group
 * of requests shares. SCHED_BATCH keeps their share of the CPU but a wakeup
 * of theirs no longer preempts a running thread: a group finishing on a busy
 * 2-core machine does not stop the loop in the middle of a turn, where every
 * client waits on it (under a flood of async webhooks they took the loop's
 * CPU ~300 times a second each). Once per thread; a refusal changes nothing. */
static void worker_yield_to_loop(void) {
    static _Thread_local int done;
    if (!done) {
        struct sched_param none = {0};
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &none);
        done = 1;
    }
}

static void group_work(uv_work_t *w) {
    worker_yield_to_loop();
    sqlite_conn *c = w->data;
    batch *group = c->group;
    char *err = NULL;
    c->full = 0;
    if (c->raw) { /* a connection that one transaction owns (db.tx) */
        for (batch *b = group; b; b = b->next)
            run_batch(c, b);
        return;
    }
    int writes = 0;
    for (batch *b = group; b; b = b->next)
        writes |= b->writes;
    /* A writing transaction takes the write lock at once: taking it later,
     * after reading, can fail with SQLITE_BUSY without waiting. Readers
     * (the CLI beside a running server) never block the writer. */
    if (exec_simple(c, writes ? "BEGIN IMMEDIATE" : "BEGIN", &err) != 0) {
        fail_group(group, err ? err : "cannot begin a transaction");
        free(err);
        return;
    }
    int alone = group->next == NULL; /* one batch: its own transaction, no savepoint */
    if (!alone) {
        /* First without savepoints (three statements per batch, and a copy
         * of each page a batch touches): batches rarely fail. When one does,
         * the whole transaction is undone and the group runs again, each
         * batch in its savepoint, so that only the failing one is lost. */
        batch *b = group;
        while (b && b->error == NULL && !sqlite3_get_autocommit(c->db)) {
            run_batch(c, b);
            if (b->error == NULL)
                b = b->next;
        }
        if (b == NULL) {
            if (exec_simple(c, "COMMIT", &err) != 0) {
                exec_simple(c, "ROLLBACK", NULL);
                fail_group(group, err ? err : "commit failed");
                free(err);
            }
            return;
        }
        if (!sqlite3_get_autocommit(c->db))
            exec_simple(c, "ROLLBACK", NULL);
        for (batch *r = group; r; r = r->next)
            batch_reset(r);
        if (exec_simple(c, writes ? "BEGIN IMMEDIATE" : "BEGIN", &err) != 0) {
            fail_group(group, err ? err : "cannot begin a transaction");
            free(err);
            return;
        }
    }
again:
    for (batch *b = group; b; b = b->next) {
        if (b->left_out)
            continue;
        if (!alone && exec_simple(c, "SAVEPOINT b", &err) != 0) {
            /* Without its savepoint a batch could not be undone alone. */
            abandon(c, group, "cannot start a batch's savepoint", err);
            return;
        }
        run_batch(c, b);
        if (sqlite3_get_autocommit(c->db)) {
            /* The error ended the whole transaction (ON CONFLICT ROLLBACK, a
             * full disk): what ran before it is undone too. */
            fail_group(group, b->error ? b->error : "the transaction was rolled back");
            return;
        }
        if (alone)
            continue;
        /* A batch's own statements may have released or rolled back its
         * savepoint: then its writes cannot be undone alone. The whole
         * transaction is undone rather than commit half a failed batch,
         * and the group runs again without that batch, failed for good. */
        const char *broke = NULL;
        if (b->error && exec_simple(c, "ROLLBACK TO b", &err) != 0)
            broke = "cannot undo a failed batch alone";
        else if (exec_simple(c, "RELEASE b", &err) != 0)
            broke = "the batch ended its own savepoint";
        if (broke) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s (%.200s; %.200s): none of its statements is kept", broke,
                     b->error ? b->error : "no error of its own", err ? err : "?");
            free(err);
            err = NULL;
            exec_simple(c, "ROLLBACK", NULL);
            for (batch *r = group; r; r = r->next)
                if (!r->left_out)
                    batch_reset(r);
            batch_fail(b, msg);
            b->left_out = 1;
            if (exec_simple(c, writes ? "BEGIN IMMEDIATE" : "BEGIN", &err) != 0) {
                fail_group(group, err ? err : "cannot begin a transaction");
                free(err);
                return;
            }
            goto again;
        }
    }
    if (alone && group->error) {
        exec_simple(c, "ROLLBACK", NULL);
    } else if (exec_simple(c, "COMMIT", &err) != 0) {
        exec_simple(c, "ROLLBACK", NULL);
        fail_group(group, err ? err : "commit failed");
        free(err);
    }
}

/* Waits for another connection's lock, as SQLite's own busy handler does
 * (busy_ms in all), but no later than the group's timeout: sqlite3_interrupt
 * at the timeout does not end a wait for a lock, and a group held by
 * another process's write lock failed at busy_ms (5 s), not at the
 * store's timeout. The sleeps are short so that the timeout is kept within
 * a few ms. On a worker. */
static int wait_for_lock(void *arg, int count) {
    sqlite_conn *c = arg;
    uint64_t now = uv_hrtime();
    if (count == 0)
        c->busy_since = now;
    if (c->group_deadline && now >= c->group_deadline) {
        c->timed_out = 1;
        return 0;
    }
    if (now - c->busy_since >= (uint64_t)c->busy_ms * 1000000)
        return 0;
    uv_sleep(count < 3 ? 1u << count : 10); /* 1, 2, 4, then 10 ms */
    return 1;
}

/* No ATTACH of a file (nor VACUUM INTO one, which attaches it): a flow's
 * database could otherwise open rill's store, or any file, by its path.
 * VACUUM's own attach of a temporary database (named "") is let through. */
static int no_attach(void *ud, int action, const char *file, const char *b, const char *c,
                     const char *d) {
    (void)ud, (void)b, (void)c, (void)d;
    return action == SQLITE_ATTACH && !(file && file[0] == '\0') ? SQLITE_DENY : SQLITE_OK;
}

/* Opens c->path with its pragmas; the reason in c->open_error on failure. */
static void open_work(uv_work_t *w) {
    worker_yield_to_loop();
    sqlite_conn *c = w->data;
    int rc = sqlite3_open_v2(
        c->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    char msg[600];
    if (rc != SQLITE_OK) {
        snprintf(msg, sizeof msg, "cannot open %s: %s", c->path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        c->db = NULL;
        c->open_error = strdup(msg);
        return;
    }
    sqlite3_busy_handler(c->db, wait_for_lock, c);
    sqlite3_set_authorizer(c->db, no_attach, NULL);
    if (c->max_result > 0) /* no one value larger, made by SQLite itself (zeroblob(N)) */
        sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH,
                      c->max_result < INT_MAX ? (int)c->max_result : INT_MAX);
    char pragmas[160];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON; PRAGMA "
             "cache_size=-65536;",
             SYNC_MODES[c->sync]);
    char *err = NULL;
    if (exec_simple(c, pragmas, &err) != 0) {
        snprintf(msg, sizeof msg, "cannot set up %s: %s", c->path, err ? err : "?");
        free(err);
        sqlite3_close(c->db);
        c->db = NULL;
        c->open_error = strdup(msg);
    }
}

/* ---- the loop side ---- */

typedef struct closer {
    uv_work_t work;
    sqlite3 *db;
} closer;

static void close_work(uv_work_t *w) {
    sqlite3_close(((closer *)w)->db); /* may checkpoint the WAL: disk work */
}

static void close_done(uv_work_t *w, int status) {
    free(w);
}

/* Closes the database: the statements here (no disk work), the handle on a
 * worker, unless `now` (a collected connection: its memory goes next) or
 * the worker cannot be had. */
static void close_db(sqlite_conn *c, int now) {
    for (int i = 0; i < STMT_CACHE; i++) {
        if (c->cache[i].sql) {
            sqlite3_finalize(c->cache[i].stmt);
            free(c->cache[i].sql);
            c->cache[i].sql = NULL;
        }
    }
    closer *cl = now ? NULL : malloc(sizeof *cl);
    if (cl) {
        cl->db = c->db;
        if (uv_queue_work(rill_loop(), &cl->work, close_work, close_done) != 0) {
            free(cl);
            cl = NULL;
        }
    }
    if (cl == NULL)
        sqlite3_close(c->db);
    c->db = NULL;
}

static void free_timer(uv_handle_t *h) {
    free(h);
}

static void on_deadline(uv_timer_t *h) {
    sqlite_conn *c = h->data;
    if (c && c->group && c->db)
        sqlite3_interrupt(c->db); /* thread-safe: the statement fails "interrupted" */
}

static void start_group(sqlite_conn *c);

static void group_done(uv_work_t *w, int status) {
    sqlite_conn *c = w->data;
    batch *group = c->group;
    c->group = NULL;
    busy_remove(c);
    if (c->deadline)
        uv_timer_stop(c->deadline);
    if (status != 0)
        fail_group(group, uv_strerror(status));
    static uint64_t full_logged; /* loop time of the last line about it */
    if (c->full && (full_logged == 0 || uv_now(rill_loop()) - full_logged >= 60000)) {
        full_logged = uv_now(rill_loop());
        rill_log("error", "sqlite: the disk is full (or the database reached its size limit): "
                          "writes fail, and async webhooks answer 503, until space is freed");
    }
    while (group) {
        batch *next = group->next;
        batch_deliver(group, "sqlite");
        batch_free(group);
        group = next;
    }
    start_group(c);
}

/* Hands every pending batch to a worker, unless a group is executing. */
static void start_group(sqlite_conn *c) {
    lua_State *L = rill_task_main_state();
    if (c->group)
        return;
    if (c->pending == NULL || c->db == NULL) {
        if (c->closing && c->db)
            close_db(c, 0);
        luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
        c->self_ref = LUA_NOREF;
        return;
    }
    c->group = c->pending;
    c->pending = c->pending_tail = NULL;
    c->work.data = c;
    busy_add(c);
    c->timed_out = 0;
    c->group_deadline = 0;
    if (c->deadline && c->timeout_ms > 0) {
        c->group_deadline = uv_hrtime() + (uint64_t)c->timeout_ms * 1000000;
        uv_timer_start(c->deadline, on_deadline, (uint64_t)c->timeout_ms, 0);
    }
    if (uv_queue_work(rill_loop(), &c->work, group_work, group_done) != 0) {
        fail_group(c->group, "cannot queue work");
        group_done(&c->work, 0);
    }
}

static sqlite_conn *check_conn(lua_State *L) {
    sqlite_conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->db == NULL || c->closing)
        luaL_error(L, "sqlite: the connection is closed");
    return c;
}

/* conn:batch(stmts [, callback [, arg]]) */
static int l_batch(lua_State *L) {
    sqlite_conn *c = check_conn(L);
    batch *b = batch_from_call(L, "sqlite");
    batch_queue(&c->pending, &c->pending_tail, b);
    if (c->self_ref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    start_group(c);
    return batch_return(L, b);
}

/* conn:close(): closes now when idle, else once the queued work is done. */
static int l_close(lua_State *L) {
    sqlite_conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->db == NULL)
        return 0;
    c->closing = 1;
    if (c->group == NULL && c->pending == NULL)
        close_db(c, 0);
    return 0;
}

static int l_gc(lua_State *L) {
    sqlite_conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->db && c->group == NULL) /* a running group anchors the userdata */
        close_db(c, 1);
    if (c->deadline) {
        c->deadline->data = NULL;
        if (uv_is_closing((uv_handle_t *)c->deadline))
            free(c->deadline); /* closed by main's wind-down, whose loop run has ended */
        else
            uv_close((uv_handle_t *)c->deadline, free_timer);
        c->deadline = NULL;
    }
    free(c->path);
    c->path = NULL;
    return 0;
}

static void open_done(uv_work_t *w, int status) {
    sqlite_conn *c = w->data;
    rill_task *t = c->opener;
    c->opener = NULL;
    lua_State *L = rill_task_main_state();
    if (t == NULL) { /* the task is gone: nobody will use or close it */
        if (c->db)
            close_db(c, 0);
    } else if (c->db == NULL) {
        lua_pushnil(t->co);
        lua_pushfstring(t->co, "sqlite: %s", c->open_error ? c->open_error : uv_strerror(status));
    } else {
        lua_rawgeti(t->co, LUA_REGISTRYINDEX, c->self_ref);
    }
    free(c->open_error);
    c->open_error = NULL;
    free(c->path); /* needed to open only */
    c->path = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
    if (t)
        rill_task_resume(t, c->db ? 1 : 2);
}

static void open_cancel(void *op) {
    ((sqlite_conn *)op)->opener = NULL;
}

/* sqlite.open(path [, opts]) -> conn, or nil and the reason. In a task,
 * the opening runs on a worker and the task waits; outside one (a script's
 * top level), here. */
static int l_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int sync = 1, busy_ms = 5000, raw = 0;
    double timeout = 0, max_result = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "synchronous");
        if (!lua_isnil(L, -1))
            sync = luaL_checkoption(L, -1, NULL, SYNC_MODES);
        lua_getfield(L, 2, "busy_ms");
        busy_ms = (int)luaL_optinteger(L, -1, busy_ms);
        lua_getfield(L, 2, "raw");
        raw = lua_toboolean(L, -1);
        lua_getfield(L, 2, "timeout");
        timeout = luaL_optnumber(L, -1, 0);
        lua_getfield(L, 2, "max_result");
        max_result = luaL_optnumber(L, -1, 0);
        lua_pop(L, 5);
    }
    sqlite_conn *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->self_ref = LUA_NOREF;
    c->raw = raw;
    c->sync = sync;
    c->busy_ms = busy_ms;
    c->timeout_ms = (long)(timeout * 1000);
    c->max_result = max_result > 0 ? (size_t)max_result : 0;
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
    if ((c->path = strdup(path)) == NULL)
        return luaL_error(L, "sqlite: out of memory");
    if (c->timeout_ms > 0 && (c->deadline = malloc(sizeof *c->deadline)) != NULL) {
        uv_timer_init(rill_loop(), c->deadline);
        c->deadline->data = c;
        uv_unref((uv_handle_t *)c->deadline);
    }
    rill_task *t = rill_task_current();
    if (t && t->co == L) {
        c->work.data = c;
        if (uv_queue_work(rill_loop(), &c->work, open_work, open_done) == 0) {
            lua_pushvalue(L, -1);
            c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* anchored while it opens */
            c->opener = t;
            return rill_task_wait(L, t, open_cancel, c);
        }
    }
    c->work.data = c;
    open_work(&c->work); /* not in a task: here, the only way left */
    free(c->path);
    c->path = NULL;
    if (c->db == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "sqlite: %s", c->open_error ? c->open_error : "cannot open");
        free(c->open_error);
        c->open_error = NULL;
        return 2;
    }
    return 1;
}

int rill_sqlite_open(lua_State *L) {
    /* No global count of SQLite's memory (nothing reads it): counting takes
     * a process-wide mutex at every allocation. Only possible before the
     * library's first use; later it refuses, harmlessly. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    static const luaL_Reg methods[] = {{"batch", l_batch}, {"close", l_close}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"open", l_open}, {NULL, NULL}};
    rill_lua_metatable(L, CONN_MT, methods);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "version");
    return 1;
}
