/*
 * alloc.h: the Lua state's allocator and its meters. Every block is charged
 * to the meter current when it was made (a run's, or meter 0 for rill's
 * own code) and credited back to it when freed, whoever runs then. A meter
 * with a limit, or any run's meter while the process is over its limit, is
 * refused growth: the allocation fails (LuaJIT raises "not enough memory"
 * in that run) and the run's reason buffer says which limit it passed.
 */
#ifndef RILL_ALLOC_H
#define RILL_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#define RILL_KILL_MAX 240 /* size of a run's reason buffer */

/* A run's reason buffer is made when it is ended (few runs are), not
 * carried by every task record: *slot is NULL until then. kill_buffer
 * makes it ("" at first) and returns it; it is a block of the Lua heap's
 * allocator charged to meter 0, so that it counts in the process's total
 * (process_memory_limit) as the record's bytes did. kill_buffer_free gives
 * it back and sets *slot to NULL. */
char *rill_kill_buffer(char **slot);
void rill_kill_buffer_free(char **slot);

/* Whether the reason slot says the run must end. */
static inline int rill_killed(char *const *slot) {
    return *slot != NULL && (*slot)[0] != '\0';
}

/* The lua_Alloc to give lua_newstate (which LuaJIT accepts only in its
 * GC64 mode on x86_64, the mode Debian's libluajit2 is built in). */
void *rill_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sets up meter 0 and LuaJIT's arena underneath (call it before the first
 * rill_alloc); over() is called when an allocation is refused (the
 * watchdog uses it to stop the run promptly). Returns 0 or -1. */
int rill_alloc_init(void (*over)(void));

/* The limit of all Lua memory together, 0 for none. */
void rill_alloc_set_process_limit(size_t bytes);

/* Bytes of Lua memory live now. */
size_t rill_alloc_total(void);

/* A new meter with this limit (0: none); kill is the run's reason slot
 * (rill_kill_buffer): when the meter goes over, the reason is written there.
 * Returns its id (0 when none could be made: the run is then unmetered). */
uint32_t rill_meter_open(size_t limit, char **kill);

/* Closes a meter: blocks still charged to it stay in the total only.
 * Returns the most it ever held. */
size_t rill_meter_close(uint32_t id);

/* Makes id the meter charged from now on; returns the one it replaces. */
uint32_t rill_meter_enter(uint32_t id);

/* Bytes charged to meter id now. */
size_t rill_meter_used(uint32_t id);

/* Bytes meter id may still be charged before its limit (SIZE_MAX for
 * meter 0 and a meter without a limit). */
size_t rill_meter_left(uint32_t id);

/* Hands malloc's freed memory back to the system (after a full GC); LuaJIT's
 * arena gives back its free segments and top by itself. */
void rill_alloc_give_back(void);

#endif
