/*
 * log.h: the process's log output (stderr), written without ever blocking
 * the loop: lines that the output cannot take at once wait in a bounded
 * buffer, written when the descriptor is writable; when the buffer is full
 * a line is dropped and counted. rill_log() is how C code logs: the same
 * JSON or text shape as stdlib/rill/log.lua.
 */
#ifndef RILL_LOG_H
#define RILL_LOG_H

#include <stdint.h>

#include "rill.h"

/* rill_log(level, fmt, ...), the way C code logs, is in rill.h. */

/* Hands a finished line (ending with a newline) to the output. */
void rill_log_line(const char *line, size_t n);

/* Lines dropped since the process started (the buffer was full). */
uint64_t rill_log_dropped(void);

/* At exit: writes what is buffered, waiting at most timeout_ms in all. */
void rill_log_flush(int timeout_ms);

#endif
