/*
 * log.c: the process's log output, stderr, written without blocking the
 * loop. A reader that stops reading (a stalled pipe, a frozen terminal)
 * must not stall every flow: a line the descriptor cannot take at once
 * waits in a bounded buffer, written when the descriptor is writable; a
 * line that does not fit is dropped and counted, and one line says how many
 * were lost once writing resumes. rill_log() gives C code the same line
 * shapes as stdlib/rill/log.lua (JSON or text). Loop thread only.
 *
 * Lua (rill.c.log): write(line)   a finished line, newline included
 *                   configure{json = bool, buffer = bytes}
 *                   dropped() -> lines dropped since the start
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_FD 2
#define DEFAULT_BUFFER (1024 * 1024)

/* How lines reach the descriptor. */
enum {
    OUT_BLOCKING, /* a regular file (or a reopen that failed): write() as is */
    OUT_NONBLOCK, /* a pipe or terminal, reopened with O_NONBLOCK: our own file
                   * description, so the flag never reaches the process that
                   * shares the original one (a shell, a supervisor) */
    OUT_SOCKET    /* a socket: send() with MSG_DONTWAIT, no flag set at all */
};

static struct {
    int ready;
    int mode;
    int fd;           /* where lines go */
    int json;         /* the shape of rill_log's lines */
    char *buf;        /* lines waiting: [head, len) */
    size_t head, len; /* bytes written so far, bytes held */
    size_t cap;       /* the log_buffer setting */
    uint64_t dropped; /* lines dropped since the start */
    uint64_t untold;  /* dropped lines no line has told of yet */
    uv_poll_t poll;   /* the descriptor's writability, while lines wait */
    int poll_init;    /* poll was initialised */
    int polling;      /* poll is started */
    int winding_down; /* the loop is gone: rill_log_flush writes the rest */
} out = {.fd = LOG_FD, .cap = DEFAULT_BUFFER};

static void set_up(void) {
    struct stat st;
    out.ready = 1;
    out.mode = OUT_BLOCKING;
    out.fd = LOG_FD;
    if (fstat(LOG_FD, &st) != 0)
        return;
    if (S_ISSOCK(st.st_mode)) {
        out.mode = OUT_SOCKET;
    } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
        int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | O_APPEND);
        if (fd >= 0) {
            out.fd = fd;
            out.mode = OUT_NONBLOCK;
        }
    }
}

/* One write attempt: bytes written, 0 when the descriptor is full, -1 when
 * it is broken (the reader is gone: what is held can never be written). */
static ssize_t write_some(const char *p, size_t n) {
    for (;;) {
        ssize_t w = out.mode == OUT_SOCKET ? send(out.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
                                           : write(out.fd, p, n);
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

static void on_writable(uv_poll_t *h, int status, int events);

static void watch(int on) {
    if (out.mode == OUT_BLOCKING || out.winding_down || on == out.polling)
        return;
    if (!out.poll_init) {
        int rc = out.mode == OUT_SOCKET ? uv_poll_init_socket(rill_loop(), &out.poll, out.fd)
                                        : uv_poll_init(rill_loop(), &out.poll, out.fd);
        if (rc != 0)
            return; /* lines wait for the next write attempt instead */
        out.poll_init = 1;
        uv_unref((uv_handle_t *)&out.poll); /* the log never keeps rill alive */
    }
    if (uv_is_closing((uv_handle_t *)&out.poll))
        return; /* the loop's wind-down closed it; rill_log_flush takes over */
    if (on)
        uv_poll_start(&out.poll, UV_WRITABLE, on_writable);
    else
        uv_poll_stop(&out.poll);
    out.polling = on;
}

static void format_line(char *line, size_t size, size_t *n, const char *level, const char *msg,
                        const char *field, uint64_t value);

/* Writes what is held, as far as the descriptor takes it. */
static void drain(void) {
    while (out.head < out.len) {
        ssize_t w = write_some(out.buf + out.head, out.len - out.head);
        if (w < 0) {
            out.head = out.len; /* nobody reads: nothing held can be written */
            break;
        }
        if (w == 0) {
            watch(1);
            return;
        }
        out.head += (size_t)w;
    }
    out.head = out.len = 0;
    watch(0);
    if (out.untold > 0) {
        char line[256];
        size_t n;
        uint64_t untold = out.untold;
        out.untold = 0;
        format_line(line, sizeof line, &n, "warn",
                    "log lines dropped: the log output did not take them in time", "dropped",
                    untold);
        rill_log_line(line, n);
    }
}

static void on_writable(uv_poll_t *h, int status, int events) {
    drain();
}

void rill_log_line(const char *line, size_t n) {
    if (!out.ready)
        set_up();
    if (out.len == 0) { /* nothing waiting: straight out, as far as it goes */
        ssize_t w = write_some(line, n);
        if (w < 0 || (size_t)w == n)
            return;
        line += w;
        n -= (size_t)w;
        if (out.mode == OUT_BLOCKING) { /* a short write to a file: the rest */
            while (n > 0 && (w = write_some(line, n)) > 0) {
                line += w;
                n -= (size_t)w;
            }
            return;
        }
    }
    if (out.len - out.head + n > out.cap) {
        out.dropped++;
        out.untold++;
        return;
    }
    if (out.buf == NULL && (out.buf = malloc(out.cap)) == NULL) {
        out.dropped++;
        out.untold++;
        return;
    }
    if (out.len + n > out.cap) { /* room, but not at the end: compact */
        memmove(out.buf, out.buf + out.head, out.len - out.head);
        out.len -= out.head;
        out.head = 0;
    }
    memcpy(out.buf + out.len, line, n);
    out.len += n;
    watch(1);
}

uint64_t rill_log_dropped(void) {
    return out.dropped;
}

void rill_log_flush(int timeout_ms) {
    out.winding_down = 1;
    if (out.poll_init && out.polling && !uv_is_closing((uv_handle_t *)&out.poll))
        uv_poll_stop(&out.poll);
    out.polling = 0;
    uint64_t deadline = uv_hrtime() / 1000000 + (uint64_t)timeout_ms;
    while (out.len > out.head || out.untold > 0) {
        drain();
        if (out.len == out.head)
            continue; /* drain may have added the line about dropped lines */
        uint64_t now = uv_hrtime() / 1000000;
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = out.fd, .events = POLLOUT};
        if (poll(&p, 1, (int)(deadline - now)) < 0 && errno != EINTR)
            break;
    }
}

/* ---- line shapes, as stdlib/rill/log.lua makes them ---- */

static size_t put_json_string(char *dst, size_t size, const char *s) {
    size_t n = 0;
    for (; *s && n + 8 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)ch;
        } else if (ch == '\n') {
            dst[n++] = '\\';
            dst[n++] = 'n';
        } else if (ch < 0x20) {
            n += (size_t)snprintf(dst + n, size - n, "\\u%04x", ch);
        } else {
            dst[n++] = (char)ch;
        }
    }
    return n;
}

static void format_line(char *line, size_t size, size_t *n, const char *level, const char *msg,
                        const char *field, uint64_t value) {
    struct timespec ts;
    struct tm tm;
    char when[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    size_t k;
    size -= 2; /* room for the newline and the NUL */
    if (out.json) {
        k = (size_t)snprintf(line, size, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, level);
        k += put_json_string(line + k, size - k, msg);
        if (field)
            k += (size_t)snprintf(line + k, size - k, "\",\"%s\":%llu}", field,
                                  (unsigned long long)value);
        else
            k += (size_t)snprintf(line + k, size - k, "\"}");
    } else {
        char upper[8] = {0};
        for (int i = 0; level[i] && i < 7; i++)
            upper[i] = (char)(level[i] - ('a' <= level[i] && level[i] <= 'z' ? 32 : 0));
        k = (size_t)snprintf(line, size, "%s %-6s%s", when, upper, msg);
        if (field && k < size)
            k += (size_t)snprintf(line + k, size - k, " %s=%llu", field, (unsigned long long)value);
    }
    if (k > size)
        k = size;
    line[k++] = '\n';
    line[k] = '\0';
    *n = k;
}

void rill_log(const char *level, const char *fmt, ...) {
    char msg[2048], line[4200];
    size_t n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    format_line(line, sizeof line, &n, level, msg, NULL, 0);
    rill_log_line(line, n);
}

/* ---- Lua ---- */

static int l_write(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    rill_log_line(s, n);
    return 0;
}

/* configure{json = bool, buffer = bytes}: the shape of C's lines, and the
 * most bytes held while the output is not writable (log_buffer). */
static int l_configure(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "json");
    out.json = lua_toboolean(L, -1);
    lua_getfield(L, 1, "buffer");
    if (!lua_isnil(L, -1)) {
        lua_Number cap = luaL_checknumber(L, -1);
        luaL_argcheck(L, cap >= 4096 && cap <= 1024.0 * 1024 * 1024, 1,
                      "buffer must be between 4KiB and 1GiB");
        if (out.len == 0) { /* resized while nothing waits (at start, in practice) */
            free(out.buf);
            out.buf = NULL;
            out.head = 0;
            out.cap = (size_t)cap;
        }
    }
    lua_pop(L, 2);
    return 0;
}

static int l_dropped(lua_State *L) {
    lua_pushnumber(L, (lua_Number)out.dropped);
    return 1;
}

int rill_log_open(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"write", l_write}, {"configure", l_configure}, {"dropped", l_dropped}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
