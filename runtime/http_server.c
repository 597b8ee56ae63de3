/*
 * http_server.c: the HTTP/1.1 server webhooks arrive on. It owns listening
 * sockets, connections, parsing (http_parser), the listener's limits and
 * writing responses. It knows nothing of routes: each complete request goes
 * to one Lua dispatch function as (req, method, path, query, headers, body),
 * which answers, now or later, with req:respond(status, body, headers).
 * A connection handles one request at a time; pipelined bytes wait in a
 * buffer, and the next request is parsed from the loop, never from inside
 * the answer to the one before it. What a limit refuses is counted per
 * reason (server:stats()); Lua logs and exports the counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "buf.h"
#include "http_framing.h"
#include "task.h"

#define SERVER_MT "rill.http_server"
#define REQUEST_MT "rill.http_request"
/* Time the backlog (requests pipelined behind the one a read brought) may
 * take in one loop turn: it is served round robin, one request per
 * connection at a time, and a request that just arrived on another
 * connection waits at most this long behind it. */
#define BACKLOG_NS_PER_TURN 1000000
/* Time the reads of one loop turn may take parsing and dispatching the
 * requests they brought: past it, a read's request goes to the backlog (to
 * be served next turn) instead, so that a turn where hundreds of clients'
 * requests landed at once does not hold every client for all of them. */
#define READS_NS_PER_TURN 2000000
/* Connections the kernel queues before rill accepts them (capped by
 * net.core.somaxconn): a burst larger than this loses SYNs, and their
 * clients wait a second to retry. */
#define LISTEN_BACKLOG 4096
/* After accept() ran out of descriptors, accepting resumes after this. */
#define ACCEPT_RETRY_MS 100
/* A connection closed after an answer (an error, Connection: close) reads
 * and discards what the client still sends, for at most this long, so that
 * the answer is not lost to a reset (nginx's lingering close). */
#define LINGER_MS 2000
/* The Retry-After of a 503 the listener answers itself (too many
 * connections, too many bodies in flight, a drain): what holds the room
 * goes in seconds, a request being received lasts at most request_timeout. */
#define BUSY_RETRY_AFTER "Retry-After: 2\r\n"

/* Why the listener refused or cut something; the names are the metric's
 * label values (rill_http_refused_total{reason=...}). */
enum refusal {
    REFUSED_MAX_CONNECTIONS,
    REFUSED_DESCRIPTORS,
    REFUSED_MAX_HEADER_SIZE,
    REFUSED_MAX_HEADERS,
    REFUSED_MAX_URL,
    REFUSED_MAX_BODY,
    REFUSED_MAX_BODIES_IN_FLIGHT,
    REFUSED_WRITE_BACKLOG,
    REFUSED_MAX_WRITE_BACKLOG_TOTAL,
    REFUSED_REQUEST_TIMEOUT,
    REFUSED_KEEPALIVE_TIMEOUT,
    REFUSED_MAX_REQUESTS,
    REFUSED_BAD_REQUEST,
    REFUSED_COUNT
};

static const char *const refusal_names[REFUSED_COUNT] = {
    "max_connections",      "descriptors",       "max_header_size",
    "max_headers",          "max_url",           "max_body",
    "max_bodies_in_flight", "write_backlog",     "max_write_backlog_total",
    "request_timeout",      "keepalive_timeout", "max_requests",
    "bad_request"};

/* The server outlives its listening socket: connections still open after
 * server:close() point at it, so it is freed when the last of its owners
 * (the listening handles, each connection, the Lua object) lets go. */
typedef struct conn conn;

typedef struct http_server {
    uv_poll_t poll;              /* the listening socket, accepted from by hand */
    uv_timer_t accept_timer;     /* resumes accepting after running out of descriptors */
    int fd;                      /* the listening socket, -1 when none */
    int dispatch_ref;            /* the Lua dispatch function */
    int error_ref;               /* on_error(message): where a failed dispatch is reported */
    int self_ref;                /* anchors the Lua object while listening */
    int refs;                    /* owners: handles (1), connections, the Lua object */
    int handles_open;            /* poll + accept_timer */
    size_t max_body;             /* bytes; larger bodies get 413 */
    size_t max_bodies_in_flight; /* bytes all connections may hold of requests (the budget) */
    size_t bodies_in_flight;     /* bytes they hold now: the sum of the connections' charged */
    size_t max_url;              /* bytes; longer URLs get 414 */
    size_t max_header_size;      /* bytes of request line and headers; 431 beyond */
    int max_headers;             /* header lines (trailers included); 431 beyond */
    int max_connections;         /* open connections; more are answered 503 */
    size_t max_write_backlog;    /* answer bytes queued on a connection before reading it pauses */
    size_t max_write_backlog_total; /* answer bytes queued on all of them before those pause */
    size_t max_pipeline;            /* received bytes not parsed yet before reading pauses */
    unsigned max_requests;          /* requests per connection; the last one closes it */
    uint64_t keepalive_ms;          /* idle connection lifetime */
    uint64_t request_ms;            /* time for one whole request: receiving and answering */
    int connections;                /* open connections (refused ones not counted) */
    size_t queued, queued_peak;     /* answer bytes waiting in write queues, now and at most */
    conn *idle_head, *idle_tail;    /* connections between requests, the longest idle first */
    int *reserve; /* descriptors held (on /dev/null) for when the process runs out */
    int reserve_n, reserve_want;
    unsigned char closing, accept_paused;
    double refused[REFUSED_COUNT]; /* counts, by reason */
    double deferred; /* reads whose request waited for the backlog (READS_NS_PER_TURN) */
    struct http_server *live_next; /* every server not freed yet, for the wind-down */
} http_server;

typedef struct server_ud {
    http_server *srv;
} server_ud;

typedef struct request request;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* request, idle or linger timeout, checked lazily (conn_expire_in) */
    uv_shutdown_t shutdown;
    uint64_t expires; /* loop time the connection times out at */
    uint64_t due;     /* loop time the timer fires at, when it is active */
    http_server *srv;
    http_parser parser;
    http_framing framing;     /* the strict check of the bytes the parser took */
    buf url, headers, body;   /* headers: name\0value\0 pairs, names lowercased */
    size_t path_at;           /* where the path starts in url: past an absolute URL's authority */
    size_t host_at, host_len; /* an absolute URL's authority in url (host_len 0: none) */
    buf out;                  /* the response being written, reused */
    int header_state;         /* 0 none, 1 in a name, 2 in a value */
    size_t value_at;          /* where the value being received starts in headers */
    int nheaders;             /* header lines of this request, trailers included */
    size_t header_bytes;      /* bytes of request line and header lines */
    buf pending;              /* received bytes; those before pending_off are parsed */
    size_t pending_off;
    size_t pending_moved; /* of the bytes being parsed from pending, those now in body */
    size_t body_charged;  /* bytes of the body being received: its share of the budget */
    size_t charged;       /* what this connection counts in srv->bodies_in_flight */
    request *req;         /* the request waiting for its response */
    int req_ref;          /* the registry's reference that keeps req alive meanwhile */
    int error_status;     /* a limit tripped while parsing: answer this and close */
    const char *error_reason;
    int error_kind;            /* the refusal counted for it */
    unsigned requests;         /* requests begun on this connection */
    int busy;                  /* parsing, dispatching or answering is on the stack: close later */
    int handles_open;          /* tcp + timer: freed when both have closed */
    unsigned char in_request;  /* between a request's first byte and its answer */
    unsigned char in_flight;   /* parsed and dispatched, not answered yet */
    unsigned char in_trailers; /* headers done: header lines now are chunked trailers */
    unsigned char head;        /* the request is a HEAD: its answer has no body */
    unsigned char http10;      /* the request is HTTP/1.0: its answer says whether it persists */
    unsigned char closing;     /* handles closing (or about to, once not busy) */
    unsigned char handles_closed; /* uv_close called */
    unsigned char lingering;      /* the last answer is written: discard input until EOF */
    unsigned char keep_alive, reading, backlogged, expect_continue, refuse_503;
    unsigned char continue_due;    /* a 100 Continue to send once the head passed http_framing */
    unsigned char idle;            /* on the server's idle list */
    unsigned char parsing_pending; /* the parse in progress reads from pending */
    unsigned char peer_eof;        /* the client shut its side: answer what it sent, then close */
    conn *idle_prev, *idle_next;
    conn *live_prev, *live_next;       /* every connection not freed yet, for the wind-down */
    conn *backlog_prev, *backlog_next; /* in the backlog: buffered requests wait their turn */
    unsigned char in_backlog;
    char peer[INET6_ADDRSTRLEN]; /* the client's address, once asked ("" until then) */
};

struct request {
    conn *c; /* NULL once answered or once the connection is gone */
};

static http_parser_settings parser_settings;
static uv_buf_t read_buffer; /* shared: data is copied before the next read */

/* ---- Big buffers ----
 * A connection's body and pipeline buffers grow to max_body and
 * max_pipeline (a MiB by default) while a request is received or requests
 * wait, and are of no use after: a buffer past BIG_BUF is given back as
 * soon as its bytes are consumed, so that an idle keep-alive connection
 * holds no more than BIG_BUF per buffer. Given back, it is kept as one of
 * SPARE_BUFS spares (the largest ones), which the next buffer to grow past
 * BIG_BUF takes instead of growing by realloc: a stream of large bodies
 * does not map, fault in and unmap fresh memory for each (under ASan each
 * large allocation is an mmap, its shadow cleared and poisoned). The
 * spares are process-wide: SPARE_BUFS buffers of at most SPARE_MAX,
 * whatever the number of connections. */
/* The fuzz build lowers it, so that its small inputs reach the spares. */
#ifndef RILL_HTTP_BIG_BUF
#define RILL_HTTP_BIG_BUF (64 * 1024)
#endif
#define BIG_BUF RILL_HTTP_BIG_BUF
#define SPARE_BUFS 2
/* A buffer larger than this is freed, not kept: with max_body raised to tens
 * of MiB, one large body would otherwise stay resident until exit. */
#define SPARE_MAX (4 * 1024 * 1024)
static buf spare_bufs[SPARE_BUFS];
static int spares_off; /* the wind-down freed them: a buffer given back is freed */

/* Under ASan a spare is poisoned while parked: a pointer still into it
 * (the connection that gave it back) is caught as a use after free. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RILL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(RILL_ASAN)
#define RILL_ASAN 1
#endif
#ifdef RILL_ASAN
#include <sanitizer/asan_interface.h>
#define SPARE_PARK(b) ASAN_POISON_MEMORY_REGION((b)->data, (b)->cap)
#define SPARE_TAKE(b) ASAN_UNPOISON_MEMORY_REGION((b)->data, (b)->cap)
#else
#define SPARE_PARK(b) ((void)(b))
#define SPARE_TAKE(b) ((void)(b))
#endif

static void spare_free(buf *spare) {
    SPARE_TAKE(spare);
    buf_free(spare);
}

static void big_buf_release(buf *b) {
    if (b->cap <= BIG_BUF)
        return; /* small: kept, the next request reuses it */
    b->len = 0;
    buf *slot = NULL;
    for (int i = 0; i < SPARE_BUFS; i++)
        if (slot == NULL || spare_bufs[i].cap < slot->cap)
            slot = &spare_bufs[i];
    if (!spares_off && slot->cap < b->cap && b->cap <= SPARE_MAX) {
        spare_free(slot);
        *slot = *b;
        SPARE_PARK(slot);
    } else {
        buf_free(b);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}

/* buf_append, where a buffer growing past BIG_BUF first takes a spare
 * large enough, if there is one. */
static int big_buf_append(buf *b, const char *data, size_t len) {
    size_t need = b->len + len + 1;
    if (need > b->cap && need > BIG_BUF) {
        for (int i = 0; i < SPARE_BUFS; i++) {
            buf *spare = &spare_bufs[i];
            if (spare->cap >= need) {
                SPARE_TAKE(spare);
                if (b->len > 0)
                    memcpy(spare->data, b->data, b->len);
                spare->len = b->len;
                free(b->data);
                *b = *spare;
                spare->data = NULL;
                spare->len = spare->cap = 0;
                break;
            }
        }
    }
    return buf_append(b, data, len);
}

/* ---- Small helpers ---- */

static const char *status_text(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 501:
        return "Not Implemented";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* The Date header, formatted at most once a second. */
static const char *http_date(void) {
    static char date[64];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return date;
}

/* ---- Server lifetime ---- */

/* What is still allocated at exit: main's wind-down closes every handle,
 * and these are closed first with their own callbacks so that they free
 * what they own (rill_http_server_wind_down). */
static http_server *live_servers;
static conn *live_conns;

static void server_unref(http_server *srv) {
    if (--srv->refs > 0)
        return;
    for (http_server **p = &live_servers; *p; p = &(*p)->live_next)
        if (*p == srv) {
            *p = srv->live_next;
            break;
        }
    free(srv);
}

/* ---- Connection lifecycle ---- */

/* The idle list: connections with no request begun, oldest first. At
 * max_connections the oldest of them makes room for a new connection
 * (nginx reuses its keep-alive connections the same way), so that idle
 * sockets cannot lock real clients out. */
static void idle_remove(conn *c) {
    if (!c->idle)
        return;
    http_server *srv = c->srv;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        srv->idle_head = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    else
        srv->idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    c->idle = 0;
}

static void idle_add(conn *c) {
    http_server *srv = c->srv;
    if (c->idle || c->closing || c->lingering || c->refuse_503)
        return;
    c->idle = 1;
    c->idle_prev = srv->idle_tail;
    c->idle_next = NULL;
    if (srv->idle_tail)
        srv->idle_tail->idle_next = c;
    else
        srv->idle_head = c;
    srv->idle_tail = c;
}

/* ---- The bodies' budget ----
 * Bodies are C memory outside process_memory_limit, and max_body bounds
 * only one. max_bodies_in_flight bounds what all the connections of a
 * listener hold of requests at once: the bodies being received, as their
 * bytes arrive (a declared Content-Length takes nothing before: were it
 * reserved at the headers, a few header lines with no body behind them
 * would hold the whole budget until request_timeout), and the received
 * bytes buffered behind a request in flight and not parsed yet. conn_charge
 * is the one place the total moves: it sets a connection's share to what it
 * holds now, 0 once it is closing, so the total is the sum of the shares and
 * cannot drift. A body parsed from the buffered bytes moves them from one
 * share to the other (pending_moved): they are counted once, and need no new
 * room (they were charged when they were buffered). The parsed bytes left
 * before pending_off until the buffer is compacted are not counted: they are
 * never more than the unparsed rest (conn_drain compacts past half). */

static void conn_charge(conn *c) {
    size_t now =
        c->closing ? 0 : c->body_charged + c->pending.len - c->pending_off - c->pending_moved;
    c->srv->bodies_in_flight = c->srv->bodies_in_flight - c->charged + now;
    c->charged = now;
}

/* Whether need more bytes fit in the listener's budget. */
static int budget_fits(const http_server *srv, size_t need) {
    return srv->bodies_in_flight <= srv->max_bodies_in_flight &&
           need <= srv->max_bodies_in_flight - srv->bodies_in_flight;
}

/* The body is in Lua (copied), refused or abandoned: its buffer and its
 * share of the budget go. */
static void conn_body_done(conn *c) {
    big_buf_release(&c->body);
    c->body_charged = 0;
    conn_charge(c);
}

/* ---- The backlog ----
 * Connections whose buffered requests wait for their turn, oldest first.
 * A read serves one request at once; what was pipelined behind it, and
 * what follows an answer, is served from here, from the loop (habit 10:
 * never from inside the answer to the request before). */
static conn *backlog_head, *backlog_tail;
static uv_idle_t backlog_idle;
static int backlog_idle_init;

/* The reads' clock (READS_NS_PER_TURN): the first read of a turn starts it,
 * the check phase, right after the poll phase, stops it. */
static uv_check_t reads_check;
static int reads_check_init, reads_clock_on;
static uint64_t reads_clock_start;

static void on_reads_check(uv_check_t *h) {
    (void)h;
    reads_clock_on = 0;
}

static int reads_turn_spent(void) {
    if (!reads_check_init || uv_is_closing((uv_handle_t *)&reads_check)) {
        /* first use, or closed by a wind-down's walk (tests run several loops' worth) */
        uv_check_init(rill_loop(), &reads_check);
        uv_unref((uv_handle_t *)&reads_check);
        uv_check_start(&reads_check, on_reads_check);
        reads_check_init = 1;
        reads_clock_on = 0;
    }
    uint64_t now = uv_hrtime();
    if (!reads_clock_on) {
        reads_clock_on = 1;
        reads_clock_start = now;
        return 0;
    }
    return now - reads_clock_start > READS_NS_PER_TURN;
}

static void backlog_remove(conn *c) {
    if (!c->in_backlog)
        return;
    if (c->backlog_prev)
        c->backlog_prev->backlog_next = c->backlog_next;
    else
        backlog_head = c->backlog_next;
    if (c->backlog_next)
        c->backlog_next->backlog_prev = c->backlog_prev;
    else
        backlog_tail = c->backlog_prev;
    c->backlog_prev = c->backlog_next = NULL;
    c->in_backlog = 0;
}

static void conn_handle_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    buf_free(&c->url);
    buf_free(&c->headers);
    big_buf_release(&c->body);
    big_buf_release(&c->pending);
    buf_free(&c->body);
    buf_free(&c->pending);
    buf_free(&c->out);
    if (c->live_prev)
        c->live_prev->live_next = c->live_next;
    else
        live_conns = c->live_next;
    if (c->live_next)
        c->live_next->live_prev = c->live_prev;
    http_server *srv = c->srv;
    if (!srv->closing && srv->reserve_n < srv->reserve_want) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the descriptor just freed */
        if (fd >= 0)
            srv->reserve[srv->reserve_n++] = fd;
    }
    server_unref(srv);
    free(c);
}

/* Detaches the request waiting for its answer: a late req:respond() becomes
 * a no-op, and the registry lets the request go. It held it while c->req
 * pointed at it: requests have no __gc, and a request that Lua dropped
 * unanswered (an error on an answer path) was collected, and its memory
 * written at request_timeout. L: the running thread (any thread's registry
 * is the same). */
static void conn_detach_req(lua_State *L, conn *c) {
    if (c->req == NULL)
        return;
    c->req->c = NULL;
    c->req = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, c->req_ref);
    c->req_ref = LUA_NOREF;
}

static void conn_close_handles(conn *c) {
    c->handles_closed = 1;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* Marks the connection closing: its request (if any) is detached, nothing
 * more is parsed, dispatched or written. The handles are closed at once
 * when nothing of this connection is on the stack, else by conn_leave. */
static void conn_close(conn *c) {
    if (c->closing)
        return;
    idle_remove(c);
    backlog_remove(c);
    c->closing = 1;
    conn_charge(c); /* its buffers are freed with it: they count no more */
    if (!c->refuse_503)
        c->srv->connections--; /* counted out now: a connection it made room for counts in */
    conn_detach_req(rill_task_main_state(), c); /* a late req:respond() becomes a no-op */
    if (c->busy == 0)
        conn_close_handles(c);
}

/* Brackets every piece of work on a connection that may fail halfway
 * (parsing, dispatching, answering): a close asked for inside is done at
 * the end, never under the feet of the parser or the dispatch. */
static void conn_enter(conn *c) {
    c->busy++;
}

/* A lingering connection takes no more requests: what it holds of one (a
 * body cut by request_timeout, requests pipelined behind its last answer)
 * goes now, with its share of the budget, not when the client's EOF or
 * LINGER_MS closes it. Only once no parse of it is on the stack. */
static void conn_drop_requests(conn *c) {
    big_buf_release(&c->body);
    buf_free(&c->body);
    c->body_charged = 0;
    c->pending.len = c->pending_off = c->pending_moved = 0;
    big_buf_release(&c->pending);
    buf_free(&c->pending);
    conn_charge(c);
}

static void conn_leave(conn *c) {
    if (--c->busy > 0)
        return;
    if (c->lingering && !c->closing)
        conn_drop_requests(c);
    if (c->closing && !c->handles_closed)
        conn_close_handles(c);
}

static void on_timeout(uv_timer_t *timer);

/* The timer is armed at most once per quiet period: moving the expiry later
 * (every request does) only writes c->expires, and the timer, when it fires
 * early, re-arms itself for the rest. */
static void conn_expire_in(conn *c, uint64_t ms) {
    uint64_t now = uv_now(c->timer.loop);
    c->expires = now + ms;
    if (!uv_is_active((uv_handle_t *)&c->timer) || c->expires < c->due) {
        c->due = c->expires;
        uv_timer_start(&c->timer, on_timeout, ms, 0);
    }
}

static void conn_reset_request(conn *c) {
    c->url.len = c->headers.len = c->body.len = 0;
    c->body_charged = 0; /* 0 already: the last body was done with at its dispatch */
    c->header_state = 0;
    c->nheaders = 0;
    c->header_bytes = 0;
    c->expect_continue = 0;
    c->continue_due = 0;
    c->in_trailers = 0;
    c->head = 0;
}

static void conn_refuse_count(conn *c, enum refusal why) {
    c->srv->refused[why]++;
}

/* ---- Reading control ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);
static void conn_drain(conn *c, const char *fresh, size_t fresh_len);

static size_t conn_unparsed(const conn *c) {
    return c->pending.len - c->pending_off;
}

/* Reads while there is room: not closing, answers not piling up unread
 * (backpressure), pipelined bytes under max_pipeline, and, when what it
 * reads would be buffered (a request in flight or waiting its turn), the
 * listener's bodies under max_bodies_in_flight: such a connection reads
 * again once its own buffered requests are handled, whatever the others
 * do. A lingering connection reads (and discards) until the client's EOF. */
static int conn_buffering(const conn *c) {
    return c->in_flight || c->in_backlog || conn_unparsed(c) > 0;
}

static void conn_update_reading(conn *c) {
    int held = conn_buffering(c) && !budget_fits(c->srv, 1);
    int want =
        !c->closing && !c->peer_eof &&
        (c->lingering || (!c->backlogged && !held && conn_unparsed(c) < c->srv->max_pipeline));
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        if (held && !c->closing && !c->lingering)
            conn_refuse_count(c, REFUSED_MAX_BODIES_IN_FLIGHT);
    }
}

/* ---- The backlog (continued) ---- */

/* One request from each connection in turn until the turn's time is
 * spent; the rest wait for the next turn, where they come first. */
static void backlog_run(uv_idle_t *idle) {
    uint64_t start = uv_hrtime();
    while (backlog_head && uv_hrtime() - start < BACKLOG_NS_PER_TURN) {
        conn *c = backlog_head;
        backlog_remove(c);
        conn_drain(c, NULL, 0); /* back at the tail when more is buffered */
    }
    if (backlog_head == NULL)
        uv_idle_stop(idle);
}

static void conn_schedule(conn *c) {
    if (c->closing || c->lingering || c->in_backlog)
        return;
    if (!backlog_idle_init || uv_is_closing((uv_handle_t *)&backlog_idle)) {
        /* closed by a wind-down's walk (tests run several loops' worth) */
        uv_idle_init(rill_loop(), &backlog_idle);
        uv_unref((uv_handle_t *)&backlog_idle); /* the connections hold the loop, not this */
        backlog_idle_init = 1;
    }
    c->in_backlog = 1;
    c->backlog_next = NULL;
    c->backlog_prev = backlog_tail;
    if (backlog_tail)
        backlog_tail->backlog_next = c;
    else
        backlog_head = c;
    backlog_tail = c;
    uv_idle_start(&backlog_idle, backlog_run);
}

/* ---- Writing ---- */

typedef struct write_req {
    uv_write_t req;
    conn *c;
    size_t len;
    char data[];
} write_req;

/* Whether c's answers wait past its own share (over `own_limit`), or while
 * the listener's total is over max_write_backlog_total: then only the
 * connections with answers of their own waiting pause, and each resumes
 * when its queue is empty, so that clients that read go on. */
static enum refusal conn_write_held(conn *c, size_t own_limit) {
    size_t own = uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
    if (own > own_limit)
        return REFUSED_WRITE_BACKLOG;
    if (own > 0 && c->srv->queued > c->srv->max_write_backlog_total)
        return REFUSED_MAX_WRITE_BACKLOG_TOTAL;
    return REFUSED_COUNT;
}

static void on_written(uv_write_t *w, int status) {
    write_req *wr = (write_req *)w;
    conn *c = wr->c;
    c->srv->queued -= wr->len;
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->backlogged && !c->closing &&
        conn_write_held(c, c->srv->max_write_backlog / 2) == REFUSED_COUNT) {
        c->backlogged = 0; /* the client reads again: so do we */
        conn_update_reading(c);
        conn_schedule(c);
    }
}

/* The answers are sent: a client that shut its side already sends no EOF
 * to wait for. */
static void on_shutdown(uv_shutdown_t *s, int status) {
    conn *c = s->data;
    if (status < 0 || c->peer_eof)
        conn_close(c);
}

/* The last answer is queued: the write side is shut once it is sent, and
 * what the client still sends is read and dropped until its EOF (or
 * LINGER_MS), so that a reset does not destroy the answer in flight. */
static void conn_linger(conn *c) {
    if (c->closing || c->lingering)
        return;
    idle_remove(c);
    c->lingering = 1;
    conn_detach_req(rill_task_main_state(), c);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_expire_in(c, LINGER_MS);
    conn_update_reading(c);
}

/* Writes all of data, queueing what the socket does not take at once. A
 * failure marks the connection closing; the caller's stack unwinds first. */
static void conn_write(conn *c, const char *data, size_t len) {
    if (c->closing || c->lingering)
        return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            conn_close(c);
            return;
        }
    }
    if ((size_t)n == len)
        return;
    size_t rest = len - (size_t)n;
    write_req *wr = malloc(sizeof *wr + rest);
    if (wr == NULL) {
        conn_close(c);
        return;
    }
    memcpy(wr->data, data + n, rest);
    wr->c = c;
    wr->len = rest;
    b = uv_buf_init(wr->data, (unsigned)rest);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(wr);
        conn_close(c);
        return;
    }
    c->srv->queued += rest;
    if (c->srv->queued > c->srv->queued_peak)
        c->srv->queued_peak = c->srv->queued;
    enum refusal held =
        c->backlogged ? REFUSED_COUNT : conn_write_held(c, c->srv->max_write_backlog);
    if (held != REFUSED_COUNT) {
        /* the client does not read its answers: read no more of its requests */
        c->backlogged = 1;
        conn_refuse_count(c, held);
        conn_update_reading(c);
    }
}

static int buf_append_str(buf *b, const char *s) {
    return buf_append(b, s, strlen(s));
}

static int buf_append_uint(buf *b, size_t v) {
    char digits[24];
    int i = sizeof digits;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, digits + i, sizeof digits - (size_t)i);
}

/* Formats and writes one response, in the connection's reused buffer.
 * extra_headers: "Name: value\r\n" lines. A HEAD request's answer has the
 * Content-Length of the body but not the body. close_after: the connection
 * lingers and closes once it is written. An HTTP/1.0 connection persists
 * only if the answer says so (RFC 9112 9.3): without the header its client
 * waits for the close. */
static void conn_respond(conn *c, int status, const char *content_type, const char *extra_headers,
                         size_t extra_len, const char *body, size_t body_len, int close_after) {
    /* a client that shut its side gets its last answer with the close */
    int keep = c->keep_alive && !close_after && !(c->peer_eof && conn_unparsed(c) == 0);
    /* 204 and 304 have no body, whatever the flow gave (RFC 9110 15.3.5,
     * 15.4.5): a client reads none, and bytes sent after one on a kept
     * connection would be read as the next answer. Nor a Content-Length,
     * which a 204 must not have. */
    int bodiless = status == 204 || status == 304;
    buf *out = &c->out;
    out->len = 0;
    if (buf_append(out, "HTTP/1.1 ", 9) || buf_append_uint(out, (size_t)status) ||
        buf_append(out, " ", 1) || buf_append_str(out, status_text(status)) ||
        buf_append(out, "\r\nContent-Type: ", 16) || buf_append_str(out, content_type) ||
        (!bodiless &&
         (buf_append(out, "\r\nContent-Length: ", 18) || buf_append_uint(out, body_len))) ||
        buf_append(out, "\r\nDate: ", 8) || buf_append_str(out, http_date()) ||
        buf_append(out, "\r\n", 2) || (!keep && buf_append_str(out, "Connection: close\r\n")) ||
        (keep && c->http10 && buf_append_str(out, "Connection: keep-alive\r\n")) ||
        buf_append(out, extra_headers, extra_len) || buf_append(out, "\r\n", 2) ||
        (!c->head && !bodiless && buf_append(out, body, body_len))) {
        conn_close(c);
        return;
    }
    conn_write(c, out->data, out->len);
    /* (conn_write copied what the socket did not take: a large answer's
     * buffer is not kept by an idle connection) */
    big_buf_release(out);
    c->head = 0; /* answered: an error about the next request's bytes has its body */
    if (!keep)
        conn_linger(c);
}

static void conn_respond_error(conn *c, int status, const char *reason) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", reason);
    const char *extra = status == 503 ? BUSY_RETRY_AFTER : "";
    conn_respond(c, status, "application/json", extra, strlen(extra), body, (size_t)n, 1);
}

/* ---- Parsing ---- */

/* A limit tripped inside a parser callback: recorded, answered by
 * conn_parse once the parser has returned. */
static int parse_refuse(conn *c, int status, const char *reason, enum refusal why) {
    c->error_status = status;
    c->error_reason = reason;
    c->error_kind = (int)why;
    return -1;
}

/* The pair of the headers buffer (name\0value\0 ...) that starts at *at:
 * 1 and name and value, with *at moved past it, or 0 at the end. Each
 * string is bounded by the buffer, whatever bytes a client put in it. */
static int header_next(const buf *b, size_t *at, const char **name, const char **value) {
    if (b->data == NULL || *at >= b->len)
        return 0;
    const char *end = b->data + b->len;
    const char *n = b->data + *at;
    const char *n_end = memchr(n, '\0', (size_t)(end - n));
    if (n_end == NULL)
        return 0;
    const char *v_end = memchr(n_end + 1, '\0', (size_t)(end - n_end - 1));
    if (v_end == NULL)
        return 0;
    *name = n;
    *value = n_end + 1;
    *at = (size_t)(v_end + 1 - b->data);
    return 1;
}

#define BODIES_REFUSED                                                                             \
    "the listener holds too many request bodies being received (max_bodies_in_flight): retry "     \
    "later"

static int count_header_bytes(conn *c, size_t len) {
    c->header_bytes += len;
    if (c->header_bytes > c->srv->max_header_size)
        return parse_refuse(c, 431, "request headers are too large (max_header_size)",
                            REFUSED_MAX_HEADER_SIZE);
    return 0;
}

static int on_message_begin(http_parser *p) {
    conn *c = p->data;
    conn_reset_request(c);
    c->in_request = 1;
    idle_remove(c);
    c->requests++;
    /* (a connection over max_connections keeps the short time it was given:
     * a request_timeout for each let thousands hold their descriptors) */
    if (!c->refuse_503)
        conn_expire_in(c, c->srv->request_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (c->url.len + len > c->srv->max_url)
        return parse_refuse(c, 414, "URL too long (max_url)", REFUSED_MAX_URL);
    if (count_header_bytes(c, len))
        return -1;
    return buf_append(&c->url, at, len);
}

/* Ends the value being received in headers. The parser keeps the
 * whitespace that trails a value, which is not part of it (RFC 9110 5.5):
 * "abc \t" would reach the flow, and "100-continue " be missed. */
static int end_value(conn *c) {
    while (c->headers.len > c->value_at && (c->headers.data[c->headers.len - 1] == ' ' ||
                                            c->headers.data[c->headers.len - 1] == '\t'))
        c->headers.len--;
    return buf_append(&c->headers, "", 1);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (count_header_bytes(c, len))
        return -1;
    if (c->header_state != 1) {
        if (c->header_state == 2 && !c->in_trailers && end_value(c))
            return -1;
        c->header_state = 1;
        if (++c->nheaders > c->srv->max_headers)
            return parse_refuse(c, 431, "too many request headers (max_headers)",
                                REFUSED_MAX_HEADERS);
    }
    if (c->in_trailers)
        return 0; /* chunked trailers are dropped: never merged into the headers */
    /* http_parser lets "Transfer-Encoding : chunked" through and acts on it,
     * while proxies may not: a request body one reads as another request. */
    if (memchr(at, ' ', len))
        return parse_refuse(c, 400, "whitespace between a header name and its colon",
                            REFUSED_BAD_REQUEST);
    size_t start = c->headers.len;
    if (buf_append(&c->headers, at, len))
        return -1;
    for (size_t i = start; i < c->headers.len; i++)
        if (c->headers.data[i] >= 'A' && c->headers.data[i] <= 'Z')
            c->headers.data[i] += 'a' - 'A';
    return 0;
}

/* Whether s[0..len) can be a URI's host and port (RFC 3986 3.2.2): a
 * reg-name or IPv4 (unreserved, %-escapes, sub-delims), an IP literal in
 * brackets, a port after ':'. No userinfo ('@'), no whitespace, '/', '\\',
 * controls or bytes past ASCII: what a flow that puts the host in a URL
 * would be fooled by. Empty is valid (RFC 9112 3.2). */
static int valid_host(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr("-._~%!$&'()*+,;=:[]", ch))))
            return 0;
    }
    return 1;
}

/* What RFC 9112 asks a server to refuse, that would otherwise let a proxy
 * in front of rill and rill read a request differently: a version other
 * than 1.x, an HTTP/1.1 request without exactly one Host (1.0: at most one),
 * a Host whose value is not a host. hosts: the Host headers counted, host:
 * the last one's value. Sets the refusal and returns -1, or returns 0. */
static int check_version_and_host(conn *c, const http_parser *p, int hosts, const char *host) {
    if (p->http_major != 1)
        return parse_refuse(c, 505, "HTTP version not supported: HTTP/1.0 and HTTP/1.1 only",
                            REFUSED_BAD_REQUEST);
    if (hosts > 1 || (hosts == 0 && p->http_minor >= 1))
        return parse_refuse(c, 400, "an HTTP/1.1 request needs one Host header",
                            REFUSED_BAD_REQUEST);
    if (host && !valid_host(host, strlen(host)))
        return parse_refuse(c, 400, "the Host header is not a host[:port]", REFUSED_BAD_REQUEST);
    return 0;
}

/* Whether a header value is token, case aside, between optional whitespace. */
static int value_is(const char *v, const char *token) {
    size_t len = strlen(v), n = strlen(token);
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len == n && strncasecmp(v, token, n) == 0;
}

/* Transfer-Encoding (RFC 9112 6.1): rill knows one coding, chunked, applied
 * once. Another coding ("gzip, chunked") was read as chunked and its coded
 * bytes handed to the flow as the body; chunked twice, on one line or two,
 * as once: what a proxy in front may read another way. Refused: 501 for a
 * coding rill does not implement, 400 for more than one header line.
 * tes: the Transfer-Encoding lines counted, te: the last one's value. */
static int check_transfer_encoding(conn *c, int tes, const char *te) {
    if (tes > 1)
        return parse_refuse(c, 400, "more than one Transfer-Encoding header", REFUSED_BAD_REQUEST);
    if (tes == 1 && !value_is(te, "chunked"))
        return parse_refuse(c, 501, "Transfer-Encoding not implemented: chunked only, once",
                            REFUSED_BAD_REQUEST);
    return 0;
}

/* The request target (RFC 9112 3.2): a path ("/p?q"), or an absolute URL
 * ("http://host/p?q"), which proxies send and a server must accept, taking
 * its host over the Host header's. What no route can take (a CONNECT's
 * "host:port", OPTIONS' "*", another scheme) is refused with 400. Sets
 * path_at and host_at/host_len, or the refusal and returns -1. */
static int parse_target(conn *c) {
    const char *url = c->url.data ? c->url.data : "/";
    c->path_at = c->host_len = 0;
    /* a client never sends a fragment (RFC 9112 3.2): "/p#x" was routed as
     * the path "/p#x", "?a=1#x" gave a the value "1#x" */
    if (strchr(url, '#'))
        return parse_refuse(c, 400, "a fragment (#) in the request target", REFUSED_BAD_REQUEST);
    /* the lenient parser lets a tab or a form feed into the target: a
     * proxy that splits the request line on it reads another path */
    for (const char *u = url; *u; u++)
        if ((unsigned char)*u <= 0x20 || *u == 0x7f)
            return parse_refuse(c, 400, "a space or a control byte in the request target",
                                REFUSED_BAD_REQUEST);
    if (url[0] == '/')
        return 0;
    size_t scheme = strncasecmp(url, "http://", 7) == 0    ? 7
                    : strncasecmp(url, "https://", 8) == 0 ? 8
                                                           : 0;
    if (scheme == 0)
        return parse_refuse(c, 400, "the request target is neither a path nor an http(s) URL",
                            REFUSED_BAD_REQUEST);
    c->host_at = scheme;
    c->host_len = strcspn(url + scheme, "/?#");
    if (!valid_host(url + scheme, c->host_len))
        return parse_refuse(c, 400, "the request target's host is not a host[:port]",
                            REFUSED_BAD_REQUEST);
    c->path_at = scheme + c->host_len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (count_header_bytes(c, len))
        return -1;
    if (c->header_state != 2) {
        if (!c->in_trailers && buf_append(&c->headers, "", 1)) /* end the name */
            return -1;
        c->header_state = 2;
        c->value_at = c->headers.len;
    }
    return c->in_trailers ? 0 : buf_append(&c->headers, at, len);
}

static int on_headers_complete(http_parser *p) {
    conn *c = p->data;
    if (c->header_state == 2 && end_value(c))
        return -1;
    c->header_state = 0;
    c->in_trailers = 1;
    c->head = p->method == HTTP_HEAD;
    c->http10 = p->http_minor == 0;
    /* One walk of the headers: the Host and Transfer-Encoding headers, and "Expect: 100-continue",
     * answered below so that clients like curl send the body. */
    int hosts = 0, tes = 0, not_utf8 = 0;
    const char *h, *v, *te = NULL, *host = NULL;
    for (size_t at = 0; header_next(&c->headers, &at, &h, &v);) {
        /* RFC 9110 lets a value carry bytes over 0x7f (obs-text) without
         * saying what they mean; flows read values as text, the store keeps
         * them in JSON, which Postgres refuses unless they are UTF-8: an
         * async webhook would get 503 and its sender retry for ever. */
        not_utf8 = not_utf8 || !rill_utf8_valid(v, strlen(v));
        if (strcmp(h, "host") == 0)
            hosts++, host = v;
        else if (strcmp(h, "transfer-encoding") == 0)
            tes++, te = v;
        else if (strcmp(h, "expect") == 0 && strcasecmp(v, "100-continue") == 0)
            c->expect_continue = 1;
    }
    if (check_version_and_host(c, p, hosts, host) || check_transfer_encoding(c, tes, te) ||
        parse_target(c))
        return -1;
    /* over max_connections: answered now, its body not read (it took a
     * share of max_bodies_in_flight that clients within the limit need) */
    if (c->refuse_503)
        return parse_refuse(c, 503, "too many connections (max_connections): retry later",
                            REFUSED_MAX_CONNECTIONS);
    /* http_parser takes what follows a CONNECT's head for a tunnel's bytes
     * and leaves them to rill, which would parse them as the next request:
     * the body a proxy forwards with it. rill serves no tunnels. */
    if (p->method == HTTP_CONNECT)
        return parse_refuse(c, 501, "CONNECT is not implemented", REFUSED_BAD_REQUEST);
    /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
     * framing (a 1.0 proxy would not have decoded it) */
    if (tes && p->http_minor == 0)
        return parse_refuse(c, 400, "Transfer-Encoding in an HTTP/1.0 request",
                            REFUSED_BAD_REQUEST);
    if (not_utf8)
        return parse_refuse(c, 400, "a header value is not UTF-8", REFUSED_BAD_REQUEST);
    if (p->content_length != ULLONG_MAX && p->content_length > c->srv->max_body)
        return parse_refuse(c, 413, "request body is larger than the limit (max_body)",
                            REFUSED_MAX_BODY);
    /* Only to an HTTP/1.1 client (a 1.0 one takes a 1xx for the answer:
     * RFC 9110 10.1.1 says to ignore its expectation) whose body is to come. */
    int body_follows =
        (p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX && p->content_length > 0);
    http_framing_body(&c->framing, (p->flags & F_CHUNKED) != 0,
                      p->content_length == ULLONG_MAX ? 0 : p->content_length);
    /* (sent by conn_parse once http_framing has passed the head: a head it
     * refuses gets its 400 alone) */
    c->continue_due = c->expect_continue && p->http_minor >= 1 && body_follows && !c->refuse_503 &&
                      !c->srv->closing;
    return 0;
}

/* Bytes parsed from pending were charged when they were buffered: they
 * move to the body's share and need no new room. Fresh bytes need it. */
static int on_body(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    size_t moved = c->parsing_pending ? len : 0;
    if (c->body.len + len > c->srv->max_body)
        return parse_refuse(c, 413, "request body is larger than the limit (max_body)",
                            REFUSED_MAX_BODY);
    if (moved < len && !budget_fits(c->srv, len - moved))
        return parse_refuse(c, 503, BODIES_REFUSED, REFUSED_MAX_BODIES_IN_FLIGHT);
    c->pending_moved += moved;
    c->body_charged = c->body.len + len;
    conn_charge(c);
    return big_buf_append(&c->body, at, len);
}

static int on_message_complete(http_parser *p) {
    conn *c = p->data;
    c->in_flight = 1;
    c->keep_alive = (unsigned char)http_should_keep_alive(p);
    if (c->requests >= c->srv->max_requests) {
        c->keep_alive = 0; /* the last request this connection may carry */
        conn_refuse_count(c, REFUSED_MAX_REQUESTS);
    }
    http_parser_pause(p, 1);
    return 0;
}

/* Hands the parsed request to Lua. Never on a closing connection. */
static void conn_dispatch(conn *c) {
    lua_State *L = rill_task_main_state();
    http_server *srv = c->srv;
    if (c->closing || c->lingering)
        return;
    if (srv->closing || c->refuse_503) {
        /* a drain: a connection kept alive from before brings no new request
         * in; or one over max_connections */
        c->in_flight = 0;
        c->in_request = 0;
        if (c->refuse_503)
            conn_respond_error(c, 503, "too many connections (max_connections): retry later");
        else
            conn_respond_error(c, 503, "shutting down: retry on another instance or later");
        return;
    }

    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->dispatch_ref);
    request *req = lua_newuserdata(L, sizeof *req);
    req->c = c;
    c->req = req;
    luaL_getmetatable(L, REQUEST_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    c->req_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* until answered or detached */
    lua_pushstring(L, http_method_str((enum http_method)c->parser.method));
    const char *url = c->url.data ? c->url.data + c->path_at : "/";
    size_t path_len = strcspn(url, "?");
    if (path_len > 0)
        lua_pushlstring(L, url, path_len);
    else
        lua_pushliteral(L, "/"); /* an absolute URL without a path */
    if (url[path_len] == '?')
        lua_pushstring(L, url + path_len + 1);
    else
        lua_pushnil(L);
    lua_createtable(L, 0, c->nheaders);
    const char *h, *v;
    for (size_t at = 0; header_next(&c->headers, &at, &h, &v);) {
        lua_getfield(L, -1, h);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushstring(L, v);
        } else { /* a repeated header: join the values, as RFC 9110 allows */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, v);
            lua_concat(L, 3);
        }
        lua_setfield(L, -2, h);
    }
    if (c->host_len > 0) {
        lua_pushlstring(L, c->url.data + c->host_at, c->host_len);
        lua_setfield(L, -2, "host");
    }
    lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
    if (c->body.len >= RILL_GIVE_BACK_AFTER)
        rill_task_give_back_soon(); /* from the next loop turn, when it is garbage */
    if (lua_pcall(L, 6, 0, 0) != 0) {
        /* reported through Lua (rill's JSON log) when the server was given
         * on_error; stderr only when that fails too */
        int reported = 0;
        if (srv->error_ref != LUA_NOREF) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, srv->error_ref);
            lua_pushvalue(L, -2);
            reported = lua_pcall(L, 1, 0, 0) == 0;
            if (!reported)
                lua_pop(L, 1);
        }
        if (!reported)
            rill_log("error", "error in the HTTP dispatch: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (c->req) {
            conn_detach_req(L, c);
            c->in_flight = 0;
            c->in_request = 0;
            conn_respond_error(c, 500, "internal error");
        }
    }
}

/* Parses data up to the end of one request; returns the bytes consumed.
 * A complete request leaves c->in_flight set (the caller dispatches it). */
static size_t conn_parse(conn *c, const char *data, size_t len) {
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0); /* the previous request has been answered */
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (c->closing)
        return n;
    int status = c->error_status ? c->error_status : 400;
    const char *reason = c->error_reason;
    enum refusal why = c->error_status ? (enum refusal)c->error_kind : REFUSED_BAD_REQUEST;
    if (err == HPE_PAUSED || err == HPE_OK) {
        /* what the lenient parser took, checked strictly: refused before
         * the request it may have completed is dispatched */
        reason = http_framing_feed(&c->framing, data, n);
        if (!reason) {
            if (c->continue_due) {
                c->continue_due = 0;
                if (!c->in_flight) /* (its body came with it: nothing to ask for) */
                    conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            }
            return n;
        }
        status = 400;
        why = REFUSED_BAD_REQUEST;
    } else if (!reason) {
        if (err == HPE_HEADER_OVERFLOW) {
            status = 431;
            reason = "request headers are too large (max_header_size)";
            why = REFUSED_MAX_HEADER_SIZE;
        } else if (err == HPE_INVALID_CONTENT_LENGTH && (c->parser.flags & F_CHUNKED)) {
            reason = "invalid chunk size";
        } else {
            reason = http_errno_description(err);
        }
    }
    if (!c->refuse_503) /* (counted when it was accepted) */
        conn_refuse_count(c, why);
    c->in_flight = 0;
    conn_respond_error(c, status, reason);
    return len;
}

/* Keeps bytes received but not parsed yet (the pipelined requests behind
 * one in flight); 0, or -1 when the connection was closed for want of
 * memory. Past the bodies' budget (what one read brought behind the
 * request it completed) they are dropped, and nothing more is parsed: the
 * connection closes after the answer in flight, or now when none is, and
 * its client sends again what was not answered. */
static int conn_keep_unparsed(conn *c, const char *data, size_t len) {
    if (len == 0 || c->closing || c->lingering)
        return 0;
    if (!budget_fits(c->srv, len)) {
        conn_refuse_count(c, REFUSED_MAX_BODIES_IN_FLIGHT);
        if (c->in_flight) {
            c->keep_alive = 0;
        } else {
            conn_enter(c); /* its buffers go as it leaves, when no parse is on the stack */
            conn_linger(c);
            conn_leave(c);
        }
        return 0;
    }
    if (big_buf_append(&c->pending, data, len)) {
        conn_close(c);
        return -1;
    }
    conn_charge(c);
    return 0;
}

/* Parses and dispatches one request, if none waits for its answer and the
 * client reads its answers; a next one goes to the backlog. What to parse:
 * the buffered bytes, then fresh (bytes just read, not buffered: a read
 * that brings whole requests is parsed where it landed, and only what is
 * left of it is copied). Consumes by offset: the buffer is compacted only
 * once most of it is parsed. */
static void conn_drain(conn *c, const char *fresh, size_t fresh_len) {
    conn_enter(c);
    if (conn_unparsed(c) > 0 && fresh_len > 0) { /* parsed in order: after the buffered */
        conn_keep_unparsed(c, fresh, fresh_len);
        fresh_len = 0;
    }
    int dispatched = 0;
    while (!c->in_flight && !c->closing && !c->lingering && !c->backlogged &&
           (fresh_len > 0 || conn_unparsed(c) > 0)) {
        if (dispatched) {
            conn_schedule(c);
            break;
        }
        size_t n;
        if (fresh_len > 0) {
            n = conn_parse(c, fresh, fresh_len);
            fresh += n;
            fresh_len -= n;
        } else {
            c->parsing_pending = 1;
            n = conn_parse(c, c->pending.data + c->pending_off, conn_unparsed(c));
            c->parsing_pending = 0;
            c->pending_off += n; /* the moved bytes are parsed: they leave pending's share */
            c->pending_moved = 0;
        }
        if (c->in_flight) {
            dispatched = 1;
            conn_dispatch(c);
        } else if (n == 0) {
            break;
        }
    }
    conn_keep_unparsed(c, fresh, fresh_len);
    if (c->pending_off == c->pending.len) {
        c->pending.len = c->pending_off = 0;
    } else if (c->pending_off > c->pending.len / 2) {
        memmove(c->pending.data, c->pending.data + c->pending_off, conn_unparsed(c));
        c->pending.len -= c->pending_off;
        c->pending_off = 0;
    }
    if (conn_unparsed(c) == 0)
        big_buf_release(&c->pending);
    if (!c->in_request || c->in_flight || c->closing || c->lingering)
        conn_body_done(c); /* no body being received: dispatched (copied) or refused */
    else
        conn_charge(c); /* the pending bytes parsed */
    if (c->peer_eof && !c->in_flight && conn_unparsed(c) == 0)
        conn_linger(c); /* nothing more can come: what is left of a request goes */
    else if (!c->in_request && !c->in_flight && conn_unparsed(c) == 0)
        idle_add(c); /* e.g. only the CRLF some clients send after a body was left */
    if (!c->closing)
        conn_update_reading(c);
    conn_leave(c);
}

/* What a connection reads while a request of its own is in flight or
 * waiting its turn is buffered: it may read no more than the budget has
 * room for. None: libuv calls on_read with UV_ENOBUFS, and reading pauses
 * with the bytes left in the kernel (the client is held back by TCP). */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    conn *c = h->data;
    *b = read_buffer;
    if (!c->lingering && conn_buffering(c)) {
        http_server *srv = c->srv;
        size_t room = srv->bodies_in_flight < srv->max_bodies_in_flight
                          ? srv->max_bodies_in_flight - srv->bodies_in_flight
                          : 0;
        if (room < b->len)
            b->len = room;
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    conn *c = stream->data;
    if (nread == UV_ENOBUFS) { /* no room in the budget (on_alloc) */
        conn_update_reading(c);
        return;
    }
    if (nread == UV_EOF && !c->closing && !c->lingering && (c->in_flight || conn_unparsed(c) > 0)) {
        /* A half-close (shutdown(SHUT_WR), nc -N) after requests is no
         * hang-up: they are answered, the last with the close. */
        c->peer_eof = 1;
        conn_update_reading(c);
        return;
    }
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->closing || c->lingering)
        return;                          /* lingering: what comes now is dropped */
    if (c->in_flight || c->in_backlog) { /* it waits for its turn */
        if (conn_keep_unparsed(c, b->base, (size_t)nread) == 0)
            conn_update_reading(c);
    } else if (c->in_request || conn_unparsed(c) > 0 || !budget_fits(c->srv, (size_t)nread) ||
               !reads_turn_spent()) {
        conn_drain(c, b->base, (size_t)nread);
    } else if (conn_keep_unparsed(c, b->base, (size_t)nread) == 0 && !c->closing && !c->lingering) {
        /* A new request, and this turn's reads have had their time: it is
         * served next turn, like a pipelined one (the budget check above
         * keeps it from being refused for that; the rest of a request
         * being received is parsed at once, its bytes counted once). Its
         * time (request_timeout) runs from now; its connection is no
         * longer idle. */
        c->srv->deferred++;
        idle_remove(c);
        if (!c->refuse_503) /* (over max_connections: its short time stands) */
            conn_expire_in(c, c->srv->request_ms);
        conn_schedule(c);
        conn_update_reading(c);
    }
}

/* The connection's time is up: a request being received gets 408, one
 * being handled 504 (its late answer is dropped), an idle one is closed. */
static void on_timeout(uv_timer_t *timer) {
    conn *c = timer->data;
    uint64_t now = uv_now(timer->loop);
    if (c->expires > now) {
        c->due = c->expires;
        uv_timer_start(&c->timer, on_timeout, c->expires - now, 0);
        return;
    }
    if (c->closing)
        return;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    conn_enter(c);
    if (c->in_request) {
        conn_refuse_count(c, REFUSED_REQUEST_TIMEOUT);
        conn_detach_req(rill_task_main_state(), c);
        int handling = c->in_flight;
        c->in_flight = 0;
        c->in_request = 0;
        if (handling)
            conn_respond_error(c, 504, "the request was not answered in time (request_timeout)");
        else
            conn_respond_error(c, 408, "the request was not received in time (request_timeout)");
    } else {
        conn_refuse_count(c, REFUSED_KEEPALIVE_TIMEOUT);
        conn_close(c);
    }
    conn_leave(c);
}

/* ---- Accepting ---- */

static void on_listen_readable(uv_poll_t *p, int status, int events);

static void conn_open(http_server *srv, int fd) {
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return;
    }
    if (uv_tcp_init(rill_loop(), &c->tcp) != 0 || uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        free(c);
        return;
    }
    uv_timer_init(rill_loop(), &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->live_next = live_conns;
    if (live_conns)
        live_conns->live_prev = c;
    live_conns = c;
    c->req_ref = LUA_NOREF;
    c->srv = srv;
    srv->refs++;
    if (srv->connections >= srv->max_connections && srv->idle_head) {
        /* at the limit: the longest idle connection makes room */
        conn_refuse_count(c, REFUSED_MAX_CONNECTIONS);
        conn_close(srv->idle_head);
    }
    if (srv->connections >= srv->max_connections) {
        /* over the limit, none idle: this one hears 503 to its first request */
        c->refuse_503 = 1;
        conn_refuse_count(c, REFUSED_MAX_CONNECTIONS);
    } else {
        srv->connections++;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    http_framing_init(&c->framing);
    c->parser.data = c;
    conn_expire_in(c, c->refuse_503 ? LINGER_MS : srv->keepalive_ms);
    idle_add(c);
    conn_update_reading(c);
}

static void on_accept_retry(uv_timer_t *t) {
    http_server *srv = t->data;
    if (srv->closing || !srv->accept_paused)
        return;
    srv->accept_paused = 0;
    uv_poll_start(&srv->poll, UV_READABLE, on_listen_readable);
}

static void on_listen_readable(uv_poll_t *p, int status, int events) {
    http_server *srv = p->data;
    if (srv->closing)
        return;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_open(srv, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if ((errno == EMFILE || errno == ENFILE) && srv->reserve_n > 0) {
            /* a descriptor held in reserve for this: the listener keeps answering */
            close(srv->reserve[--srv->reserve_n]);
            srv->refused[REFUSED_DESCRIPTORS]++;
            continue;
        }
        if ((errno == EMFILE || errno == ENFILE) && srv->idle_head) {
            /* the longest idle connection gives its descriptor up */
            srv->refused[REFUSED_DESCRIPTORS]++;
            conn_close(srv->idle_head);
            continue;
        }
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* out of descriptors: the clients wait in the kernel's backlog
             * instead of being reset, and accepting resumes a little later */
            srv->refused[REFUSED_DESCRIPTORS]++;
            srv->accept_paused = 1;
            uv_poll_stop(&srv->poll);
            uv_timer_start(&srv->accept_timer, on_accept_retry, ACCEPT_RETRY_MS, 0);
        }
        return;
    }
}

/* ---- Lua API: request ---- */

/* Appends "Name: value\r\n" lines from a table: name = value pairs, or
 * "Name: value" strings in its array part (the HTTP client's two shapes).
 * Content-Length and Content-Type are set elsewhere. Returns NULL, or what
 * is wrong (the answer is refused, nothing is sent). */
static const char *header_line(buf *out, const char *k, size_t kl, const char *v, size_t vl) {
    if (kl == 0 || strcspn(k, ":\r\n \t") != kl || memchr(k, 0, kl))
        return "a header name is empty or has a colon, a space or a line break";
    if (strcspn(v, "\r\n") != vl)
        return "a header value has a line break";
    /* rill frames the answer: a flow's Transfer-Encoding, Connection or
     * other hop-by-hop header beside rill's Content-Length would tell a
     * proxy another length or persistence than the one rill writes */
    if ((kl == 14 && strncasecmp(k, "content-length", kl) == 0) ||
        (kl == 12 && strncasecmp(k, "content-type", kl) == 0) ||
        (kl == 17 && strncasecmp(k, "transfer-encoding", kl) == 0) ||
        (kl == 10 && strncasecmp(k, "connection", kl) == 0) ||
        (kl == 10 && strncasecmp(k, "keep-alive", kl) == 0) ||
        (kl == 16 && strncasecmp(k, "proxy-connection", kl) == 0) ||
        (kl == 7 && strncasecmp(k, "upgrade", kl) == 0) ||
        (kl == 7 && strncasecmp(k, "trailer", kl) == 0))
        return NULL;
    if (buf_append(out, k, kl) || buf_append(out, ": ", 2) || buf_append(out, v, vl) ||
        buf_append(out, "\r\n", 2))
        return "out of memory";
    return NULL;
}

static const char *headers_from_table(lua_State *L, int idx, buf *out) {
    if (lua_isnoneornil(L, idx))
        return NULL;
    if (!lua_istable(L, idx))
        return "headers must be a table";
    const char *bad = NULL;
    lua_pushnil(L);
    while (bad == NULL && lua_next(L, idx)) {
        int kt = lua_type(L, -2), vt = lua_type(L, -1);
        size_t kl, vl;
        if (kt == LUA_TNUMBER && vt == LUA_TSTRING) {
            /* "Name: value" */
            const char *line = lua_tolstring(L, -1, &vl);
            const char *colon = memchr(line, ':', vl);
            if (colon == NULL) {
                bad = "a header line has no colon (expected \"Name: value\")";
            } else {
                const char *v = colon + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                bad = header_line(out, line, (size_t)(colon - line), v, vl - (size_t)(v - line));
            }
        } else if (kt == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER)) {
            const char *k = lua_tolstring(L, -2, &kl); /* a string key: no conversion in place */
            lua_pushvalue(L, -1);
            const char *v = lua_tolstring(L, -1, &vl); /* the copy is converted, not the value */
            bad = header_line(out, k, kl, v, vl);
            lua_pop(L, 1);
        } else {
            bad = "headers are name = value pairs or \"Name: value\" strings";
        }
        lua_pop(L, 1);
    }
    if (bad)
        lua_pop(L, 1); /* the key lua_next left */
    return bad;
}

/* req:respond(status, body, headers) -> true, or false when the client is
 * gone. headers: name = value pairs or "Name: value" strings; content-type
 * defaults to application/json. Headers that are not headers raise (a
 * programmer's mistake, nothing is sent). */
static int l_request_respond(lua_State *L) {
    request *req = luaL_checkudata(L, 1, REQUEST_MT);
    int status = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, status >= 200 && status <= 599, 2, "must be an HTTP status from 200 to 599");
    size_t body_len = 0;
    const char *body = luaL_optlstring(L, 3, "", &body_len);
    const char *ctype = "application/json";
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "content-type");
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_getfield(L, 4, "Content-Type");
        }
        if (lua_isstring(L, -1) && !strpbrk(lua_tostring(L, -1), "\r\n"))
            ctype = lua_tostring(L, -1);
    }
    buf extra = {0};
    const char *bad = headers_from_table(L, 4, &extra);
    if (bad) {
        buf_free(&extra);
        return luaL_argerror(L, 4, bad);
    }
    conn *c = req->c;
    if (c == NULL) {
        buf_free(&extra);
        lua_pushboolean(L, 0);
        return 1;
    }
    conn_detach_req(L, c);
    c->in_flight = 0;
    c->in_request = 0;
    conn_enter(c);
    /* while draining, the connection closes after the answer in flight */
    conn_respond(c, status, ctype, extra.data ? extra.data : "", extra.len, body, body_len,
                 c->srv->closing);
    buf_free(&extra);
    if (!c->closing && !c->lingering) {
        conn_expire_in(c, c->srv->keepalive_ms);
        if (conn_unparsed(c) == 0)
            idle_add(c);
        if (c->busy == 1) /* answered later: the drain is not on the stack */
            conn_schedule(c);
    }
    conn_leave(c);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_request_alive(lua_State *L) {
    request *req = luaL_checkudata(L, 1, REQUEST_MT);
    lua_pushboolean(L, req->c != NULL);
    return 1;
}

/* req:peer() -> the address the connection comes from ("203.0.113.9",
 * "2001:db8::1"; a dual-stack listener's IPv4 peers as "::ffff:a.b.c.d"),
 * or nil once the connection is gone. Proxies are not looked through here:
 * believing X-Forwarded-For is a policy, in Lua. The kernel is asked once
 * per connection: a keep-alive one serves many requests, each reading it. */
static int l_request_peer(lua_State *L) {
    request *req = luaL_checkudata(L, 1, REQUEST_MT);
    conn *c = req->c;
    if (c == NULL)
        return 0;
    if (c->peer[0] == '\0') {
        struct sockaddr_storage sa;
        int len = sizeof sa;
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) != 0)
            return 0;
        int rc = sa.ss_family == AF_INET6
                     ? uv_ip6_name((const struct sockaddr_in6 *)&sa, c->peer, sizeof c->peer)
                     : uv_ip4_name((const struct sockaddr_in *)&sa, c->peer, sizeof c->peer);
        if (rc != 0) {
            c->peer[0] = '\0';
            return 0;
        }
    }
    lua_pushstring(L, c->peer);
    return 1;
}

/* ---- Lua API: server ---- */

static void server_handle_closed(uv_handle_t *h) {
    http_server *srv = h->data;
    if (--srv->handles_open > 0)
        return;
    if (srv->fd >= 0)
        close(srv->fd);
    srv->fd = -1;
    while (srv->reserve_n > 0)
        close(srv->reserve[--srv->reserve_n]);
    free(srv->reserve);
    srv->reserve = NULL;
    server_unref(srv);
}

/* Stops listening: the dispatch and the Lua object are let go; open
 * connections keep the struct alive until they close. */
static void server_stop(http_server *srv) {
    if (srv->closing)
        return;
    srv->closing = 1;
    lua_State *L = rill_task_main_state();
    luaL_unref(L, LUA_REGISTRYINDEX, srv->dispatch_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->error_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->self_ref);
    srv->dispatch_ref = srv->error_ref = srv->self_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&srv->poll, server_handle_closed);
    uv_close((uv_handle_t *)&srv->accept_timer, server_handle_closed);
}

static http_server *check_server(lua_State *L) {
    return ((server_ud *)luaL_checkudata(L, 1, SERVER_MT))->srv;
}

static int l_server_gc(lua_State *L) {
    server_ud *ud = luaL_checkudata(L, 1, SERVER_MT);
    if (ud->srv)
        server_unref(ud->srv);
    ud->srv = NULL;
    return 0;
}

static void option_size(lua_State *L, int idx, const char *name, size_t *out) {
    lua_getfield(L, idx, name);
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0)
        *out = (size_t)lua_tonumber(L, -1);
    lua_pop(L, 1);
}

static void option_ms(lua_State *L, int idx, const char *name, uint64_t *out) {
    lua_getfield(L, idx, name);
    if (lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0)
        *out = (uint64_t)(lua_tonumber(L, -1) * 1000);
    lua_pop(L, 1);
}

static void server_options(lua_State *L, int idx, http_server *srv) {
    if (!lua_istable(L, idx))
        return;
    size_t n;
    option_size(L, idx, "max_body", &srv->max_body);
    option_size(L, idx, "max_bodies_in_flight", &srv->max_bodies_in_flight);
    option_size(L, idx, "max_url", &srv->max_url);
    option_size(L, idx, "max_header_size", &srv->max_header_size);
    option_size(L, idx, "max_write_backlog", &srv->max_write_backlog);
    option_size(L, idx, "max_write_backlog_total", &srv->max_write_backlog_total);
    option_size(L, idx, "max_pipeline", &srv->max_pipeline);
    n = (size_t)srv->max_headers;
    option_size(L, idx, "max_headers", &n);
    srv->max_headers = n > INT_MAX ? INT_MAX : (int)n;
    n = (size_t)srv->max_connections;
    option_size(L, idx, "max_connections", &n);
    srv->max_connections = n > INT_MAX ? INT_MAX : (int)n;
    n = srv->max_requests;
    option_size(L, idx, "max_requests", &n);
    srv->max_requests = n > UINT_MAX ? UINT_MAX : n < 1 ? 1 : (unsigned)n;
    n = (size_t)srv->reserve_want;
    option_size(L, idx, "reserve_descriptors", &n);
    if (srv->reserve == NULL && n > 0 && n < 4096) { /* set once, at listen */
        srv->reserve = calloc(n, sizeof *srv->reserve);
        srv->reserve_want = srv->reserve ? (int)n : 0;
        while (srv->reserve_n < srv->reserve_want) {
            int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                break;
            srv->reserve[srv->reserve_n++] = fd;
        }
    }
    option_ms(L, idx, "keepalive_timeout", &srv->keepalive_ms);
    option_ms(L, idx, "request_timeout", &srv->request_ms);
    /* http_parser's own bound on a header section is one global: kept above ours */
    if (srv->max_header_size + srv->max_url >= 80 * 1024)
        http_parser_set_max_header_size((uint32_t)(srv->max_header_size + srv->max_url + 1024));
}

/* The listening socket, made by hand so that accepting can pause (when the
 * process is out of descriptors) and resume; with reuse_port it is marked
 * SO_REUSEPORT before the bind, so that several processes listen on one
 * port and the kernel spreads the connections between them. */
static int server_socket(const struct sockaddr *addr, int reuse_port) {
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    socklen_t len =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, addr, len) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* listen(host, port, dispatch, options) -> server, or nil, message.
 * options: max_body, max_url, max_header_size, max_write_backlog,
 * max_write_backlog_total, max_pipeline, max_bodies_in_flight (bytes); max_headers,
 * max_connections, max_requests (per connection); keepalive_timeout, request_timeout (seconds);
 * reuse_port (share the port with other processes that set it too); reserve_descriptors (held on
 * /dev/null and given up one at a time when accept() runs out, so that this listener keeps
 * answering); on_error (called with the message when the dispatch raises; the client gets 500). */
static int l_listen(lua_State *L) {
    const char *host = luaL_checkstring(L, 1);
    int port = (int)luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    struct sockaddr_storage addr;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid listen address %s", host);
        return 2;
    }
    int reuse_port = 0;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "reuse_port");
        reuse_port = lua_toboolean(L, -1);
        lua_getfield(L, 4, "on_error");
        luaL_argcheck(L, lua_isnil(L, -1) || lua_isfunction(L, -1), 4,
                      "on_error must be a function");
        lua_pop(L, 2);
    }
    int fd = server_socket((struct sockaddr *)&addr, reuse_port);
    if (fd < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s:%d: %s", host, port, uv_strerror(fd));
        return 2;
    }
    http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        close(fd);
        return luaL_error(L, "out of memory");
    }
    spares_off = 0; /* a loop after a wind-down (the tests run several) */
    srv->fd = fd;
    srv->max_body = 1024 * 1024;
    srv->max_bodies_in_flight = 128 * 1024 * 1024;
    srv->max_url = 8192;
    srv->max_header_size = 32 * 1024;
    srv->max_headers = 100;
    srv->max_connections = 1024;
    srv->max_write_backlog = 1024 * 1024;
    srv->max_write_backlog_total = 64 * 1024 * 1024;
    srv->max_pipeline = 1024 * 1024;
    srv->max_requests = 10000;
    srv->keepalive_ms = 75000;
    srv->request_ms = 30000;
    server_options(L, 4, srv);
    int rc = uv_poll_init_socket(rill_loop(), &srv->poll, fd);
    if (rc != 0) {
        close(fd);
        while (srv->reserve_n > 0)
            close(srv->reserve[--srv->reserve_n]);
        free(srv->reserve);
        free(srv);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        return 2;
    }
    uv_timer_init(rill_loop(), &srv->accept_timer);
    srv->poll.data = srv->accept_timer.data = srv;
    srv->handles_open = 2;
    srv->refs = 2; /* the handles, the Lua object */
    srv->live_next = live_servers;
    live_servers = srv;
    server_ud *ud = lua_newuserdata(L, sizeof *ud);
    ud->srv = srv;
    luaL_getmetatable(L, SERVER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 3);
    srv->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    srv->error_ref = LUA_NOREF;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "on_error");
        if (lua_isfunction(L, -1))
            srv->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    lua_pushvalue(L, -1);
    srv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_poll_start(&srv->poll, UV_READABLE, on_listen_readable);
    return 1;
}

/* Called by main once the loop has stopped, before it closes what is left:
 * servers still listening stop, connections still open close, each with
 * its own close callback (main's would free nothing). */
void rill_http_server_wind_down(void) {
    for (conn *c = live_conns; c; c = c->live_next)
        conn_close(c);
    for (http_server *srv = live_servers; srv; srv = srv->live_next)
        server_stop(srv);
    spares_off = 1; /* the connections closing now free their buffers */
    for (int i = 0; i < SPARE_BUFS; i++)
        spare_free(&spare_bufs[i]);
}

/* Servers and connections not freed yet (a test's check of the wind-down). */
int rill_http_server_live(void) {
    int n = 0;
    for (conn *c = live_conns; c; c = c->live_next)
        n++;
    for (http_server *srv = live_servers; srv; srv = srv->live_next)
        n++;
    return n;
}

/* The spare buffers held (main's check of the wind-down). */
int rill_http_server_spares(void) {
    int n = 0;
    for (int i = 0; i < SPARE_BUFS; i++)
        n += spare_bufs[i].data != NULL;
    return n;
}

/* server:port() -> the port actually bound (useful with port 0). */
static int l_server_port(lua_State *L) {
    http_server *srv = check_server(L);
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (srv->fd < 0 || getsockname(srv->fd, (struct sockaddr *)&addr, &len) != 0)
        return 0;
    int port = addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                          : ((struct sockaddr_in *)&addr)->sin_port;
    lua_pushinteger(L, ntohs((uint16_t)port));
    return 1;
}

/* server:configure(options): new limits apply from now on. */
static int l_server_configure(lua_State *L) {
    server_options(L, 2, check_server(L));
    return 0;
}

/* server:close(): stops accepting; open connections finish their request. */
static int l_server_close(lua_State *L) {
    server_stop(check_server(L));
    return 0;
}

static int l_server_connections(lua_State *L) {
    lua_pushinteger(L, check_server(L)->connections);
    return 1;
}

/* server:stats() -> { connections = n, accepting = bool, queued = bytes,
 * queued_peak = bytes, bodies_in_flight = bytes, refused = {reason = count} }:
 * what the limits refused since the start, the answers waiting for slow
 * readers (now, and the most ever) and the request bytes held against
 * max_bodies_in_flight, for Lua's metrics and log lines. */
static int l_server_stats(lua_State *L) {
    http_server *srv = check_server(L);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, (double)srv->queued);
    lua_setfield(L, -2, "queued");
    lua_pushnumber(L, (double)srv->queued_peak);
    lua_setfield(L, -2, "queued_peak");
    lua_pushinteger(L, srv->connections);
    lua_setfield(L, -2, "connections");
    lua_pushboolean(L, !srv->closing && !srv->accept_paused);
    lua_setfield(L, -2, "accepting");
    lua_pushnumber(L, (double)srv->bodies_in_flight);
    lua_setfield(L, -2, "bodies_in_flight");
    lua_pushnumber(L, srv->deferred);
    lua_setfield(L, -2, "deferred");
    lua_createtable(L, 0, REFUSED_COUNT);
    for (int i = 0; i < REFUSED_COUNT; i++) {
        lua_pushnumber(L, srv->refused[i]);
        lua_setfield(L, -2, refusal_names[i]);
    }
    lua_setfield(L, -2, "refused");
    return 1;
}

/* descriptor_limit() -> the process's RLIMIT_NOFILE (soft), for deriving
 * max_connections. */
static int l_descriptor_limit(lua_State *L) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        lua_pushnumber(L, 1024 * 1024);
    else
        lua_pushnumber(L, (double)rl.rlim_cur);
    return 1;
}

int rill_http_server_open(lua_State *L) {
    static const luaL_Reg request_methods[] = {{"respond", l_request_respond},
                                               {"alive", l_request_alive},
                                               {"peer", l_request_peer},
                                               {NULL, NULL}};
    static const luaL_Reg server_methods[] = {
        {"port", l_server_port},   {"configure", l_server_configure},
        {"close", l_server_close}, {"connections", l_server_connections},
        {"stats", l_server_stats}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"listen", l_listen}, {"descriptor_limit", l_descriptor_limit}, {NULL, NULL}};
    static char storage[64 * 1024];
    read_buffer = uv_buf_init(storage, sizeof storage);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    /* No __gc on requests: finalizers are costly for an object made per
     * request, and every request is answered, by its run (whose deadline
     * guarantees an end), by the dispatch's error path or by request_timeout.
     * A server has one: its Lua object is one of the struct's owners. */
    rill_lua_metatable(L, REQUEST_MT, request_methods);
    lua_pop(L, 1);
    rill_lua_metatable(L, SERVER_MT, server_methods);
    lua_pushcfunction(L, l_server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
