/*
 * http_harness.h: the harness the HTTP fuzz targets share. It drives
 * rill.c.http_server through its Lua API, as rill does: one Lua state with
 * rill's modules, a server listening on 127.0.0.1 (a free port) whose
 * dispatch answers at once, on the next loop turn, a few milliseconds later,
 * or fails, by the request's path. Each input is one client connection over
 * loopback, driven by a script of actions (write so many bytes, let the
 * server run, read or stop reading, half-close, reset); the input is done
 * when the server has closed the connection and every late answer has run,
 * so nothing carries over to the next input (LeakSanitizer checks it).
 */
#ifndef FUZZ_HTTP_HARNESS_H
#define FUZZ_HTTP_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lualib.h>

#include "rill.h"
#include "lua_alloc.h"
#include "stdlib_embed.h"

/* The dispatch: the path chooses how a request is answered, so that a
 * dictionary and the fuzzer can reach each way. The bodies' budget is below
 * max_body, so that one connection's body (declared or chunked) reaches
 * its 503 too, not only its pipelined bytes. */
static const char fuzz_http_server_lua[] =
    "local http = require 'rill.c.http_server'\n"
    "local timer = require 'rill.c.timer'\n"
    "local waiting = 0\n"
    "local function answer(req, path, headers, body)\n"
    "  if path:find('^/big') then return req:respond(200, ('x'):rep(200000)) end\n"
    "  if path:find('^/hdr') then\n"
    "    return req:respond(201, body, { ['x-echo'] = headers['x-in'], ['content-type'] = "
    "headers['x-ct'],\n"
    "      [headers['x-name'] or 'x-none'] = 'v' })\n"
    "  end\n"
    "  if path:find('^/twice') then req:respond(200, 'one') end\n"
    "  req:respond(200, body)\n"
    "end\n"
    "local function later(seconds, req, path, headers, body)\n"
    "  waiting = waiting + 1\n"
    "  timer.after(seconds, function()\n"
    "    waiting = waiting - 1\n"
    "    answer(req, path, headers, body)\n"
    "  end)\n"
    "end\n"
    "local function dispatch(req, method, path, query, headers, body)\n"
    "  if path:find('^/err') then error('the dispatch fails') end\n"
    "  local how = path:match('^/(%a+)') or ({ 'now', 'later', 'slow' })[#path % 3 + 1]\n"
    "  if how == 'later' then return later(0, req, path, headers, body) end\n"
    "  if how == 'slow' then return later(0.002, req, path, headers, body) end\n"
    "  answer(req, path, headers, body)\n"
    "end\n"
    "local srv = assert(http.listen('127.0.0.1', 0, dispatch,\n"
    "  { max_body = 16384, max_bodies_in_flight = 12000, keepalive_timeout = 0.3,\n"
    "    request_timeout = 0.5 }))\n"
    "return srv:port(), function() return waiting + srv:connections() end,\n"
    "  function() return srv:stats().bodies_in_flight end\n";

static lua_State *fuzz_L;
static int fuzz_port;
static int fuzz_busy_ref;
static int fuzz_bodies_ref;
static uv_loop_t *fuzz_loop;

static void fuzz_http_setup(void) {
    signal(SIGPIPE, SIG_IGN);
    fuzz_loop = rill_loop();
    fuzz_L = lua_newstate(fuzz_lua_alloc, NULL);
    if (fuzz_L == NULL)
        abort();
    luaL_openlibs(fuzz_L);
    rill_modules_register(fuzz_L, rill_stdlib_files);
    if (luaL_loadbuffer(fuzz_L, fuzz_http_server_lua, sizeof fuzz_http_server_lua - 1,
                        "=harness") ||
        lua_pcall(fuzz_L, 0, 3, 0)) {
        fprintf(stderr, "fuzz: cannot start the server: %s\n", lua_tostring(fuzz_L, -1));
        exit(1);
    }
    fuzz_port = (int)lua_tointeger(fuzz_L, -3);
    fuzz_bodies_ref = luaL_ref(fuzz_L, LUA_REGISTRYINDEX);
    fuzz_busy_ref = luaL_ref(fuzz_L, LUA_REGISTRYINDEX);
    lua_pop(fuzz_L, 1);
}

/* The bytes the server counts against max_bodies_in_flight. */
static double fuzz_bodies(void) {
    lua_rawgeti(fuzz_L, LUA_REGISTRYINDEX, fuzz_bodies_ref);
    lua_call(fuzz_L, 0, 1);
    double n = lua_tonumber(fuzz_L, -1);
    lua_pop(fuzz_L, 1);
    return n;
}

/* Connections still open plus late answers still to run. */
static int fuzz_busy(void) {
    lua_rawgeti(fuzz_L, LUA_REGISTRYINDEX, fuzz_busy_ref);
    lua_call(fuzz_L, 0, 1);
    int n = (int)lua_tointeger(fuzz_L, -1);
    lua_pop(fuzz_L, 1);
    return n;
}

static void fuzz_pump(int turns) {
    for (int i = 0; i < turns; i++)
        uv_run(fuzz_loop, UV_RUN_NOWAIT);
}

/* ---- The client ---- */

typedef struct fuzz_client {
    int fd;          /* -1 once closed */
    int reading;     /* reads what the server sends (else lets it pile up) */
    int write_shut;  /* shutdown(SHUT_WR) done */
    int peer_gone;   /* EOF or an error from the server's side */
    size_t received; /* bytes the server sent */
    char head[9];    /* its first bytes: "HTTP/1.1 " */
} fuzz_client;

static void fuzz_client_read(fuzz_client *c) {
    char b[65536];
    while (c->fd >= 0 && !c->peer_gone) {
        ssize_t n = recv(c->fd, b, sizeof b, 0);
        if (n > 0) {
            for (size_t i = 0; i < (size_t)n && c->received + i < sizeof c->head; i++)
                c->head[c->received + i] = b[i];
            c->received += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        c->peer_gone = 1; /* EOF, or a reset */
    }
}

static void fuzz_client_open(fuzz_client *c) {
    memset(c, 0, sizeof *c);
    c->reading = 1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fuzz_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = c->fd < 0 ? -1 : connect(c->fd, (struct sockaddr *)&a, sizeof a);
    if (rc != 0 && errno == EINTR) { /* libFuzzer's timer signal: the connect goes on */
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        socklen_t len = sizeof rc;
        while (poll(&pfd, 1, 1000) < 0 && errno == EINTR)
            ;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &rc, &len) != 0)
            rc = -1;
    }
    if (rc != 0) {
        fprintf(stderr, "fuzz: cannot connect to the server: %s\n", strerror(rc > 0 ? rc : errno));
        abort();
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

/* Sends all of p unless the server stops taking it (closed, or not reading). */
static void fuzz_client_send(fuzz_client *c, const unsigned char *p, size_t len) {
    int stuck = 0;
    while (len > 0 && c->fd >= 0 && !c->write_shut && stuck < 50) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            stuck = 0;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            stuck++;
            fuzz_pump(1);
            if (c->reading)
                fuzz_client_read(c);
        } else {
            return; /* EPIPE, ECONNRESET: the server closed */
        }
    }
}

static void fuzz_client_close(fuzz_client *c, int abortive) {
    if (c->fd < 0)
        return;
    if (abortive) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* RST, not FIN */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
}

/* Whatever the server sent must be HTTP. */
static void fuzz_client_check(const fuzz_client *c) {
    size_t n = c->received < sizeof c->head ? c->received : sizeof c->head;
    if (memcmp(c->head, "HTTP/1.1 ", n) != 0) {
        fprintf(stderr, "fuzz: the server answered %.9s..., not HTTP/1.1\n", c->head);
        abort();
    }
}

/* ---- One input ---- */

enum {
    ACT_WRITE_1,
    ACT_WRITE_16,
    ACT_WRITE_256,
    ACT_RUN,
    ACT_TOGGLE_READING,
    ACT_SHUT_WR,
    ACT_RESET,
    ACT_CLOSE
};

/* Plays script (one action a byte: low 3 bits the action, high 5 an
 * argument) against stream, the bytes the client has to send, then sends
 * what is left and leaves: `leave` 0 half-closes and waits for the server to
 * close, 1 resets, 2 closes. Returns once the server is idle again. */
static void fuzz_http_run(const unsigned char *script, size_t nscript, const unsigned char *stream,
                          size_t nstream, int leave) {
    if (fuzz_L == NULL)
        fuzz_http_setup();
    fuzz_client c;
    fuzz_client_open(&c);
    size_t off = 0;
    for (size_t i = 0; i < nscript && c.fd >= 0; i++) {
        unsigned arg = (unsigned)(script[i] >> 3) + 1;
        size_t n = 0;
        switch (script[i] & 7) {
        case ACT_WRITE_1:
            n = arg;
            break;
        case ACT_WRITE_16:
            n = arg * 16;
            break;
        case ACT_WRITE_256:
            n = arg * 256;
            break;
        case ACT_RUN:
            fuzz_pump((int)arg);
            break;
        case ACT_TOGGLE_READING:
            c.reading = !c.reading;
            break;
        case ACT_SHUT_WR:
            shutdown(c.fd, SHUT_WR);
            c.write_shut = 1;
            break;
        case ACT_RESET:
            fuzz_client_close(&c, 1);
            break;
        case ACT_CLOSE:
            fuzz_client_close(&c, 0);
            break;
        }
        if (n > 0) {
            if (n > nstream - off)
                n = nstream - off;
            fuzz_client_send(&c, stream + off, n);
            off += n;
            if (arg & 1)
                fuzz_pump(1); /* else the next write lands in the same read */
        }
        if (c.reading)
            fuzz_client_read(&c);
    }
    if (c.fd >= 0) {
        fuzz_client_send(&c, stream + off, nstream - off);
        fuzz_pump(2);
        if (c.reading)
            fuzz_client_read(&c);
        if (leave == 0 && !c.write_shut) {
            shutdown(c.fd, SHUT_WR);
            c.write_shut = 1;
        }
        if (leave == 0) { /* read until the server closes (it must: EOF came) */
            c.reading = 1;
            uint64_t start = uv_now(fuzz_loop);
            while (!c.peer_gone && uv_now(fuzz_loop) - start < 3000) {
                if (fuzz_busy() == 0) { /* the server is done: its FIN is on the way */
                    struct pollfd pfd = {.fd = c.fd, .events = POLLIN};
                    poll(&pfd, 1, 100);
                    fuzz_client_read(&c);
                    break;
                }
                uv_run(fuzz_loop, UV_RUN_ONCE); /* a connection or a timer: it wakes up */
                fuzz_client_read(&c);
            }
        }
        fuzz_client_close(&c, leave == 1);
    }
    fuzz_client_check(&c);
    /* The server must let go of the connection by itself, in well under 3 s
     * (its request timeout here is 0.5 s). */
    uv_update_time(fuzz_loop);
    uint64_t start = uv_now(fuzz_loop);
    while (fuzz_busy() > 0) {
        if (uv_now(fuzz_loop) - start > 3000) {
            fprintf(stderr,
                    "fuzz: the server still holds %d connections or answers 3 s after the "
                    "client left\n",
                    fuzz_busy());
            abort();
        }
        uv_run(fuzz_loop, UV_RUN_ONCE);
    }
    /* No connection left: nothing may still count against the budget (a
     * drift would refuse every body once it added up to the budget). */
    if (fuzz_bodies() != 0) {
        fprintf(stderr, "fuzz: %.0f bytes of bodies in flight with no connection open\n",
                fuzz_bodies());
        abort();
    }
    static unsigned runs;
    if (++runs % 64 == 0)
        lua_gc(fuzz_L, LUA_GCCOLLECT, 0);
}

#endif
