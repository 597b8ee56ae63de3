/*
 * test_http_framing.c: the strict framing check (http_framing.c). Every
 * case is fed whole, then split at every offset into two reads, then one
 * byte per read: the verdict must not depend on where the reads end.
 */
#include <stdint.h>
#include <string.h>

#include "http_framing.h"
#include "t.h"

#define HEAD "POST /hooks/x HTTP/1.1\r\nHost: x\r\n"

typedef struct frame_case {
    const char *bytes;
    int chunked;
    uint64_t length;
    const char *refused; /* NULL: accepted; else a part of the reason */
} frame_case;

static const frame_case cases[] = {
    {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 0, NULL},
    {"\r\n\r\nGET / HTTP/1.0\r\n\r\n", 0, 0, NULL}, /* empty lines before a request */
    {HEAD "Content-Length: 5\r\n\r\nhe\r\nlGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 5, NULL},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 1, 0, NULL},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n002;a=b;c=\"d e\"\r\nab\r\n000\r\n\r\n", 1, 0, NULL},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n00000000000000000002\r\nab\r\n0\r\n\r\n", 1, 0, NULL},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2 \t;x\r\nab\r\n0\r\nT: v\r\nU: w\r\n\r\n", 1, 0,
     NULL},
    {HEAD "Transfer-Encoding: chunked\r\n\r\nA\r\n\r\n\r\n\r\n\r\n\r\n\r\n0\r\n\r\nGET / "
          "HTTP/1.1\r\n\r\n",
     1, 0, NULL},
    /* smuggling: a proxy that reads a bare LF after a chunk's data sees one request */
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 1, 0, "data is not followed"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\n100\r\n", 1, 0, "data is not followed"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\r", 1, 0, "data is not followed"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2 zz\r\nab\r\n", 1, 0, "neither an extension"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n", 1, 0, "neither an extension"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2x\r\nab\r\n", 1, 0, "neither an extension"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2;a\x01\r\nab\r\n", 1, 0, "not visible ASCII"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2;a\xff\r\nab\r\n", 1, 0, "not visible ASCII"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\nab\r\n", 1, 0, "neither an extension"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2;x\nab\r\n", 1, 0, "not visible ASCII"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n2\rab\r\n", 1, 0, "CR not followed by LF"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n 2\r\nab\r\n", 1, 0, "not hexadecimal"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", 1, 0, "more than 15"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\n\r\n", 1, 0, "bare LF"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n w\r\n\r\n", 1, 0, "obs-fold"},
    {HEAD "Transfer-Encoding: chunked\r\n\r\n0\r\n\rX", 1, 0, "CR not followed by LF"},
    /* the head */
    {"GET / HTTP/1.1\nHost: x\n\n", 0, 0, "bare LF"},
    {"GET / HTTP/1.1\r\nHost: x\n\r\n", 0, 0, "bare LF"},
    {"GET / HTTP/1.1\r\nHost: x\r\n\n", 0, 0, "bare LF"},
    {"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 0, 0, "CR not followed by LF"},
    {"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 0, 0, "obs-fold"},
    {"GET / HTTP/1.1\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n", 0, 0, "obs-fold"},
    {"GET / HXXP/1.1\r\nHost: x\r\n\r\n", 0, 0, "HTTP/1.0 or HTTP/1.1"},
    {"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 0, 0, "HTTP/1.0 or HTTP/1.1"},
    {"GET /\r\n\r\n", 0, 0, "HTTP/1.0 or HTTP/1.1"},
};

/* Feeds c's bytes in pieces of at most piece bytes (0: whole), the second
 * read starting at split when split > 0; the verdict. */
static const char *feed(const frame_case *c, size_t split, size_t piece) {
    http_framing f;
    http_framing_init(&f);
    http_framing_body(&f, c->chunked, c->length);
    size_t len = strlen(c->bytes);
    const char *why = NULL;
    for (size_t at = 0; at < len && why == NULL;) {
        size_t n = len - at;
        if (piece && n > piece)
            n = piece;
        if (split && at < split && at + n > split)
            n = split - at;
        why = http_framing_feed(&f, c->bytes + at, n);
        at += n;
    }
    return why;
}

static int verdict_is(const char *why, const char *refused) {
    if (refused == NULL)
        return why == NULL;
    return why != NULL && strstr(why, refused) != NULL;
}

static void test_every_case_has_its_verdict_wherever_the_reads_end(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const frame_case *c = &cases[i];
        size_t len = strlen(c->bytes);
        int ok = verdict_is(feed(c, 0, 0), c->refused) && verdict_is(feed(c, 0, 1), c->refused);
        for (size_t split = 1; split < len; split++)
            ok = ok && verdict_is(feed(c, split, 0), c->refused);
        if (!ok)
            fprintf(stderr, "case %zu: %s\n", i, c->bytes);
        T_CHECK(ok);
    }
}

static const char *feed_all(http_framing *f, const char *bytes) {
    return http_framing_feed(f, bytes, strlen(bytes));
}

/* Two requests back to back, each with its own framing: the second one's
 * head is read after the first's body, whatever the first's was. */
static void test_a_request_after_a_chunked_body_is_checked_as_a_request(void) {
    http_framing f;
    http_framing_init(&f);
    http_framing_body(&f, 1, 0);
    T_CHECK(feed_all(&f, HEAD "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n") == NULL);
    http_framing_body(&f, 0, 3);
    T_CHECK(feed_all(&f, HEAD "Content-Length: 3\r\n\r\nabc") == NULL);
    T_CHECK(feed_all(&f, "GET / HTTP/1.1\nHost: x\r\n\r\n") != NULL);
}

int main(void) {
    T_RUN(test_every_case_has_its_verdict_wherever_the_reads_end);
    T_RUN(test_a_request_after_a_chunked_body_is_checked_as_a_request);
    return T_END();
}
