/*
 * fuzz_http_chunked.c: chunked request bodies through rill.c.http_server
 * (fuzz/http_harness.h). The input is what follows a fixed request head with
 * "Transfer-Encoding: chunked": chunk sizes, extensions, data, the last
 * chunk, trailers, and whatever comes after (a next request, pipelined).
 * Its first byte chooses the route (bits 0-1), whether the head asks for
 * "Expect: 100-continue" (bit 2), how the client leaves (bits 3-4) and how
 * many of the next bytes are the client's script (bits 5-7).
 */
#include "http_harness.h"

static const char *const heads[] = {"POST /now HTTP/1.1\r\n", "POST /later HTTP/1.1\r\n",
                                    "POST /slow HTTP/1.1\r\n", "POST /hdr HTTP/1.1\r\n"};

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size == 0)
        return 0;
    size_t nscript = (size_t)(data[0] >> 5);
    if (nscript > size - 1)
        nscript = size - 1;
    const char *head = heads[data[0] & 3];
    const char *fields = (data[0] & 4) ? "Host: fuzz\r\nExpect: 100-continue\r\n"
                                         "Transfer-Encoding: chunked\r\n\r\n"
                                       : "Host: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t hl = strlen(head), fl = strlen(fields), bl = size - 1 - nscript;
    unsigned char *stream = malloc(hl + fl + bl + 1);
    if (stream == NULL)
        return 0;
    memcpy(stream, head, hl);
    memcpy(stream + hl, fields, fl);
    memcpy(stream + hl + fl, data + 1 + nscript, bl);
    fuzz_http_run(data + 1, nscript, stream, hl + fl + bl, (data[0] >> 3 & 3) % 3);
    free(stream);
    return 0;
}
