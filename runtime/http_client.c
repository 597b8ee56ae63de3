/*
 * http_client.c: outbound HTTP on the loop, through libcurl's multi
 * interface driven by libuv: curl says which sockets to watch and when its
 * next timeout is (socket and timer callbacks), libuv watches them, and curl
 * does its I/O only when a socket is ready. Any number of requests run at
 * once on the loop thread; connections are kept and reused across runs, up
 * to a per-host limit (requests beyond it wait inside curl). Name lookups
 * use libcurl's threaded resolver, off the loop.
 *
 * A request belongs to the task that waits for it: it resumes the task with
 * (status, headers, body) or (nil, message, code); if the task is killed
 * first, the transfer is aborted and freed. A response body is held in C
 * while it arrives, at most max_size and at most the memory its run has
 * left when it asks (code "max_size" or "run_memory_limit" past either),
 * and then given to the run as a string charged to the run's meter.
 *
 * Lua: client.request{method, url, headers = {"Name: value", ...}, body,
 *        timeout, connect_timeout (seconds), max_size (bytes),
 *        verify = true, ca_file, redirects = 0, username, password}
 *        -> status, headers (lower-case name -> value), body | nil, message, code
 *
 * Mail: with mail_from set, the URL is smtp:// or smtps:// and the request
 * sends one message: mail_from, mail_rcpt = {"<a@b>", ...}, body = the
 * whole message (headers and content; curl does the dot-stuffing),
 * use_ssl = "try" | "all" (STARTTLS on smtp://: "all" refuses to go on in
 * clear), username/password for AUTH. The status is the server's last reply
 * code (250). Building the message is the caller's job (email.lua).
 *      client.configure{max_per_host = n, max_connections = n}
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "buf.h"
#include "task.h"

typedef struct request {
    CURL *easy;
    rill_task *task;
    struct curl_slist *headers; /* sent */
    struct curl_slist *rcpt;    /* mail: the recipients */
    char *body;                 /* sent (curl does not copy it) */
    size_t body_len, body_sent; /* mail: the message, uploaded by on_read */
    buf response, header_lines;
    size_t max_size;
    int too_big;
    int capped;       /* max_size is the memory the run had left, under its own max_size */
    uint64_t started; /* uv_hrtime() */
    char error[CURL_ERROR_SIZE];
} request;

/* One watched socket: curl's socket, libuv's poll handle. */
typedef struct socket_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
} socket_ctx;

static CURLM *multi;
static uv_timer_t timeout_timer;
static long max_per_host = 8, max_connections = 256;
static int active; /* requests in flight: while any, curl's timer keeps the loop alive */

static void request_free(request *r) {
    if (r->task && --active == 0) /* it was in flight */
        uv_unref((uv_handle_t *)&timeout_timer);
    if (r->easy) {
        curl_multi_remove_handle(multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    curl_slist_free_all(r->rcpt);
    free(r->body);
    buf_free(&r->response);
    buf_free(&r->header_lines);
    free(r);
}

/* ---- curl's callbacks on a transfer ---- */

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
    request *r = arg;
    size_t len = size * n;
    if (r->response.len + len > r->max_size) {
        r->too_big = 1;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    return buf_append(&r->response, p, len) == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
    request *r = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        r->header_lines.len = 0; /* a new response (after a redirect or a 100) */
    return buf_append(&r->header_lines, p, len) == 0 ? len : 0;
}

/* CURLOPT_READFUNCTION: the next part of a mail message. */
static size_t on_read(char *p, size_t size, size_t n, void *arg) {
    request *r = arg;
    size_t len = r->body_len - r->body_sent;
    if (len > size * n)
        len = size * n;
    if (len)
        memcpy(p, r->body + r->body_sent, len);
    r->body_sent += len;
    return len;
}

/* ---- the multi handle on the loop ---- */

static void check_done(void);

static void on_socket_event(uv_poll_t *h, int status, int events) {
    socket_ctx *s = h->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(multi, s->fd, flags, &running);
    check_done();
}

static void free_socket(uv_handle_t *h) {
    free(h->data);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl waits on, or stop. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *ctx) {
    socket_ctx *s = ctx;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, free_socket);
            curl_multi_assign(multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = malloc(sizeof *s);
        if (s == NULL || uv_poll_init_socket(rill_loop(), &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->poll.data = s;
        curl_multi_assign(multi, fd, s);
    }
    int events = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, events, on_socket_event);
    return 0;
}

static void on_timeout(uv_timer_t *h) {
    int running;
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

/* CURLMOPT_TIMERFUNCTION: curl's next deadline (-1: none). */
static int on_curl_timer(CURLM *m, long timeout_ms, void *arg) {
    if (timeout_ms < 0)
        uv_timer_stop(&timeout_timer);
    else /* even 0: curl must not be called back from inside this callback */
        uv_timer_start(&timeout_timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

static int init_multi(void) {
    if (multi)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || (multi = curl_multi_init()) == NULL)
        return -1;
    uv_timer_init(rill_loop(), &timeout_timer);
    uv_unref((uv_handle_t *)&timeout_timer); /* requests keep the loop alive, not this */
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_per_host);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_connections);
    return 0;
}

/* ---- delivering ---- */

/* Pushes the response headers as a table: lower-case name -> value (a
 * header sent several times: its values joined with ", "). */
static void push_headers(lua_State *L, const buf *b) {
    lua_newtable(L);
    const char *p = b->data, *end = b->data ? b->data + b->len : NULL;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        int status_line = line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0;
        if (colon && colon > p && !status_line) {
            luaL_Buffer name;
            luaL_buffinit(L, &name);
            for (const char *q = p; q < colon; q++)
                luaL_addchar(&name, (char)tolower((unsigned char)*q));
            luaL_pushresult(&name);
            const char *v = colon + 1, *v_end = line_end;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' '))
                v_end--;
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isstring(L, -1)) { /* seen before: append */
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(v_end - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(v_end - v));
            }
            lua_rawset(L, -3);
        }
        p = eol ? eol + 1 : end;
    }
}

/* pcall'ed with the request: returns status, headers and body. */
static int push_response(lua_State *L) {
    request *r = lua_touserdata(L, 1);
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, status);
    push_headers(L, &r->header_lines);
    lua_pushlstring(L, r->response.data ? r->response.data : "", r->response.len);
    return 3;
}

/* Resumes r's task with the outcome of its transfer, and frees r. */
static void deliver(request *r, CURLcode rc) {
    rill_task *t = r->task;
    lua_State *L = t->co;
    double ms = (double)(uv_hrtime() - r->started) / 1e6;
    if (rc == CURLE_OK) {
        /* Made on the main state under a pcall, charged to the run: a
         * refusal (the run's memory limit) is an error here, not a panic
         * on the waiting coroutine. */
        lua_State *M = rill_task_main_state();
        lua_checkstack(M, 5);
        lua_pushcfunction(M, push_response);
        lua_pushlightuserdata(M, r);
        uint32_t outer = rill_meter_enter(t->meter);
        int status = lua_pcall(M, 1, 3, 0);
        rill_meter_enter(outer);
        if (status == 0) {
            lua_xmove(M, L, 3);
            request_free(r);
            rill_task_resume(t, 3);
            return;
        }
        lua_pop(M, 1); /* the error */
        lua_pushnil(L);
        lua_pushfstring(L, "response of %d bytes over the run's memory limit (run_memory_limit)",
                        (int)r->response.len);
        lua_pushliteral(L, "run_memory_limit");
        request_free(r);
        rill_task_resume(t, 3);
        return;
    }
    const char *reason = r->too_big ? NULL : (r->error[0] ? r->error : curl_easy_strerror(rc));
    lua_pushnil(L);
    if (r->too_big && r->capped)
        lua_pushfstring(L,
                        "response larger than %d bytes, the memory the run had left under "
                        "run_memory_limit (after %d ms)",
                        (int)r->max_size, (int)ms);
    else if (r->too_big)
        lua_pushfstring(L, "response larger than %d bytes (max_size) (after %d ms)",
                        (int)r->max_size, (int)ms);
    else
        lua_pushfstring(L, "%s (after %d ms)", reason, (int)ms);
    if (r->too_big)
        lua_pushstring(L, r->capped ? "run_memory_limit" : "max_size");
    else
        lua_pushnil(L);
    request_free(r);
    rill_task_resume(t, 3);
}

static void check_done(void) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        request *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        deliver(r, msg->data.result);
    }
}

static void request_cancel(void *op) {
    request_free(op); /* removes the transfer from the multi handle */
}

/* ---- Lua ---- */

static double opt_number(lua_State *L, const char *key, double dflt) {
    lua_getfield(L, 1, key);
    double v = lua_isnil(L, -1) ? dflt : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, const char *key, size_t *len) {
    lua_getfield(L, 1, key);
    const char *v = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, len);
    lua_pop(L, 1); /* v stays valid: the options table holds the string */
    return v;
}

/* The rest of a mail request: sender, recipients, the message uploaded. */
static const char *setup_mail(lua_State *L, request *r, const char *from, const char *body,
                              size_t len) {
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
    lua_getfield(L, 1, "mail_rcpt");
    int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        struct curl_slist *l = curl_slist_append(r->rcpt, lua_tostring(L, -1));
        lua_pop(L, 1);
        if (l == NULL) {
            lua_pop(L, 1);
            return "out of memory";
        }
        r->rcpt = l;
    }
    lua_pop(L, 1);
    if (r->rcpt == NULL)
        return "mail_rcpt must list one recipient or more";
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, r->rcpt);
    if ((r->body = malloc(len ? len : 1)) == NULL)
        return "out of memory";
    if (len)
        memcpy(r->body, body, len);
    r->body_len = len;
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    return NULL;
}

/* Applies the options at 1 to r's easy handle; returns NULL or an error. */
static const char *setup(lua_State *L, request *r) {
    CURL *e = r->easy;
    size_t len = 0;
    const char *url = opt_string(L, "url", NULL);
    const char *method = opt_string(L, "method", NULL);
    const char *body = opt_string(L, "body", &len);
    const char *ca_file = opt_string(L, "ca_file", NULL);
    const char *username = opt_string(L, "username", NULL);
    const char *password = opt_string(L, "password", NULL);
    const char *mail_from = opt_string(L, "mail_from", NULL);
    const char *use_ssl = opt_string(L, "use_ssl", NULL);
    if (url == NULL)
        return "url is required";
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, mail_from ? "smtp,smtps" : "http,https");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(opt_number(L, "timeout", 30) * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(opt_number(L, "connect_timeout", 10) * 1000));
    long redirects = (long)opt_number(L, "redirects", 0);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, redirects > 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, redirects);
    lua_getfield(L, 1, "verify");
    long verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    if (ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    if (username)
        curl_easy_setopt(e, CURLOPT_USERNAME, username);
    if (password)
        curl_easy_setopt(e, CURLOPT_PASSWORD, password);
    if (use_ssl)
        curl_easy_setopt(e, CURLOPT_USE_SSL,
                         strcmp(use_ssl, "all") == 0 ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY);
    r->max_size = (size_t)opt_number(L, "max_size", 10 * 1024 * 1024);
    if (mail_from)
        return setup_mail(L, r, mail_from, body, len);
    if (method && strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (method && strcmp(method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        if ((r->body = malloc(len ? len : 1)) == NULL)
            return "out of memory";
        memcpy(r->body, body, len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            struct curl_slist *l = curl_slist_append(r->headers, luaL_checkstring(L, -1));
            lua_pop(L, 1);
            if (l == NULL) {
                lua_pop(L, 1);
                return "out of memory";
            }
            r->headers = l;
        }
    }
    lua_pop(L, 1);
    /* no "Expect: 100-continue" round trip before bodies */
    struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
    if (l == NULL)
        return "out of memory";
    r->headers = l;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    return NULL;
}

/* Raises on an option of the wrong type, before anything is allocated
 * (setup() reads them without raising). */
static void check_options(lua_State *L) {
    static const char *numbers[] = {"timeout", "connect_timeout", "redirects", "max_size", NULL};
    static const char *strings[] = {"url",      "method",    "body",    "ca_file", "username",
                                    "password", "mail_from", "use_ssl", NULL};
    for (int i = 0; numbers[i]; i++) {
        lua_getfield(L, 1, numbers[i]);
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "http: %s must be a number", numbers[i]);
        lua_pop(L, 1);
    }
    for (int i = 0; strings[i]; i++) {
        lua_getfield(L, 1, strings[i]);
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "http: %s must be a string", strings[i]);
        lua_pop(L, 1);
    }
    static const char *lists[] = {"headers", "mail_rcpt", NULL};
    for (int k = 0; lists[k]; k++) {
        lua_getfield(L, 1, lists[k]);
        if (lua_istable(L, -1)) {
            for (int i = 1; i <= (int)lua_objlen(L, -1); i++) {
                lua_rawgeti(L, -1, i);
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaL_error(L, "http: %s must be a list of strings", lists[k]);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "use_ssl");
    if (!lua_isnil(L, -1) && strcmp(lua_tostring(L, -1), "try") != 0 &&
        strcmp(lua_tostring(L, -1), "all") != 0)
        luaL_error(L, "http: use_ssl must be \"try\" or \"all\"");
    lua_pop(L, 1);
}

/* client.request(options) -> status, headers, body | nil, message */
static int l_request(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    rill_task *t = rill_task_check(L, "http.request");
    check_options(L);
    if (init_multi() != 0)
        return luaL_error(L, "http: cannot initialise libcurl");
    request *r = calloc(1, sizeof *r);
    if (r == NULL || (r->easy = curl_easy_init()) == NULL) {
        free(r);
        return luaL_error(L, "http: out of memory");
    }
    const char *err = setup(L, r);
    if (err) {
        request_free(r);
        return luaL_error(L, "http: %s", err);
    }
    /* The body is held in C while it arrives, then copied into the run's
     * memory: no more than the run has left (it waits meanwhile, so it
     * cannot spend it elsewhere). */
    size_t left = rill_meter_left(t->meter);
    if (left < r->max_size) {
        r->max_size = left;
        r->capped = 1;
    }
    r->task = t;
    r->started = uv_hrtime();
    if (active++ == 0)
        uv_ref((uv_handle_t *)&timeout_timer);
    if (curl_multi_add_handle(multi, r->easy) != CURLM_OK) {
        request_free(r);
        return luaL_error(L, "http: cannot start the request");
    }
    return rill_task_wait(L, t, request_cancel, r);
}

/* client.configure{max_per_host = n, max_connections = n} */
static int l_configure(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    max_per_host = (long)opt_number(L, "max_per_host", (double)max_per_host);
    max_connections = (long)opt_number(L, "max_connections", (double)max_connections);
    if (multi) {
        curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_per_host);
        curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_connections);
    }
    return 0;
}

int rill_http_client_open(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"request", l_request}, {"configure", l_configure}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
