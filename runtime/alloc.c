/*
 * alloc.c: the Lua state's allocator, which counts the bytes of every block
 * and charges them to a meter: the run executing when the block was made
 * (meter 0 is rill's own code). A run over its limit, or any run while the
 * process is over its own, gets NULL: LuaJIT raises "not enough memory" in
 * that run only, and the meter records that the run is to be ended.
 * Only the loop thread allocates from the Lua state: no locking.
 */
#include "alloc.h"

#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each block starts with its owner, so that freeing it credits the meter
 * that was charged, whoever runs when the GC frees it. 16 bytes keep the
 * payload aligned as malloc's is. */
typedef union block_head {
    struct {
        uint32_t meter; /* index into meters */
        uint32_t gen;   /* meters[meter].gen when charged; another means the meter was closed */
    } owner;
    max_align_t align;
} block_head;

typedef struct meter {
    size_t used;     /* bytes of live blocks charged to it */
    size_t limit;    /* 0 for none */
    uint32_t gen;    /* bumped when closed, so that later frees go elsewhere */
    uint32_t next;   /* the next free meter, while free */
    char *kill;      /* the run's reason buffer (RILL_KILL_MAX), written when it goes over */
    size_t max_used; /* high-water mark, for the log */
} meter;

static meter *meters;
static uint32_t meter_count, meter_cap,
    free_meters;             /* free_meters: 0 for none (meter 0 is never free) */
static uint32_t current;     /* the meter charged now */
static uint32_t open_meters; /* meters open (runs metered now) */
static size_t total, process_limit;
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
    }
    return 0;
}

/* Whether the block of size n may be charged to m now. Meter 0 (rill's own
 * code) is never refused: a failure there could end the process. */
static int may_grow(meter *m, size_t n) {
    if (m == meters)
        return 1;
    size_t reserve = m->kill && m->kill[0] ? RESERVE : 0;
    if (m->limit && m->used + n > m->limit + reserve) {
        if (m->kill && m->kill[0] == '\0')
            snprintf(m->kill, RILL_KILL_MAX,
                     "memory limit exceeded: the run used more than %zu MiB (run_memory_limit)",
                     m->limit >> 20);
        if (on_over)
            on_over();
        return 0;
    }
    /* Over the process's limit, the runs holding more than an equal share
     * of it are refused, not whichever small run happens to allocate: the
     * others go on (the process stays over its limit until a big one ends). */
    if (process_limit && total + n > process_limit + reserve &&
        m->used + n > process_limit / (open_meters ? open_meters : 1)) {
        if (m->kill && m->kill[0] == '\0')
            snprintf(m->kill, RILL_KILL_MAX,
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

/* ---- Small blocks: a free list per size class ----
 * LuaJIT allocates and frees small blocks (strings, tables, closures) at a
 * high rate; glibc's malloc takes a lock for most of them once rill has
 * threads. Small blocks are kept on a free list per 16-byte class instead,
 * at most CACHE_MAX per class (a few MiB in all), and handed back to malloc
 * by rill_alloc_give_back. */
#define SMALL_MAX 256
#define CLASSES (SMALL_MAX / 16)
/* Under AddressSanitizer nothing is cached: a block kept here would hide a
 * use after free of a Lua object (a request userdata, a string) from it. */
#if defined(__SANITIZE_ADDRESS__)
#define CACHE_MAX 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_MAX 0
#endif
#endif
#ifndef CACHE_MAX
#define CACHE_MAX 4096
#endif
static const unsigned cache_max = CACHE_MAX; /* a variable: no "always true" warning at 0 */

typedef struct free_block {
    struct free_block *next;
} free_block;

static free_block *cache[CLASSES];
static unsigned cached[CLASSES];

/* The class of a small size, 0-based; sizes over SMALL_MAX have none. */
static inline int size_class(size_t n) {
    return n <= SMALL_MAX ? (int)((n - 1) >> 4) : -1;
}

static block_head *block_new(size_t n) {
    int c = size_class(n);
    if (c < 0)
        return malloc(sizeof(block_head) + n);
    if (cache[c]) {
        free_block *b = cache[c];
        cache[c] = b->next;
        cached[c]--;
        return (block_head *)b;
    }
    return malloc(sizeof(block_head) + ((size_t)c + 1) * 16);
}

static void block_free(block_head *h, size_t n) {
    int c = size_class(n);
    if (c < 0 || cached[c] >= cache_max) {
        free(h);
        return;
    }
    free_block *b = (free_block *)h;
    b->next = cache[c];
    cache[c] = b;
    cached[c]++;
}

void *rill_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    block_head *h = ptr ? (block_head *)ptr - 1 : NULL;
    size_t old = h ? osize : 0;
    if (nsize == 0) {
        if (h) {
            credit(h, old);
            block_free(h, old);
        }
        return NULL;
    }
    if (nsize > old && !may_grow(&meters[current], nsize - old))
        return NULL;
    block_head *nh;
    if (h && size_class(old) < 0 && size_class(nsize) < 0) {
        nh = realloc(h, sizeof *nh + nsize);
        if (nh == NULL)
            return NULL; /* h is untouched and still charged */
        credit(nh, old);
    } else if (h && size_class(old) >= 0 && size_class(old) == size_class(nsize)) {
        nh = h; /* the block's class has room for it */
        credit(nh, old);
    } else {
        nh = block_new(nsize);
        if (nh == NULL)
            return NULL;
        if (h) {
            memcpy(nh + 1, h + 1, old < nsize ? old : nsize);
            credit(h, old);
            block_free(h, old);
        }
    }
    charge(nh, current, nsize);
    return nh + 1;
}

int rill_alloc_init(void (*over)(void)) {
    on_over = over;
    /* The Lua heap grows and shrinks with every GC cycle: keep what it
     * frees at the top for the next cycle instead of returning it to the
     * system each time (page faults were a fifth of an allocation-heavy
     * loop). rill_alloc_give_back returns it after a big run. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    return ensure_meters();
}

void rill_alloc_set_process_limit(size_t bytes) {
    process_limit = bytes;
}

size_t rill_alloc_total(void) {
    return total;
}

uint32_t rill_meter_open(size_t limit, char *kill) {
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

uint32_t rill_meter_enter(uint32_t id) {
    uint32_t outer = current;
    current = id;
    return outer;
}

size_t rill_meter_used(uint32_t id) {
    return meters[id].used;
}

void rill_alloc_give_back(void) {
    for (int c = 0; c < CLASSES; c++) {
        while (cache[c]) {
            free_block *b = cache[c];
            cache[c] = b->next;
            free(b);
        }
        cached[c] = 0;
    }
    malloc_trim(0);
}
