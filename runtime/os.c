/*
 * os.c: what rill's own Lua code (never a flow) needs from the operating
 * system: files and directories, watching the flows directory, signals,
 * the environment, output, process facts and the exit code. Reading flow
 * files is synchronous: it happens at load and reload, a few small files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>

#include "task.h"

extern char **environ;

#define WATCH_MT "rill.watch"
#define SIGNAL_MT "rill.signal"

static int exit_code;

int rill_os_exit_code(void) {
    return exit_code;
}

/* Anchored callback handles (fs events, signals) share this shape. */
typedef struct callback_handle {
    union {
        uv_handle_t handle;
        uv_fs_event_t fs_event;
        uv_signal_t signal;
    } u;
    int fn_ref;
    int self_ref;
} callback_handle;

static void callback_handle_closed(uv_handle_t *h) {
    callback_handle *ch = h->data;
    luaL_unref(rill_task_main_state(), LUA_REGISTRYINDEX, ch->self_ref);
    ch->self_ref = LUA_NOREF;
}

static callback_handle *callback_handle_new(lua_State *L, const char *mt, int fn_index) {
    callback_handle *ch = lua_newuserdata(L, sizeof *ch);
    memset(ch, 0, sizeof *ch);
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, fn_index);
    ch->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    ch->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ch->u.handle.data = ch;
    return ch;
}

static void callback_handle_call(callback_handle *ch, const char *arg) {
    lua_State *L = rill_task_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, ch->fn_ref);
    if (arg)
        lua_pushstring(L, arg);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        rill_log("error", "error in a callback: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

static int l_handle_close(lua_State *L) {
    callback_handle *ch = lua_touserdata(L, 1);
    if (ch && ch->fn_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, ch->fn_ref);
        ch->fn_ref = LUA_NOREF;
        uv_close(&ch->u.handle, callback_handle_closed);
    }
    return 0;
}

static int l_handle_unref(lua_State *L) {
    callback_handle *ch = lua_touserdata(L, 1);
    if (ch && ch->fn_ref != LUA_NOREF)
        uv_unref(&ch->u.handle);
    return 0;
}

/* ---- Files ---- */

/* read_file(path) -> contents, or nil, message */
static int l_read_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t n;
    do {
        char *p = luaL_prepbuffer(&b);
        n = fread(p, 1, LUAL_BUFFERSIZE, f);
        luaL_addsize(&b, n);
    } while (n == LUAL_BUFFERSIZE);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: read error", path);
        return 2;
    }
    luaL_pushresult(&b);
    return 1;
}

/* list_dir(path) -> array of entry names (no . and ..), or nil, message */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int n = uv_fs_scandir(NULL, &req, path, 0, NULL);
    if (n < 0) {
        uv_fs_req_cleanup(&req);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, uv_strerror(n));
        return 2;
    }
    lua_createtable(L, n, 0);
    uv_dirent_t ent;
    int i = 0;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        lua_pushstring(L, ent.name);
        lua_rawseti(L, -2, ++i);
    }
    uv_fs_req_cleanup(&req);
    return 1;
}

/* stat(path) -> {type = "file"|"directory"|"other", size, mtime}, or nil, message */
static int l_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, (lua_Number)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    return 1;
}

/* mkdir_p(path) -> true, or nil and the reason: creates path and its parents. */
static int l_mkdir_p(lua_State *L) {
    size_t n;
    const char *path = luaL_checklstring(L, 1, &n);
    char buf[4096];
    luaL_argcheck(L, n > 0 && n < sizeof buf, 1, "empty or too long");
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                lua_pushnil(L);
                lua_pushfstring(L, "%s: %s", buf, strerror(errno));
                return 2;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
    callback_handle_call(h->data, filename);
}

/* watch(dir, fn) -> handle: fn(filename) on any change in dir. */
static int l_watch(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    callback_handle *ch = callback_handle_new(L, WATCH_MT, 2);
    uv_fs_event_init(rill_loop(), &ch->u.fs_event);
    int rc = uv_fs_event_start(&ch->u.fs_event, on_fs_event, path, 0);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, ch->fn_ref);
        ch->fn_ref = LUA_NOREF;
        uv_close(&ch->u.handle, callback_handle_closed);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot watch %s: %s", path, uv_strerror(rc));
        return 2;
    }
    return 1;
}

/* ---- Signals ---- */

static void on_signal(uv_signal_t *h, int signum) {
    const char *name = signum == SIGHUP ? "HUP" : signum == SIGTERM ? "TERM" : "INT";
    callback_handle_call(h->data, name);
}

/* on_signal(name, fn) -> handle; name is "HUP", "TERM" or "INT". */
static int l_on_signal(lua_State *L) {
    static const char *const names[] = {"HUP", "TERM", "INT", NULL};
    static const int numbers[] = {SIGHUP, SIGTERM, SIGINT};
    int which = luaL_checkoption(L, 1, NULL, names);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    callback_handle *ch = callback_handle_new(L, SIGNAL_MT, 2);
    uv_signal_init(rill_loop(), &ch->u.signal);
    uv_signal_start(&ch->u.signal, on_signal, numbers[which]);
    return 1;
}

/* ---- Process ---- */

/* write(fd, s): 1 for stdout, 2 for stderr; a blocking write of a log line. */
static int l_write(lua_State *L) {
    int fd = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd == 1 || fd == 2, 1, "must be 1 or 2");
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* exit(code): stops the loop; main() returns code once it has wound down. */
static int l_exit(lua_State *L) {
    exit_code = (int)luaL_optinteger(L, 1, 0);
    uv_stop(rill_loop());
    return 0;
}

/* environ() -> table of every environment variable */
static int l_environ(lua_State *L) {
    lua_newtable(L);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

static int l_getenv(lua_State *L) {
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v == NULL)
        return 0;
    lua_pushstring(L, v);
    return 1;
}

/* hrtime() -> monotonic seconds, as a float */
static int l_hrtime(lua_State *L) {
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
    return 1;
}

static int l_pid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* rss() -> resident set size in bytes */
static int l_rss(lua_State *L) {
    size_t rss = 0;
    if (uv_resident_set_memory(&rss) != 0)
        return 0;
    lua_pushnumber(L, (lua_Number)rss);
    return 1;
}

static int l_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* spin_c(seconds): spins in C for that long, never returning to Lua. For
 * tests only (tests/hostile/exit_c_spin.lua): code the watchdog cannot
 * interrupt, which rill's last line of defence must end. Flows get it only
 * when RILL_TEST_SPIN_C=1 (flows.lua). */
static int l_spin_c(lua_State *L) {
    uint64_t until = uv_hrtime() + (uint64_t)(luaL_checknumber(L, 1) * 1e9);
    volatile uint64_t n = 0;
    while (uv_hrtime() < until)
        n++;
    return 0;
}

int rill_os_open(lua_State *L) {
    static const luaL_Reg handle_methods[] = {
        {"close", l_handle_close}, {"unref", l_handle_unref}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"read_file", l_read_file},
                                     {"list_dir", l_list_dir},
                                     {"stat", l_stat},
                                     {"mkdir_p", l_mkdir_p},
                                     {"watch", l_watch},
                                     {"on_signal", l_on_signal},
                                     {"write", l_write},
                                     {"exit", l_exit},
                                     {"environ", l_environ},
                                     {"getenv", l_getenv},
                                     {"hrtime", l_hrtime},
                                     {"pid", l_pid},
                                     {"rss", l_rss},
                                     {"spin_c", l_spin_c},
                                     {"isatty", l_isatty},
                                     {NULL, NULL}};
    const char *mts[] = {WATCH_MT, SIGNAL_MT};
    for (size_t i = 0; i < RILL_ARRAY_LEN(mts); i++) {
        rill_lua_metatable(L, mts[i], handle_methods);
        lua_pop(L, 1);
    }
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
