/*
 * http_framing.h: a strict check of where requests begin and end, run over
 * the raw bytes http-parser consumed. Debian's libhttp_parser is built
 * with HTTP_PARSER_STRICT=0: it takes any two bytes for the CRLF after a
 * chunk's data, anything up to CR for a chunk extension, a bare LF for a
 * line's end, a folded header line and "HXXP/1.1" for the version. A proxy
 * in front of rill that reads such bytes another way sees one request
 * where rill sees two (request smuggling). This check refuses them.
 */
#ifndef RILL_HTTP_FRAMING_H
#define RILL_HTTP_FRAMING_H

#include <stddef.h>
#include <stdint.h>

typedef struct http_framing {
    int state;
    uint64_t left;    /* bytes of body (or of a chunk's data) still to come */
    int digits;       /* of the chunk size being read */
    int line;         /* lines of the head so far (the request line is 0) */
    char version[8];  /* the request line's last 8 bytes, to check "HTTP/1.x" */
    int next_chunked; /* what the headers said of the body (http_framing_body) */
    uint64_t next_length;
} http_framing;

/* A connection's check, before its first byte. */
void http_framing_init(http_framing *f);

/* Once a request's headers are parsed: its body is chunked, or has length
 * bytes (0 for none). Called before http_framing_feed sees the head's end. */
void http_framing_body(http_framing *f, int chunked, uint64_t length);

/* Feeds the bytes http-parser consumed, in order; returns NULL, or why the
 * framing is refused (the connection answers 400 and closes). */
const char *http_framing_feed(http_framing *f, const char *data, size_t len);

#endif
