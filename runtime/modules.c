/*
 * modules.c: the one place that makes rill's C modules and stdlib visible to
 * Lua. C modules are preloaded as "rill.c.<name>"; stdlib modules are found
 * by a package loader, in the sources embedded in the binary or, when
 * RILL_STDLIB names a directory, on disk (so stdlib edits need no rebuild).
 */
#include <stdlib.h>
#include <string.h>

#include "stdlib_embed.h"
#include "task.h"

#include <lua-cjson.h> /* after lua.h, which it assumes */

static uv_loop_t *the_loop;

uv_loop_t *rill_loop(void) {
    if (the_loop == NULL)
        the_loop = uv_default_loop();
    return the_loop;
}

void rill_lua_metatable(lua_State *L, const char *name, const luaL_Reg *methods) {
    if (luaL_newmetatable(L, name)) {
        lua_newtable(L);
        luaL_register(L, NULL, methods);
        lua_setfield(L, -2, "__index");
    }
}

static const rill_embedded_file *embedded;

/* The package.loaders entry for stdlib modules: returns the module's chunk,
 * or a string saying where it looked. */
static int stdlib_loader(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *dir = getenv("RILL_STDLIB");
    if (dir && *dir) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addstring(&b, dir);
        luaL_addchar(&b, '/');
        for (const char *p = name; *p; p++)
            luaL_addchar(&b, *p == '.' ? '/' : *p);
        luaL_addstring(&b, ".lua");
        luaL_pushresult(&b);
        const char *path = lua_tostring(L, -1);
        if (luaL_loadfile(L, path) == 0)
            return 1;
        if (strstr(lua_tostring(L, -1), "cannot open") == NULL)
            return lua_error(L); /* a syntax error in the stdlib must surface */
        lua_pushfstring(L, "\n\tno file '%s'", path);
        return 1;
    }
    for (const rill_embedded_file *f = embedded; f && f->module; f++) {
        if (strcmp(f->module, name) == 0) {
            lua_pushfstring(L, "@%s", f->path);
            if (luaL_loadbuffer(L, f->source, f->len, lua_tostring(L, -1)) != 0)
                return lua_error(L);
            return 1;
        }
    }
    lua_pushfstring(L, "\n\tno module '%s' in rill's stdlib", name);
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction open) {
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

void rill_modules_register(lua_State *L, const rill_embedded_file *stdlib) {
    static const struct {
        const char *name;
        lua_CFunction open;
    } modules[] = {
        {"rill.c.task", rill_task_open},
        {"rill.c.timer", rill_timer_open},
        {"rill.c.http_server", rill_http_server_open},
        {"rill.c.crypto", rill_crypto_open},
        {"rill.c.tz", rill_tz_open},
        {"rill.c.os", rill_os_open},
        {"rill.c.sqlite", rill_sqlite_open},
        {"rill.c.pg", rill_pg_open},
        {"rill.c.http_client", rill_http_client_open},
        {"rill.c.pattern", rill_pattern_open},
        {"rill.c.log", rill_log_open},
        {"rill.c.cjson_buf", rill_cjson_buf_open},
        {"rill.c.utf8", rill_utf8_open},
        {"rill.c.json", rill_json_open},
        {"rill.c.loopstat", rill_loopstat_open},
        {"cjson", luaopen_cjson},
    };
    rill_task_init(L);
    embedded = stdlib;
    for (size_t i = 0; i < RILL_ARRAY_LEN(modules); i++)
        preload(L, modules[i].name, modules[i].open);

    /* Insert the stdlib loader right after the preload searcher. */
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "loaders");
    int n = (int)lua_objlen(L, -1);
    for (int i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, stdlib_loader);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 2);
}
