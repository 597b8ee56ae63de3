/*
 * tz.c: time zones from TZif files (RFC 8536) in $TZDIR or
 * /usr/share/zoneinfo: the transitions they list, and the POSIX TZ rule of
 * their footer for instants after the last one. Zones are loaded on first
 * use and cached by name; the process's own TZ is never read or changed.
 */
#include "tz.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rill.h"

#define MAX_TYPES 256
#define MAX_SECONDS 1e15 /* ~31 million years either side of 1970 */

typedef struct tz_type {
    int32_t utcoff;
    uint8_t isdst;
    char abbr[16];
} tz_type;

/* One end of daylight time in a POSIX TZ rule: a date form and a time. */
typedef struct tz_rule_date {
    char kind; /* 'M' month.week.day, 'J' Julian 1-365 without Feb 29, 'N' 0-365 */
    int month, week, day;
    int32_t time; /* seconds after local midnight, may be negative or > 24h */
} tz_rule_date;

typedef struct tz_rule {
    int present;
    tz_type std, dst;
    int has_dst;
    tz_rule_date start, end;
} tz_rule;

struct rill_tz {
    char name[128];
    int64_t *times; /* transition instants, ascending */
    uint8_t *idx;   /* the type in force from each transition */
    int ntimes;
    tz_type types[MAX_TYPES];
    int ntypes;
    tz_rule rule;
    struct rill_tz *next;
};

static rill_tz *zones;

/* ---- Calendar ---- */

int64_t rill_civil_to_days(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void rill_days_to_civil(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int is_leap(int64_t y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b) {
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* ---- POSIX TZ rules ("CET-1CEST,M3.5.0,M10.5.0/3") ---- */

static const char *parse_abbr(const char *p, char *out, size_t len) {
    size_t n = 0;
    if (*p == '<') {
        for (p++; *p && *p != '>'; p++)
            if (n + 1 < len)
                out[n++] = *p;
        if (*p != '>')
            return NULL;
        p++;
    } else {
        for (; (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'); p++)
            if (n + 1 < len)
                out[n++] = *p;
    }
    out[n] = '\0';
    return n >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] -> seconds; hours up to 167 for rule times. */
static const char *parse_hms(const char *p, int32_t *out) {
    int sign = 1;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (*p < '0' || *p > '9')
        return NULL;
    int32_t parts[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        int v = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        parts[i] = v;
        if (*p != ':' || i == 2)
            break;
        p++;
    }
    *out = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
    return p;
}

static const char *parse_rule_date(const char *p, tz_rule_date *r) {
    r->time = 7200; /* 02:00 unless said otherwise */
    if (*p == 'M') {
        r->kind = 'M';
        if (sscanf(p + 1, "%d.%d.%d", &r->month, &r->week, &r->day) != 3 || r->month < 1 ||
            r->month > 12 || r->week < 1 || r->week > 5 || r->day < 0 || r->day > 6)
            return NULL;
        p++;
        while ((*p >= '0' && *p <= '9') || *p == '.')
            p++;
    } else {
        r->kind = *p == 'J' ? 'J' : 'N';
        if (*p == 'J')
            p++;
        if (*p < '0' || *p > '9')
            return NULL;
        r->day = 0;
        while (*p >= '0' && *p <= '9')
            r->day = r->day * 10 + (*p++ - '0');
    }
    if (*p == '/')
        p = parse_hms(p + 1, &r->time);
    return p;
}

static int parse_rule(const char *s, tz_rule *r) {
    memset(r, 0, sizeof *r);
    int32_t west;
    const char *p = parse_abbr(s, r->std.abbr, sizeof r->std.abbr);
    if (!p || !(p = parse_hms(p, &west)))
        return -1;
    r->std.utcoff = -west; /* POSIX offsets count west of Greenwich */
    r->present = 1;
    if (*p == '\0')
        return 0;
    if (!(p = parse_abbr(p, r->dst.abbr, sizeof r->dst.abbr)))
        return -1;
    r->has_dst = 1;
    r->dst.isdst = 1;
    r->dst.utcoff = r->std.utcoff + 3600;
    if (*p != ',' && *p != '\0') {
        if (!(p = parse_hms(p, &west)))
            return -1;
        r->dst.utcoff = -west;
    }
    if (*p != ',') /* no dates: POSIX leaves them to the implementation */
        return -1;
    if (!(p = parse_rule_date(p + 1, &r->start)) || *p != ',')
        return -1;
    if (!(p = parse_rule_date(p + 1, &r->end)) || *p != '\0')
        return -1;
    return 0;
}

/* The local-midnight day number of a rule date in year y. */
static int64_t rule_day(const tz_rule_date *r, int64_t y) {
    if (r->kind == 'J')
        return rill_civil_to_days(y, 1, 1) + r->day - 1 + (is_leap(y) && r->day >= 60);
    if (r->kind == 'N')
        return rill_civil_to_days(y, 1, 1) + r->day;
    int64_t first = rill_civil_to_days(y, r->month, 1);
    int wday_first = (int)((first % 7 + 11) % 7); /* 1970-01-01 was a Thursday */
    int day = 1 + (r->day - wday_first + 7) % 7 + 7 * (r->week - 1);
    while (day > month_days(y, r->month))
        day -= 7;
    return first + day - 1;
}

static const tz_type *rule_type_at(const tz_rule *r, int64_t t) {
    if (!r->has_dst)
        return &r->std;
    int y, m, d;
    rill_days_to_civil(floor_div(t, 86400), &y, &m, &d);
    /* Daylight time starts in standard time and ends in daylight time. */
    int64_t start = rule_day(&r->start, y) * 86400 + r->start.time - r->std.utcoff;
    int64_t end = rule_day(&r->end, y) * 86400 + r->end.time - r->dst.utcoff;
    int dst = start < end ? (t >= start && t < end) : (t < end || t >= start);
    return dst ? &r->dst : &r->std;
}

/* ---- TZif files ---- */

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p) {
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static int parse_tzif(rill_tz *tz, const unsigned char *data, size_t len) {
    if (len < 44 || memcmp(data, "TZif", 4) != 0)
        return -1;
    int version = data[4];
    const unsigned char *h = data;
    int time_size = 4;
    for (;;) {
        uint32_t isut = be32(h + 20), isstd = be32(h + 24), leap = be32(h + 28);
        uint32_t ntimes = be32(h + 32), ntypes = be32(h + 36), nchars = be32(h + 40);
        size_t block = ntimes * (size_t)time_size + ntimes + ntypes * 6 + nchars +
                       leap * (size_t)(time_size + 4) + isstd + isut;
        const unsigned char *body = h + 44;
        if ((size_t)(body - data) + block > len || ntypes == 0 || ntypes > MAX_TYPES)
            return -1;
        if (version >= '2' && time_size == 4) { /* skip to the 64-bit copy */
            h = body + block;
            time_size = 8;
            if ((size_t)(h - data) + 44 > len || memcmp(h, "TZif", 4) != 0)
                return -1;
            continue;
        }
        tz->times = malloc(sizeof *tz->times * (ntimes ? ntimes : 1));
        tz->idx = malloc(ntimes ? ntimes : 1);
        if (!tz->times || !tz->idx)
            return -1;
        const unsigned char *p = body;
        for (uint32_t i = 0; i < ntimes; i++, p += time_size)
            tz->times[i] = time_size == 8 ? be64(p) : (int32_t)be32(p);
        for (uint32_t i = 0; i < ntimes; i++) {
            tz->idx[i] = *p++;
            if (tz->idx[i] >= ntypes)
                return -1;
        }
        tz->ntimes = (int)ntimes;
        const unsigned char *chars = p + ntypes * 6;
        for (uint32_t i = 0; i < ntypes; i++, p += 6) {
            tz->types[i].utcoff = (int32_t)be32(p);
            tz->types[i].isdst = p[4];
            if (p[5] < nchars)
                snprintf(tz->types[i].abbr, sizeof tz->types[i].abbr, "%.*s", (int)(nchars - p[5]),
                         (const char *)chars + p[5]);
        }
        tz->ntypes = (int)ntypes;
        const unsigned char *footer = body + block;
        if (time_size == 8 && footer < data + len && *footer == '\n') {
            const unsigned char *endl = memchr(footer + 1, '\n', (size_t)(data + len - footer - 1));
            if (endl && endl > footer + 1) {
                char rule[128];
                snprintf(rule, sizeof rule, "%.*s", (int)(endl - footer - 1),
                         (const char *)footer + 1);
                if (parse_rule(rule, &tz->rule) != 0)
                    tz->rule.present = 0;
            }
        }
        return 0;
    }
}

static int valid_name(const char *name) {
    /* one spelling per zone: "posix//America///Salta" named the file of
     * "posix/America/Salta", a cached zone of its own (below) each time */
    if (!*name || *name == '/' || strstr(name, "..") || strstr(name, "//") ||
        name[strlen(name) - 1] == '/' || strlen(name) >= 100)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '+' || *p == '-' || *p == '/'))
            return 0;
    return 1;
}

static void tz_free(rill_tz *tz) {
    free(tz->times);
    free(tz->idx);
    free(tz);
}

static int load_zone(rill_tz *tz, const char *name) {
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    unsigned char *data = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *p = realloc(data, cap);
            if (!p)
                break;
            data = p;
        }
        n = fread(data + len, 1, cap - len, f);
        len += n;
    } while (n > 0 && cap < (1 << 20));
    fclose(f);
    int rc = data ? parse_tzif(tz, data, len) : -1;
    free(data);
    return rc;
}

/* Zones are kept once loaded, for the process's life (a run's formatting
 * of a date must not read a file each time): there are some 600, and no
 * more than this many are kept, whatever names flows try. */
#define MAX_ZONES 1024
static int zone_count;

int rill_tz_get(const char *name, const rill_tz **out, char *err, size_t errlen) {
    for (rill_tz *z = zones; z; z = z->next) {
        if (strcmp(z->name, name) == 0) {
            *out = z;
            return 0;
        }
    }
    if (!valid_name(name)) {
        snprintf(err, errlen, "unknown time zone '%s'", name);
        return -1;
    }
    if (zone_count >= MAX_ZONES) {
        snprintf(err, errlen, "time zone '%s': more than %d zones in use", name, MAX_ZONES);
        return -1;
    }
    rill_tz *tz = calloc(1, sizeof *tz);
    if (tz == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(tz->name, sizeof tz->name, "%s", name);
    if (load_zone(tz, name) != 0) {
        int utc = strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0;
        free(tz->times);
        free(tz->idx);
        tz->times = NULL;
        tz->idx = NULL;
        tz->ntimes = 0;
        if (!utc) {
            tz_free(tz);
            snprintf(err, errlen, "unknown time zone '%s'", name);
            return -1;
        }
        tz->ntypes = 1; /* UTC needs no file */
        memset(&tz->types[0], 0, sizeof tz->types[0]);
        snprintf(tz->types[0].abbr, sizeof tz->types[0].abbr, "UTC");
    }
    tz->next = zones;
    zones = tz;
    zone_count++;
    *out = tz;
    return 0;
}

void rill_tz_cleanup(void) {
    while (zones) {
        rill_tz *next = zones->next;
        tz_free(zones);
        zones = next;
    }
    zone_count = 0;
}

/* ---- Conversions ---- */

static const tz_type *type_at(const rill_tz *tz, int64_t t) {
    if (tz->ntimes == 0 || t < tz->times[0]) {
        if (tz->ntimes == 0 && tz->rule.present)
            return rule_type_at(&tz->rule, t);
        return &tz->types[0];
    }
    if (t >= tz->times[tz->ntimes - 1] && tz->rule.present)
        return rule_type_at(&tz->rule, t);
    int lo = 0, hi = tz->ntimes - 1; /* times[lo] <= t */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (tz->times[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return &tz->types[tz->idx[lo]];
}

void rill_tz_to_local(const rill_tz *tz, int64_t t, rill_local *out) {
    const tz_type *type = type_at(tz, t);
    int64_t local = t + type->utcoff;
    int64_t days = floor_div(local, 86400);
    int64_t secs = local - days * 86400;
    rill_days_to_civil(days, &out->c.year, &out->c.month, &out->c.day);
    out->c.hour = (int)(secs / 3600);
    out->c.min = (int)(secs / 60 % 60);
    out->c.sec = (int)(secs % 60);
    out->wday = (int)((days % 7 + 11) % 7);
    out->yday = (int)(days - rill_civil_to_days(out->c.year, 1, 1) + 1);
    out->utcoff = type->utcoff;
    out->isdst = type->isdst;
    snprintf(out->abbr, sizeof out->abbr, "%s", type->abbr);
}

int rill_tz_from_local(const rill_tz *tz, const rill_civil *c, int64_t out[2]) {
    int64_t y = c->year + floor_div(c->month - 1, 12);
    int m = (int)(c->month - 1 - floor_div(c->month - 1, 12) * 12) + 1;
    int64_t wall = (rill_civil_to_days(y, m, 1) + c->day - 1) * 86400 + (int64_t)c->hour * 3600 +
                   (int64_t)c->min * 60 + c->sec;
    /* The offsets a day either side bracket any transition near this wall time. */
    int32_t before = type_at(tz, wall - 86400)->utcoff;
    int32_t after = type_at(tz, wall + 86400)->utcoff;
    int n = 0;
    int64_t t = wall - before;
    if (type_at(tz, t)->utcoff == before)
        out[n++] = t;
    t = wall - after;
    if (after != before && type_at(tz, t)->utcoff == after)
        out[n++] = t;
    if (n == 2 && out[0] > out[1]) {
        int64_t tmp = out[0];
        out[0] = out[1];
        out[1] = tmp;
    }
    if (n == 0)
        out[0] = wall - before; /* in a gap: shifted forward by the gap's length */
    return n;
}

/* ---- Lua API ---- */

static const rill_tz *check_zone(lua_State *L, int idx) {
    const char *name = luaL_optstring(L, idx, "UTC");
    const rill_tz *tz;
    char err[160];
    if (rill_tz_get(name, &tz, err, sizeof err) != 0)
        luaL_error(L, "%s", err);
    return tz;
}

static void set_int(lua_State *L, const char *k, int v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* to_local(t, zone) -> {year, month, day, hour, min, sec, wday, yday, offset, isdst, abbr} */
static int l_to_local(lua_State *L) {
    double t = luaL_checknumber(L, 1);
    /* NaN, infinities and times past ~30 million years have no int64 seconds
     * (converting them is undefined behaviour) and no calendar date */
    if (!(t >= -MAX_SECONDS && t <= MAX_SECONDS))
        return luaL_error(L, "time %f is outside the supported range", t);
    const rill_tz *tz = check_zone(L, 2);
    rill_local l;
    rill_tz_to_local(tz, (int64_t)floor(t), &l);
    lua_createtable(L, 0, 11);
    set_int(L, "year", l.c.year);
    set_int(L, "month", l.c.month);
    set_int(L, "day", l.c.day);
    set_int(L, "hour", l.c.hour);
    set_int(L, "min", l.c.min);
    set_int(L, "sec", l.c.sec);
    set_int(L, "wday", l.wday);
    set_int(L, "yday", l.yday);
    set_int(L, "offset", l.utcoff);
    lua_pushboolean(L, l.isdst);
    lua_setfield(L, -2, "isdst");
    lua_pushstring(L, l.abbr);
    lua_setfield(L, -2, "abbr");
    return 1;
}

/* A field of a wall-clock time: out of range past a million either way
 * (month -2^31 overflowed the arithmetic that folds months into years). */
static int civil_field(lua_State *L, int i, int required) {
    lua_Number v = required ? luaL_checknumber(L, i) : luaL_optnumber(L, i, 0);
    luaL_argcheck(L, v >= -1e6 && v <= 1e6, i, "out of range");
    return (int)v;
}

/* from_local(zone, year, month, day, hour, min, sec) -> n, t1, t2 (see tz.h) */
static int l_from_local(lua_State *L) {
    const rill_tz *tz = check_zone(L, 1);
    rill_civil c = {civil_field(L, 2, 1), civil_field(L, 3, 1), civil_field(L, 4, 1),
                    civil_field(L, 5, 0), civil_field(L, 6, 0), civil_field(L, 7, 0)};
    int64_t out[2];
    int n = rill_tz_from_local(tz, &c, out);
    lua_pushinteger(L, n);
    lua_pushnumber(L, (lua_Number)out[0]);
    if (n == 2) {
        lua_pushnumber(L, (lua_Number)out[1]);
        return 3;
    }
    return 2;
}

/* valid(zone) -> true, or false and why */
static int l_valid(lua_State *L) {
    const rill_tz *tz;
    char err[160];
    if (rill_tz_get(luaL_checkstring(L, 1), &tz, err, sizeof err) != 0) {
        lua_pushboolean(L, 0);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* now() -> UTC seconds, with microseconds */
static int l_now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000) / 1e6);
    return 1;
}

int rill_tz_open(lua_State *L) {
    static const luaL_Reg funcs[] = {{"to_local", l_to_local},
                                     {"from_local", l_from_local},
                                     {"valid", l_valid},
                                     {"now", l_now},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
