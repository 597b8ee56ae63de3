/*
 * http_framing.c: the strict framing check of requests (see
 * http_framing.h): every line of a request's head and of a chunked body's
 * trailers ends in CRLF, no header line is folded, the request line ends
 * in HTTP/1.0 or HTTP/1.1, a chunk's size is hex digits followed by an
 * extension or CRLF, an extension is visible ASCII, a chunk's data is
 * followed by CRLF. It reads the bytes after http-parser did (the headers'
 * values, the sizes and lengths are http-parser's), knowing from
 * http_framing_body how the head it is reading says the body is framed.
 * The request being checked, and it alone, is in these bytes: rill pauses
 * the parser at the end of each request.
 */
#include "http_framing.h"

#include <string.h>

#include "rill.h"

enum {
    START,      /* before a request: empty lines skipped, as http-parser does */
    LINE,       /* in the request line, a header line or a trailer line */
    LINE_CR,    /* a line's CR: its LF next */
    LINE_START, /* after a line: another line, or the CRLF that ends the section */
    END_LF,     /* the CR of the empty line: its LF next */
    BODY,       /* in a Content-Length body */
    SIZE_START, /* a chunk's size: a hex digit first */
    SIZE,       /* more hex digits, then an extension or CRLF */
    SIZE_BWS,   /* whitespace after the size: an extension's ';' must follow */
    EXT,        /* a chunk extension, up to CR */
    SIZE_LF,    /* the LF of a chunk size's line */
    DATA,       /* a chunk's data */
    DATA_CR,    /* the CRLF after it */
    DATA_LF,
    TRAILERS = 0x100 /* flag on LINE .. END_LF: the lines are trailers */
};

void http_framing_init(http_framing *f) {
    memset(f, 0, sizeof *f);
}

void http_framing_body(http_framing *f, int chunked, uint64_t length) {
    f->next_chunked = chunked;
    f->next_length = chunked ? 0 : length;
}

/* Keeps the last 8 bytes of the request line seen so far. */
static void keep_version(http_framing *f, const char *p, size_t n) {
    size_t keep = sizeof f->version;
    if (n >= keep) {
        memcpy(f->version, p + n - keep, keep);
    } else {
        memmove(f->version, f->version + n, keep - n);
        memcpy(f->version + keep - n, p, n);
    }
}

static int version_ok(const http_framing *f) {
    return memcmp(f->version, "HTTP/1.1", 8) == 0 || memcmp(f->version, "HTTP/1.0", 8) == 0;
}

static const char *const BARE_LF = "a line ends in a bare LF (CRLF required)";
static const char *const BARE_CR = "a CR not followed by LF";

/* The bytes of a line up to its CR (not included): a LF among them is a
 * line ended by a bare LF. Returns how many bytes are the line's, or -1. */
static long line_bytes(const char *p, const char *end, const char **cr) {
    *cr = memchr(p, '\r', (size_t)(end - p));
    const char *stop = *cr ? *cr : end;
    if (memchr(p, '\n', (size_t)(stop - p)))
        return -1;
    return stop - p;
}

/* After the head's (or the trailers') empty line: what comes next. */
static void section_end(http_framing *f, int trailers) {
    if (trailers || (!f->next_chunked && f->next_length == 0)) {
        f->state = START;
    } else if (f->next_chunked) {
        f->state = SIZE_START;
    } else {
        f->state = BODY;
        f->left = f->next_length;
    }
    f->next_chunked = 0;
    f->next_length = 0;
}

const char *http_framing_feed(http_framing *f, const char *data, size_t len) {
    const char *p = data, *end = data + len;
    while (p < end) {
        int trailers = f->state & TRAILERS;
        switch (f->state & ~TRAILERS) {
        case START:
            if (*p == '\r' || *p == '\n') {
                p++;
                break;
            }
            f->state = LINE;
            f->line = 0;
            memset(f->version, 0, sizeof f->version);
            break;
        case LINE: {
            /* a line, its CRLF and the first byte after it in one step when
             * they are all here (the common case: the head in one read) */
            const char *cr;
            long n = line_bytes(p, end, &cr);
            if (n < 0)
                return BARE_LF;
            if (f->line == 0 && !trailers)
                keep_version(f, p, (size_t)n);
            p += n;
            if (!cr)
                break;
            p++;
            f->state = LINE_CR | trailers;
            if (p == end)
                break;
        }
            /* fall through */
        case LINE_CR:
            if (*p++ != '\n')
                return BARE_CR;
            if (f->line == 0 && !trailers && !version_ok(f))
                return "the request line does not end in HTTP/1.0 or HTTP/1.1";
            f->line++;
            f->state = LINE_START | trailers;
            if (p == end)
                break;
            /* fall through */
        case LINE_START:
            if (*p == '\r') {
                f->state = END_LF | trailers;
                p++;
            } else if (*p == ' ' || *p == '\t') {
                return "a header line folded onto the line before (obs-fold)";
            } else if (*p == '\n') {
                return BARE_LF;
            } else {
                f->state = LINE | trailers;
            }
            break;
        case END_LF:
            if (*p++ != '\n')
                return BARE_CR;
            section_end(f, trailers);
            break;
        case BODY:
        case DATA: {
            size_t n = (size_t)(end - p) < f->left ? (size_t)(end - p) : (size_t)f->left;
            p += n;
            f->left -= n;
            if (f->left == 0)
                f->state = f->state == BODY ? START : DATA_CR;
            break;
        }
        case SIZE_START:
            if (rill_hex_digit((unsigned char)*p) < 0)
                return "a chunk size is not hexadecimal";
            f->left = 0;
            f->digits = 0;
            f->state = SIZE;
            break;
        case SIZE: {
            int v = rill_hex_digit((unsigned char)*p);
            if (v >= 0) {
                /* (leading zeros are no digits of the size: RFC 9112 allows any number) */
                if ((f->left > 0 || v > 0) && ++f->digits > 15)
                    return "a chunk size has more than 15 hex digits";
                f->left = f->left * 16 + (uint64_t)v;
            } else if (*p == ' ' || *p == '\t') {
                f->state = SIZE_BWS;
            } else if (*p == ';') {
                f->state = EXT;
            } else if (*p == '\r') {
                f->state = SIZE_LF;
            } else {
                return "a chunk size is followed by neither an extension (;) nor CRLF";
            }
            p++;
            break;
        }
        case SIZE_BWS:
            if (*p == ';')
                f->state = EXT;
            else if (*p != ' ' && *p != '\t')
                return "a chunk size is followed by neither an extension (;) nor CRLF";
            p++;
            break;
        case EXT: {
            unsigned char ch = (unsigned char)*p++;
            if (ch == '\r')
                f->state = SIZE_LF;
            else if (!(ch == ' ' || ch == '\t' || (ch > 0x20 && ch < 0x7f)))
                return "a chunk extension holds a byte that is not visible ASCII";
            break;
        }
        case SIZE_LF:
            if (*p++ != '\n')
                return BARE_CR;
            f->state = f->left == 0 ? (LINE_START | TRAILERS) : DATA;
            break;
        case DATA_CR:
            if (*p++ != '\r')
                return "a chunk's data is not followed by CRLF";
            f->state = DATA_LF;
            break;
        case DATA_LF:
            if (*p++ != '\n')
                return "a chunk's data is not followed by CRLF";
            f->state = SIZE_START;
            break;
        }
    }
    return NULL;
}
