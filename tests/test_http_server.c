/*
 * test_http_server.c: the HTTP server (http_server.c) over real sockets.
 * The loop runs on the main thread with a Lua dispatch function; a client
 * thread speaks raw HTTP to it with blocking sockets and records what it
 * gets back; the checks run after both are done.
 */
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lualib.h>

#include "t.h"
#include "rill.h"

static lua_State *L;
static int port;
static atomic_int client_done;

/* The dispatch answers "METHOD PATH?QUERY|x-a header|body"; "/later" answers
 * from a timer. */
static const char *SERVER =
    "local http = require 'rill.c.http_server'\n"
    "local timer = require 'rill.c.timer'\n"
    "late = {}\n"
    "srv = assert(http.listen('127.0.0.1', 0, function(req, m, p, q, h, b)\n"
    "  local text = m .. ' ' .. p .. '?' .. (q or '') .. '|' .. (h['x-a'] or '')\n"
    "    .. '|' .. b\n"
    "  if p == '/boom' then error('boom') end\n"
    "  if p == '/later' then\n"
    "    timer.after(0.05, function() late[q or ''] = tostring(req:respond(200, text)) end)\n"
    "  else\n"
    "    req:respond(200, text, { ['x-b'] = 'yes', ['content-type'] = 'text/plain' })\n"
    "  end\n"
    "end, { max_body = 64, on_error = function(m) dispatch_error = m end }))\n"
    "return srv:port()";

typedef struct exchange {
    const char *send;
    size_t expect_responses; /* read until this many responses have arrived */
    char got[8192];
    int close_early; /* close without reading, once the request is sent */
} exchange;

static exchange cases[] = {
    {"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nX-A: one\r\n\r\n", 1, "", 0},
    {"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 1, "", 0},
    /* two requests in one write: answered in order on one connection */
    {"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n", 2, "", 0},
    {"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", 1, "", 0},
    {"NONSENSE\r\n\r\n", 1, "", 0},
    {"GET /later HTTP/1.1\r\nHost: t\r\n\r\n", 1, "", 0},
    {"GET /later?fin HTTP/1.1\r\nHost: t\r\n\r\n", 0, "", 1},
    {"GET /c HTTP/1.0\r\n\r\n", 1, "", 0},
    {"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n", 1, "", 0},
};

static void exchange_run(exchange *x) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return;
    }
    if (write(fd, x->send, strlen(x->send)) < 0 || x->close_early) {
        close(fd);
        return;
    }
    size_t len = 0;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        size_t seen = 0;
        for (const char *p = x->got; (p = strstr(p, "HTTP/1.1 ")); p++)
            seen++;
        if (seen >= x->expect_responses && strstr(x->got, "\r\n\r\n")) {
            /* wait for the last body: our bodies end where the data ends */
            usleep(20000);
        }
        ssize_t n = read(fd, x->got + len, sizeof x->got - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        x->got[len] = '\0';
        if (seen >= x->expect_responses)
            break;
    }
    close(fd);
}

static int connect_to(int to_port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)to_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* "Expect: 100-continue" with its body, then an abortive close (RST): the
 * 100 Continue the server writes fails while it is still parsing, and the
 * request goes to a route that answers later. */
static void expect_continue_then_reset(void) {
    static const char req[] = "POST /later HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                              "Content-Length: 5\r\n\r\nhello";
    int fd = connect_to(port);
    if (fd < 0)
        return;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (write(fd, req, sizeof req - 1) < 0) {
        close(fd);
        return;
    }
    close(fd);
}

static void *client(void *arg) {
    for (size_t i = 0; i < RILL_ARRAY_LEN(cases); i++)
        exchange_run(&cases[i]);
    for (int i = 0; i < 300; i++)
        expect_continue_then_reset();
    usleep(100000); /* let the server see the early hang-up and the late answer */
    atomic_store(&client_done, 1);
    return NULL;
}

static void on_poll(uv_timer_t *t) {
    if (atomic_load(&client_done)) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        if (luaL_dostring(L, "srv:close()") != 0)
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
    }
}

static void close_handle(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void serve_all_cases(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    rill_modules_register(L, NULL);
    if (luaL_dostring(L, SERVER) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    port = (int)lua_tointeger(L, -1);
    pthread_t th;
    pthread_create(&th, NULL, client, NULL);
    uv_timer_t poll;
    uv_timer_init(rill_loop(), &poll);
    uv_timer_start(&poll, on_poll, 10, 10);
    /* Runs until the server and every connection have closed. */
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    lua_gc(L, LUA_GCCOLLECT, 0);
    uv_walk(rill_loop(), close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
}

static void test_a_simple_get(void) {
    T_CHECK(strstr(cases[0].got, "HTTP/1.1 200 OK\r\n") == cases[0].got);
    T_CHECK(strstr(cases[0].got, "\r\nContent-Type: text/plain\r\n") != NULL);
    T_CHECK(strstr(cases[0].got, "\r\nx-b: yes\r\n") != NULL);
    T_CHECK(strstr(cases[0].got, "\r\n\r\nGET /a?x=1|one|") != NULL);
}

static void test_a_post_body(void) {
    T_CHECK(strstr(cases[1].got, "Content-Length: 15\r\n") != NULL);
    T_CHECK(strstr(cases[1].got, "\r\n\r\nPOST /b?||hello") != NULL);
}

static void test_pipelined_requests_in_order(void) {
    const char *first = strstr(cases[2].got, "GET /1?");
    const char *second = strstr(cases[2].got, "GET /2?");
    T_CHECK(first != NULL && second != NULL && first < second);
}

static void test_body_over_the_limit_is_413(void) {
    T_CHECK(strstr(cases[3].got, "HTTP/1.1 413 ") == cases[3].got);
    T_CHECK(strstr(cases[3].got, "larger than the limit") != NULL);
    T_CHECK(strstr(cases[3].got, "Connection: close") != NULL);
}

static void test_garbage_is_400(void) {
    T_CHECK(strstr(cases[4].got, "HTTP/1.1 400 ") == cases[4].got);
}

static void test_a_late_answer_and_a_client_that_left(void) {
    T_CHECK(strstr(cases[5].got, "\r\n\r\nGET /later?||") != NULL);
    /* A client that closes once its request is sent (a FIN) may have only
     * shut its side (shutdown(SHUT_WR), nc -N): its answer is still
     * written, and its late respond() reports true (it reported false when
     * an EOF closed the connection at once). */
    lua_getfield(L, LUA_GLOBALSINDEX, "late");
    lua_getfield(L, -1, "fin");
    T_EQ_STR(lua_tostring(L, -1), "true");
    lua_pop(L, 2);
}

static void test_a_dispatch_that_raises_is_a_500_reported_to_on_error(void) {
    T_CHECK(strstr(cases[8].got, "HTTP/1.1 500 ") == cases[8].got);
    lua_getfield(L, LUA_GLOBALSINDEX, "dispatch_error");
    const char *m = lua_tostring(L, -1);
    T_CHECK(m != NULL && strstr(m, "boom") != NULL);
    lua_pop(L, 1);
}

static void test_http_1_0_closes(void) {
    T_CHECK(strstr(cases[7].got, "HTTP/1.1 200 OK\r\n") == cases[7].got);
    T_CHECK(strstr(cases[7].got, "Connection: close\r\n") != NULL);
}

/* ---- Fairness: one connection's pipelined backlog does not hold up others ----
 *
 * Connection A sends "/hold" (answered later) then FAIR_REQUESTS pipelined
 * GETs; once the server has read all of them (nothing left unread in its
 * sockets), connection B sends one GET, and while B's bytes wait in the
 * kernel the loop answers "/hold" from inside a single timer callback. The
 * server must dispatch B before the last of A's backlog: draining the
 * backlog inside that answer (all of it in one loop turn) serves B last. */

#define FAIR_REQUESTS 16000
static const char FAIR_ONE[] = "GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
static atomic_int fair_stage; /* 1 A sent, 2 the server has read A, 3 B sent, 4 done */
static int fair_a, fair_b;
static size_t fair_a_got, fair_b_got;

static const char *FAIR_SERVER =
    "local http = require 'rill.c.http_server'\n"
    "seq = {}\n"
    "fair = assert(http.listen('127.0.0.1', 0, function(req, m, p)\n"
    "  if p == '/hold' then held = req return end\n"
    "  seq[#seq + 1] = p:sub(2, 2)\n"
    "  req:respond(200, 'k')\n"
    "end, { max_pipeline = 4 * 1024 * 1024, max_requests = 100000 }))\n"
    "return fair:port()";

/* Waits for a condition, polling, for at most 30 s (a generous bound: the
 * check that follows fails if the condition never came). */
#define WAIT_FOR(cond)                                                                             \
    for (int wait_i_ = 0; !(cond) && wait_i_ < 30000; wait_i_++)                                   \
    usleep(1000)

static int unsent(int fd) {
    int n = 0;
    ioctl(fd, SIOCOUTQ, &n);
    return n;
}

/* Reads until want responses have come: counted by their body, "k" (no
 * other lower-case k in our responses). */
static size_t read_all(int fd, size_t want) {
    static char sink[65536];
    size_t responses = 0;
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (responses < want) {
        ssize_t n = read(fd, sink, sizeof sink);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            responses += sink[i] == 'k';
    }
    return responses;
}

static void *fair_client(void *arg) {
    static const char hold[] = "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n";
    size_t one = sizeof FAIR_ONE - 1;
    size_t len = sizeof hold - 1;
    char *a = malloc(len + one * FAIR_REQUESTS);
    memcpy(a, hold, len);
    for (int i = 0; i < FAIR_REQUESTS; i++, len += one)
        memcpy(a + len, FAIR_ONE, one);
    fair_a = connect_to(port);
    fair_b = connect_to(port);
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fair_a, a + off, len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    free(a);
    WAIT_FOR(unsent(fair_a) == 0); /* every byte of A acknowledged by the server's kernel */
    atomic_store(&fair_stage, 1);
    WAIT_FOR(atomic_load(&fair_stage) >= 2);
    static const char b[] = "GET /b HTTP/1.1\r\nHost: t\r\n\r\n";
    if (write(fair_b, b, sizeof b - 1) < 0)
        perror("write");
    WAIT_FOR(unsent(fair_b) == 0);
    atomic_store(&fair_stage, 3);
    fair_b_got = read_all(fair_b, 1);
    fair_a_got = read_all(fair_a, FAIR_REQUESTS);
    close(fair_a);
    close(fair_b);
    atomic_store(&fair_stage, 4);
    return NULL;
}

static void count_unread(uv_handle_t *h, void *arg) {
    uv_os_fd_t fd;
    int n = 0;
    if (h->type == UV_TCP && uv_fileno(h, &fd) == 0 && ioctl(fd, FIONREAD, &n) == 0)
        *(int *)arg += n;
}

static void fair_tick(uv_timer_t *t) {
    int stage = atomic_load(&fair_stage);
    if (stage == 1) {
        int unread = 0;
        uv_walk(rill_loop(), count_unread, &unread);
        if (unread == 0) {
            atomic_store(&fair_stage, 2);
            /* B's request reaches the kernel while the loop waits here */
            WAIT_FOR(atomic_load(&fair_stage) >= 3);
            if (luaL_dostring(L, "held:respond(200, 'held')") != 0)
                fprintf(stderr, "%s\n", lua_tostring(L, -1));
        }
    } else if (stage == 4) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        if (luaL_dostring(L, "fair:close()") != 0)
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
    }
}

static void serve_fairness(void) {
    if (luaL_dostring(L, FAIR_SERVER) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    port = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    pthread_t th;
    pthread_create(&th, NULL, fair_client, NULL);
    uv_timer_t tick;
    uv_timer_init(rill_loop(), &tick);
    uv_timer_start(&tick, fair_tick, 5, 5);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    pthread_join(th, NULL);
}

static void test_a_pipelined_backlog_does_not_hold_up_another_connection(void) {
    /* the sequence of dispatched paths: 'b' before the last 'a' */
    T_CHECK(luaL_dostring(L,
                          "local s = table.concat(seq)\n"
                          "return #s, (s:find('b', 1, true) or 0), (s:find('a[^a]*$') or 0)") == 0);
    int n = (int)lua_tointeger(L, -3), b_at = (int)lua_tointeger(L, -2),
        last_a = (int)lua_tointeger(L, -1);
    lua_pop(L, 3);
    T_EQ_INT(n, FAIR_REQUESTS + 1);
    T_CHECK(b_at > 0 && b_at < last_a);
    T_EQ_INT(fair_b_got, 1);
    T_EQ_INT(fair_a_got, FAIR_REQUESTS);
}

/* ---- A server closed while its connections live ----
 * The server's struct outlives it: a connection answered after the server
 * closed, and after its Lua object was collected, still finds it. */

static atomic_int closed_stage;
static char closed_got[4096];

static const char *CLOSED_SERVER =
    "local http = require 'rill.c.http_server'\n"
    "local timer = require 'rill.c.timer'\n"
    "gone = assert(http.listen('127.0.0.1', 0, function(req)\n"
    "  held = req\n"
    "  gone:close(); gone = nil\n"
    "  timer.after(0.01, function()\n"
    "    collectgarbage(); collectgarbage()\n"
    "    held_answer = tostring(held:respond(200, 'after close')); held = nil\n"
    "  end)\n"
    "end))\n"
    "return gone:port()";

static void *closed_client(void *arg) {
    int fd = connect_to(port);
    static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
    if (fd >= 0 && write(fd, req, sizeof req - 1) > 0) {
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        size_t len = 0;
        ssize_t n;
        while ((n = read(fd, closed_got + len, sizeof closed_got - 1 - len)) > 0)
            len += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&closed_stage, 1);
    return NULL;
}

static void serve_closed_server(void) {
    if (luaL_dostring(L, CLOSED_SERVER) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    port = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    pthread_t th;
    pthread_create(&th, NULL, closed_client, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    pthread_join(th, NULL);
}

static void test_an_answer_after_the_server_closed(void) {
    T_CHECK(strstr(closed_got, "HTTP/1.1 200 OK\r\n") == closed_got);
    T_CHECK(strstr(closed_got, "Connection: close\r\n") != NULL);
    T_CHECK(strstr(closed_got, "\r\n\r\nafter close") != NULL);
}

/* ---- The process winds down with a server listening ----
 * main stops the loop with a listener open, an idle keep-alive connection
 * and a request never answered: each is freed by its own close callback
 * (LeakSanitizer found the server and its connections left behind). */

static atomic_int wind_stage; /* 1 the client's two connections are in */
static int wind_fds[2];

static const char *WIND_SERVER =
    "local http = require 'rill.c.http_server'\n"
    "held = {}\n"
    "wind = assert(http.listen('127.0.0.1', 0, function(req, m, p)\n"
    "  if p == '/hold' then held[#held + 1] = req else req:respond(200, 'ok') end\n"
    "end, { reserve_descriptors = 4 }))\n"
    "local port = wind:port(); wind = nil\n"
    "return port";

static void *wind_client(void *arg) {
    static const char get[] = "GET /now HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char hold[] = "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n";
    char got[512];
    wind_fds[0] = connect_to(port);
    wind_fds[1] = connect_to(port);
    if (wind_fds[0] >= 0 && write(wind_fds[0], get, sizeof get - 1) > 0)
        (void)read(wind_fds[0], got, sizeof got); /* answered: the connection is idle now */
    if (wind_fds[1] >= 0)
        (void)write(wind_fds[1], hold, sizeof hold - 1);
    atomic_store(&wind_stage, 1);
    return NULL;
}

static void wind_tick(uv_timer_t *t) {
    lua_getglobal(L, "held");
    size_t held = lua_objlen(L, -1);
    lua_pop(L, 1);
    if (atomic_load(&wind_stage) == 1 && held == 1) {
        uv_close((uv_handle_t *)t, NULL);
        uv_stop(rill_loop());
    }
}

static int wind_live_earlier, wind_live_before, wind_live_after, wind_spares_after;

static void serve_and_wind_down(void) {
    if (luaL_dostring(L, WIND_SERVER) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        exit(1);
    }
    port = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    /* the earlier cases' servers, whose handles their own walks closed */
    wind_live_earlier = rill_http_server_live() - 1;
    pthread_t th;
    pthread_create(&th, NULL, wind_client, NULL);
    uv_timer_t tick;
    uv_timer_init(rill_loop(), &tick);
    uv_timer_start(&tick, wind_tick, 5, 5);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    pthread_join(th, NULL);
    wind_live_before = rill_http_server_live();
    /* as main does at exit */
    rill_http_server_wind_down();
    uv_walk(rill_loop(), close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    lua_gc(L, LUA_GCCOLLECT, 0);
    wind_live_after = rill_http_server_live();
    wind_spares_after = rill_http_server_spares();
    for (int i = 0; i < 2; i++)
        if (wind_fds[i] >= 0)
            close(wind_fds[i]);
}

static void test_the_wind_down_frees_servers_and_connections(void) {
    T_CHECK(wind_live_before - wind_live_earlier == 3); /* the server, its two connections */
    T_CHECK(wind_live_after == wind_live_earlier);
    T_CHECK(wind_spares_after == 0); /* the spare body buffers the earlier cases left */
}

int main(void) {
    serve_all_cases();
    serve_fairness();
    serve_closed_server();
    serve_and_wind_down();
    T_RUN(test_a_simple_get);
    T_RUN(test_a_post_body);
    T_RUN(test_pipelined_requests_in_order);
    T_RUN(test_body_over_the_limit_is_413);
    T_RUN(test_garbage_is_400);
    T_RUN(test_a_late_answer_and_a_client_that_left);
    T_RUN(test_http_1_0_closes);
    T_RUN(test_a_dispatch_that_raises_is_a_500_reported_to_on_error);
    T_RUN(test_a_pipelined_backlog_does_not_hold_up_another_connection);
    T_RUN(test_an_answer_after_the_server_closed);
    T_RUN(test_the_wind_down_frees_servers_and_connections);
    lua_close(L);
    uv_loop_close(rill_loop());
    return T_END();
}
