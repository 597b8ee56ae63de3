/*
 * stdlib_embed.h: the stdlib's Lua sources compiled into the binary by
 * tools/embed.c; the module loader (modules.c) finds them by module name.
 */
#ifndef RILL_STDLIB_EMBED_H
#define RILL_STDLIB_EMBED_H

#include <stddef.h>

typedef struct rill_embedded_file {
    const char *module; /* "rill.cron" */
    const char *path;   /* "stdlib/rill/cron.lua", for error messages */
    const char *source;
    size_t len;
} rill_embedded_file;

/* Terminated by an entry whose module is NULL. Defined in the generated
 * build/stdlib_embed.c, linked only into the rill binary. */
extern const rill_embedded_file rill_stdlib_files[];

#endif
