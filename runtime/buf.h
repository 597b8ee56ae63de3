/*
 * buf.h: growable byte buffers, always NUL-terminated after their data (so
 * that text in them can be read as a C string), for the HTTP server and
 * client.
 */
#ifndef RILL_BUF_H
#define RILL_BUF_H

#include <stddef.h>

typedef struct buf {
    char *data; /* NULL until something is appended */
    size_t len, cap;
} buf;

/* Appends len bytes; 0, or -1 when out of memory (b is unchanged). */
int buf_append(buf *b, const char *data, size_t len);

/* Frees the data; b is empty and usable again. */
void buf_free(buf *b);

#endif
