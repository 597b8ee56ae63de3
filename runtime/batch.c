/*
 * batch.c: statement batches shared by the store backends (see batch.h):
 * C values, reading a batch from Lua, delivering its outcome.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "batch.h"

unsigned batch_hash_sql(const char *sql) {
    size_t n = strlen(sql), i = 0;
    uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, sql + i, 8);
        h = (h ^ w) * 0x100000001b3u;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, sql + i, n - i);
    h = (h ^ w) * 0xff51afd7ed558ccdu;
    return (unsigned)(h ^ (h >> 33));
}

int value_set_text(value *v, const char *p, size_t n) {
    v->type = VAL_TEXT;
    v->u.s.p = malloc(n + 1);
    if (v->u.s.p == NULL) {
        v->type = VAL_NULL;
        return -1;
    }
    memcpy(v->u.s.p, p, n);
    v->u.s.p[n] = '\0';
    v->u.s.n = n;
    return 0;
}

void value_free(value *v) {
    if (v->type == VAL_TEXT || v->type == VAL_JSON)
        free(v->u.s.p);
    v->type = VAL_NULL;
}

#define JSON_DECODE_KEY "rill.batch.json_decode"

/* Pushes JSON text decoded (json_decode.c, NULL as cjson.null) on L, or
 * the text as a string when it cannot be decoded (not JSON, or no memory
 * for the decode). The decode runs on the main thread: L may be a
 * suspended run's, and an error raised and caught on that thread left it
 * unusable (its next call failed: "attempt to call a number value"). */
static void push_json(lua_State *L, const char *p, size_t n) {
    lua_State *M = rill_task_main_state();
    /* the function kept in the registry: lua_pushcfunction makes a closure */
    lua_getfield(M, LUA_REGISTRYINDEX, JSON_DECODE_KEY);
    if (lua_isnil(M, -1)) {
        lua_pop(M, 1);
        lua_pushcfunction(M, rill_json_decode);
        lua_pushvalue(M, -1);
        lua_setfield(M, LUA_REGISTRYINDEX, JSON_DECODE_KEY);
    }
    lua_pushlstring(M, p, n);
    if (lua_pcall(M, 1, 1, 0) != 0) {
        lua_pop(M, 1);
        lua_pushlstring(L, p, n);
        return;
    }
    lua_xmove(M, L, 1); /* nothing to move when L is M */
}

#define EXACT_INT_MAX (INT64_C(1) << 53)

static const char *int64_text(int64_t i, char buf[24]) {
    snprintf(buf, 24, "%lld", (long long)i);
    return buf;
}

static void value_push(lua_State *L, const value *v) {
    char buf[24];
    switch (v->type) {
    case VAL_JSON:
        push_json(L, v->u.s.p, v->u.s.n);
        break;
    case VAL_INT:
        /* A double holds every integer up to 2^53; past it, the exact
         * digits as a string rather than a number that lost some. */
        if (v->u.i > EXACT_INT_MAX || v->u.i < -EXACT_INT_MAX)
            lua_pushfstring(L, "%s", int64_text(v->u.i, buf));
        else
            lua_pushnumber(L, (lua_Number)v->u.i);
        break;
    case VAL_FLOAT:
        lua_pushnumber(L, v->u.d);
        break;
    case VAL_TEXT:
        lua_pushlstring(L, v->u.s.p, v->u.s.n);
        break;
    case VAL_BOOL:
        lua_pushboolean(L, (int)v->u.i);
        break;
    default:
        lua_pushnil(L);
    }
}

/* ---- A batch's own bytes ----
 * The statements' SQL, parameters and texts are copied out of Lua (a
 * string may be collected while the store's thread reads it) into chunks
 * of the batch's, carved one after the other: a run's insert was fifteen
 * mallocs and frees on the loop, one per text, and malloc ~5% of the
 * loop's CPU per durable run. A text of more than half a chunk gets a
 * chunk of its own, put behind the one being carved. (A batch holds 4 KiB
 * at least while it waits, a small one as a run's insert: the requests
 * waiting for a stalled store are bounded by the connections.) */
#define CHUNK_BYTES 4096u

typedef struct batch_chunk {
    struct batch_chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) char data[];
} batch_chunk;

static void *batch_carve(batch *b, size_t n) {
    n = (n + 15) & ~(size_t)15; /* (data is max_align_t aligned: so is each piece) */
    batch_chunk *c = b->chunks;
    if (c != NULL && c->cap - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    size_t cap = n > CHUNK_BYTES / 2 ? n : CHUNK_BYTES;
    batch_chunk *fresh = malloc(sizeof *fresh + cap);
    if (fresh == NULL)
        return NULL;
    fresh->used = n;
    fresh->cap = cap;
    if (c != NULL && cap == n) { /* a big one: the current chunk stays first */
        fresh->next = c->next;
        c->next = fresh;
    } else {
        fresh->next = c;
        b->chunks = fresh;
    }
    return fresh->data;
}

static char *batch_copy(batch *b, const char *p, size_t n) {
    char *s = batch_carve(b, n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Copies the Lua value at idx into v (a text into b's chunks); returns NULL
 * or an error message. */
static const char *value_from_lua(lua_State *L, int idx, value *v, batch *b) {
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        v->type = VAL_NULL;
        return NULL;
    case LUA_TBOOLEAN:
        v->type = VAL_BOOL;
        v->u.i = lua_toboolean(L, idx);
        return NULL;
    case LUA_TNUMBER: {
        lua_Number n = lua_tonumber(L, idx);
        /* whole numbers within 2^53 are integers; the rest travel as floats
         * (the range is checked first: casting a huge value is undefined) */
        if (n >= -9007199254740992.0 && n <= 9007199254740992.0 && n == (lua_Number)(int64_t)n) {
            v->type = VAL_INT;
            v->u.i = (int64_t)n;
        } else {
            v->type = VAL_FLOAT;
            v->u.d = n;
        }
        return NULL;
    }
    case LUA_TSTRING: {
        size_t n;
        const char *p = lua_tolstring(L, idx, &n);
        v->type = VAL_TEXT;
        v->u.s.n = n;
        if ((v->u.s.p = batch_copy(b, p, n)) != NULL)
            return NULL;
        v->type = VAL_NULL;
        return "out of memory";
    }
    default:
        v->type = VAL_NULL;
        return "a parameter must be nil, a boolean, a number or a string (encode tables as JSON)";
    }
}

static void stmt_clear_results(stmt_req *s) {
    for (int i = 0; i < s->ncols; i++)
        free(s->cols[i]);
    free(s->cols);
    for (int i = 0; i < s->nrows * s->ncols; i++)
        value_free(&s->cells[i]);
    free(s->cells);
    s->cols = NULL;
    s->cells = NULL;
    s->ncols = s->nrows = s->cap = 0;
    s->changes = 0;
    s->command[0] = '\0';
}

void batch_free(batch *b) {
    for (int i = 0; i < b->nstmts; i++) /* (their SQL and params are in the chunks) */
        stmt_clear_results(&b->stmts[i]);
    while (b->chunks != NULL) {
        batch_chunk *c = b->chunks;
        b->chunks = c->next;
        free(c);
    }
    free(b->stmts);
    free(b->error);
    free(b);
}

void batch_reset(batch *b) {
    for (int i = 0; i < b->nstmts; i++)
        stmt_clear_results(&b->stmts[i]);
    free(b->error);
    b->error = NULL;
}

size_t batch_row_weight(int ncols, int ntext, size_t text_bytes) {
    /* LuaJIT on x86_64 (GC64): a table 64 bytes and its slot in the
     * result's array 8, a hash node 24, a string's header 24 (and its NUL) */
    return 72 + (size_t)ncols * 24 + (size_t)ntext * 25 + text_bytes;
}

size_t batch_result_bound(const batch *b, size_t max_result) {
    return b->run_left < max_result ? b->run_left : max_result;
}

void batch_result_too_large(char *msg, size_t n, size_t bound, size_t max_result) {
    snprintf(msg, n, "the result is larger than %zu bytes, %s (run_memory_limit)", bound,
             bound < max_result ? "the memory the run had left" : "more than a run may hold");
}

void batch_fail(batch *b, const char *why) {
    if (b->error == NULL)
        b->error = strdup(why ? why : "unknown error");
}

int stmt_set_columns(stmt_req *s, int ncols, const char *(*name)(int i, void *ctx), void *ctx) {
    s->ncols = ncols;
    if (ncols == 0)
        return 0;
    s->cols = calloc((size_t)ncols, sizeof *s->cols);
    if (s->cols == NULL) {
        s->ncols = 0;
        return -1;
    }
    for (int i = 0; i < ncols; i++)
        if ((s->cols[i] = strdup(name(i, ctx))) == NULL)
            return -1;
    return 0;
}

value *stmt_add_row(stmt_req *s) {
    if (s->nrows == s->cap) {
        int cap = s->cap ? s->cap * 2 : 4;
        /* Rows of no column (Postgres's SELECT FROM t) take a cell each all
         * the same: realloc to 0 bytes frees the cells and returns NULL,
         * which left them freed here and freed again with the result. */
        size_t per_row = s->ncols > 0 ? (size_t)s->ncols : 1;
        value *cells = realloc(s->cells, sizeof *cells * (size_t)cap * per_row);
        if (cells == NULL)
            return NULL;
        s->cells = cells;
        s->cap = cap;
    }
    value *row = &s->cells[s->nrows * s->ncols];
    memset(row, 0, sizeof *row * (size_t)s->ncols); /* VAL_NULL: safe to free */
    s->nrows++;
    return row;
}

/* Reads the statements at idx into a new batch; raises (prefixing errors
 * with `who`) on misuse. */
static batch *batch_from_lua(lua_State *L, int idx, const char *who) {
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_objlen(L, idx);
    luaL_argcheck(L, n > 0, idx, "expected a non-empty list of statements");
    batch *b = calloc(1, sizeof *b);
    if (b == NULL || (b->stmts = calloc((size_t)n, sizeof *b->stmts)) == NULL) {
        free(b);
        luaL_error(L, "%s: out of memory", who);
    }
    b->cb_ref = b->arg_ref = LUA_NOREF;
    b->nstmts = n;
    const char *err = NULL;
    for (int i = 0; i < n && err == NULL; i++) {
        stmt_req *s = &b->stmts[i];
        lua_rawgeti(L, idx, i + 1);
        if (!lua_istable(L, -1)) {
            err = "each statement is a table {sql, params...}";
        } else {
            lua_rawgeti(L, -1, 1);
            const char *sql = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            if (sql == NULL || sql[strspn(sql, " \t\r\n")] == '\0')
                err = "a statement's first element must be its SQL text";
            else if ((s->sql = batch_copy(b, sql, strlen(sql))) == NULL)
                err = "out of memory";
            lua_pop(L, 1); /* sql is not used past here: s->sql is the copy */
            lua_getfield(L, -1, "n");
            int np = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : (int)lua_objlen(L, -2) - 1;
            lua_pop(L, 1);
            if (err == NULL && np > BATCH_MAX_PARAMS)
                err = "too many parameters in one statement (at most 64)";
            else if (err == NULL && np > 0 &&
                     (s->params = batch_carve(b, (size_t)np * sizeof *s->params)) == NULL)
                err = "out of memory";
            else if (s->params != NULL)
                memset(s->params, 0, (size_t)np * sizeof *s->params);
            if (s->sql)
                b->writes |= strncasecmp(s->sql + strspn(s->sql, " \t\r\n"), "SELECT", 6) != 0;
            for (int p = 0; p < np && err == NULL; p++) {
                lua_rawgeti(L, -1, p + 2);
                err = value_from_lua(L, -1, &s->params[p], b);
                s->nparams = p + 1;
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (err) {
        batch_free(b);
        luaL_error(L, "%s: %s", who, err);
    }
    return b;
}

batch *batch_from_call(lua_State *L, const char *who) {
    int has_cb = lua_isfunction(L, 3);
    char what[48];
    snprintf(what, sizeof what, "a %s batch without a callback", who);
    rill_task *t = has_cb ? NULL : rill_task_check(L, what);
    batch *b = batch_from_lua(L, 2, who);
    if (has_cb) {
        lua_pushvalue(L, 3);
        b->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (!lua_isnoneornil(L, 4)) {
            lua_pushvalue(L, 4);
            b->arg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
    b->task = t;
    b->queued_at = uv_now(rill_loop());
    b->run_left = t && t->meter ? rill_meter_left(t->meter) : SIZE_MAX;
    return b;
}

void batch_queue(batch **head, batch **tail, batch *b) {
    if (*tail)
        (*tail)->next = b;
    else
        *head = b;
    *tail = b;
}

int batch_return(lua_State *L, batch *b) {
    return b->task ? rill_task_wait(L, b->task, batch_cancel, b) : 0;
}

static void push_result(lua_State *L, const stmt_req *s) {
    /* (room for its three fields made at once: Postgres's `command` grew
     * the hash part, a block more for every statement of every run) */
    lua_createtable(L, s->nrows, 3);
    for (int r = 0; r < s->nrows; r++) {
        lua_createtable(L, 0, s->ncols);
        for (int i = 0; i < s->ncols; i++) {
            const value *v = &s->cells[r * s->ncols + i];
            if (v->type == VAL_NULL)
                continue;
            value_push(L, v);
            lua_setfield(L, -2, s->cols[i]);
        }
        lua_rawseti(L, -2, r + 1);
    }
    lua_pushnumber(L, (lua_Number)s->changes);
    lua_setfield(L, -2, "changes");
    if (s->command[0]) {
        lua_pushstring(L, s->command);
        lua_setfield(L, -2, "command");
    }
    lua_createtable(L, s->ncols, 0);
    for (int i = 0; i < s->ncols; i++) {
        lua_pushstring(L, s->cols[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "columns");
}

/* Pushes (results) or (nil, error) on L. */
static int push_outcome(lua_State *L, const batch *b, const char *who) {
    if (b->error) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", who, b->error);
        return 2;
    }
    lua_createtable(L, b->nstmts, 0);
    for (int i = 0; i < b->nstmts; i++) {
        push_result(L, &b->stmts[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int push_outcome_call(lua_State *L) {
    const batch *b = lua_touserdata(L, 1);
    const char *who = lua_touserdata(L, 2);
    lua_settop(L, 0);
    return push_outcome(L, b, who);
}

void batch_deliver(batch *b, const char *who) {
    if (b->task) {
        rill_task *t = b->task;
        b->task = NULL;
        if (t->meter == 0) { /* rill's own task: nothing to charge, nothing refused */
            rill_task_resume(t, push_outcome(t->co, b, who));
            return;
        }
        /* The rows become Lua values charged to the run that asked, made on
         * the main state under a pcall: a refusal (its memory limit, which
         * then ends it) is an error here, not a panic on the waiting
         * coroutine. Made uncharged, a run kept 1 GB of rows under a
         * 256 MiB limit (red team of issue 14). */
        lua_State *M = rill_task_main_state();
        int base = lua_gettop(M);
        lua_checkstack(M, 4);
        lua_pushcfunction(M, push_outcome_call);
        lua_pushlightuserdata(M, b);
        lua_pushlightuserdata(M, (void *)who);
        uint32_t outer = rill_meter_enter(t->meter);
        int status = lua_pcall(M, 2, LUA_MULTRET, 0);
        rill_meter_enter(outer);
        int n = 2;
        if (status == 0) {
            n = lua_gettop(M) - base;
            lua_checkstack(t->co, n);
            lua_xmove(M, t->co, n);
        } else {
            /* A refused allocation: the meter wrote which limit (run's or
             * process's) as the run's kill reason, which ends it. Any other
             * error (more rows than a LuaJIT table may have) is said as it
             * is: the run was under its limit. */
            const char *why = lua_tostring(M, -1);
            lua_pushnil(t->co);
            if (status != LUA_ERRMEM)
                lua_pushfstring(t->co, "%s: the result cannot be made into Lua values: %s", who,
                                why ? why : "an error that is not a string");
            else if (rill_killed(&t->kill))
                lua_pushfstring(t->co, "%s: the result is over a memory limit: %s", who, t->kill);
            else
                lua_pushfstring(t->co, "%s: not enough memory for the result", who);
            lua_settop(M, base);
        }
        rill_task_resume(t, n);
    } else if (b->cb_ref != LUA_NOREF) {
        lua_State *L = rill_task_main_state();
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, b->cb_ref);
        b->cb_ref = LUA_NOREF;
        int n = push_outcome(L, b, who);
        if (b->arg_ref != LUA_NOREF) {
            if (n == 1)
                lua_pushnil(L); /* (no error) */
            lua_rawgeti(L, LUA_REGISTRYINDEX, b->arg_ref);
            luaL_unref(L, LUA_REGISTRYINDEX, b->arg_ref);
            b->arg_ref = LUA_NOREF;
            n = 3;
        }
        if (lua_pcall(L, n, 0, 0) != 0) {
            rill_log("error", "error in a %s callback: %s", who, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
}

void batch_cancel(void *op) {
    batch *b = op;
    b->task = NULL;
}
