/*
 * pg.c: Postgres connections on the loop, through libpq's asynchronous API
 * in pipeline mode. No call here blocks: the socket is watched by a
 * uv_poll_t, and libpq is only asked to read or write when it is ready.
 *
 * The Lua side is the same as sqlite.c's (see batch.h): a connection keeps
 * a queue of pending batches; when it is idle, every pending batch goes out
 * as one group, in one pipeline ended by one Sync, so the group is one
 * implicit transaction and one commit (group commit, as for SQLite). A
 * statement that fails aborts the whole group's transaction: its batch gets
 * the error, and the other batches of the group are sent again, as the
 * next group, so that one caller's failure is never another's.
 *
 * A connection that breaks fails the batches in flight with the reason; the
 * next batch reconnects. Connecting is nonblocking too, but for one thing:
 * libpq resolves a host name with getaddrinfo, which blocks; give the store
 * an address (or a unix socket path) where that matters. connect_timeout
 * (default 10 s) is enforced here, as libpq leaves it to the caller.
 *
 * Results: libpq keeps a statement's rows in its own memory until the
 * statement is done, outside every Lua limit. A connection opened with
 * max_result (the flows': db.lua) reads its statements in libpq's single-row
 * mode and weighs each row as it arrives: a statement whose rows weigh
 * more than max_result, or than what the run asking had left of its
 * memory, fails at that row (see over_limit). Without it
 * (rill's own store) results come whole: the store's statements return few
 * rows, and one PGresult per row would only cost it time.
 *
 * Lua: pg.open(conninfo [, {statement_timeout = seconds, reconnect = true,
 *                            max_result = bytes}])
 *        -> conn, or nil and the reason   (in a task: yields; the session is
 *        in UTC; reconnect = false: once lost, batches fail; max_result: a
 *        statement whose rows take more in C fails, default no limit)
 *      conn:connected() -> boolean
 *      conn:batch(stmts [, callback [, arg]]) -> results    (in a task: yields)
 *      conn:on_notify(fn)    fn(channel, payload) for NOTIFY (after LISTEN)
 *      conn:close()
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "batch.h"

#define CONN_MT "rill.pg"
#define MAX_PREPARED 128 /* statements prepared per connection; more are parsed each time */
/* A row larger than this grew libpq's input buffer to its size (libpq
 * never shrinks it): the connection is made again after its group. */
#define RECYCLE_ROW (1u << 20)

/* Postgres type oids that results turn into numbers and booleans. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700,
    OID_JSON = 114,
    OID_JSONB = 3802,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184
};

enum { PG_IDLE, PG_CONNECTING, PG_READY, PG_CLOSED };

/* A statement prepared on the connection, named "rill_<n>". It is usable
 * once its Parse was sent; it is known to exist once the server answered
 * it (confirmed), and forgotten if its group ended before that. */
typedef struct prepared {
    char *sql;
    unsigned hash;  /* of the SQL and the parameter types */
    unsigned *oids; /* the parameter types it was prepared with */
    int nparams;
    int id;
    int confirmed;
} prepared;

typedef struct pg_conn {
    PGconn *pg;
    char *conninfo;
    uv_poll_t *poll; /* watches PQsocket; its close callback frees it */
    /* One timer, two uses that never overlap: while connecting, the
     * connect deadline; otherwise, the start of the next group, deferred
     * so that conn:batch never delivers an outcome before it returns. */
    uv_timer_t *timer;
    int sock; /* the socket poll watches */
    int state;
    int closing;                   /* close once the work in flight is done */
    rill_task *opener;             /* the task waiting in pg.open, or NULL */
    batch *pending, *pending_tail; /* waiting for the next group */
    batch *group;                  /* sent; results arriving */
    batch *cur;                    /* the batch whose statement answers next */
    int cur_stmt;
    batch *failed;             /* the group's batch whose statement failed */
    char *commit_error;        /* the group failed as a whole, at its commit */
    int self_ref;              /* anchors the userdata while work is in flight */
    long statement_timeout_ms; /* 0: none */
    int notify_ref;            /* on_notify(channel, payload), or LUA_NOREF */
    int no_reconnect;          /* once lost, stay lost (a transaction's connection) */
    int connected_once;
    /* Where to connect: the URL's host name is resolved on libuv's threads
     * (uv_getaddrinfo), never by libpq's blocking getaddrinfo on the loop,
     * and handed to libpq as hostaddr (host stays, for TLS and SNI). */
    char *host;                  /* the name to resolve, or NULL (an address, a socket path) */
    uv_getaddrinfo_t *resolving; /* in flight; its callback frees it */
    int connect_timeout_s;
    /* A group that gets no answer within timeout_ms is failed and the
     * connection dropped: a lock, a stalled server or a silent network
     * partition must not hold every caller. 0: no limit. */
    long timeout_ms;
    int group_timed; /* the timer is the group's deadline now */
    /* Reconnecting: after `failures` failed attempts in a row, none before
     * retry_at (loop time, ms); batches meanwhile fail at once with
     * last_error, so that callers answer "retry later" instead of waiting. */
    int failures;
    uint64_t retry_at;
    long reconnect_max_ms;
    char last_error[512];
    prepared prep[MAX_PREPARED];
    int nprep, next_id;
    /* Bounded results (max_result > 0): the statement answering now (cur,
     * cur_stmt) is read row by row once single_row is set; kept is what its
     * rows weigh so far; over: it went past its bound, and the rest of its
     * rows are dropped as they come. recycle: a row past the bound or over
     * RECYCLE_ROW may have grown libpq's input buffer, which it never
     * shrinks: the connection is closed once its group is done, and made
     * again (not a transaction's: that would end it). */
    size_t max_result; /* 0: no limit, results read whole */
    size_t kept;
    int single_row, over, recycle;
} pg_conn;

static void on_poll(uv_poll_t *h, int status, int events);

static void free_handle(uv_handle_t *h) {
    free(h);
}

/* Handles the loop's wind-down (main.c) closed without a close callback:
 * the loop may still hold them, so they are freed only at exit, after the
 * loop is gone. (Freeing one here, while closing, let the loop touch freed
 * memory when a connection was collected during the wind-down.) */
static uv_handle_t **orphans;
static size_t norphans;

static void free_orphans(void) {
    for (size_t i = 0; i < norphans; i++)
        free(orphans[i]);
    free(orphans);
    orphans = NULL;
    norphans = 0;
}

/* Closes a handle this module allocated; its memory goes with it, in its
 * close callback and nowhere else. */
static void close_handle(uv_handle_t *h) {
    h->data = NULL;
    if (!uv_is_closing(h)) {
        uv_close(h, free_handle);
        return;
    }
    uv_handle_t **more = realloc(orphans, sizeof *orphans * (norphans + 1));
    if (more == NULL)
        return; /* leaked: the process is ending anyway */
    if (orphans == NULL)
        atexit(free_orphans);
    orphans = more;
    orphans[norphans++] = h;
}

static void unwatch(pg_conn *c) {
    if (c->poll)
        close_handle((uv_handle_t *)c->poll);
    c->poll = NULL;
    c->sock = -1;
}

/* Watches the connection's socket for events (UV_READABLE, UV_WRITABLE). */
static int watch(pg_conn *c, int events) {
    int sock = PQsocket(c->pg);
    if (sock < 0)
        return -1;
    if (sock != c->sock) { /* a new socket: libpq tried another address */
        unwatch(c);
        c->poll = malloc(sizeof *c->poll);
        if (c->poll == NULL || uv_poll_init_socket(rill_loop(), c->poll, sock) != 0) {
            free(c->poll);
            c->poll = NULL;
            return -1;
        }
        c->poll->data = c;
        c->sock = sock;
    }
    uv_ref((uv_handle_t *)c->poll); /* work in flight keeps the loop alive */
    return uv_poll_start(c->poll, events, on_poll);
}

static void anchor(pg_conn *c, lua_State *L, int idx) {
    if (c->self_ref == LUA_NOREF) {
        lua_pushvalue(L, idx);
        c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

static void release(pg_conn *c) {
    luaL_unref(rill_task_main_state(), LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
}

/* Forgets prepared statements: all of them (a new session), or only
 * those whose Parse the server never answered. */
static void forget_prepared(pg_conn *c, int all) {
    int kept = 0;
    for (int i = 0; i < c->nprep; i++) {
        if (all || !c->prep[i].confirmed) {
            free(c->prep[i].sql);
            free(c->prep[i].oids);
        } else {
            c->prep[kept++] = c->prep[i];
        }
    }
    c->nprep = kept;
}

static void disconnect(pg_conn *c) {
    if (c->resolving) /* its callback frees it, and finds no connection */
        c->resolving->data = NULL;
    c->resolving = NULL;
    forget_prepared(c, 1);
    unwatch(c);
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->state = c->closing ? PG_CLOSED : PG_IDLE;
}

/* libpq's last error, without its trailing newline. */
static const char *pg_error(pg_conn *c, char *buf, size_t n) {
    snprintf(buf, n, "%s", c->pg ? PQerrorMessage(c->pg) : "no connection");
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    return buf;
}

static void fail_list(batch *list, const char *why) {
    while (list) {
        batch *next = list->next;
        batch_fail(list, why);
        batch_deliver(list, "postgres");
        batch_free(list);
        list = next;
    }
}

static void start_group(pg_conn *c);
static void on_timer(uv_timer_t *h);
static void row_by_row(pg_conn *c);

/* The statement answering next has had none of its results read: its
 * mode and weight start again (bounded results, see max_result). At the
 * start of a group, whatever the last one left (a group that broke ended
 * in the middle of a statement), and at each statement's end. */
static void stmt_begins(pg_conn *c) {
    c->single_row = c->over = 0;
    c->kept = 0;
}

/* The connection is gone: everything in flight fails with the reason. */
static void broken(pg_conn *c, const char *why) {
    char msg[512];
    snprintf(msg, sizeof msg, "connection lost: %s", why);
    snprintf(c->last_error, sizeof c->last_error, "%s", msg);
    uv_timer_stop(c->timer);
    c->group_timed = 0;
    batch *group = c->group;
    c->group = c->cur = c->failed = NULL;
    c->recycle = 0;
    disconnect(c);
    fail_list(group, msg);
    start_group(c); /* reconnects for what is pending */
}

/* ---- connecting ---- */

static void ignore_notice(void *arg, const char *message) {}

/* When the next attempt may start after `failures` failed ones in a row:
 * 100 ms doubling up to reconnect_max, each wait between half and all of
 * it, so that instances that lost the store together do not return to it
 * in step. */
static void back_off(pg_conn *c) {
    double wait = 100;
    for (int i = 1; i < c->failures && wait < (double)c->reconnect_max_ms; i++)
        wait *= 2;
    if (wait > (double)c->reconnect_max_ms)
        wait = (double)c->reconnect_max_ms;
    wait *= 0.5 + 0.5 * (double)(uv_hrtime() % 1000) / 1000;
    c->retry_at = uv_now(rill_loop()) + (uint64_t)wait;
}

static void opened(pg_conn *c, const char *error) {
    rill_task *t = c->opener;
    c->opener = NULL;
    uv_timer_stop(c->timer);
    if (error) {
        if (c->failures++ == 0)
            rill_log("warn", "postgres: cannot connect to the store: %s", error);
        snprintf(c->last_error, sizeof c->last_error, "%s", error);
        back_off(c);
    } else {
        if (c->failures > 0)
            rill_log("info", "postgres: connected again after %d failed attempts", c->failures);
        c->failures = 0;
        c->retry_at = 0;
    }
    if (error) {
        batch *pending = c->pending;
        c->pending = c->pending_tail = NULL;
        fail_list(pending, error);
    }
    if (t) {
        if (error) {
            lua_pushnil(t->co);
            lua_pushfstring(t->co, "postgres: %s", error);
            rill_task_resume(t, 2);
        } else {
            lua_rawgeti(t->co, LUA_REGISTRYINDEX, c->self_ref); /* the connection */
            rill_task_resume(t, 1);
        }
    }
    start_group(c);
}

/* One step of libpq's connection state machine. */
static void connect_step(pg_conn *c) {
    char buf[512];
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        if (watch(c, UV_READABLE) != 0)
            goto fail;
        return;
    case PGRES_POLLING_WRITING:
        if (watch(c, UV_WRITABLE) != 0)
            goto fail;
        return;
    case PGRES_POLLING_OK:
        if (PQenterPipelineMode(c->pg) != 1)
            goto fail;
        c->state = PG_READY;
        c->connected_once = 1;
        if (watch(c, UV_READABLE) != 0) /* notices, or the server closing */
            goto fail;
        opened(c, NULL);
        return;
    default:
        goto fail;
    }
fail:
    pg_error(c, buf, sizeof buf);
    disconnect(c);
    opened(c, buf);
}

/* Starts libpq's connection (hostaddr: the resolved addresses, or NULL);
 * the socket's first writability drives the rest. -1 with the reason in
 * err when it fails at once. */
static int start_libpq(pg_conn *c, const char *host, const char *hostaddr, char *err, size_t n) {
    /* the URL, plus session settings: UTC, so that times read back as ISO
     * instants, and the statement timeout */
    char options[96];
    snprintf(options, sizeof options, "-c TimeZone=UTC -c statement_timeout=%ld",
             c->statement_timeout_ms);
    const char *keys[] = {"dbname", "options", hostaddr ? "host" : NULL, "hostaddr", NULL};
    const char *values[] = {c->conninfo, options, host, hostaddr, NULL};
    c->pg = PQconnectStartParams(keys, values, 1);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD || PQsetnonblocking(c->pg, 1) != 0) {
        pg_error(c, err, n);
        disconnect(c);
        return -1;
    }
    PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    if (watch(c, UV_WRITABLE) != 0) {
        snprintf(err, n, "cannot watch the connection's socket");
        disconnect(c);
        return -1;
    }
    return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    pg_conn *c = req->data;
    char err[512], names[8 * 256 + 8], addrs[8 * (INET6_ADDRSTRLEN + 1)];
    size_t nn = 0, na = 0;
    int count = 0;
    for (struct addrinfo *a = status == 0 ? res : NULL; a && count < 8; a = a->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        const void *where = a->ai_family == AF_INET
                                ? (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            inet_ntop(a->ai_family, where, ip, sizeof ip) == NULL)
            continue;
        /* libpq tries each address in turn: host is repeated to match */
        if (c)
            nn +=
                (size_t)snprintf(names + nn, sizeof names - nn, "%s%s", count ? "," : "", c->host);
        na += (size_t)snprintf(addrs + na, sizeof addrs - na, "%s%s", count ? "," : "", ip);
        count++;
    }
    uv_freeaddrinfo(res);
    free(req);
    if (c == NULL)
        return; /* given up on (connect timeout, close) */
    c->resolving = NULL;
    if (count == 0) {
        snprintf(err, sizeof err, "cannot resolve %s: %s", c->host,
                 status ? uv_strerror(status) : "no address");
        disconnect(c);
        opened(c, err);
    } else if (start_libpq(c, names, addrs, err, sizeof err) != 0) {
        opened(c, err);
    }
}

/* Starts connecting: resolves the host name first, off the loop, when the
 * URL names one. The connect_timeout covers both. -1 with the reason in
 * err when it fails at once. */
static int start_connect(pg_conn *c, char *err, size_t n) {
    c->state = PG_CONNECTING;
    /* libpq leaves connect_timeout to the caller in nonblocking mode */
    uv_timer_start(c->timer, on_timer, (uint64_t)c->connect_timeout_s * 1000, 0);
    if (c->host == NULL)
        return start_libpq(c, NULL, NULL, err, n);
    uv_getaddrinfo_t *req = malloc(sizeof *req);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = req ? uv_getaddrinfo(rill_loop(), req, on_resolved, c->host, NULL, &hints) : UV_ENOMEM;
    if (rc != 0) {
        free(req);
        snprintf(err, n, "cannot resolve %s: %s", c->host, uv_strerror(rc));
        disconnect(c);
        return -1;
    }
    req->data = c;
    c->resolving = req;
    return 0;
}

/* Reads what connecting needs from the URL once: the host name to resolve
 * (a single name without hostaddr; an address or a socket path needs no
 * resolving, and a list of hosts is left to libpq, which resolves it
 * itself, blocking), and connect_timeout (by default the connection's
 * timeout when it has one, else 10 s). */
static void read_conninfo(pg_conn *c) {
    c->connect_timeout_s = c->timeout_ms > 0 ? (int)((c->timeout_ms + 999) / 1000) : 10;
    PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
    const char *host = NULL;
    int hostaddr = 0;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "connect_timeout") == 0 && atoi(o->val) > 0)
            c->connect_timeout_s = atoi(o->val);
        else if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = 1;
    }
    unsigned char ip[16];
    if (host && !hostaddr && host[0] != '/' && host[0] != '@' && strchr(host, ',') == NULL &&
        inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1)
        c->host = strdup(host);
    PQconninfoFree(opts);
}

/* ---- sending a group ---- */

/* Renders v as a parameter: its text (in buf when it is a number) and oid. */
static const char *param_text(const value *v, char *buf, size_t n, unsigned *oid) {
    switch (v->type) {
    case VAL_INT:
        *oid = OID_INT8;
        snprintf(buf, n, "%lld", (long long)v->u.i);
        return buf;
    case VAL_FLOAT:
        *oid = OID_FLOAT8;
        snprintf(buf, n, "%.17g", v->u.d);
        return buf;
    case VAL_BOOL:
        *oid = OID_BOOL;
        return v->u.i ? "t" : "f";
    case VAL_TEXT:
        *oid = 0; /* unknown: the server infers it from where it is used */
        return v->u.s.p;
    default:
        *oid = 0;
        return NULL;
    }
}

/* A hash of the SQL and its parameter types: a statement is prepared
 * for the types it is called with, so a float where an integer came first
 * gets a statement of its own rather than a type error. */
static unsigned hash_stmt(const char *sql, const unsigned *oids, int n) {
    unsigned h = batch_hash_sql(sql);
    for (int i = 0; i < n; i++)
        h = (h ^ oids[i]) * 16777619u;
    return h;
}

static prepared *find_prepared(pg_conn *c, const char *sql, const unsigned *oids, int n,
                               unsigned h) {
    for (int i = 0; i < c->nprep; i++) {
        prepared *p = &c->prep[i];
        if (p->hash == h && p->nparams == n &&
            memcmp(p->oids, oids, sizeof *oids * (size_t)n) == 0 && strcmp(p->sql, sql) == 0)
            return p;
    }
    return NULL;
}

/* A new prepared statement for sql and these types; NULL when the cache is
 * full (or out of memory): the statement is then parsed each time. */
static prepared *add_prepared(pg_conn *c, const char *sql, const unsigned *oids, int n,
                              unsigned h) {
    if (c->nprep == MAX_PREPARED)
        return NULL;
    char *copy = strdup(sql);
    unsigned *types = malloc(sizeof *types * (size_t)(n > 0 ? n : 1));
    if (copy == NULL || types == NULL) {
        free(copy);
        free(types);
        return NULL;
    }
    memcpy(types, oids, sizeof *oids * (size_t)n);
    prepared *p = &c->prep[c->nprep++];
    *p = (prepared){copy, h, types, n, c->next_id++, 0};
    return p;
}

/* Sends s, prepared: the store sends the same few statements all day, and
 * parsing and planning them each time would cost the server more than
 * running them. The first use sends a Parse too (s->skip: its answer). */
static int send_stmt(pg_conn *c, stmt_req *s) {
    const char *values[BATCH_MAX_PARAMS];
    unsigned oids[BATCH_MAX_PARAMS];
    char nums[BATCH_MAX_PARAMS][32], name[32];
    for (int i = 0; i < s->nparams; i++)
        values[i] = param_text(&s->params[i], nums[i], sizeof nums[i], &oids[i]);
    unsigned h = hash_stmt(s->sql, oids, s->nparams);
    prepared *p = find_prepared(c, s->sql, oids, s->nparams, h);
    s->skip = 0;
    s->slot = -1;
    if (p == NULL && (p = add_prepared(c, s->sql, oids, s->nparams, h)) != NULL) {
        snprintf(name, sizeof name, "rill_%d", p->id);
        if (PQsendPrepare(c->pg, name, s->sql, s->nparams, oids) != 1)
            return -1;
        s->skip = 1;
        s->slot = (int)(p - c->prep);
    }
    if (p == NULL)
        return PQsendQueryParams(c->pg, s->sql, s->nparams, oids, values, NULL, NULL, 0) == 1 ? 0
                                                                                              : -1;
    snprintf(name, sizeof name, "rill_%d", p->id);
    return PQsendQueryPrepared(c->pg, name, s->nparams, values, NULL, NULL, 0) == 1 ? 0 : -1;
}

/* Sends every statement of the group, then the Sync that commits them. */
static int send_group(pg_conn *c) {
    for (batch *b = c->group; b; b = b->next)
        for (int i = 0; i < b->nstmts; i++)
            if (send_stmt(c, &b->stmts[i]) != 0)
                return -1;
    if (PQpipelineSync(c->pg) != 1)
        return -1;
    int flushed = PQflush(c->pg);
    if (flushed < 0)
        return -1;
    return watch(c, flushed ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

/* Fails the pending batches that waited longer than the timeout behind
 * slow groups: a caller gets its answer ("retry later") in bounded time
 * even when every group before it takes nearly the whole timeout. */
static void fail_late(pg_conn *c) {
    uint64_t now = uv_now(rill_loop());
    batch *keep = NULL, *keep_tail = NULL, *late = NULL, *late_tail = NULL;
    for (batch *b = c->pending, *next; b; b = next) {
        next = b->next;
        b->next = NULL;
        if (now - b->queued_at >= (uint64_t)c->timeout_ms)
            batch_queue(&late, &late_tail, b);
        else
            batch_queue(&keep, &keep_tail, b);
    }
    c->pending = keep;
    c->pending_tail = keep_tail;
    if (late) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the store did not take this within %.1f s (the store_timeout); not stored",
                 (double)c->timeout_ms / 1000);
        fail_list(late, msg);
    }
}

static void start_group(pg_conn *c) {
    char buf[512];
    if (c->group || c->state == PG_CONNECTING)
        return;
    if (c->pending == NULL) {
        if (c->poll) /* an idle connection does not keep the loop alive */
            uv_unref((uv_handle_t *)c->poll);
        if (c->closing)
            disconnect(c);
        if (c->opener == NULL)
            release(c);
        return;
    }
    if (c->state != PG_READY) {
        if (c->no_reconnect && c->connected_once) {
            /* a new session would run these outside the transaction */
            char msg[640];
            snprintf(msg, sizeof msg, "the transaction was lost with its connection (%s)",
                     c->last_error);
            batch *pending = c->pending;
            c->pending = c->pending_tail = NULL;
            fail_list(pending, msg);
            start_group(c);
        } else if (c->retry_at > uv_now(rill_loop())) {
            /* Waiting before the next attempt: fail at once, so that a
             * webhook answers "retry later" now, not after a timeout. */
            char msg[640];
            snprintf(msg, sizeof msg, "the store is unreachable (next attempt in %.1f s): %s",
                     (double)(c->retry_at - uv_now(rill_loop())) / 1000, c->last_error);
            batch *pending = c->pending;
            c->pending = c->pending_tail = NULL;
            fail_list(pending, msg);
            start_group(c);
        } else if (start_connect(c, buf, sizeof buf) != 0) {
            opened(c, buf);
        }
        return;
    }
    if (c->timeout_ms > 0)
        fail_late(c);
    if (c->pending == NULL) {
        start_group(c);
        return;
    }
    c->group = c->cur = c->pending;
    c->cur_stmt = 0;
    c->failed = NULL;
    stmt_begins(c);
    c->pending = c->pending_tail = NULL;
    if (send_group(c) != 0) {
        broken(c, pg_error(c, buf, sizeof buf));
        return;
    }
    row_by_row(c);
    if (c->timeout_ms > 0) {
        c->group_timed = 1;
        uv_timer_start(c->timer, on_timer, (uint64_t)c->timeout_ms, 0);
    }
}

/* ---- receiving results ---- */

static const char *field_name(int i, void *res) {
    return PQfname(res, i);
}

/* "2026-11-25 08:00:00.12+00" (the session is in UTC) -> "2026-11-25T08:00:00.12Z";
 * a timestamp without zone keeps no suffix. */
static int set_iso_time(value *v, const char *text) {
    char iso[64];
    snprintf(iso, sizeof iso, "%s", text);
    char *space = strchr(iso, ' ');
    if (space)
        *space = 'T';
    size_t n = strlen(iso);
    if (n > 3 && strcmp(iso + n - 3, "+00") == 0)
        strcpy(iso + n - 3, "Z");
    return value_set_text(v, iso, strlen(iso));
}

/* Whether a numeric's text ("-123.4500") has at most 15 significant
 * digits, which a double keeps (DBL_DIG): then it is read as a number;
 * longer ones, NaN and infinities stay text, every digit kept. */
static int fits_double(const char *text) {
    int digits = 0, leading = 1;
    for (const char *p = text + (*text == '-' || *text == '+'); *p; p++) {
        if (*p == '.')
            continue;
        if (*p < '0' || *p > '9')
            return 0;
        if (leading && *p == '0')
            continue;
        leading = 0;
        digits++;
    }
    return digits <= 15;
}

/* What row r weighs against the result's bound (batch_row_weight; rows
 * of no column weigh their table). Every value counts as text: numbers
 * arrive as text, and are short. */
static size_t row_bytes(PGresult *res, int r) {
    int ncols = PQnfields(res);
    size_t text = 0;
    for (int i = 0; i < ncols; i++)
        text += (size_t)PQgetlength(res, r, i);
    return batch_row_weight(ncols, ncols, text);
}

/* Keeps the rows of res, a statement's whole result or, row by row, one
 * of its rows (the columns are set by the first). 0; -1 when out of
 * memory; 1 when the statement's rows pass max_result (nothing of that row
 * kept). */
static int keep_rows(pg_conn *c, stmt_req *s, PGresult *res) {
    int ncols = PQnfields(res), nrows = PQntuples(res);
    if (s->cols == NULL && stmt_set_columns(s, ncols, field_name, res) != 0)
        return -1;
    for (int r = 0; r < nrows; r++) {
        if (c->max_result > 0) {
            size_t weight = row_bytes(res, r);
            if (weight > RECYCLE_ROW)
                c->recycle = 1;
            if ((c->kept += weight) > batch_result_bound(c->cur, c->max_result))
                return 1;
        }
        value *row = stmt_add_row(s);
        if (row == NULL)
            return -1;
        for (int i = 0; i < ncols; i++) {
            if (PQgetisnull(res, r, i))
                continue;
            const char *text = PQgetvalue(res, r, i);
            switch (PQftype(res, i)) {
            case OID_INT2:
            case OID_INT4:
            case OID_INT8:
            case OID_OID:
                row[i].type = VAL_INT;
                row[i].u.i = strtoll(text, NULL, 10);
                break;
            case OID_NUMERIC:
                if (!fits_double(text)) { /* its exact text (batch.h) */
                    if (value_set_text(&row[i], text, (size_t)PQgetlength(res, r, i)) != 0)
                        return -1;
                    break;
                }
                /* fallthrough */
            case OID_FLOAT4:
            case OID_FLOAT8:
                row[i].type = VAL_FLOAT;
                row[i].u.d = strtod(text, NULL);
                break;
            case OID_BOOL:
                row[i].type = VAL_BOOL;
                row[i].u.i = text[0] == 't';
                break;
            case OID_JSON:
            case OID_JSONB:
                if (value_set_text(&row[i], text, (size_t)PQgetlength(res, r, i)) != 0)
                    return -1;
                row[i].type = VAL_JSON;
                break;
            case OID_TIMESTAMP:
            case OID_TIMESTAMPTZ:
                if (set_iso_time(&row[i], text) != 0)
                    return -1;
                break;
            default:
                if (value_set_text(&row[i], text, (size_t)PQgetlength(res, r, i)) != 0)
                    return -1;
            }
        }
    }
    const char *changes = PQcmdTuples(res);
    s->changes = changes[0] ? strtoll(changes, NULL, 10) : 0;
    const char *tag = PQcmdStatus(res); /* "" for a row of single-row mode */
    if (tag[0])
        snprintf(s->command, sizeof s->command, "%.*s", (int)strcspn(tag, " "), tag);
    return 0;
}

/* The group's transaction ended (committed, or rolled back by a failure). */
static void group_done(pg_conn *c) {
    uv_timer_stop(c->timer); /* the group's deadline */
    c->group_timed = 0;
    batch *group = c->group, *failed = c->failed;
    char *commit_error = c->commit_error;
    c->group = c->cur = c->failed = NULL;
    c->commit_error = NULL;
    forget_prepared(c, 0); /* Parses that an error made the server skip */
    /* Sort first, deliver after: a callback may queue batches, which must
     * come after the ones sent again. */
    batch *done = NULL, *done_last = NULL, *again = NULL, *again_last = NULL;
    while (group) {
        batch *next = group->next;
        group->next = NULL;
        if (commit_error)
            batch_fail(group, commit_error);
        if (failed == NULL || group == failed || commit_error) {
            *(done_last ? &done_last->next : &done) = group;
            done_last = group;
        } else { /* rolled back with the failed one: sent again */
            batch_reset(group);
            *(again_last ? &again_last->next : &again) = group;
            again_last = group;
        }
        group = next;
    }
    if (again) { /* first in the queue, before what arrived meanwhile */
        again_last->next = c->pending;
        if (c->pending == NULL)
            c->pending_tail = again_last;
        c->pending = again;
    }
    free(commit_error);
    /* a big row may have grown libpq's input buffer: a new connection
     * gives it back (not a transaction's: it would end it) */
    if (c->recycle && !c->no_reconnect)
        disconnect(c);
    c->recycle = 0;
    while (done) {
        batch *next = done->next;
        batch_deliver(done, "postgres");
        batch_free(done);
        done = next;
    }
    start_group(c);
}

/* An error's first line, and the statement it came from. */
static void describe_error(PGresult *res, const char *sql, char *msg, size_t n) {
    const char *e = PQresultErrorMessage(res);
    int len = (int)strcspn(e, "\n");
    if (sql)
        snprintf(msg, n, "%.*s (in: %.60s%s)", len, e, sql, strlen(sql) > 60 ? "..." : "");
    else
        snprintf(msg, n, "%.*s (at commit)", len, e);
}

/* The statement answering now passed max_result, or what its run had left
 * (batch_result_bound): its batch fails, naming the setting db.lua takes
 * max_result from, and it keeps nothing more of it. Alone in its group,
 * or on a transaction's connection, the connection is dropped as soon as
 * this result is read (read_results): the server stops making rows that
 * nobody will keep (fifty million of them streamed for seconds) and rolls
 * the batch back, and libpq's buffer goes with it. A transaction ends
 * there, whoever shares its group: kept open, it would keep what the
 * refused statement did (an INSERT ... RETURNING), though its caller was
 * told it failed. In a group shared with other callers' batches, whose
 * statements may be committed already, the rest of its rows are read and
 * dropped one by one, and the connection is made again once the group is
 * done (recycle). */
static void over_limit(pg_conn *c) {
    char msg[160];
    batch_result_too_large(msg, sizeof msg, batch_result_bound(c->cur, c->max_result),
                           c->max_result);
    batch_fail(c->cur, msg);
    c->over = 1;
    c->recycle = 1;
}

/* Whether the connection must be dropped now, for a statement over
 * max_result that is alone in its group or in a transaction (over_limit). */
static int drop_now(pg_conn *c) {
    return c->over && ((c->group == c->cur && c->cur->next == NULL) || c->no_reconnect);
}

/* Asks libpq to hand the statement answering next over row by row, when
 * results are bounded. libpq takes it only while that statement is the one
 * it reads and none of its results were parsed (and never for a Parse):
 * right after the group is sent and after each statement's end, which is
 * when this is called, before anything is parsed. */
static void row_by_row(pg_conn *c) {
    if (c->max_result > 0 && c->cur && !c->single_row && c->pg)
        c->single_row = PQsetSingleRowMode(c->pg) == 1;
}

/* One result of the statement answering now. */
static void take_result(pg_conn *c, PGresult *res) {
    char msg[600];
    ExecStatusType status = PQresultStatus(res);
    if (c->cur == NULL) { /* after every statement: the commit's own answer */
        if (status == PGRES_FATAL_ERROR && c->commit_error == NULL) {
            describe_error(res, NULL, msg, sizeof msg);
            c->commit_error = strdup(msg);
        }
        return;
    }
    stmt_req *s = &c->cur->stmts[c->cur_stmt];
    if (s->skip && status == PGRES_COMMAND_OK) { /* its Parse: done */
        if (s->slot >= 0)
            c->prep[s->slot].confirmed = 1;
        return;
    }
    switch (status) {
    case PGRES_SINGLE_TUPLE:
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY: {
        if (c->over) /* past max_result: the rest of its rows are dropped */
            break;
        int kept = keep_rows(c, s, res);
        if (kept < 0)
            batch_fail(c->cur, "out of memory");
        else if (kept > 0)
            over_limit(c);
        break;
    }
    case PGRES_PIPELINE_ABORTED:
        break;
    case PGRES_FATAL_ERROR: /* the server aborted the group's transaction */
        describe_error(res, s->sql, msg, sizeof msg);
        batch_fail(c->cur, msg);
        if (c->failed == NULL)
            c->failed = c->cur;
        break;
    default: /* an answer a statement should not give; the transaction goes on */
        snprintf(msg, sizeof msg, "unexpected result %s (in: %.60s)", PQresStatus(status), s->sql);
        batch_fail(c->cur, msg);
    }
}

/* The end of a statement's results: the next statement answers now. */
static void next_stmt(pg_conn *c) {
    stmt_begins(c);
    if (c->cur == NULL)
        return;
    stmt_req *s = &c->cur->stmts[c->cur_stmt];
    if (s->skip > 0) { /* that was the end of its Parse's answer */
        s->skip--;
        return;
    }
    if (++c->cur_stmt == c->cur->nstmts) {
        c->cur = c->cur->next;
        c->cur_stmt = 0;
    }
}

/* NOTIFY messages that arrived (LISTEN): to the on_notify callback. */
static void deliver_notifications(pg_conn *c) {
    PGnotify *n;
    while (c->pg && (n = PQnotifies(c->pg)) != NULL) {
        if (c->notify_ref != LUA_NOREF) {
            lua_State *L = rill_task_main_state();
            lua_rawgeti(L, LUA_REGISTRYINDEX, c->notify_ref);
            lua_pushstring(L, n->relname);
            lua_pushstring(L, n->extra);
            if (lua_pcall(L, 2, 0, 0) != 0) {
                rill_log("error", "error in a postgres on_notify: %s", lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        PQfreemem(n);
    }
}

static void read_results(pg_conn *c) {
    char buf[512];
    if (PQconsumeInput(c->pg) != 1) {
        broken(c, pg_error(c, buf, sizeof buf));
        return;
    }
    while (c->group && (row_by_row(c), !PQisBusy(c->pg))) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            next_stmt(c);
            continue;
        }
        int sync = PQresultStatus(res) == PGRES_PIPELINE_SYNC;
        if (!sync)
            take_result(c, res);
        PQclear(res);
        if (sync) {
            group_done(c);
            return;
        }
        if (drop_now(c)) {
            broken(c, "a result over max_result was dropped with its connection");
            return;
        }
    }
    deliver_notifications(c);
    if (c->group == NULL && c->pg && PQstatus(c->pg) == CONNECTION_BAD)
        broken(c, pg_error(c, buf, sizeof buf));
}

static void on_poll(uv_poll_t *h, int status, int events) {
    pg_conn *c = h->data;
    char buf[512];
    if (c == NULL)
        return;
    if (c->state == PG_CONNECTING) {
        connect_step(c);
        return;
    }
    if (status < 0) {
        broken(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int flushed = PQflush(c->pg);
        if (flushed < 0) {
            broken(c, pg_error(c, buf, sizeof buf));
            return;
        }
        if (flushed == 0 && watch(c, UV_READABLE) != 0) {
            broken(c, "cannot watch the socket");
            return;
        }
    }
    if (events & UV_READABLE)
        read_results(c);
}

static void on_timer(uv_timer_t *h) {
    pg_conn *c = h->data;
    if (c == NULL)
        return;
    if (c->state == PG_CONNECTING) {
        char msg[128];
        snprintf(msg, sizeof msg, "timed out connecting after %d s", c->connect_timeout_s);
        disconnect(c);
        opened(c, msg);
    } else if (c->group && c->group_timed) {
        char msg[128];
        snprintf(msg, sizeof msg, "no answer within %.1f s (the store_timeout)",
                 (double)c->timeout_ms / 1000);
        rill_log("warn", "postgres: %s: the connection is dropped and made again", msg);
        broken(c, msg);
    } else {
        start_group(c);
    }
}

/* ---- Lua ---- */

static pg_conn *check_conn(lua_State *L) {
    pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
    if (c->closing || c->state == PG_CLOSED)
        luaL_error(L, "postgres: the connection is closed");
    return c;
}

/* conn:batch(stmts [, callback [, arg]]) */
static int l_batch(lua_State *L) {
    pg_conn *c = check_conn(L);
    batch *b = batch_from_call(L, "postgres");
    batch_queue(&c->pending, &c->pending_tail, b);
    anchor(c, L, 1);
    if (c->group == NULL && c->state != PG_CONNECTING) /* else its end starts the next */
        uv_timer_start(c->timer, on_timer, 0, 0);
    return batch_return(L, b);
}

/* conn:on_notify(fn): fn(channel, payload) for each NOTIFY on a channel
 * this connection LISTENs to (send LISTEN as a statement; a reconnection
 * forgets it, so send it again now and then). */
static int l_on_notify(lua_State *L) {
    pg_conn *c = check_conn(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, c->notify_ref);
    lua_pushvalue(L, 2);
    c->notify_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* conn:connected() -> whether the connection is up (not lost, not closed) */
static int l_connected(lua_State *L) {
    pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
    lua_pushboolean(L, c->state == PG_READY && !c->closing);
    return 1;
}

/* conn:close(): closes now when idle, else once the work in flight is done. */
static int l_close(lua_State *L) {
    pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
    c->closing = 1;
    if (c->group == NULL && c->pending == NULL && c->state != PG_CONNECTING)
        disconnect(c);
    return 0;
}

/* Frees batches nobody will get the outcome of (their tasks end with the state). */
static void drop_list(batch *list) {
    while (list) {
        batch *next = list->next;
        batch_free(list);
        list = next;
    }
}

static int l_gc(lua_State *L) {
    pg_conn *c = luaL_checkudata(L, 1, CONN_MT);
    c->closing = 1;
    disconnect(c);
    /* Work in flight anchors the userdata, so none is left here, except at
     * exit: lua_close collects every connection, and one stopped with a
     * statement running (SIGTERM past the drain) still holds its group and
     * pending batches. Delivered now they would resume tasks of a closing
     * state; kept, they leaked (LeakSanitizer made an ASan rill exit 1). */
    drop_list(c->group);
    drop_list(c->pending);
    c->group = c->cur = c->failed = c->pending = c->pending_tail = NULL;
    free(c->commit_error);
    c->commit_error = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, c->notify_ref);
    c->notify_ref = LUA_NOREF;
    if (c->timer)
        close_handle((uv_handle_t *)c->timer);
    c->timer = NULL;
    free(c->conninfo);
    c->conninfo = NULL;
    free(c->host);
    c->host = NULL;
    return 0;
}

static void open_cancel(void *op) {
    pg_conn *c = op;
    c->opener = NULL;
}

/* pg.open(conninfo [, options]) -> conn; in a task */
static int l_open(lua_State *L) {
    const char *conninfo = luaL_checkstring(L, 1);
    rill_task *t = rill_task_check(L, "postgres open");
    pg_conn *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->self_ref = LUA_NOREF;
    c->notify_ref = LUA_NOREF;
    c->sock = -1;
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "statement_timeout");
        c->statement_timeout_ms = (long)(luaL_optnumber(L, -1, 0) * 1000);
        lua_getfield(L, 2, "reconnect");
        c->no_reconnect = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
        lua_getfield(L, 2, "timeout");
        c->timeout_ms = (long)(luaL_optnumber(L, -1, 0) * 1000);
        lua_getfield(L, 2, "reconnect_max");
        c->reconnect_max_ms = (long)(luaL_optnumber(L, -1, 5) * 1000);
        lua_getfield(L, 2, "max_result");
        lua_Number max_result = luaL_optnumber(L, -1, 0);
        c->max_result = max_result > 0 ? (size_t)max_result : 0;
        lua_pop(L, 5);
    } else {
        c->reconnect_max_ms = 5000;
    }
    if ((c->conninfo = strdup(conninfo)) == NULL || (c->timer = malloc(sizeof *c->timer)) == NULL)
        return luaL_error(L, "postgres: out of memory");
    uv_timer_init(rill_loop(), c->timer);
    c->timer->data = c;
    read_conninfo(c);
    char err[512];
    if (start_connect(c, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "postgres: %s", err);
        return 2;
    }
    anchor(c, L, -1);
    c->opener = t;
    return rill_task_wait(L, t, open_cancel, c);
}

int rill_pg_open(lua_State *L) {
    static const luaL_Reg methods[] = {{"batch", l_batch},
                                       {"close", l_close},
                                       {"on_notify", l_on_notify},
                                       {"connected", l_connected},
                                       {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"open", l_open}, {NULL, NULL}};
    rill_lua_metatable(L, CONN_MT, methods);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    lua_pushinteger(L, PQlibVersion());
    lua_setfield(L, -2, "libpq_version");
    return 1;
}
