/*
 * lua_alloc.h: the Lua allocator of the fuzz targets. Lua's memory comes
 * from malloc rather than LuaJIT's own mmap arena, so that ASan checks every
 * access to it. LeakSanitizer is told to ignore these blocks (LuaJIT keeps
 * pointers to them tagged inside values, which the scanner cannot follow)
 * while still scanning them: a C object that only a userdata points to is
 * reachable, and one that nothing points to is a leak.
 */
#ifndef FUZZ_LUA_ALLOC_H
#define FUZZ_LUA_ALLOC_H

#include <stdlib.h>

#include <sanitizer/lsan_interface.h>

static void *fuzz_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    __lsan_disable();
    void *p = realloc(ptr, nsize);
    __lsan_enable();
    return p;
}

#endif
