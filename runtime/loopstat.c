/*
 * loopstat.c: how long each turn of the event loop works, for /metrics.
 *
 * A turn's busy time is the time between two prepare phases (the loop is
 * about to wait for I/O again) less the time it spent waiting in the kernel
 * (libuv's idle-time metric). It is the longest a request arriving during
 * that turn waited before rill could even read it: a long turn is latency
 * for every client at once, whatever caused it (a run computing, a burst
 * of requests parsed in one turn, a garbage collection step).
 */
#include "rill.h"

/* Upper bounds of the buckets, in seconds; one more bucket holds the rest. */
static const double bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1};
#define N_BOUNDS RILL_ARRAY_LEN(bounds)

static uv_prepare_t prepare;
static int started;
static uint64_t last_at, last_idle; /* at the previous prepare: time, idle total */
static uint64_t counts[N_BOUNDS + 1];
static uint64_t turns;
static double busy_sum; /* seconds */

static void record(double busy) {
    size_t i = 0;
    while (i < N_BOUNDS && busy > bounds[i])
        i++;
    counts[i]++;
    turns++;
    busy_sum += busy;
}

static void on_prepare(uv_prepare_t *h) {
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(h->loop);
    if (last_at != 0) {
        uint64_t span = now - last_at, waited = idle - last_idle;
        record(span > waited ? (double)(span - waited) / 1e9 : 0);
    }
    last_at = now;
    last_idle = idle;
}

/* start(): measures from now on (again: nothing). The prepare handle is
 * unreferenced: it never keeps the loop alive by itself (main.c closes it
 * with every other handle at exit). */
static int l_start(lua_State *L) {
    if (started)
        return 0;
    uv_loop_t *loop = rill_loop();
    int rc = uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
    if (rc != 0)
        return luaL_error(L, "loopstat: %s", uv_strerror(rc));
    uv_prepare_init(loop, &prepare);
    uv_prepare_start(&prepare, on_prepare);
    uv_unref((uv_handle_t *)&prepare);
    started = 1;
    return 0;
}

/* read() -> bounds (seconds), counts (one per bound, then the rest; not
 * cumulative), sum of busy seconds, turns. */
static int l_read(lua_State *L) {
    lua_createtable(L, (int)N_BOUNDS, 0);
    for (size_t i = 0; i < N_BOUNDS; i++) {
        lua_pushnumber(L, bounds[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_createtable(L, (int)N_BOUNDS + 1, 0);
    for (size_t i = 0; i <= N_BOUNDS; i++) {
        lua_pushnumber(L, (lua_Number)counts[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_pushnumber(L, busy_sum);
    lua_pushnumber(L, (lua_Number)turns);
    return 4;
}

int rill_loopstat_open(lua_State *L) {
    static const luaL_Reg funcs[] = {{"start", l_start}, {"read", l_read}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
