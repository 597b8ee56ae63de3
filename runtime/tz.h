/*
 * tz.h: IANA time zones read from the system's TZif files, without touching
 * the process's TZ. Lua sees it as rill.c.tz.
 */
#ifndef RILL_TZ_H
#define RILL_TZ_H

#include <stddef.h>
#include <stdint.h>

typedef struct rill_tz rill_tz;

typedef struct rill_civil {
    int year, month, day, hour, min, sec; /* month 1-12 */
} rill_civil;

typedef struct rill_local {
    rill_civil c;
    int wday;   /* 0 = Sunday */
    int yday;   /* 1-366 */
    int utcoff; /* seconds east of UTC */
    int isdst;
    char abbr[16];
} rill_local;

/* The zone called name ("Europe/Paris", "UTC"), loaded once and kept for
 * the life of the process. 0, or -1 with a sentence in err. */
int rill_tz_get(const char *name, const rill_tz **out, char *err, size_t errlen);

/* UTC seconds -> local time in tz. */
void rill_tz_to_local(const rill_tz *tz, int64_t t, rill_local *out);

/* Wall-clock time -> instants. Returns 1 (out[0] is the instant), 2 (the
 * time happens twice, at a fall-back: out[0] < out[1]) or 0 (it does not
 * exist, in a spring-forward gap: out[0] is the time shifted forward by the
 * gap, so 02:30 in Paris on 2026-03-29 gives 03:30 CEST). Fields out of
 * range are normalised (month 13 is January of the next year...). */
int rill_tz_from_local(const rill_tz *tz, const rill_civil *c, int64_t out[2]);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back. */
int64_t rill_civil_to_days(int64_t y, int m, int d);
void rill_days_to_civil(int64_t days, int *y, int *m, int *d);

/* Frees every loaded zone (for leak checkers; no zone may be used after). */
void rill_tz_cleanup(void);

#endif
