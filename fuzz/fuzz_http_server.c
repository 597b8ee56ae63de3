/*
 * fuzz_http_server.c: the request path of rill.c.http_server, fed by one
 * loopback client per input (fuzz/http_harness.h). Input: a first byte
 * whose low 4 bits count the script bytes that follow and whose bits 4-5
 * choose how the client leaves (half-close, reset, close); the script
 * (http_harness.h's actions: writes of 1-32, 16-512 or 256-8192 bytes, loop
 * turns, reading on/off, shutdown, reset, close); then the bytes the client
 * sends: requests, pipelined or cut anywhere.
 */
#include "http_harness.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size == 0)
        return 0;
    size_t nscript = data[0] & 15;
    if (nscript > size - 1)
        nscript = size - 1;
    fuzz_http_run(data + 1, nscript, data + 1 + nscript, size - 1 - nscript, (data[0] >> 4) % 3);
    return 0;
}
