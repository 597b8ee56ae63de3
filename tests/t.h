/*
 * t.h: the C tests' harness. A test is a function; T_RUN runs it and counts
 * it passed when no check in it failed. T_END prints the closing line
 * "N passed, N failed" and returns the exit status for main().
 */
#ifndef RILL_T_H
#define RILL_T_H

#include <stdio.h>
#include <string.h>

static int t_failed_checks, t_passed, t_failed;

#define T_CHECK(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define T_EQ_INT(a, b)                                                                             \
    do {                                                                                           \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);                                    \
        if (t_a_ != t_b_) {                                                                        \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, t_a_,    \
                    t_b_);                                                                         \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define T_EQ_STR(a, b)                                                                             \
    do {                                                                                           \
        const char *t_a_ = (a), *t_b_ = (b);                                                       \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0) {                                           \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,      \
                    t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                               \
            t_failed_checks++;                                                                     \
        }                                                                                          \
    } while (0)

#define T_RUN(fn)                                                                                  \
    do {                                                                                           \
        int t_before_ = t_failed_checks;                                                           \
        fn();                                                                                      \
        if (t_failed_checks == t_before_) {                                                        \
            t_passed++;                                                                            \
        } else {                                                                                   \
            t_failed++;                                                                            \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        }                                                                                          \
    } while (0)

#define T_END() (printf("%d passed, %d failed\n", t_passed, t_failed), t_failed ? 1 : 0)

#endif
