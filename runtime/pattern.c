/*
 * pattern.c: Lua 5.1 pattern matching with a budget, as rill.c.pattern.
 * The string library's matcher backtracks in C with no limit, so one call
 * can hold the loop forever. This one counts its steps: every CHECK_EVERY
 * steps it asks the watchdog whether the resume in progress is past its
 * deadline (then the run ends there, as the watchdog's hook ends it), and
 * past max_steps it gives up ("pattern too complex", an ordinary error). find, match and gmatch
 * live here; gsub is written in Lua on top of exec (stdlib/rill/strings.lua) so its replacement
 * function is a plain, preemptible Lua call.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "watchdog.h"

#define ESC '%'
#define SPECIALS "^$*+?.([%-"
#define MAX_CAPTURES 32     /* as LUA_MAXCAPTURES */
#define MAX_DEPTH 200       /* nested matches (C stack) before "pattern too complex" */
#define CHECK_EVERY 4096    /* steps between two looks at the deadline and the cap */
#define CAP_UNFINISHED (-1) /* a capture opened and not yet closed */
#define CAP_POSITION (-2)   /* a () capture: a position, not a substring */

static uint64_t max_steps = 10000000; /* the setting pattern_max_steps */
static double gave_up;                /* calls stopped at max_steps, for /metrics */
static double too_large;              /* gsub results refused over max_string */

/* A [set] compiled to a bitmap, for the loops that test one item against
 * many characters (a greedy run, the search's first-item filter): one bit
 * test per character instead of a walk of the set. */
typedef struct charset {
    uint32_t bits[8];
} charset;

typedef struct matcher {
    const char *src, *src_end; /* the subject */
    const char *pat_end;       /* the pattern ends here (it may hold '\0') */
    lua_State *L;
    jmp_buf *deadline; /* where to go when the run's deadline has passed */
    int where;         /* the stack level errors are blamed on (luaL_where) */
    int level;         /* captures opened so far */
    int depth;         /* nested calls of match() */
    uint64_t steps, next_check;
    /* The first item's charset, kept for the searches of one call (gsub
     * searches once per match): first_of is the pattern it was made for. */
    const char *first_of, *first_end;
    charset first_set;
    struct {
        const char *init;
        ptrdiff_t len; /* or CAP_UNFINISHED, CAP_POSITION */
    } capture[MAX_CAPTURES];
} matcher;

/* Raises msg at m->where: the flow code that called find, or that called
 * the gsub written in Lua over exec. */
static int fail(matcher *m, const char *fmt, ...) {
    va_list ap;
    luaL_where(m->L, m->where);
    va_start(ap, fmt);
    lua_pushvfstring(m->L, fmt, ap);
    va_end(ap);
    lua_concat(m->L, 2);
    return lua_error(m->L);
}

/* ---- The budget ---- */

static void over_budget(matcher *m) {
    if (m->steps >= max_steps && ++gave_up)
        fail(m, "pattern too complex: gave up after %d steps (setting pattern_max_steps)",
             (int)m->steps);
    if (rill_watchdog_due())
        longjmp(*m->deadline, 1); /* nothing to free: the matcher allocates nothing */
    m->next_check = m->steps + CHECK_EVERY;
}

/* One unit of work; cheap unless a check is due. */
static inline void step(matcher *m) {
    if (++m->steps >= m->next_check)
        over_budget(m);
}

/* ---- Single characters, classes and sets ---- */

/* Which characters each class holds, built once from <ctype.h> by
 * rill_pattern_open: one table lookup per test instead of a call. */
enum {
    CL_ALPHA = 1 << 0,
    CL_CNTRL = 1 << 1,
    CL_DIGIT = 1 << 2,
    CL_GRAPH = 1 << 3,
    CL_LOWER = 1 << 4,
    CL_PUNCT = 1 << 5,
    CL_SPACE = 1 << 6,
    CL_UPPER = 1 << 7,
    CL_ALNUM = 1 << 8,
    CL_XDIGIT = 1 << 9,
    CL_ZERO = 1 << 10,
    CL_NEGATE = 1 << 15 /* in class_of: an upper-case letter, the complement */
};
static uint16_t char_classes[256];  /* character -> the classes it is in */
static uint16_t class_of[256];      /* letter after '%' -> its class bit, 0 if none */
static uint32_t class_bits[256][8]; /* letter after '%' -> the characters of its class, as bits */

static void classes_init(void) {
    static const struct {
        char letter;
        uint16_t bit;
        int (*test)(int);
    } classes[] = {{'a', CL_ALPHA, isalpha},   {'c', CL_CNTRL, iscntrl}, {'d', CL_DIGIT, isdigit},
                   {'g', CL_GRAPH, isgraph},   {'l', CL_LOWER, islower}, {'p', CL_PUNCT, ispunct},
                   {'s', CL_SPACE, isspace},   {'u', CL_UPPER, isupper}, {'w', CL_ALNUM, isalnum},
                   {'x', CL_XDIGIT, isxdigit}, {'z', CL_ZERO, NULL}};
    for (size_t k = 0; k < RILL_ARRAY_LEN(classes); k++) {
        class_of[(unsigned char)classes[k].letter] = classes[k].bit;
        class_of[toupper((unsigned char)classes[k].letter)] = classes[k].bit | CL_NEGATE;
        for (int c = 0; c < 256; c++)
            if (classes[k].test ? classes[k].test(c) != 0 : c == 0)
                char_classes[c] |= classes[k].bit;
    }
    for (int cl = 0; cl < 256; cl++) {
        uint16_t bit = class_of[cl];
        for (int c = 0; bit != 0 && c < 256; c++) {
            int yes = (char_classes[c] & bit & ~CL_NEGATE) != 0;
            if ((bit & CL_NEGATE) ? !yes : yes)
                class_bits[cl][c >> 5] |= 1u << (c & 31);
        }
    }
}

/* Whether c is in the class %cl (%a, %D...); %. %% %[ stand for themselves. */
static inline int in_class(int c, int cl) {
    uint16_t bit = class_of[cl];
    if (bit == 0)
        return cl == c;
    int yes = (char_classes[c] & bit & ~CL_NEGATE) != 0;
    return (bit & CL_NEGATE) ? !yes : yes;
}

/* The end of the single-character item that starts at p (a character, a
 * %class or a [set]). */
static const char *item_end(matcher *m, const char *p) {
    char c = *p++;
    if (c == ESC) {
        if (p >= m->pat_end)
            fail(m, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (p < m->pat_end && *p == '^')
            p++;
        /* The first character of a set is part of it even when it is ']'. */
        do {
            if (p >= m->pat_end)
                fail(m, "malformed pattern (missing ']')");
            c = *p++;
            if (c == ESC && p < m->pat_end)
                p++;
        } while (p >= m->pat_end || *p != ']');
        return p + 1;
    }
    return p;
}

/* Whether c is in the set [ ... ] from p (at '[') to last (at its ']'). */
static int in_set(int c, const char *p, const char *last) {
    int want = 1;
    if (p[1] == '^') {
        want = 0;
        p++;
    }
    while (++p < last) {
        if (*p == ESC) {
            p++;
            if (in_class(c, (unsigned char)*p))
                return want;
        } else if (p[1] == '-' && p + 2 < last) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return want;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return want;
        }
    }
    return !want;
}

static inline int charset_has(const charset *cs, unsigned char c) {
    return (cs->bits[c >> 5] >> (c & 31)) & 1;
}

static inline void charset_add(charset *cs, int c) {
    cs->bits[c >> 5] |= 1u << (c & 31);
}

/* Adds lo..hi (none if lo > hi) a word at a time: [\128-\255] is four
 * stores, not 128. */
static void charset_add_range(charset *cs, int lo, int hi) {
    while (lo <= hi) {
        int w = lo >> 5, last = ((w << 5) + 31 < hi) ? 31 : (hi & 31);
        uint32_t upto = last == 31 ? ~0u : (1u << (last + 1)) - 1;
        cs->bits[w] |= upto & (~0u << (lo & 31));
        lo = (w + 1) << 5;
    }
}

/* The same membership as in_set(c, p, last), for every c at once. */
static void charset_compile(charset *cs, const char *p, const char *last) {
    memset(cs, 0, sizeof *cs);
    int negate = p[1] == '^';
    if (negate)
        p++;
    while (++p < last) {
        if (*p == ESC) {
            p++;
            int cl = (unsigned char)*p;
            if (class_of[cl] == 0) {
                charset_add(cs, cl);
            } else {
                for (int i = 0; i < 8; i++)
                    cs->bits[i] |= class_bits[cl][i];
            }
        } else if (p[1] == '-' && p + 2 < last) {
            charset_add_range(cs, (unsigned char)p[0], (unsigned char)p[2]);
            p += 2;
        } else {
            charset_add(cs, (unsigned char)*p);
        }
    }
    if (negate)
        for (int i = 0; i < 8; i++)
            cs->bits[i] = ~cs->bits[i];
}

/* The characters the single-character item p..ep matches, as a charset. */
static void item_charset(charset *cs, const char *p, const char *ep) {
    switch (*p) {
    case '.':
        memset(cs, 0xff, sizeof *cs);
        return;
    case ESC: {
        int cl = (unsigned char)p[1];
        memset(cs, 0, sizeof *cs);
        if (class_of[cl] == 0)
            charset_add(cs, cl);
        else
            memcpy(cs->bits, class_bits[cl], sizeof cs->bits);
        return;
    }
    case '[':
        charset_compile(cs, p, ep - 1);
        return;
    default:
        memset(cs, 0, sizeof *cs);
        charset_add(cs, (unsigned char)*p);
    }
}

/* Whether the subject character at s matches the item p..ep. */
static int item_matches(matcher *m, const char *s, const char *p, const char *ep) {
    if (s >= m->src_end)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.':
        return 1;
    case ESC:
        return in_class(c, (unsigned char)p[1]);
    case '[':
        return in_set(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

/* The first position from s (at most the subject's end) whose character
 * is (in = 1) or is not (in = 0) in cs. One step per character passed, as
 * step() counts them, with the budget checked at the same points; the
 * loop itself counts nothing (a long run of a body was a tenth of a
 * webhook's time when each character stored its step). */
static const char *span(matcher *m, const char *s, const charset *cs, int in) {
    /* Looking for a set with no ASCII character in it ([\128-\255], the
     * webhook's UTF-8 check): ASCII text is passed 8 bytes at a time. */
    int past_ascii = in && (cs->bits[0] | cs->bits[1] | cs->bits[2] | cs->bits[3]) == 0;
    for (;;) {
        if (m->steps >= m->next_check)
            over_budget(m);
        size_t room = (size_t)(m->src_end - s);
        uint64_t left = m->next_check - m->steps;
        const char *e = s + (room < left ? room : (size_t)left), *q = s;
        if (past_ascii) {
            uint64_t w;
            while (e - q >= 8 && (memcpy(&w, q, 8), (w & 0x8080808080808080ull) == 0))
                q += 8;
        }
        while (q < e && charset_has(cs, (unsigned char)*q) != in)
            q++;
        m->steps += (uint64_t)(q - s);
        if (q < e || q == m->src_end)
            return q;
        s = q;
    }
}

/* ---- The matcher ---- */

static const char *match(matcher *m, const char *s, const char *p);

/* Greedy: the longest run of the item first, then shorter ones. */
static const char *match_greedy(matcher *m, const char *s, const char *p, const char *ep) {
    charset cs;
    item_charset(&cs, p, ep);
    ptrdiff_t n = span(m, s, &cs, 0) - s;
    for (; n >= 0; n--) {
        const char *r = match(m, s + n, ep + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* Lazy: the rest of the pattern first, then one more of the item. */
static const char *match_lazy(matcher *m, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *r = match(m, s, ep + 1);
        if (r)
            return r;
        if (!item_matches(m, s, p, ep))
            return NULL;
        step(m);
        s++;
    }
}

static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t what) {
    if (m->level >= MAX_CAPTURES)
        fail(m, "too many captures");
    m->capture[m->level].init = s;
    m->capture[m->level].len = what;
    m->level++;
    const char *r = match(m, s, p);
    if (r == NULL)
        m->level--;
    return r;
}

static const char *close_capture(matcher *m, const char *s, const char *p) {
    int l = m->level - 1;
    while (l >= 0 && m->capture[l].len != CAP_UNFINISHED)
        l--;
    if (l < 0)
        fail(m, "invalid pattern capture");
    m->capture[l].len = s - m->capture[l].init;
    const char *r = match(m, s, p);
    if (r == NULL)
        m->capture[l].len = CAP_UNFINISHED;
    return r;
}

/* %bxy: a balanced run from x to its matching y. */
static const char *match_balanced(matcher *m, const char *s, const char *p) {
    if (p + 1 >= m->pat_end)
        fail(m, "unbalanced pattern");
    if (s >= m->src_end || *s != p[0])
        return NULL;
    int open = 1;
    while (++s < m->src_end) {
        step(m);
        if (*s == p[1]) {
            if (--open == 0)
                return s + 1;
        } else if (*s == p[0]) {
            open++;
        }
    }
    return NULL;
}

/* %1..%9: the same text as an earlier, closed capture. */
static const char *match_backref(matcher *m, const char *s, int digit) {
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->capture[l].len == CAP_UNFINISHED)
        fail(m, "invalid capture index");
    ptrdiff_t len = m->capture[l].len;
    if (len < 0) /* a position capture matches no text */
        return NULL;
    if (m->src_end - s >= len && memcmp(m->capture[l].init, s, (size_t)len) == 0)
        return s + len;
    return NULL;
}

/* Matches the pattern from p against the subject from s; returns the end of
 * the match or NULL. Recursion is bounded by MAX_DEPTH. */
static const char *match(matcher *m, const char *s, const char *p) {
    if (++m->depth > MAX_DEPTH)
        fail(m, "pattern too complex");
    const char *r = NULL;
    for (;;) {
        step(m);
        if (p >= m->pat_end) {
            r = s;
            break;
        }
        if (*p == '(') {
            if (p + 1 < m->pat_end && p[1] == ')')
                r = open_capture(m, s, p + 2, CAP_POSITION);
            else
                r = open_capture(m, s, p + 1, CAP_UNFINISHED);
            break;
        }
        if (*p == ')') {
            r = close_capture(m, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == m->pat_end) {
            r = s == m->src_end ? s : NULL;
            break;
        }
        if (*p == ESC && p + 1 < m->pat_end && p[1] == 'b') {
            s = match_balanced(m, s, p + 2);
            if (s == NULL)
                break;
            p += 4;
            continue;
        }
        if (*p == ESC && p + 1 < m->pat_end && p[1] == 'f') {
            p += 2;
            if (p >= m->pat_end || *p != '[')
                fail(m, "missing '[' after '%%f' in pattern");
            const char *ep = item_end(m, p);
            int before = s == m->src ? 0 : (unsigned char)s[-1];
            int here = s < m->src_end ? (unsigned char)*s : 0;
            if (in_set(before, p, ep - 1) || !in_set(here, p, ep - 1))
                break;
            p = ep;
            continue;
        }
        if (*p == ESC && p + 1 < m->pat_end && isdigit((unsigned char)p[1])) {
            s = match_backref(m, s, (unsigned char)p[1]);
            if (s == NULL)
                break;
            p += 2;
            continue;
        }
        /* A single-character item, perhaps with a quantifier. */
        const char *ep = item_end(m, p);
        char q = ep < m->pat_end ? *ep : '\0';
        if (q == '?') {
            if (item_matches(m, s, p, ep) && (r = match(m, s + 1, ep + 1)) != NULL)
                break;
            p = ep + 1;
            continue;
        }
        if (q == '*') {
            r = match_greedy(m, s, p, ep);
            break;
        }
        if (q == '+') {
            r = item_matches(m, s, p, ep) ? match_greedy(m, s + 1, p, ep) : NULL;
            break;
        }
        if (q == '-') {
            r = match_lazy(m, s, p, ep);
            break;
        }
        if (!item_matches(m, s, p, ep))
            break;
        s++;
        p = ep;
    }
    m->depth--;
    return r;
}

/* ---- Lua functions ---- */

static void push_capture(matcher *m, int i, const char *s, const char *e, int lazy) {
    if (i >= m->level) {
        if (i != 0)
            fail(m, "invalid capture index");
        lua_pushlstring(m->L, s, (size_t)(e - s)); /* no captures: the whole match */
        return;
    }
    ptrdiff_t len = m->capture[i].len;
    if (len == CAP_UNFINISHED && lazy)
        lua_pushboolean(m->L, 0); /* gsub raises if its replacement uses it */
    else if (len == CAP_UNFINISHED)
        fail(m, "unfinished capture");
    else if (len == CAP_POSITION)
        lua_pushinteger(m->L, m->capture[i].init - m->src + 1);
    else
        lua_pushlstring(m->L, m->capture[i].init, (size_t)len);
}

/* Pushes the captures (or the whole match when whole is set and there are
 * none); returns how many. A capture left unfinished raises, or is pushed
 * as false when lazy is set. */
static int push_captures(matcher *m, const char *s, const char *e, int whole, int lazy) {
    int n = (m->level == 0 && whole) ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e, lazy);
    return n;
}

static void matcher_init(matcher *m, lua_State *L, const char *s, size_t ls, const char *p,
                         const char *pe, int where, jmp_buf *deadline) {
    m->L = L;
    m->deadline = deadline;
    m->where = where;
    m->src = s;
    m->src_end = s + ls;
    /* As in Lua 5.1 and LuaJIT, a '\0' ends the pattern. */
    const char *nul = memchr(p, '\0', (size_t)(pe - p));
    m->pat_end = nul ? nul : pe;
    m->level = 0;
    m->depth = 0;
    m->first_of = NULL;
    m->steps = 0;
    m->next_check = CHECK_EVERY < max_steps ? CHECK_EVERY : max_steps;
    /* A loop of many small calls stops at the deadline too, and gives
     * others their turn when its slice is over. */
    if (rill_watchdog_due())
        longjmp(*deadline, 1);
    rill_watchdog_check_soon();
}

/* When the pattern starts with a single-character item that must match at
 * least once (no *, ? or - after it), the end of that item, else NULL. */
static const char *first_item_end(matcher *m, const char *p) {
    if (p >= m->pat_end || *p == '(' || *p == ')' || (*p == '$' && p + 1 == m->pat_end))
        return NULL;
    if (*p == ESC && p + 1 < m->pat_end &&
        (p[1] == 'b' || p[1] == 'f' || isdigit((unsigned char)p[1])))
        return NULL;
    const char *ep = item_end(m, p);
    if (ep < m->pat_end && (*ep == '*' || *ep == '?' || *ep == '-'))
        return NULL;
    return ep;
}

/* Searches for p in s from offset init (0-based, at most ls); anchored
 * patterns try init only. Returns the start of the match (its end in *e). */
static const char *search(matcher *m, size_t init, const char *p, int anchored, const char **e) {
    const char *s = m->src + init;
    if (m->first_of != p) {
        m->first_of = p;
        m->first_end = first_item_end(m, p);
        if (m->first_end)
            item_charset(&m->first_set, p, m->first_end);
    }
    const char *first = anchored ? NULL : m->first_end;
    const charset *first_set = &m->first_set;
    /* A first item without a quantifier matched where span stopped: the
     * match goes on from the next item (with '+', match() takes it all). */
    const char *rest = first && (first >= m->pat_end || *first != '+') ? first : NULL;
    do {
        if (first) { /* skip, cheaply, where the first item cannot match */
            s = span(m, s, first_set, 1);
            if (s >= m->src_end)
                return NULL;
        }
        m->level = 0;
        m->depth = 0;
        step(m);
        if ((*e = rest ? match(m, s + 1, rest) : match(m, s, p)) != NULL)
            return s;
    } while (s++ < m->src_end && !anchored);
    return NULL;
}

/* A plain search, counted too (it is O(ls * lp) at worst). */
static const char *search_plain(matcher *m, size_t init, const char *p, size_t lp) {
    const char *s = m->src + init;
    if (lp == 0)
        return s;
    while ((size_t)(m->src_end - s) >= lp) {
        const char *hit = memchr(s, p[0], (size_t)(m->src_end - s) - lp + 1);
        if (hit == NULL)
            return NULL;
        m->steps += lp / 64;
        step(m);
        if (memcmp(hit, p, lp) == 0)
            return hit;
        s = hit + 1;
    }
    return NULL;
}

/* Lua 5.1's start position: negative counts from the end; clamped to the
 * string. Returns a 0-based offset in [0, ls]. */
static size_t start_at(lua_State *L, int arg, size_t ls) {
    lua_Integer i = luaL_optinteger(L, arg, 1);
    if (i < 0)
        i += (lua_Integer)ls + 1;
    i--;
    if (i < 0)
        i = 0;
    if ((size_t)i > ls)
        i = (lua_Integer)ls;
    return (size_t)i;
}

static int find_or_match(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(L, 3, ls);
    matcher m;
    jmp_buf deadline;
    if (setjmp(deadline))
        return rill_watchdog_stop_run(L);
    matcher_init(&m, L, s, ls, p, p + lp, 1, &deadline);
    if (find && (lua_toboolean(L, 4) || strpbrk(p, SPECIALS) == NULL)) {
        const char *hit = search_plain(&m, init, p, lp);
        if (hit == NULL) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, hit - s + 1);
        lua_pushinteger(L, (lua_Integer)(hit - s + lp));
        return 2;
    }
    int anchored = lp > 0 && *p == '^';
    const char *e, *start = search(&m, init, p + anchored, anchored, &e);
    if (start == NULL) {
        lua_pushnil(L);
        return 1;
    }
    if (!find)
        return push_captures(&m, start, e, 1, 0);
    lua_pushinteger(L, start - s + 1);
    lua_pushinteger(L, e - s);
    return push_captures(&m, NULL, NULL, 0, 0) + 2;
}

/* find(s, pattern[, init[, plain]]): string.find. */
static int l_find(lua_State *L) {
    return find_or_match(L, 1);
}

/* match(s, pattern[, init]): string.match. */
static int l_match(lua_State *L) {
    return find_or_match(L, 0);
}

/* exec(s, pattern, init) -> start, end, captures... or nil: one search
 * from init (1-based, 1..#s+1; a leading '^' anchors it there), for gsub.
 * end is start - 1 for an empty match; with no captures, none follow; a
 * capture left unfinished is false (an error only if the replacement uses it). */
static int l_exec(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    lua_Integer init = luaL_checkinteger(L, 3) - 1;
    if (init < 0 || (size_t)init > ls) {
        lua_pushnil(L);
        return 1;
    }
    matcher m;
    jmp_buf deadline;
    if (setjmp(deadline))
        return rill_watchdog_stop_run(L);
    matcher_init(&m, L, s, ls, p, p + lp, 2, &deadline);
    int anchored = lp > 0 && *p == '^';
    const char *e, *start = search(&m, (size_t)init, p + anchored, anchored, &e);
    if (start == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, start - s + 1);
    lua_pushinteger(L, e - s);
    return push_captures(&m, NULL, NULL, 0, 1) + 2;
}

/* Appends the replacement template repl for the match s..e: '%0' is the
 * match, '%1'..'%9' a capture, '%' before anything else that character. */
static size_t add_template(matcher *m, luaL_Buffer *b, const char *repl, size_t lr, const char *s,
                           const char *e) {
    size_t added = 0;
    for (size_t i = 0; i < lr; i++) {
        const char *piece = repl + i;
        size_t len = 1;
        char num[32];
        if (repl[i] == ESC) {
            i++;
            /* A trailing '%' adds the '\0' that ends the template in C Lua. */
            int c = i < lr ? (unsigned char)repl[i] : 0;
            piece = i < lr ? repl + i : "";
            if (isdigit(c)) {
                int l = c - '1';
                if (c == '0' || (l == 0 && m->level == 0)) {
                    piece = s;
                    len = (size_t)(e - s);
                } else if (l >= m->level) {
                    fail(m, "invalid capture index");
                } else if (m->capture[l].len == CAP_UNFINISHED) {
                    fail(m, "unfinished capture");
                } else if (m->capture[l].len == CAP_POSITION) {
                    len = (size_t)snprintf(num, sizeof num, "%d",
                                           (int)(m->capture[l].init - m->src + 1));
                    piece = num;
                } else {
                    piece = m->capture[l].init;
                    len = (size_t)m->capture[l].len;
                }
            }
        }
        luaL_addlstring(b, piece, len);
        added += len;
    }
    return added;
}

/* gsub_string(s, pattern, repl, max_n[, init, slice]): string.gsub with a
 * replacement string (no call into Lua, so all in C); gsub with a function
 * or a table is a Lua loop over exec (bounded.lua). Each search has its
 * step budget; the result is refused past max_string. From init (1-based, default 1), the result
 * covers s[init..]. With slice, it stops after the match that takes it past
 * slice bytes of the subject, or of the result (a replacement 100 times its
 * match made 6 MB of 64 KB), and returns (the result so far, matches, the
 * offset to go on from): the caller calls again from there, so that a long
 * subject is replaced in pieces the watchdog can pause between. */
static size_t max_string = 8u << 20;

static int l_gsub_string(lua_State *L) {
    size_t ls, lp, lr;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *repl = luaL_checklstring(L, 3, &lr);
    lua_Number max_n = luaL_optnumber(L, 4, (lua_Number)ls + 2);
    lua_Integer init = luaL_optinteger(L, 5, 1);
    lua_Number slice = luaL_optnumber(L, 6, (lua_Number)ls + 2);
    if (!lua_isnoneornil(L, 6))
        rill_watchdog_check_now(); /* one piece of many: a turn for others if its slice is over */
    if (init < 1 || (size_t)init > ls + 1)
        return luaL_error(L, "gsub_string: init out of range");
    matcher m;
    jmp_buf deadline;
    if (setjmp(deadline))
        return rill_watchdog_stop_run(L);
    matcher_init(&m, L, s, ls, p, p + lp, 2, &deadline);
    int anchored = lp > 0 && *p == '^';
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *from = s + init - 1, *src = from, *end = s + ls, *e;
    size_t size = 0;
    lua_Number n = 0;
    int more = 0;
    while (n < max_n) {
        m.steps = 0;
        m.next_check = CHECK_EVERY < max_steps ? CHECK_EVERY : max_steps;
        const char *start = search(&m, (size_t)(src - s), p + anchored, anchored, &e);
        if (start == NULL)
            break;
        n++;
        luaL_addlstring(&b, src, (size_t)(start - src));
        size += (size_t)(start - src) + add_template(&m, &b, repl, lr, start, e);
        if (e > start) {
            src = e;
        } else { /* an empty match: keep the next character and go past it */
            if (start < end) {
                luaL_addchar(&b, *start);
                size++;
            }
            src = start + 1;
        }
        if (size > max_string && ++too_large)
            fail(&m, "gsub: a result of over %d bytes is over the limit max_string (%d bytes)",
                 (int)size, (int)max_string);
        if (src > end || anchored)
            break;
        if (((lua_Number)(src - from) > slice || (lua_Number)size > slice) && n < max_n) {
            more = 1; /* the caller goes on from src */
            break;
        }
    }
    if (n == 0 && from == s) {
        lua_pushvalue(L, 1);
        lua_pushinteger(L, 0);
        return 2;
    }
    if (src < end && !more) {
        if (size + (size_t)(end - src) > max_string && ++too_large)
            fail(&m, "gsub: a result of %d bytes is over the limit max_string (%d bytes)",
                 (int)(size + (size_t)(end - src)), (int)max_string);
        luaL_addlstring(&b, src, (size_t)(end - src));
    }
    luaL_pushresult(&b);
    lua_pushinteger(L, (lua_Integer)n);
    if (!more)
        return 2;
    lua_pushinteger(L, (lua_Integer)(src - s) + 1);
    return 3;
}

/* The iterator gmatch returns; upvalues: subject, pattern, next offset. */
static int gmatch_next(lua_State *L) {
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(1), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(2), &lp);
    lua_Integer at = lua_tointeger(L, lua_upvalueindex(3));
    if (at < 0 || (size_t)at > ls)
        return 0;
    matcher m;
    jmp_buf deadline;
    if (setjmp(deadline))
        return rill_watchdog_stop_run(L);
    matcher_init(&m, L, s, ls, p, p + lp, 1, &deadline);
    /* As in Lua 5.1, gmatch takes a leading '^' literally. */
    const char *e, *start = search(&m, (size_t)at, p, 0, &e);
    if (start == NULL) {
        lua_pushinteger(L, (lua_Integer)ls + 1);
        lua_replace(L, lua_upvalueindex(3));
        return 0;
    }
    lua_Integer next = e - s;
    if (e == start)
        next++; /* an empty match: go on one character later */
    lua_pushinteger(L, next);
    lua_replace(L, lua_upvalueindex(3));
    return push_captures(&m, start, e, 1, 0);
}

/* gmatch(s, pattern): string.gmatch. */
static int l_gmatch(lua_State *L) {
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* gave_up() -> how many calls gave up at pattern_max_steps since start,
 * and how many gsub results were refused over max_string. */
static int l_gave_up(lua_State *L) {
    lua_pushnumber(L, gave_up);
    lua_pushnumber(L, too_large);
    return 2;
}

/* set_max_steps(n): the step cap of one call (setting pattern_max_steps). */
static int l_set_max_steps(lua_State *L) {
    lua_Number n = luaL_checknumber(L, 1);
    luaL_argcheck(L, n >= 1, 1, "a number of steps, 1 or more");
    max_steps = (uint64_t)n;
    return 0;
}

/* set_max_string(n): the largest result of gsub_string (setting max_string). */
static int l_set_max_string(lua_State *L) {
    lua_Number n = luaL_checknumber(L, 1);
    luaL_argcheck(L, n >= 1, 1, "a number of bytes, 1 or more");
    max_string = (size_t)n;
    return 0;
}

int rill_pattern_open(lua_State *L) {
    if (class_of['a'] == 0)
        classes_init();
    static const luaL_Reg funcs[] = {{"find", l_find},
                                     {"match", l_match},
                                     {"gmatch", l_gmatch},
                                     {"exec", l_exec},
                                     {"gsub_string", l_gsub_string},
                                     {"set_max_string", l_set_max_string},
                                     {"set_max_steps", l_set_max_steps},
                                     {"gave_up", l_gave_up},
                                     {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    return 1;
}
