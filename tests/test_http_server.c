/*
 * test_http_server.c: the HTTP server (http_server.c) over real sockets.
 * The loop runs on the main thread with a Lua dispatch function; a client
 * thread speaks raw HTTP to it with blocking sockets and records what it
 * gets back; the checks run after both are done.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
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
    "late_answer = 'unset'\n"
    "srv = assert(http.listen('127.0.0.1', 0, function(req, m, p, q, h, b)\n"
    "  local text = m .. ' ' .. p .. '?' .. (q or '') .. '|' .. (h['x-a'] or '')\n"
    "    .. '|' .. b\n"
    "  if p == '/later' then\n"
    "    timer.after(0.05, function() late_answer = tostring(req:respond(200, text)) end)\n"
    "  else\n"
    "    req:respond(200, text, { ['x-b'] = 'yes', ['content-type'] = 'text/plain' })\n"
    "  end\n"
    "end, { max_body = 64 }))\n"
    "return srv:port()";

typedef struct exchange {
    const char *send;
    size_t expect_responses; /* read until this many responses have arrived */
    char got[8192];
    int close_early; /* hang up without reading */
} exchange;

static exchange cases[] = {
    {"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nX-A: one\r\n\r\n", 1, "", 0},
    {"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", 1, "", 0},
    /* two requests in one write: answered in order on one connection */
    {"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n", 2, "", 0},
    {"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n", 1, "", 0},
    {"NONSENSE\r\n\r\n", 1, "", 0},
    {"GET /later HTTP/1.1\r\nHost: t\r\n\r\n", 1, "", 0},
    {"GET /later HTTP/1.1\r\nHost: t\r\n\r\n", 0, "", 1},
    {"GET /c HTTP/1.0\r\n\r\n", 1, "", 0},
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

static void *client(void *arg) {
    for (size_t i = 0; i < RILL_ARRAY_LEN(cases); i++)
        exchange_run(&cases[i]);
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
    lua_getfield(L, LUA_GLOBALSINDEX, "late_answer");
    /* the second /later client hung up: its late respond() reports false */
    T_EQ_STR(lua_tostring(L, -1), "false");
    lua_pop(L, 1);
}

static void test_http_1_0_closes(void) {
    T_CHECK(strstr(cases[7].got, "HTTP/1.1 200 OK\r\n") == cases[7].got);
    T_CHECK(strstr(cases[7].got, "Connection: close\r\n") != NULL);
}

int main(void) {
    serve_all_cases();
    T_RUN(test_a_simple_get);
    T_RUN(test_a_post_body);
    T_RUN(test_pipelined_requests_in_order);
    T_RUN(test_body_over_the_limit_is_413);
    T_RUN(test_garbage_is_400);
    T_RUN(test_a_late_answer_and_a_client_that_left);
    T_RUN(test_http_1_0_closes);
    lua_close(L);
    uv_loop_close(rill_loop());
    return T_END();
}
