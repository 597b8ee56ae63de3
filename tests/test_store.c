/*
 * test_store.c: the two store backends (sqlite.c and pg.c over batch.c),
 * driven from Lua on a real loop: typed results, group commits where one
 * failing batch is undone alone, a task killed while its batch is in
 * flight, connection errors. The Postgres half runs against a throwaway
 * server (tools/pg-sandbox.sh), started and stopped here.
 */
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "t.h"
#include "t_state.h"
#include "rill.h"
#include "watchdog.h"

static lua_State *L;

static void open_state(void) {
    L = t_state_open();
}

static void close_state(void) {
    t_state_close(L);
}

/* Runs Lua code, then the loop until it has nothing left to do; the code
 * sets the global `out`, returned (or "lua error: ..."). The string stays
 * valid until the next call. */
static char result[4096];
static const char *run(const char *code) {
    if (luaL_dostring(L, code) != 0) {
        snprintf(result, sizeof result, "lua error: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return result;
    }
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    lua_getfield(L, LUA_GLOBALSINDEX, "out");
    snprintf(result, sizeof result, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(no out)");
    lua_pop(L, 1);
    return result;
}

/* Lua helpers every test uses: `open()` (set per backend), `go(fn)` runs fn
 * in a task and records an error in `out`, `show(rows)` renders rows. */
static const char *PRELUDE =
    "task = require 'rill.c.task'\n"
    "timer = require 'rill.c.timer'\n"
    "function go(fn) task.spawn(fn, function(_, ok, e) if not ok then out = 'error: ' .. "
    "tostring(e) "
    "end end) end\n"
    "function show(rows)\n"
    "  local t = {}\n"
    "  for _, r in ipairs(rows) do\n"
    "    local cols = {}\n"
    "    for k, v in pairs(r) do cols[#cols + 1] = k .. '=' .. tostring(v) .. ':' .. type(v) end\n"
    "    table.sort(cols)\n"
    "    t[#t + 1] = table.concat(cols, ',')\n"
    "  end\n"
    "  return table.concat(t, ';')\n"
    "end\n";

static void open_backend(const char *opener) {
    static int states;
    open_state();
    lua_pushinteger(L, ++states); /* tells databases of successive states apart */
    lua_setglobal(L, "state_seq");
    T_EQ_INT(luaL_dostring(L, PRELUDE), 0);
    T_EQ_INT(luaL_dostring(L, opener), 0);
}

/* ---- the same checks on both backends ---- */

static void check_typed_results(void) {
    T_EQ_STR(
        run("out = nil; go(function()\n"
            "  local c = open()\n"
            "  local res = assert(c:batch {\n"
            "    { 'CREATE TABLE t (i BIGINT, f DOUBLE PRECISION, s TEXT, n TEXT)' },\n"
            "    { 'INSERT INTO t (i, f, s, n) VALUES ($1, $2, $3, $4)', 42, 2.5, 'hé', nil, n = 4 "
            "},\n"
            "    { 'INSERT INTO t (i, f, s) VALUES ($1, $2, $3)', 9007199254740993 - 1, -1, '', n "
            "= 3 },\n"
            "    { 'SELECT i, f, s, n FROM t ORDER BY i' },\n"
            "  })\n"
            "  out = res[2].changes .. '|' .. show(res[4])\n"
            "  c:close()\n"
            "end)"),
        "1|f=2.5:number,i=42:number,s=hé:string;f=-1:number,i=9.007199254741e+15:number,s=:string");
}

static const char *expected_undone; /* "ok,<backend>: failed,ok|..." */

static void check_failing_batch_is_undone_alone(void) {
    /* Three batches in one loop turn: they share a group (one commit); the
     * middle one fails half-way and only its own insert is undone. */
    T_EQ_STR(run("out = nil; go(function()\n"
                 "  local c = open()\n"
                 "  assert(c:batch { { 'CREATE TABLE u (k TEXT PRIMARY KEY)' } })\n"
                 "  local got = {}\n"
                 "  local function note(i) return function(res, err)\n"
                 "    got[i] = res and 'ok' or err:match('^%a+: ') .. 'failed' end end\n"
                 "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'a', n = 1 } }, note(1))\n"
                 "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'b', n = 1 },\n"
                 "            { 'INSERT INTO u VALUES ($1)', 'a', n = 1 } }, note(2))\n"
                 "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'c', n = 1 } }, note(3))\n"
                 "  local rows = assert(c:batch { { 'SELECT k FROM u ORDER BY k' } })[1]\n"
                 "  out = table.concat(got, ',') .. '|' .. show(rows)\n"
                 "  c:close()\n"
                 "end)"),
             expected_undone);
}

static void check_misuse_raises(void) {
    T_EQ_STR(run("out = nil; go(function()\n"
                 "  local c = open()\n"
                 "  local ok, e = pcall(c.batch, c, { { 'SELECT $1', {}, n = 1 } })\n"
                 "  out = e:match('a parameter must be[^(]*')\n"
                 "  c:close()\n"
                 "  ok, e = pcall(c.batch, c, { { 'SELECT 1' } })\n"
                 "  out = out .. '|' .. e:match('the connection is closed')\n"
                 "end)"),
             "a parameter must be nil, a boolean, a number or a string |the connection is closed");
    T_EQ_STR(
        run("out = nil; go(function()\n"
            "  local c = open()\n"
            "  local _, e1 = pcall(c.batch, c, { { '  ' } })\n"
            "  local _, e2 = pcall(c.batch, c, { { 'SELECT 1', n = 65 } })\n"
            "  out = e1:match('must be its SQL text') .. '|' .. e2:match('too many parameters')\n"
            "  c:close()\n"
            "end)"),
        "must be its SQL text|too many parameters");
}

static void check_parameter_types_may_change(void) {
    /* The same statement with an integer, then a float, then text, then nil. */
    T_EQ_STR(
        run("out = nil; go(function()\n"
            "  local c = open()\n"
            "  assert(c:batch { { 'CREATE TABLE w (x DOUBLE PRECISION)' } })\n"
            "  for _, v in ipairs { 2, 2.5, '3.25', false } do\n"
            "    assert(c:batch { { 'INSERT INTO w (x) VALUES ($1)', v or nil, n = 1 } })\n"
            "  end\n"
            "  local rows = assert(c:batch { { 'SELECT x FROM w ORDER BY x IS NULL, x' } })[1]\n"
            "  out = rows.changes .. '|' .. show(rows)\n"
            "  c:close()\n"
            "end)"),
        "4|x=2:number;x=2.5:number;x=3.25:number;");
}

static void check_killed_task_drops_its_outcome(void) {
    /* The task's deadline passes while its batch is in flight: the task
     * ends, the batch completes, and its outcome goes nowhere. */
    /* opened first, outside the deadline: making a Postgres database can
     * take longer than 0.2 s on a loaded machine */
    T_EQ_STR(run("out = nil; go(function()\n"
                 "  conn = open()\n"
                 "  assert(conn:batch { { 'CREATE TABLE v (x INTEGER)' } })\n"
                 "  out = 'open'\n"
                 "end)"),
             "open");
    T_EQ_STR(run("out = nil\n"
                 "task.spawn(function()\n"
                 "  local c = conn\n"
                 "  while true do c:batch { { 'INSERT INTO v VALUES (1)' } } end\n"
                 "end, function(_, ok, e) out = tostring(ok) .. ':' .. "
                 "tostring(e):match('deadline') end, "
                 "0.2)"),
             "false:deadline");
    T_EQ_STR(run("out = nil; go(function()\n"
                 "  local rows = assert(conn:batch { { 'SELECT count(*) AS n FROM v' } })[1]\n"
                 "  out = rows[1].n > 0 and 'rows kept' or 'none'\n"
                 "  conn:close()\n"
                 "  conn = nil\n"
                 "end)"),
             "rows kept");
}

/* Runs every check on a backend; opener is Lua defining open(). */
static void check_backend(const char *opener) {
    void (*checks[])(void) = {check_typed_results, check_failing_batch_is_undone_alone,
                              check_misuse_raises, check_parameter_types_may_change,
                              check_killed_task_drops_its_outcome};
    for (size_t i = 0; i < RILL_ARRAY_LEN(checks); i++) {
        open_backend(opener);
        checks[i]();
        close_state();
    }
}

/* ---- SQLite ---- */

static char sqlite_dir[] = "/tmp/rill-test-store-XXXXXX";

static void test_sqlite(void) {
    static char opener[256];
    static int n;
    snprintf(opener, sizeof opener,
             "local sqlite = require 'rill.c.sqlite'\n"
             "function open() n_db = (n_db or 0) + 1\n"
             "  return sqlite.open('%s/db' .. %d .. '-' .. n_db) end",
             sqlite_dir, n++);
    expected_undone = "ok,sqlite: failed,ok|k=a:string;k=c:string";
    check_backend(opener);
}

static void test_sqlite_rollback_of_the_whole_transaction(void) {
    /* INSERT OR ROLLBACK ends the group's transaction, not just its batch:
     * every batch of its group reports the failure, none is kept (the first
     * batch went alone, while the others queued); and a second statement in
     * one entry is refused, not ignored. */
    open_backend("sqlite = require 'rill.c.sqlite'");
    static char code[1536];
    snprintf(
        code, sizeof code,
        "out = nil; go(function()\n"
        "  local c = sqlite.open('%s/rollback.db')\n"
        "  assert(c:batch { { 'CREATE TABLE u (k TEXT PRIMARY KEY)' } })\n"
        "  assert(c:batch { { 'INSERT INTO u VALUES ($1)', 'a', n = 1 } })\n"
        "  local got = {}\n"
        "  local function note(i) return function(res) got[i] = res and 'ok' or 'failed' end end\n"
        "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'b', n = 1 } }, note(1))\n"
        "  c:batch({ { 'INSERT OR ROLLBACK INTO u VALUES ($1)', 'a', n = 1 } }, note(2))\n"
        "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'c', n = 1 } }, note(3))\n"
        "  timer.sleep(0.05) -- that group is done\n"
        "  local rows = assert(c:batch { { 'SELECT k FROM u ORDER BY k' } })[1]\n"
        "  local _, e = c:batch { { 'SELECT 1; DELETE FROM u' } }\n"
        "  out = table.concat(got, ',') .. '|' .. show(rows) .. '|' .. e\n"
        "  c:close()\n"
        "end)",
        sqlite_dir);
    T_EQ_STR(run(code),
             "ok,failed,failed|k=a:string;k=b:string|sqlite: one statement per entry: there is "
             "more after the first (in: SELECT 1; DELETE FROM u)");
    close_state();
}

static void test_sqlite_failing_batch_after_others_in_its_group(void) {
    /* A group runs first without savepoints; a batch failing after others
     * of its group makes the whole group run again, each batch in its
     * savepoint: the batches before it keep their work and report the rows
     * of the second run only, the ones after it run once. */
    open_backend("sqlite = require 'rill.c.sqlite'");
    static char code[1536];
    snprintf(code, sizeof code,
             "out = nil; go(function()\n"
             "  local c = sqlite.open('%s/regroup.db')\n"
             "  assert(c:batch { { 'CREATE TABLE u (k TEXT PRIMARY KEY)' } })\n"
             "  assert(c:batch { { 'INSERT INTO u VALUES ($1)', 'a', n = 1 } })\n"
             "  local got = {}\n"
             "  c:batch({ { 'SELECT 1 AS one' } }, function() end) -- goes alone\n"
             "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'b', n = 1 }, { 'SELECT k FROM u ORDER BY "
             "k' } },\n"
             "    function(res, err) got[1] = res and res[1].changes .. ':' .. show(res[2]) or err "
             "end)\n"
             "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'c', n = 1 },\n"
             "            { 'INSERT INTO u VALUES ($1)', 'a', n = 1 } },\n"
             "    function(res, err) got[2] = res and 'ok' or err:match('^%%a+: ') .. 'failed' "
             "end)\n"
             "  c:batch({ { 'INSERT INTO u VALUES ($1)', 'd', n = 1 } },\n"
             "    function(res, err) got[3] = res and res[1].changes or err end)\n"
             "  local rows = assert(c:batch { { 'SELECT k FROM u ORDER BY k' } })[1]\n"
             "  out = table.concat(got, ',') .. '|' .. show(rows)\n"
             "  c:close()\n"
             "end)",
             sqlite_dir);
    T_EQ_STR(run(code),
             "1:k=a:string;k=b:string,sqlite: failed,1|k=a:string;k=b:string;k=d:string");
    close_state();
}

static void test_sqlite_parameters_out_of_order(void) {
    /* $n is the n-th parameter wherever and however often it appears, also
     * from a statement's cached form (its second use), and with a parameter
     * the statement does not use. */
    open_backend("sqlite = require 'rill.c.sqlite'");
    T_EQ_STR(run("out = nil; go(function()\n"
                 "  local c = sqlite.open(':memory:')\n"
                 "  local q = 'SELECT $3 AS c, $1 AS a, $3 || $1 AS ca'\n"
                 "  local r1 = assert(c:batch { { q, 'x', 'unused', 'z', n = 3 } })[1]\n"
                 "  local r2 = assert(c:batch { { q, 'p', 'unused', 'q', n = 3 } })[1]\n"
                 "  out = show(r1) .. '|' .. show(r2)\n"
                 "  c:close()\n"
                 "end)"),
             "a=x:string,c=z:string,ca=zx:string|a=p:string,c=q:string,ca=qp:string");
    close_state();
}

static void test_sqlite_open_error(void) {
    open_backend("sqlite = require 'rill.c.sqlite'");
    T_EQ_STR(run("local c, e = sqlite.open('/nonexistent/dir/x.db'); out = e"),
             "sqlite: cannot open /nonexistent/dir/x.db: unable to open database file");
    close_state();
}

/* ---- Postgres ---- */

static char pg_dir[] = "/tmp/rill-test-pg-XXXXXX";
static char pg_url[256];

static int start_postgres(void) {
    if (mkdtemp(pg_dir) == NULL)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "tools/pg-sandbox.sh start %s/pg", pg_dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    int got = fgets(pg_url, sizeof pg_url, p) != NULL;
    int rc = pclose(p);
    pg_url[strcspn(pg_url, "\n")] = '\0';
    /* under valgrind on a loaded machine a backend's start took over the
     * default 10 s: the connections here wait on the server, not the clock */
    strncat(pg_url, "?connect_timeout=120", sizeof pg_url - strlen(pg_url) - 1);
    return got && rc == 0 ? 0 : -1;
}

static void stop_postgres(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "tools/pg-sandbox.sh stop %s/pg; rmdir %s", pg_dir, pg_dir);
    T_EQ_INT(system(cmd), 0);
}

/* Each backend check gets a fresh database, made on the server's first one. */
static void test_postgres(void) {
    static char opener[1024];
    snprintf(opener, sizeof opener,
             "local pg = require 'rill.c.pg'\n"
             "function open()\n"
             "  n_db = (n_db or 0) + 1\n"
             "  local name = 'c' .. state_seq .. '_' .. n_db\n"
             "  local admin = assert(pg.open('%s'))\n"
             "  assert(admin:batch { { 'CREATE DATABASE ' .. name } })\n"
             "  admin:close()\n"
             "  return assert(pg.open(('%s'):gsub('/rill%%?', '/' .. name .. '?')))\n"
             "end",
             pg_url, pg_url);
    expected_undone = "ok,postgres: failed,ok|k=a:string;k=c:string";
    check_backend(opener);
}

static void test_postgres_commit_errors_fail_the_group(void) {
    /* A deferred constraint fails at commit, after every statement has
     * answered: each batch of the group gets the error and nothing is kept.
     * A comment-only statement is not an error and is run once. */
    static char code[2048];
    open_backend("pg = require 'rill.c.pg'");
    snprintf(
        code, sizeof code,
        "out = nil; go(function()\n"
        "  local c = assert(pg.open('%s'))\n"
        "  assert(c:batch { { 'CREATE TABLE p (id INTEGER PRIMARY KEY)' },\n"
        "    { 'CREATE TABLE ch (pid INTEGER REFERENCES p DEFERRABLE INITIALLY DEFERRED)' } })\n"
        "  local got = {}\n"
        "  local function note(i) return function(res, err)\n"
        "    got[i] = res and 'ok' or err:match('at commit') or err end end\n"
        "  c:batch({ { 'INSERT INTO p VALUES (1)' } }, note(1))\n"
        "  c:batch({ { 'INSERT INTO ch VALUES (99)' } }, note(2))\n"
        "  timer.sleep(0.05) -- that group is done\n"
        "  local rows = assert(c:batch { { 'SELECT count(*) AS n FROM p' } })[1]\n"
        "  local n1 = rows[1].n\n"
        "  c:batch({ { 'INSERT INTO p VALUES (2)' } }, note(3))\n"
        "  c:batch({ { '-- nothing to do' } }, note(4))\n"
        "  timer.sleep(0.05)\n"
        "  rows = assert(c:batch { { 'SELECT count(*) AS n FROM p' } })[1]\n"
        "  out = table.concat(got, ',') .. '|' .. n1 .. '|' .. rows[1].n\n"
        "  assert(c:batch { { 'DROP TABLE ch' }, { 'DROP TABLE p' } })\n"
        "  c:close()\n"
        "end)",
        pg_url);
    T_EQ_STR(run(code), "at commit,at commit,ok,ok|0|1");
    close_state();
}

static void test_postgres_notifications_reach_on_notify(void) {
    static char code[1536];
    open_backend("pg = require 'rill.c.pg'");
    snprintf(code, sizeof code,
             "out = nil; go(function()\n"
             "  local c = assert(pg.open('%s'))\n"
             "  local got\n"
             "  c:on_notify(function(channel, payload) got = channel .. ':' .. payload end)\n"
             "  assert(c:batch { { 'LISTEN t1' } })\n"
             "  local other = assert(pg.open('%s'))\n"
             "  assert(other:batch { { 'SELECT pg_notify($1, $2)', 't1', 'hello', n = 2 } })\n"
             "  other:close()\n"
             "  for _ = 1, 300 do if got then break end timer.sleep(0.01) end\n"
             "  out = got or 'no notification'\n"
             "  c:close()\n"
             "end)",
             pg_url, pg_url);
    T_EQ_STR(run(code), "t1:hello");
    close_state();
}

static void test_postgres_connection_refused(void) {
    open_backend("pg = require 'rill.c.pg'");
    const char *out =
        run("out = nil; go(function()\n"
            "  local c, e = pg.open('postgres://rill@127.0.0.1:1/rill?connect_timeout=5')\n"
            "  out = tostring(c) .. '|' .. e\n"
            "end)");
    T_CHECK(strncmp(out, "nil|postgres: ", 14) == 0);
    T_CHECK(strstr(out, "refused") != NULL);
    close_state();
}

static void test_postgres_reconnects_after_a_broken_connection(void) {
    /* The connection dies under a statement (its backend terminated by that
     * very statement): the statement fails with the reason, the next one
     * gets a new connection. */
    static char code[1024];
    open_backend("pg = require 'rill.c.pg'");
    snprintf(code, sizeof code,
             "out = nil; go(function()\n"
             "  local c = assert(pg.open('%s'))\n"
             "  local res, err = c:batch { { 'SELECT pg_terminate_backend(pg_backend_pid())' } }\n"
             "  local lost = err and (err:match('connection lost') or err:match('terminating'))\n"
             "  local first = res and 'ok' or lost and 'lost' or err\n"
             "  res = c:batch { { 'SELECT 1 AS one' } }\n"
             "  out = first .. '|' .. (res and res[1][1].one or 'failed again')\n"
             "  c:close()\n"
             "end)",
             pg_url);
    T_EQ_STR(run(code), "lost|1");
    close_state();
}

static void test_postgres_exit_with_batches_in_flight_frees_them(void) {
    /* rill stops (SIGTERM past its drain) while a run waits on a statement
     * and another batch waits behind it: main.c closes the loop's handles
     * and lua_close collects the connection with both batches still held.
     * The connection's collection must free them (they were left, 752 bytes
     * that LeakSanitizer reported, which made an ASan rill exit 1). */
    static char code[1024];
    open_backend("pg = require 'rill.c.pg'");
    snprintf(code, sizeof code,
             "out = nil; go(function()\n"
             "  local c = assert(pg.open('%s'))\n"
             "  c:batch({ { 'SELECT $1::text AS queued', 'behind it', n = 1 } }, function() end)\n"
             "  timer.after(0.3, function() out = 'in flight' end)\n"
             "  c:batch { { 'SELECT pg_sleep(10)' } }\n"
             "  out = 'answered'\n"
             "end)",
             pg_url);
    T_EQ_INT(luaL_dostring(L, code), 0);
    for (int i = 0; i < 1000; i++) {
        uv_run(rill_loop(), UV_RUN_ONCE);
        lua_getglobal(L, "out");
        int done = lua_isstring(L, -1);
        lua_pop(L, 1);
        if (done)
            break;
    }
    lua_getglobal(L, "out");
    T_EQ_STR(lua_tostring(L, -1), "in flight");
    lua_pop(L, 1);
    /* main.c's wind-down, the loop not run dry first */
    uv_walk(rill_loop(), t_state_close_handle, NULL);
    uv_run(rill_loop(), UV_RUN_DEFAULT);
    rill_watchdog_stop();
    lua_close(L);
    T_EQ_INT(uv_loop_alive(rill_loop()), 0);
}

/* An allocator that fails once, for the next block of at least fail_size
 * bytes (set from Lua by fail_next(n)): the real malloc failure a decode of
 * a json column may meet, where no run's limit is involved. */
static size_t fail_size;

static void *failing_alloc(void *ud, void *p, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(p);
        return NULL;
    }
    if (fail_size != 0 && nsize >= fail_size && nsize > osize) {
        fail_size = 0;
        return NULL;
    }
    return realloc(p, nsize);
}

static int l_fail_next(lua_State *L) {
    fail_size = (size_t)luaL_checkinteger(L, 1);
    return 0;
}

static void test_postgres_a_json_column_without_memory_comes_back_as_its_text(void) {
    /* The decoded array's part (50,001 slots, 512 KiB once grown) cannot be
     * had: the decode runs under lua_pcall (batch.c), so the column comes
     * back as its text instead of the process aborting; the next decode
     * works. (The text itself is interned already: `text` holds it.) */
    static char code[1536];
    L = lua_newstate(failing_alloc, NULL);
    luaL_openlibs(L);
    rill_modules_register(L, NULL);
    rill_watchdog_start(L);
    lua_register(L, "fail_next", l_fail_next);
    T_EQ_INT(luaL_dostring(L, PRELUDE), 0);
    snprintf(code, sizeof code,
             "out = nil; go(function()\n"
             "  local c = assert(require('rill.c.pg').open('%s'))\n"
             "  local text = '[' .. ('1,'):rep(50000) .. '1]'\n"
             "  fail_next(256 * 1024)\n"
             "  local j1 = assert(c:batch { { 'SELECT $1::json AS j', text, n = 1 } })[1][1].j\n"
             "  local j2 = assert(c:batch { { 'SELECT $1::json AS j', text, n = 1 } })[1][1].j\n"
             "  out = type(j1) .. '|' .. tostring(j1 == text) .. '|' .. type(j2) .. '|' .. #j2\n"
             "  c:close()\n"
             "end)",
             pg_url);
    T_EQ_STR(run(code), "string|true|table|50001");
    close_state();
}

int main(void) {
    if (mkdtemp(sqlite_dir) == NULL)
        return 2;
    T_RUN(test_sqlite);
    T_RUN(test_sqlite_rollback_of_the_whole_transaction);
    T_RUN(test_sqlite_failing_batch_after_others_in_its_group);
    T_RUN(test_sqlite_parameters_out_of_order);
    T_RUN(test_sqlite_open_error);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", sqlite_dir);
    T_CHECK(system(cmd) == 0);
    if (start_postgres() != 0) {
        fprintf(stderr, "cannot start a Postgres server (tools/pg-sandbox.sh)\n");
        t_failed++;
        return T_END();
    }
    T_RUN(test_postgres);
    T_RUN(test_postgres_commit_errors_fail_the_group);
    T_RUN(test_postgres_notifications_reach_on_notify);
    T_RUN(test_postgres_connection_refused);
    T_RUN(test_postgres_reconnects_after_a_broken_connection);
    T_RUN(test_postgres_exit_with_batches_in_flight_frees_them);
    T_RUN(test_postgres_a_json_column_without_memory_comes_back_as_its_text);
    stop_postgres();
    return T_END();
}
