/*
 * test_tz.c: time zones (tz.c) against the system's own conversions:
 * every expected value below was printed by `TZ=<zone> date -d @<seconds>`.
 */
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "tz.h"

typedef struct expect {
    const char *zone;
    long long t;
    const char *local; /* "YYYY-MM-DD HH:MM:SS" */
    int utcoff;
    const char *abbr;
    int wday; /* 0 = Sunday */
} expect;

static const expect cases[] = {
    {"Europe/Paris", 1774745999, "2026-03-29 01:59:59", 3600, "CET", 0},
    {"Europe/Paris", 1774746000, "2026-03-29 03:00:00", 7200, "CEST", 0},
    {"Europe/Paris", 1792889999, "2026-10-25 02:59:59", 7200, "CEST", 0},
    {"Europe/Paris", 1792890000, "2026-10-25 02:00:00", 3600, "CET", 0},
    {"Europe/Paris", 4118083200, "2100-07-01 02:00:00", 7200, "CEST", 4}, /* footer rule */
    {"Europe/Paris", -86400, "1969-12-31 01:00:00", 3600, "CET", 3},
    {"America/New_York", 1772953200, "2026-03-08 03:00:00", -14400, "EDT", 0},
    {"America/New_York", 1793512800, "2026-11-01 01:00:00", -18000, "EST", 0},
    {"America/New_York", 4118083200, "2100-06-30 20:00:00", -14400, "EDT", 3},
    {"Australia/Sydney", 1775318400, "2026-04-05 02:00:00", 36000, "AEST", 0},
    {"Australia/Sydney", 1700000000, "2023-11-15 09:13:20", 39600, "AEDT", 3},
    {"Asia/Kolkata", 1700000000, "2023-11-15 03:43:20", 19800, "IST", 3},
    {"Australia/Adelaide", 1775318400, "2026-04-05 02:30:00", 37800, "ACDT", 0},
    {"Australia/Adelaide", 4118083200, "2100-07-01 09:30:00", 34200, "ACST", 4},
    {"UTC", 1700000000, "2023-11-14 22:13:20", 0, "UTC", 2},
};

static void test_to_local_matches_the_system(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const expect *e = &cases[i];
        const rill_tz *tz;
        char err[128], got[32];
        T_EQ_INT(rill_tz_get(e->zone, &tz, err, sizeof err), 0);
        rill_local l;
        rill_tz_to_local(tz, e->t, &l);
        snprintf(got, sizeof got, "%04d-%02d-%02d %02d:%02d:%02d", l.c.year, l.c.month, l.c.day,
                 l.c.hour, l.c.min, l.c.sec);
        T_EQ_STR(got, e->local);
        T_EQ_INT(l.utcoff, e->utcoff);
        T_EQ_STR(l.abbr, e->abbr);
        T_EQ_INT(l.wday, e->wday);
    }
}

static int64_t from_local(const char *zone, int y, int mo, int d, int h, int mi, int64_t out[2]) {
    const rill_tz *tz;
    char err[128];
    rill_tz_get(zone, &tz, err, sizeof err);
    rill_civil c = {y, mo, d, h, mi, 0};
    return rill_tz_from_local(tz, &c, out);
}

static void test_from_local_in_gaps_and_overlaps(void) {
    int64_t out[2];
    /* Paris spring forward: 02:30 does not exist, shifted to 03:30 CEST = 01:30 UTC */
    T_EQ_INT(from_local("Europe/Paris", 2026, 3, 29, 2, 30, out), 0);
    T_EQ_INT(out[0], 1774747800);
    /* Paris fall back: 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET) */
    T_EQ_INT(from_local("Europe/Paris", 2026, 10, 25, 2, 30, out), 2);
    T_EQ_INT(out[0], 1792888200);
    T_EQ_INT(out[1], 1792891800);
    /* an ordinary time */
    T_EQ_INT(from_local("Europe/Paris", 2026, 11, 25, 9, 0, out), 1);
    T_EQ_INT(out[0], 1795593600);
    /* New York: 02:30 on 2026-03-08 is in the gap -> 03:30 EDT = 07:30 UTC */
    T_EQ_INT(from_local("America/New_York", 2026, 3, 8, 2, 30, out), 0);
    T_EQ_INT(out[0], 1772955000);
    /* out-of-range fields are normalised: month 13 is January next year */
    T_EQ_INT(from_local("UTC", 2026, 13, 1, 0, 0, out), 1);
    T_EQ_INT(out[0], 1798761600);
    /* day 0 is the last day of the previous month: 2024-02-29 (leap) */
    T_EQ_INT(from_local("UTC", 2024, 3, 0, 0, 0, out), 1);
    T_EQ_INT(out[0], 1709164800);
}

static void test_days_round_trip(void) {
    T_EQ_INT(rill_civil_to_days(1970, 1, 1), 0);
    T_EQ_INT(rill_civil_to_days(2000, 3, 1), 11017);
    T_EQ_INT(rill_civil_to_days(1969, 12, 31), -1);
    int failures = 0;
    for (int64_t d = -800000; d <= 800000; d += 7) {
        int y, m, dd;
        rill_days_to_civil(d, &y, &m, &dd);
        failures += rill_civil_to_days(y, m, dd) != d;
    }
    T_EQ_INT(failures, 0);
    int y, m, d;
    rill_days_to_civil(rill_civil_to_days(2100, 2, 28) + 1, &y, &m, &d); /* 2100 is no leap year */
    T_EQ_INT(m, 3);
    T_EQ_INT(d, 1);
    rill_days_to_civil(rill_civil_to_days(2000, 2, 28) + 1, &y, &m, &d); /* 2000 is one */
    T_EQ_INT(m, 2);
    T_EQ_INT(d, 29);
}

static void test_bad_names_are_refused(void) {
    const rill_tz *tz;
    char err[128];
    /* other spellings of a zone's file ("Europe//Paris", "Europe/Paris/") were
     * zones of their own, each kept: millions of them for one run */
    const char *bad[] = {
        "Mars/Olympus",  "../etc/passwd", "/etc/localtime",     "Europe/Paris;rm", "",
        "Europe//Paris", "Europe/Paris/", "posix//Europe/Paris"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        T_EQ_INT(rill_tz_get(bad[i], &tz, err, sizeof err), -1);
        T_CHECK(strstr(err, "unknown time zone") != NULL);
    }
}

static void test_utc_needs_no_tzdata(void) {
    rill_tz_cleanup();
    setenv("TZDIR", "/nonexistent", 1);
    const rill_tz *tz;
    char err[128];
    T_EQ_INT(rill_tz_get("UTC", &tz, err, sizeof err), 0);
    T_EQ_INT(rill_tz_get("Europe/Paris", &tz, err, sizeof err), -1);
    unsetenv("TZDIR");
    rill_tz_cleanup();
}

int main(void) {
    T_RUN(test_to_local_matches_the_system);
    T_RUN(test_from_local_in_gaps_and_overlaps);
    T_RUN(test_days_round_trip);
    T_RUN(test_bad_names_are_refused);
    T_RUN(test_utc_needs_no_tzdata);
    rill_tz_cleanup();
    return T_END();
}
