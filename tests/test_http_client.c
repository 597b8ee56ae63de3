/*
 * test_http_client.c: the HTTP client (http_client.c) against rill's own
 * HTTP server on the same loop: answers, headers, size limits, timeouts,
 * a task killed while its request is in flight, refused connections, and
 * fifty requests at once; a mail request's checks and its refused connection. Run under ASan and
 * valgrind like every C test.
 */
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "t.h"
#include "rill.h"
#include "watchdog.h"

static lua_State *L;

static const char *SETUP =
    "server = require 'rill.c.http_server'\n"
    "client = require 'rill.c.http_client'\n"
    "task = require 'rill.c.task'\n"
    "timer = require 'rill.c.timer'\n"
    "srv = assert(server.listen('127.0.0.1', 0, function(req, m, p, q, h, b)\n"
    "  if p == '/slow' then\n"
    "    timer.after(0.3, function() req:respond(200, 'late') end)\n"
    "  elseif p == '/big' then\n"
    "    req:respond(200, string.rep('z', 100000))\n"
    "  else\n"
    "    req:respond(200, m .. ' ' .. p .. ' ' .. (h['x-a'] or '-') .. ' ' .. b, { ['x-b'] = 'yes' "
    "})\n"
    "  end\n"
    "end))\n"
    "base = 'http://127.0.0.1:' .. srv:port()\n"
    "got = {}\n"
    "pending = 0\n"
    "-- every request says Connection: close, so that no keep-alive connection\n"
    "-- of the server outlives the test (its connections close when idle only)\n"
    "local request = client.request\n"
    "client = { request = function(o)\n"
    "  o.headers = o.headers or {}\n"
    "  table.insert(o.headers, 'Connection: close')\n"
    "  return request(o)\n"
    "end }\n"
    "function go(name, fn, deadline)\n"
    "  pending = pending + 1\n"
    "  task.spawn(fn, function(_, ok, a) got[name] = ok and a or ('killed: ' .. tostring(a))\n"
    "    pending = pending - 1\n"
    "    if pending == 0 then srv:close() require('rill.c.os').exit(0) end end, deadline)\n"
    "end\n";

static const char *REQUESTS =
    "go('ok', function()\n"
    "  local s, h, b = client.request { url = base .. '/x', method = 'POST', body = 'hi',\n"
    "    headers = { 'X-A: one' } }\n"
    "  return s .. '|' .. h['x-b'] .. '|' .. b\n"
    "end)\n"
    "go('too_big', function()\n"
    "  local s, e = client.request { url = base .. '/big', max_size = 1000 }\n"
    "  return tostring(s) .. '|' .. e:match('^response larger than 1000 bytes')\n"
    "end)\n"
    "go('big', function()\n"
    "  local s, h, b = client.request { url = base .. '/big' }\n"
    "  return s .. '|' .. #b\n"
    "end)\n"
    "go('timeout', function()\n"
    "  local s, e = client.request { url = base .. '/slow', timeout = 0.1 }\n"
    "  return tostring(s) .. '|' .. (e:match('timed out') or e)\n"
    "end)\n"
    "go('killed', function()\n"
    "  return client.request { url = base .. '/slow' }\n"
    "end, 0.05)\n"
    "go('refused', function()\n"
    "  local s, e = client.request { url = 'http://127.0.0.1:1/' }\n"
    "  return tostring(s) .. '|' .. (e:match(\"Couldn't connect\") or e)\n"
    "end)\n"
    "go('mail_no_rcpt', function()\n"
    "  return select(2, pcall(client.request, { url = 'smtp://127.0.0.1:1', mail_from = "
    "'<a@b.c>',\n"
    "    mail_rcpt = {}, body = 'x' }))\n"
    "end)\n"
    "go('mail_refused', function()\n"
    "  local s, e = client.request { url = 'smtp://127.0.0.1:1', mail_from = '<a@b.c>',\n"
    "    mail_rcpt = { '<d@e.f>', '<g@h.i>' }, body = 'Subject: x\\r\\n\\r\\nhi\\r\\n', use_ssl = "
    "'all' }\n"
    "  return tostring(s) .. '|' .. (e:match(\"Couldn't connect\") or e)\n"
    "end)\n"
    "go('mail_bad_ssl', function()\n"
    "  return select(2, pcall(client.request, { url = 'smtp://127.0.0.1:1', mail_from = "
    "'<a@b.c>',\n"
    "    mail_rcpt = { '<d@e.f>' }, body = 'x', use_ssl = 'maybe' }))\n"
    "end)\n"
    "go('many', function()\n"
    "  local n = 0\n"
    "  local left = 50\n"
    "  for i = 1, 50 do\n"
    "    task.spawn(function() return client.request { url = base .. '/n' .. i } end,\n"
    "      function(_, ok, s) if ok and s == 200 then n = n + 1 end left = left - 1 end)\n"
    "  end\n"
    "  while left > 0 do timer.sleep(0.01) end\n"
    "  return n\n"
    "end)\n";

static const char *got(const char *name) {
    lua_getfield(L, LUA_GLOBALSINDEX, "got");
    lua_getfield(L, -1, name);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 2); /* still referenced by the table */
    return s;
}

static void close_handle(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void test_requests(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    rill_modules_register(L, NULL);
    rill_watchdog_start(L);
    if (luaL_dostring(L, SETUP) != 0 || luaL_dostring(L, REQUESTS) != 0) {
        fprintf(stderr, "lua: %s\n", lua_tostring(L, -1));
        T_CHECK(0);
        return;
    }
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    T_EQ_STR(got("ok"), "200|yes|POST /x one hi");
    T_EQ_STR(got("too_big"), "nil|response larger than 1000 bytes");
    T_EQ_STR(got("big"), "200|100000");
    T_EQ_STR(got("timeout"), "nil|timed out");
    T_CHECK(got("killed") && strstr(got("killed"), "killed: deadline") != NULL);
    T_EQ_STR(got("refused"), "nil|Couldn't connect");
    T_EQ_STR(got("many"), "50");
    T_CHECK(got("mail_no_rcpt") && strstr(got("mail_no_rcpt"), "mail_rcpt must list one") != NULL);
    T_EQ_STR(got("mail_refused"), "nil|Couldn't connect");
    T_CHECK(got("mail_bad_ssl") && strstr(got("mail_bad_ssl"), "use_ssl must be") != NULL);
    uv_walk(rill_loop(), close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    rill_watchdog_stop();
    lua_close(L);
}

int main(void) {
    T_RUN(test_requests);
    return T_END();
}
