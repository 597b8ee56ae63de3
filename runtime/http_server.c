/*
 * http_server.c: the HTTP/1.1 server webhooks arrive on. It owns listening
 * sockets, connections, parsing (http_parser), limits (body size, timeouts)
 * and writing responses. It knows nothing of routes: each complete request
 * goes to one Lua dispatch function as (req, method, path, query, headers,
 * body), which answers, now or later, with req:respond(status, body, headers).
 * A connection handles one request at a time; pipelined bytes wait in a
 * buffer until the response to the request before them is written.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <http_parser.h>

#include "buf.h"
#include "task.h"

#define SERVER_MT "rill.http_server"
#define REQUEST_MT "rill.http_request"
#define MAX_URL 8192
#define MAX_PENDING (1024 * 1024) /* pipelined bytes held before reading pauses */

typedef struct http_server {
    uv_tcp_t tcp;
    int dispatch_ref;      /* the Lua dispatch function */
    int self_ref;          /* anchors the userdata until the handle closes */
    size_t max_body;       /* bytes; larger bodies get 413 */
    uint64_t keepalive_ms; /* idle connection lifetime */
    uint64_t request_ms;   /* time allowed to send one whole request */
    int connections;       /* open connections */
    unsigned char closing;
} http_server;

typedef struct request request;

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* idle or request timeout, checked lazily (conn_expire_in) */
    uint64_t expires; /* loop time the connection closes at, 0 for never (a request in flight) */
    uint64_t due;     /* loop time the timer fires at, when it is active */
    http_server *srv;
    http_parser parser;
    buf url, headers, body; /* headers: name\0value\0 pairs, names lowercased */
    buf out;                /* the response being written, reused */
    int header_state;       /* 0 none, 1 in a name, 2 in a value */
    int nheaders;
    buf pending;      /* received bytes not parsed yet */
    request *req;     /* the request waiting for its response */
    int error_status; /* a limit tripped while parsing: answer this and close */
    const char *error_reason;
    unsigned char in_flight, dispatching, closing, keep_alive, reading_paused, expect_continue;
    int handles_open; /* tcp + timer: freed when both have closed */
} conn;

struct request {
    conn *c; /* NULL once answered or once the connection is gone */
};

static http_parser_settings parser_settings;
static uv_buf_t read_buffer; /* shared: data is parsed or copied before the next read */

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

/* ---- Connection lifecycle ---- */

static void conn_handle_closed(uv_handle_t *h) {
    conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    buf_free(&c->url);
    buf_free(&c->headers);
    buf_free(&c->body);
    buf_free(&c->pending);
    buf_free(&c->out);
    c->srv->connections--;
    free(c);
}

static void conn_close(conn *c) {
    if (c->closing)
        return;
    c->closing = 1;
    if (c->req) {
        c->req->c = NULL; /* a late req:respond() becomes a no-op */
        c->req = NULL;
    }
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* The timer is armed at most once per connection's quiet period: moving
 * the expiry later (every request does) only writes c->expires, and the
 * timer, when it fires early, re-arms itself for the rest. Three timer-heap
 * operations per request saved. */
static void on_timeout(uv_timer_t *timer) {
    conn *c = timer->data;
    uint64_t now = uv_now(timer->loop);
    if (c->expires == 0 || c->expires > now) {
        /* a request in flight has no expiry: looked at again later */
        uint64_t wait = c->expires ? c->expires - now : c->srv->keepalive_ms;
        c->due = now + wait;
        uv_timer_start(&c->timer, on_timeout, wait, 0);
        return;
    }
    conn_close(c);
}

/* The connection closes ms from now (unless moved again). */
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
    c->header_state = 0;
    c->nheaders = 0;
    c->expect_continue = 0;
}

/* ---- Writing ---- */

typedef struct write_req {
    uv_write_t req;
    conn *c;
    int close_after;
    char data[];
} write_req;

static void on_written(uv_write_t *w, int status) {
    write_req *wr = (write_req *)w;
    conn *c = wr->c;
    if ((status < 0 || wr->close_after) && !c->closing)
        conn_close(c);
    free(wr);
}

/* Writes all of data, copying what the socket does not take at once. */
static void conn_write(conn *c, const char *data, size_t len, int close_after) {
    if (c->closing)
        return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN)
        n = 0;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if ((size_t)n == len) {
        if (close_after)
            conn_close(c);
        return;
    }
    size_t rest = len - (size_t)n;
    write_req *wr = malloc(sizeof *wr + rest);
    if (wr == NULL) {
        conn_close(c);
        return;
    }
    memcpy(wr->data, data + n, rest);
    wr->c = c;
    wr->close_after = close_after;
    b = uv_buf_init(wr->data, (unsigned)rest);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(wr);
        conn_close(c);
    }
}

/* Formats and writes one response. extra_headers: "Name: value\r\n" lines. */
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
 * extra_headers: "Name: value\r\n" lines. */
static void conn_respond(conn *c, int status, const char *content_type, const char *extra_headers,
                         size_t extra_len, const char *body, size_t body_len, int close_after) {
    int keep = c->keep_alive && !close_after;
    buf *out = &c->out;
    out->len = 0;
    if (buf_append(out, "HTTP/1.1 ", 9) || buf_append_uint(out, (size_t)status) ||
        buf_append(out, " ", 1) || buf_append_str(out, status_text(status)) ||
        buf_append(out, "\r\nContent-Type: ", 16) || buf_append_str(out, content_type) ||
        buf_append(out, "\r\nContent-Length: ", 18) || buf_append_uint(out, body_len) ||
        buf_append(out, "\r\nDate: ", 8) || buf_append_str(out, http_date()) ||
        buf_append(out, "\r\n", 2) || (!keep && buf_append_str(out, "Connection: close\r\n")) ||
        buf_append(out, extra_headers, extra_len) || buf_append(out, "\r\n", 2) ||
        buf_append(out, body, body_len)) {
        conn_close(c);
        return;
    }
    conn_write(c, out->data, out->len, !keep);
}

static void conn_respond_error(conn *c, int status, const char *reason) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}", reason);
    conn_respond(c, status, "application/json", "", 0, body, (size_t)n, 1);
}

/* ---- Parsing ---- */

static void conn_resume_reading(conn *c);

static int on_message_begin(http_parser *p) {
    conn *c = p->data;
    conn_reset_request(c);
    conn_expire_in(c, c->srv->request_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (c->url.len + len > MAX_URL) {
        c->error_status = 414;
        c->error_reason = "URL too long";
        return -1;
    }
    return buf_append(&c->url, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (c->header_state != 1) {
        if (c->header_state == 2 && buf_append(&c->headers, "", 1)) /* end the value */
            return -1;
        c->header_state = 1;
        c->nheaders++;
    }
    size_t start = c->headers.len;
    if (buf_append(&c->headers, at, len))
        return -1;
    for (size_t i = start; i < c->headers.len; i++)
        if (c->headers.data[i] >= 'A' && c->headers.data[i] <= 'Z')
            c->headers.data[i] += 'a' - 'A';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (c->header_state != 2) {
        if (buf_append(&c->headers, "", 1)) /* end the name */
            return -1;
        c->header_state = 2;
    }
    return buf_append(&c->headers, at, len);
}

static int on_headers_complete(http_parser *p) {
    conn *c = p->data;
    if (c->header_state == 2 && buf_append(&c->headers, "", 1))
        return -1;
    c->header_state = 0;
    if (p->content_length != ULLONG_MAX && p->content_length > c->srv->max_body) {
        c->error_status = 413;
        c->error_reason = "request body is larger than the limit";
        return -1;
    }
    /* Answer "Expect: 100-continue" so that clients like curl send the body. */
    for (const char *h = c->headers.data, *end = h + c->headers.len; h && h < end;) {
        const char *v = h + strlen(h) + 1;
        if (strcmp(h, "expect") == 0 && strcasecmp(v, "100-continue") == 0)
            c->expect_continue = 1;
        h = v + strlen(v) + 1;
    }
    if (c->expect_continue)
        conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, 0);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
    conn *c = p->data;
    if (c->body.len + len > c->srv->max_body) {
        c->error_status = 413;
        c->error_reason = "request body is larger than the limit";
        return -1;
    }
    return buf_append(&c->body, at, len);
}

static int on_message_complete(http_parser *p) {
    conn *c = p->data;
    c->in_flight = 1;
    c->keep_alive = (unsigned char)http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

/* Hands the parsed request to Lua. */
static void conn_dispatch(conn *c) {
    lua_State *L = rill_task_main_state();
    http_server *srv = c->srv;
    c->expires = 0;
    if (srv->closing) {
        /* stopped accepting (a drain): a connection kept alive from before
         * brings no new request in, and is closed */
        conn_respond_error(c, 503, "shutting down: retry on another instance or later");
        c->in_flight = 0;
        return;
    }

    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->dispatch_ref);
    request *req = lua_newuserdata(L, sizeof *req);
    req->c = c;
    c->req = req;
    luaL_getmetatable(L, REQUEST_MT);
    lua_setmetatable(L, -2);
    lua_pushstring(L, http_method_str((enum http_method)c->parser.method));
    const char *url = c->url.data ? c->url.data : "/";
    const char *q = strchr(url, '?');
    if (q) {
        lua_pushlstring(L, url, (size_t)(q - url));
        lua_pushstring(L, q + 1);
    } else {
        lua_pushstring(L, url);
        lua_pushnil(L);
    }
    lua_createtable(L, 0, c->nheaders);
    for (const char *h = c->headers.data, *end = h + c->headers.len; h && h < end;) {
        const char *v = h + strlen(h) + 1;
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
        h = v + strlen(v) + 1;
    }
    lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
    c->dispatching = 1;
    if (lua_pcall(L, 6, 0, 0) != 0) {
        rill_log("error", "error in the HTTP dispatch: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (c->req) {
            c->req->c = NULL;
            c->req = NULL;
            conn_respond_error(c, 500, "internal error");
            c->in_flight = 0;
        }
    }
    c->dispatching = 0;
}

/* Parses data; returns how many bytes were consumed. */
static size_t conn_parse(conn *c, const char *data, size_t len) {
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0); /* the previous request has been answered */
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED) {
        conn_dispatch(c);
        return n;
    }
    if (err != HPE_OK) {
        int status = c->error_status ? c->error_status : 400;
        const char *reason = c->error_reason;
        if (!reason)
            reason = err == HPE_HEADER_OVERFLOW ? "request headers are too large"
                                                : http_errno_description(err);
        if (err == HPE_HEADER_OVERFLOW)
            status = 431;
        conn_respond_error(c, status, reason);
        return len;
    }
    return n;
}

/* Parses buffered bytes while no request is waiting for its response. */
static void conn_drain(conn *c) {
    while (!c->in_flight && !c->closing && c->pending.len > 0) {
        size_t n = conn_parse(c, c->pending.data, c->pending.len);
        if (n == 0 && !c->in_flight)
            break;
        memmove(c->pending.data, c->pending.data + n, c->pending.len - n);
        c->pending.len -= n;
    }
    if (c->reading_paused && c->pending.len < MAX_PENDING / 2 && !c->closing) {
        c->reading_paused = 0;
        conn_resume_reading(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
    *b = read_buffer;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    conn *c = stream->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->in_flight || c->pending.len > 0) {
        if (buf_append(&c->pending, b->base, (size_t)nread)) {
            conn_close(c);
            return;
        }
        if (c->pending.len > MAX_PENDING) {
            uv_read_stop(stream);
            c->reading_paused = 1;
        }
        if (!c->in_flight)
            conn_drain(c);
        return;
    }
    size_t n = conn_parse(c, b->base, (size_t)nread);
    if (n < (size_t)nread && !c->closing) {
        if (buf_append(&c->pending, b->base + n, (size_t)nread - n))
            conn_close(c);
        else
            conn_drain(c);
    }
}

static void conn_resume_reading(conn *c) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connection(uv_stream_t *server_stream, int status) {
    http_server *srv = server_stream->data;
    if (status < 0)
        return;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->srv = srv;
    uv_tcp_init(rill_loop(), &c->tcp);
    uv_timer_init(rill_loop(), &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    srv->connections++;
    if (uv_accept(server_stream, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    conn_expire_in(c, srv->keepalive_ms);
    conn_resume_reading(c);
}

/* ---- Lua API: request ---- */

static void headers_from_table(lua_State *L, int idx, buf *out) {
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl);
        const char *v = lua_tolstring(L, -1, &vl);
        if (k && v && !memchr(k, '\n', kl) && !memchr(v, '\n', vl) && !memchr(k, '\r', kl) &&
            !memchr(v, '\r', vl) && strcasecmp(k, "content-length") != 0 &&
            strcasecmp(k, "content-type") != 0) {
            buf_append(out, k, kl);
            buf_append(out, ": ", 2);
            buf_append(out, v, vl);
            buf_append(out, "\r\n", 2);
        }
        lua_pop(L, 1);
    }
}

/* req:respond(status, body, headers) -> true, or false when the client is
 * gone. headers["content-type"] defaults to application/json. */
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
    conn *c = req->c;
    if (c == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    buf extra = {0};
    headers_from_table(L, 4, &extra);
    req->c = NULL;
    c->req = NULL;
    /* while draining, the connection closes after the answer in flight */
    conn_respond(c, status, ctype, extra.data ? extra.data : "", extra.len, body, body_len,
                 c->srv->closing);
    buf_free(&extra);
    c->in_flight = 0;
    if (!c->closing) {
        conn_expire_in(c, c->srv->keepalive_ms);
        if (!c->dispatching)
            conn_drain(c);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_request_alive(lua_State *L) {
    request *req = luaL_checkudata(L, 1, REQUEST_MT);
    lua_pushboolean(L, req->c != NULL);
    return 1;
}

/* ---- Lua API: server ---- */

static void server_closed(uv_handle_t *h) {
    http_server *srv = h->data;
    lua_State *L = rill_task_main_state();
    luaL_unref(L, LUA_REGISTRYINDEX, srv->dispatch_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->self_ref);
    srv->dispatch_ref = srv->self_ref = LUA_NOREF;
}

static void server_options(lua_State *L, int idx, http_server *srv) {
    if (!lua_istable(L, idx))
        return;
    lua_getfield(L, idx, "max_body");
    if (lua_isnumber(L, -1))
        srv->max_body = (size_t)lua_tonumber(L, -1);
    lua_getfield(L, idx, "keepalive_timeout");
    if (lua_isnumber(L, -1))
        srv->keepalive_ms = (uint64_t)(lua_tonumber(L, -1) * 1000);
    lua_getfield(L, idx, "request_timeout");
    if (lua_isnumber(L, -1))
        srv->request_ms = (uint64_t)(lua_tonumber(L, -1) * 1000);
    lua_pop(L, 3);
}

/* Initializes srv->tcp; with reuse_port, its socket is made at once and
 * marked SO_REUSEPORT before the bind, so that several processes listen on
 * one port and the kernel spreads the connections between them. */
static int server_socket(http_server *srv, int family, int reuse_port, int *made) {
    int rc = reuse_port ? uv_tcp_init_ex(rill_loop(), &srv->tcp, (unsigned)family)
                        : uv_tcp_init(rill_loop(), &srv->tcp);
    if (rc != 0)
        return rc;
    *made = 1;
    srv->tcp.data = srv;
    if (!reuse_port)
        return 0;
    uv_os_fd_t fd;
    int one = 1;
    rc = uv_fileno((uv_handle_t *)&srv->tcp, &fd);
    if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        rc = uv_translate_sys_error(errno);
    return rc;
}

/* listen(host, port, dispatch, options) -> server, or nil, message.
 * options: max_body (bytes), keepalive_timeout, request_timeout (seconds),
 * reuse_port (share the port with other processes that set it too). */
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
    http_server *srv = lua_newuserdata(L, sizeof *srv);
    memset(srv, 0, sizeof *srv);
    srv->max_body = 1024 * 1024;
    srv->keepalive_ms = 75000;
    srv->request_ms = 30000;
    server_options(L, 4, srv);
    int reuse_port = 0;
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "reuse_port");
        reuse_port = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    luaL_getmetatable(L, SERVER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 3);
    srv->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    srv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int made = 0;
    int rc = server_socket(srv, addr.ss_family, reuse_port, &made);
    if (rc == 0)
        rc = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->tcp, 1024, on_connection);
    if (rc != 0) {
        if (made) {
            srv->closing = 1;
            uv_close((uv_handle_t *)&srv->tcp, server_closed);
        } else {
            luaL_unref(L, LUA_REGISTRYINDEX, srv->dispatch_ref);
            luaL_unref(L, LUA_REGISTRYINDEX, srv->self_ref);
            srv->dispatch_ref = srv->self_ref = LUA_NOREF;
        }
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        return 2;
    }
    return 1;
}

/* server:port() -> the port actually bound (useful with port 0). */
static int l_server_port(lua_State *L) {
    http_server *srv = luaL_checkudata(L, 1, SERVER_MT);
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&addr, &len) != 0)
        return 0;
    int port = addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                          : ((struct sockaddr_in *)&addr)->sin_port;
    lua_pushinteger(L, ntohs((uint16_t)port));
    return 1;
}

/* server:configure(options): new limits apply to requests parsed from now on. */
static int l_server_configure(lua_State *L) {
    http_server *srv = luaL_checkudata(L, 1, SERVER_MT);
    server_options(L, 2, srv);
    return 0;
}

/* server:close(): stops accepting; open connections finish their request. */
static int l_server_close(lua_State *L) {
    http_server *srv = luaL_checkudata(L, 1, SERVER_MT);
    if (!srv->closing) {
        srv->closing = 1;
        uv_close((uv_handle_t *)&srv->tcp, server_closed);
    }
    return 0;
}

static int l_server_connections(lua_State *L) {
    http_server *srv = luaL_checkudata(L, 1, SERVER_MT);
    lua_pushinteger(L, srv->connections);
    return 1;
}

int rill_http_server_open(lua_State *L) {
    static const luaL_Reg request_methods[] = {
        {"respond", l_request_respond}, {"alive", l_request_alive}, {NULL, NULL}};
    static const luaL_Reg server_methods[] = {{"port", l_server_port},
                                              {"configure", l_server_configure},
                                              {"close", l_server_close},
                                              {"connections", l_server_connections},
                                              {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"listen", l_listen}, {NULL, NULL}};
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
     * guarantees an end) or by the dispatch's error path. */
    rill_lua_metatable(L, REQUEST_MT, request_methods);
    lua_pop(L, 1);
    rill_lua_metatable(L, SERVER_MT, server_methods);
    lua_pop(L, 1);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
