/*
 * test_alloc.c: the Lua allocator's meters (alloc.c): blocks charged to the
 * meter current when made and credited back to it when freed, whoever runs
 * then; limits refused with the reason written; rill's own meter never
 * refused; a Lua state on this allocator survives a refused run.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "alloc.h"
#include "t.h"

static int refused;
static void on_over(void) {
    refused++;
}

static void *get(size_t n) {
    return rill_alloc(NULL, NULL, 0, n);
}

static void put(void *p, size_t n) {
    rill_alloc(NULL, p, n, 0);
}

static void frees_credit_the_meter_charged_whoever_runs(void) {
    char *kill = NULL;
    size_t base = rill_alloc_total();
    uint32_t a = rill_meter_open(0, &kill), b = rill_meter_open(0, &kill);
    uint32_t outer = rill_meter_enter(a);
    void *p = get(1000);
    rill_meter_enter(b);
    void *q = get(500);
    put(p, 1000); /* freed while b runs: a is credited */
    T_EQ_INT(rill_meter_used(a), 0);
    T_EQ_INT(rill_meter_used(b), 500);
    p = rill_alloc(NULL, q, 500, 2000); /* grown while b runs */
    T_EQ_INT(rill_meter_used(b), 2000);
    T_EQ_INT(rill_alloc_total(), base + 2000);
    rill_meter_enter(outer);
    T_EQ_INT(rill_meter_close(b), 2000);
    put(p, 2000); /* after its meter closed: the total only */
    T_EQ_INT(rill_alloc_total(), base);
    uint32_t c = rill_meter_open(0, &kill); /* b's slot again, new generation */
    T_EQ_INT(rill_meter_used(c), 0);
    rill_meter_close(c);
    rill_meter_close(a);
}

static void blocks_keep_their_bytes_and_alignment_when_resized(void) {
    size_t base = rill_alloc_total();
    char *p = get(10);
    memcpy(p, "0123456789", 10);
    p = rill_alloc(NULL, p, 10, 14);
    T_CHECK(memcmp(p, "0123456789", 10) == 0);
    p = rill_alloc(NULL, p, 14, 200);
    T_CHECK(memcmp(p, "0123456789", 10) == 0);
    p = rill_alloc(NULL, p, 200, 300000); /* past the arena's direct-mmap size */
    T_CHECK(memcmp(p, "0123456789", 10) == 0);
    p = rill_alloc(NULL, p, 300000, 3);
    T_CHECK(memcmp(p, "012", 3) == 0);
    T_EQ_INT(rill_alloc_total(), base + 3);
    put(p, 3);
    for (size_t n = 1; n < 5000; n += 37) { /* LuaJIT's own blocks are 8-aligned: so are these */
        void *q = get(n);
        T_CHECK(q != NULL && ((uintptr_t)q & 7) == 0);
        put(q, n);
    }
    rill_alloc_give_back();
    T_EQ_INT(rill_alloc_total(), base);
}

/* A freed small block is made again for the next request of its size
 * class (alloc.c keeps recent ones): whatever size of the class it was
 * freed at, it holds any size of the class, grows and shrinks with its
 * bytes, and is never handed out twice. */
static void freed_blocks_made_again_hold_any_size_of_their_class(void) {
    size_t base = rill_alloc_total();
    enum { N = 4000 };
    static char *live[N];
    for (size_t round = 0; round < 3; round++) {
        for (size_t i = 0; i < N; i++) {
            size_t n = 1 + (i * 7 + round * 13) % 1100; /* across every class and past them */
            live[i] = get(n);
            T_CHECK(live[i] != NULL && ((uintptr_t)live[i] & 7) == 0);
            memset(live[i], (int)(i & 0xff), n);
        }
        for (size_t i = 0; i < N; i++) {
            size_t n = 1 + (i * 7 + round * 13) % 1100;
            int ok = 1;
            for (size_t j = 0; j < n; j++)
                ok &= live[i][j] == (char)(i & 0xff); /* none was given twice, or overwritten */
            T_CHECK(ok);
            if (i % 3 == 0) { /* some grow, then shrink back, before they are freed */
                live[i] = rill_alloc(NULL, live[i], n, n + 40);
                T_CHECK(live[i][n - 1] == (char)(i & 0xff));
                live[i] = rill_alloc(NULL, live[i], n + 40, n);
                T_CHECK(live[i][0] == (char)(i & 0xff));
            }
            put(live[i], n);
        }
    }
    T_EQ_INT(rill_alloc_total(), base);
    rill_alloc_give_back();
    char *p = get(16); /* made after the lists were emptied */
    memcpy(p, "0123456789abcdef", 16);
    p = rill_alloc(NULL, p, 16, 5000);
    T_CHECK(memcmp(p, "0123456789abcdef", 16) == 0);
    put(p, 5000);
    T_EQ_INT(rill_alloc_total(), base);
}

static void a_meter_over_its_limit_is_refused_with_the_reason(void) {
    char *kill = NULL;
    refused = 0;
    uint32_t m = rill_meter_open(1 << 20, &kill);
    uint32_t outer = rill_meter_enter(m);
    void *p = get(512 << 10);
    T_CHECK(p != NULL);
    T_CHECK(get(768 << 10) == NULL);
    T_EQ_INT(refused, 1);
    T_CHECK(kill != NULL && strstr(kill, "run_memory_limit") != NULL);
    void *r = get(1024); /* ended: a small reserve to unwind with */
    T_CHECK(r != NULL);
    T_CHECK(get(64 << 20) == NULL); /* but not more */
    rill_meter_enter(outer);
    void *own = get(8 << 20); /* rill's own meter is never refused */
    T_CHECK(own != NULL);
    put(own, 8 << 20);
    put(r, 1024);
    put(p, 512 << 10);
    rill_meter_close(m);
    rill_kill_buffer_free(&kill);
}

/* The reason buffer is not carried by every run: it is made when one goes
 * over, as rill's own memory (meter 0), counted in the process's total. */
static void a_reason_is_made_only_when_a_run_is_ended_and_counts_in_the_total(void) {
    char *kill = NULL;
    uint32_t m = rill_meter_open(1 << 20, &kill);
    uint32_t outer = rill_meter_enter(m);
    void *p = get(512 << 10);
    T_CHECK(p != NULL);
    T_CHECK(kill == NULL);
    size_t before = rill_alloc_total();
    T_CHECK(get(768 << 10) == NULL);
    T_CHECK(kill != NULL && strstr(kill, "run_memory_limit") != NULL);
    T_EQ_INT(rill_alloc_total(), before + RILL_KILL_MAX);
    T_EQ_INT(rill_meter_used(m), 512 << 10); /* not charged to the run */
    rill_meter_enter(outer);
    rill_kill_buffer_free(&kill);
    T_CHECK(kill == NULL);
    T_EQ_INT(rill_alloc_total(), before);
    put(p, 512 << 10);
    rill_meter_close(m);
}

static void the_process_limit_refuses_big_runs_not_small_ones_nor_rill(void) {
    char *big_kill = NULL, *small_kill = NULL;
    uint32_t big = rill_meter_open(0, &big_kill), small = rill_meter_open(0, &small_kill);
    rill_alloc_set_process_limit(rill_alloc_total() + (8 << 20));
    uint32_t outer = rill_meter_enter(big);
    void *b = get(7 << 20);
    T_CHECK(b != NULL);
    rill_meter_enter(small);
    void *s = get(2 << 20); /* over the process limit, but far under an equal share */
    T_CHECK(s != NULL);
    T_CHECK(small_kill == NULL);
    rill_meter_enter(big);
    T_CHECK(get(1 << 20) == NULL); /* the big one is refused */
    T_CHECK(big_kill != NULL && strstr(big_kill, "process_memory_limit") != NULL);
    rill_meter_enter(outer);
    void *own = get(2 << 20); /* rill's own meter never is */
    T_CHECK(own != NULL);
    put(own, 2 << 20);
    put(s, 2 << 20);
    put(b, 7 << 20);
    rill_meter_close(small);
    rill_meter_close(big);
    rill_kill_buffer_free(&big_kill);
    rill_alloc_set_process_limit(0);
}

/* What ended runs kept (a flow's own table holding their strings) is charged
 * to no open meter: no run held more than an equal share, and the process
 * grew past its limit without end. Past a quarter over it, any run is refused. */
static void memory_no_run_holds_counts_past_a_quarter_over_the_limit(void) {
    size_t base = rill_alloc_total();
    rill_alloc_set_process_limit(base + (8 << 20));
    void *kept[3];
    for (int i = 0; i < 3; i++) { /* three runs each keep 3 MiB, and end */
        char *kill = NULL;
        uint32_t m = rill_meter_open(0, &kill);
        uint32_t outer = rill_meter_enter(m);
        kept[i] = get(3 << 20);
        T_CHECK(kept[i] != NULL);
        rill_meter_enter(outer);
        rill_meter_close(m);
    }
    char *kill = NULL;
    uint32_t m = rill_meter_open(0, &kill);
    uint32_t outer = rill_meter_enter(m);
    void *small = get(512 << 10); /* 9.5 MiB: over, not a quarter over */
    T_CHECK(small != NULL);
    T_CHECK(get((base + (8 << 20)) / 4) == NULL); /* a quarter over: refused, though small */
    T_CHECK(kill != NULL && strstr(kill, "process_memory_limit") != NULL);
    rill_meter_enter(outer);
    put(small, 512 << 10);
    for (int i = 0; i < 3; i++)
        put(kept[i], 3 << 20);
    rill_meter_close(m);
    rill_kill_buffer_free(&kill);
    rill_alloc_set_process_limit(0);
}

static void a_lua_state_survives_a_refused_chunk(void) {
    char *kill = NULL;
    lua_State *L = lua_newstate(rill_alloc, NULL);
    T_CHECK(L != NULL); /* LuaJIT accepts a custom allocator only in GC64 mode */
    if (L == NULL)
        return;
    luaL_openlibs(L);
    uint32_t m = rill_meter_open(8 << 20, &kill);
    uint32_t outer = rill_meter_enter(m);
    int rc = luaL_dostring(L, "local t = {} for i = 1, 1e7 do t[i] = ('x'):rep(50) .. i end");
    rill_meter_enter(outer);
    T_CHECK(rc != 0);
    T_CHECK(lua_tostring(L, -1) && strstr(lua_tostring(L, -1), "not enough memory"));
    T_CHECK(rill_killed(&kill));
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    T_CHECK(rill_meter_used(m) < (1 << 20)); /* its garbage went back to it */
    rill_meter_close(m);
    rill_kill_buffer_free(&kill);
    T_EQ_INT(luaL_dostring(L, "x = ('y'):rep(1e6)"), 0); /* rill's own code goes on */
    lua_close(L);
}

int main(void) {
    T_CHECK(rill_alloc_init(on_over) == 0);
    T_RUN(frees_credit_the_meter_charged_whoever_runs);
    T_RUN(blocks_keep_their_bytes_and_alignment_when_resized);
    T_RUN(freed_blocks_made_again_hold_any_size_of_their_class);
    T_RUN(a_meter_over_its_limit_is_refused_with_the_reason);
    T_RUN(a_reason_is_made_only_when_a_run_is_ended_and_counts_in_the_total);
    T_RUN(the_process_limit_refuses_big_runs_not_small_ones_nor_rill);
    T_RUN(memory_no_run_holds_counts_past_a_quarter_over_the_limit);
    T_RUN(a_lua_state_survives_a_refused_chunk);
    return T_END();
}
