/*
 * alloc.c: the Lua state's allocator, which counts the bytes of every block
 * and charges them to a meter: the run executing when the block was made
 * (meter 0 is rill's own code). A run over its limit, or any run while the
 * process is over its own, gets NULL: LuaJIT raises "not enough memory" in
 * that run only, and the meter records that the run is to be ended.
 * The blocks themselves come from LuaJIT's own allocator (malloc under
 * AddressSanitizer). Only the loop thread allocates from the Lua state: no
 * locking.
 */
#include "alloc.h"

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* Each block starts with its owner, so that freeing it credits the meter
 * that was charged, whoever runs when the GC frees it (the GC frees a run's
 * garbage in steps taken while any run allocates: crediting the run current
 * then would let one run's garbage pay for another's live memory, and kill
 * a run for garbage already freed). 8 bytes keep the payload aligned as
 * LuaJIT's own allocator aligns its blocks (8), and the header on the cache
 * line of the object's start more often than 16 would (the GC's sweep reads
 * the start just before the free reads the header). */
typedef struct block_head {
    struct {
        uint32_t meter; /* index into meters */
        uint32_t gen;   /* meters[meter].gen when charged; another means the meter was closed */
    } owner;
} block_head;
_Static_assert(sizeof(block_head) == 8, "the header is 8 bytes");

typedef struct meter {
    size_t used;     /* bytes of live blocks charged to it */
    size_t limit;    /* 0 for none */
    size_t cap;      /* limit, or SIZE_MAX for none: used may reach it unlooked */
    uint32_t gen;    /* bumped when closed, so that later frees go elsewhere */
    uint32_t next;   /* the next free meter, while free */
    char **kill;     /* the run's reason slot (rill_kill_buffer), written when it goes over */
    size_t max_used; /* high-water mark, for the log */
} meter;

static meter *meters;
static uint32_t meter_count, meter_cap,
    free_meters;             /* free_meters: 0 for none (meter 0 is never free) */
static uint32_t current;     /* the meter charged now */
static uint32_t open_meters; /* meters open (runs metered now) */
static size_t total, process_limit;
static size_t process_cap = SIZE_MAX; /* process_limit, or SIZE_MAX for none */
static void (*on_over)(void);

/* After a run went over, it may still allocate this much more, so that its
 * error can be raised and its stack unwound; beyond it, NULL again. */
#define RESERVE (4u << 20)

static int ensure_meters(void) {
    if (meter_cap == 0) {
        meter_cap = 64;
        meters = calloc(meter_cap, sizeof *meters);
        if (meters == NULL)
            return -1;
        meter_count = 1; /* meter 0: rill itself, never limited */
        meters[0].cap = SIZE_MAX;
    }
    return 0;
}

/* Whether the block of size n may be charged to m now. Meter 0 (rill's own
 * code) is never refused: a failure there could end the process. */
static int may_grow(meter *m, size_t n) {
    if (m == meters)
        return 1;
    size_t reserve = m->kill && rill_killed(m->kill) ? RESERVE : 0;
    if (m->limit && m->used + n > m->limit + reserve) {
        if (m->kill && !rill_killed(m->kill))
            snprintf(rill_kill_buffer(m->kill), RILL_KILL_MAX,
                     "memory limit exceeded: the run used more than %zu MiB (run_memory_limit)",
                     m->limit >> 20);
        if (on_over)
            on_over();
        return 0;
    }
    /* Over the process's limit, the runs holding more than an equal share
     * of it are refused, not whichever small run happens to allocate: the
     * others go on (the process stays over its limit until a big one ends). */
    /* Past a quarter over it, any run is refused: memory that no open run
     * holds (what runs kept in a flow's own tables, charged to meters
     * closed since) grew the process past its limit without end. */
    if (process_limit && total + n > process_limit + reserve &&
        (m->used + n > process_limit / (open_meters ? open_meters : 1) ||
         total + n > process_limit + process_limit / 4 + reserve)) {
        if (m->kill && !rill_killed(m->kill))
            snprintf(rill_kill_buffer(m->kill), RILL_KILL_MAX,
                     "memory limit exceeded: rill's Lua memory reached %zu MiB "
                     "(process_memory_limit), this run holding %zu MiB of it",
                     process_limit >> 20, m->used >> 20);
        if (on_over)
            on_over();
        return 0;
    }
    return 1;
}

static void charge(block_head *h, uint32_t id, size_t n) {
    h->owner.meter = id;
    h->owner.gen = meters[id].gen;
    meters[id].used += n;
    if (meters[id].used > meters[id].max_used)
        meters[id].max_used = meters[id].used;
    total += n;
}

static void credit(block_head *h, size_t n) {
    meter *m = &meters[h->owner.meter];
    if (m->gen == h->owner.gen)
        m->used -= n;
    total -= n;
}

/* ---- The allocator underneath ----
 * LuaJIT's own (lj_alloc_f, a dlmalloc arena in mmap'd segments): the one
 * the Lua heap had before meters, no lock, and faster than glibc's malloc
 * for LuaJIT's mix of small blocks. It is reached through lua_getallocf of
 * a state kept for that only (LuaJIT exports no other way to make an
 * arena). Under AddressSanitizer the blocks come from malloc, so that a use
 * after free of a Lua object (a request userdata, a string) is seen. */
#if defined(__SANITIZE_ADDRESS__)
#define USE_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_MALLOC 1
#endif
#endif

static void *sys_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static lua_Alloc base_alloc = sys_alloc;
static void *base_ud;

static void cache_flush(void);

/* Switches to LuaJIT's arena, while no block is live in malloc's (nor
 * cached: those go back to malloc first). */
static void base_init(void) {
#ifndef USE_MALLOC
    static lua_State *arena_state; /* owns the arena; never closed */
    if (arena_state == NULL && total == 0) {
        cache_flush();
        arena_state = luaL_newstate();
        if (arena_state != NULL)
            base_alloc = lua_getallocf(arena_state, &base_ud);
    }
#endif
}

/* ---- Small blocks freed lately, made again without the arena ----
 * A sync webhook request makes and frees some 45 blocks, mostly of the same
 * few sizes, and the arena's malloc and free cost ~80 instructions each (a
 * tenth of rill's whole CPU per request). Freed blocks of up to CACHED_MAX
 * bytes (header included) go on a list per size class, 16 bytes apart,
 * instead, and a new block of that class is taken from it first. Every
 * block of a class is made at the class's size, so that any one of them
 * fits any request of the class. The lists hold at most CACHE_BYTES: the
 * GC frees a whole cycle's garbage in its sweep and nothing between, so
 * they must hold about a cycle's worth to serve the requests made until
 * the next sweep (on the bench webhook, arena calls per request: 88
 * without lists, 56 with 256 KiB, 10 with 1 MiB, none with 4 MiB). They
 * are emptied into the arena by rill_alloc_give_back (after a big
 * run: a few cached blocks must not keep its segments mapped). Meters are
 * unchanged: a cached block is charged to no one, as a freed one. Under
 * AddressSanitizer there are no lists, so that a use after free is seen. */
#ifndef USE_MALLOC
#define CACHED_MAX 1064u       /* a 1 KiB string (its GCstr, header, NUL) fits */
#define CACHE_BYTES (4u << 20) /* at most this much kept off the arena */
#define CLASSES ((CACHED_MAX + 7) / 16 + 1)
typedef struct cached {
    struct cached *next;
} cached;
_Static_assert(sizeof(cached) <= sizeof(block_head), "a cached block's link fits its header");
static cached *cache[CLASSES];
static size_t cache_bytes;

/* Class c holds blocks of 16c + 8 bytes: the sizes the arena gives without
 * waste (its chunks are 16-aligned with an 8-byte head). */
static inline size_t class_of(size_t n) {
    return (n + 7) / 16;
}
static inline size_t class_size(size_t c) {
    return 16 * c + 8;
}
/* The size asked of the arena for a block of n bytes (header included). */
static inline size_t arena_size(size_t n) {
    return n <= CACHED_MAX ? class_size(class_of(n)) : n;
}

static void cache_flush(void) {
    for (size_t c = 0; c < CLASSES; c++) {
        while (cache[c] != NULL) {
            cached *b = cache[c];
            cache[c] = b->next;
            base_alloc(base_ud, b, class_size(c), 0);
        }
    }
    cache_bytes = 0;
}
#else
static inline size_t arena_size(size_t n) {
    return n;
}
static void cache_flush(void) {}
#endif

/* A growth the meter's or the process's limit may refuse (or a size no
 * block can have): may_grow decides, out of the common paths below. */
static __attribute__((noinline)) int may_grow_slow(size_t nsize, size_t old) {
    if (nsize > SIZE_MAX - sizeof(block_head))
        return 0;
    return may_grow(&meters[current], nsize - old);
}

/* Whether growing the current meter by n bytes needs may_grow's look: past
 * the meter's limit or the process's (caps are SIZE_MAX for none). Sizes
 * stay below 2^48 (LuaJIT's and cjson's own limits) and used and total far
 * below SIZE_MAX: no sum wraps, and a size that could is sent to may_grow. */
static inline int must_look(size_t n) {
    const meter *m = &meters[current];
    return n > SIZE_MAX / 4 || m->used + n > m->cap || total + n > process_cap;
}

/* Every allocation and free of the Lua heap comes here, tens per sync
 * webhook request, so the two common ones are kept apart and short: a
 * free (credit, then the allocator underneath as a tail call) and a new
 * block (charged before the allocator underneath is called, so that
 * nothing but the header is left to write after it). A realloc takes the
 * general path. */
static void *block_free(void *ptr, size_t osize) {
    block_head *h = (block_head *)ptr - 1;
    credit(h, osize);
    size_t n = sizeof *h + osize;
#ifndef USE_MALLOC
    if (n <= CACHED_MAX && cache_bytes < CACHE_BYTES) {
        size_t c = class_of(n);
        cached *b = (cached *)h;
        b->next = cache[c];
        cache[c] = b;
        cache_bytes += class_size(c);
        return NULL;
    }
#endif
    return base_alloc(base_ud, h, arena_size(n), 0); /* NULL */
}

static __attribute__((noinline)) void *block_new(size_t nsize) {
    if (must_look(nsize) && !may_grow_slow(nsize, 0))
        return NULL;
    block_head tag = {{current, meters[current].gen}};
    meters[current].used += nsize;
    total += nsize;
    block_head *nh;
    size_t n = sizeof *nh + nsize;
#ifndef USE_MALLOC
    if (n <= CACHED_MAX && cache[class_of(n)] != NULL) {
        size_t c = class_of(n);
        nh = (block_head *)cache[c];
        cache[c] = cache[c]->next;
        cache_bytes -= class_size(c);
    } else
#endif
        nh = base_alloc(base_ud, NULL, 0, arena_size(n));
    /* (the allocator underneath never calls back: current is the same) */
    meter *m = &meters[tag.owner.meter];
    if (nh == NULL) {
        m->used -= nsize;
        total -= nsize;
        return NULL;
    }
    if (m->used > m->max_used)
        m->max_used = m->used;
    *nh = tag;
    return nh + 1;
}

static __attribute__((noinline)) void *block_resize(void *ptr, size_t osize, size_t nsize) {
    block_head *h = (block_head *)ptr - 1;
    if (nsize > osize && must_look(nsize - osize) && !may_grow_slow(nsize, osize))
        return NULL;
    block_head *nh =
        base_alloc(base_ud, h, arena_size(sizeof *h + osize), arena_size(sizeof *nh + nsize));
    if (nh == NULL)
        return NULL;   /* h is untouched and still charged */
    credit(nh, osize); /* its header moved with it */
    charge(nh, current, nsize);
    return nh + 1;
}

void *rill_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0)
        return ptr ? block_free(ptr, osize) : NULL;
    return ptr ? block_resize(ptr, osize, nsize) : block_new(nsize);
}

int rill_alloc_init(void (*over)(void)) {
    on_over = over;
    base_init();
    return ensure_meters();
}

void rill_alloc_set_process_limit(size_t bytes) {
    process_limit = bytes;
    process_cap = bytes ? bytes : SIZE_MAX;
}

size_t rill_alloc_total(void) {
    return total;
}

uint32_t rill_meter_open(size_t limit, char **kill) {
    uint32_t id;
    if (ensure_meters() != 0)
        return 0;
    if (free_meters) {
        id = free_meters;
        free_meters = meters[id].next;
    } else {
        if (meter_count == meter_cap) {
            meter *grown = realloc(meters, 2 * meter_cap * sizeof *meters);
            if (grown == NULL)
                return 0; /* unmetered rather than failing the run */
            meters = grown;
            meter_cap *= 2;
        }
        id = meter_count++;
        meters[id].gen = 0;
    }
    meters[id].used = meters[id].max_used = 0;
    meters[id].limit = limit;
    meters[id].cap = limit ? limit : SIZE_MAX;
    meters[id].kill = kill;
    meters[id].next = 0;
    open_meters++;
    return id;
}

size_t rill_meter_close(uint32_t id) {
    if (id == 0)
        return 0;
    meter *m = &meters[id];
    size_t max_used = m->max_used;
    /* What it still holds (a result kept, a value stored in a module) is
     * counted in the total only; the generation tells frees to stop
     * crediting this meter, which another run may have by then. */
    m->gen++;
    m->used = 0;
    m->kill = NULL;
    m->next = free_meters;
    free_meters = id;
    open_meters--;
    return max_used;
}

/* Made from inside an allocation (may_grow) as well: this one is charged
 * to meter 0, which is never refused, and comes from the allocator
 * underneath before the refused one does. Past a failure of that (the
 * machine out of memory), a static buffer: a reason shared by the runs
 * ended then is better than none. */
static char no_memory_kill[RILL_KILL_MAX];

char *rill_kill_buffer(char **slot) {
    if (*slot == NULL) {
        uint32_t outer = current;
        current = 0;
        /* (meter 0 exists even where the state has another allocator: a
         * test's, which never called rill_alloc_init) */
        char *b = ensure_meters() == 0 ? rill_alloc(NULL, NULL, 0, RILL_KILL_MAX) : NULL;
        current = outer;
        if (b != NULL)
            b[0] = '\0';
        else
            b = no_memory_kill; /* not cleared: another run may be ended by it */
        *slot = b;
    }
    return *slot;
}

void rill_kill_buffer_free(char **slot) {
    if (*slot != NULL && *slot != no_memory_kill)
        rill_alloc(NULL, *slot, RILL_KILL_MAX, 0);
    *slot = NULL;
}

uint32_t rill_meter_enter(uint32_t id) {
    uint32_t outer = current;
    current = id;
    return outer;
}

size_t rill_meter_used(uint32_t id) {
    return meters[id].used;
}

size_t rill_meter_left(uint32_t id) {
    const meter *m = &meters[id];
    if (id == 0 || m->limit == 0)
        return SIZE_MAX;
    return m->used < m->limit ? m->limit - m->used : 0;
}

void rill_alloc_give_back(void) {
    /* LuaJIT's arena unmaps its free segments and trims its top itself, once
     * the blocks cached here are back in it; malloc_trim is for malloc's
     * (the Lua heap under ASan, and C libraries' buffers). */
    cache_flush();
    malloc_trim(0);
}
