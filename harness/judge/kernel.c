/* Two passes in C, each giving numpy's figures bit for bit; built on first use with the system's C
 * compiler (kernel.py), and without one numpy does the work. IEEE arithmetic only: no -ffast-math, no
 * contraction into FMAs. First, the comparator's fast path (metrics.py `_fast_chunk`) in one pass over a
 * chunk instead of about fifteen numpy passes; then the noise model's index-order partial sums
 * (`ordered_sums`, at the end).
 *
 * For x, y, allowed of n elements (x, y in the comparison dtype T, allowed in A, cast to T as numpy's
 * astype does) it writes out[0..4] = n_over, max_abs, max_rel, max_ulp, worst_ratio and *worst, and
 * returns 0; it returns 1 where `_fast_chunk` returns None (the chunk goes to the exact float64 path):
 * a NaN or Inf difference, a NaN, negative or infinite ratio (over a zero bound, or beyond T's range,
 * which float64 holds), or no relative difference below 1 (opposite signs, a zero against a number, or
 * every element zero on both sides).
 *
 * The loop has no branch, so the compiler vectorises it: each maximum is taken over the values' bit
 * patterns as integers, which order non-negative floats as the floats themselves (every value whose
 * maximum is taken here is non-negative, or the chunk is sent to the exact path anyway). The first
 * element holding the largest ratio is found by a second look at the first block of BLOCK elements
 * that holds it, still in cache. */

#include <stdint.h>
#include <string.h>

/* On x86-64 each kernel is built twice, for AVX2 and for any x86-64, and the loader picks the one the
 * machine runs (GCC's and Clang's target_clones): the same IEEE operations either way, wider. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define WIDE __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef WIDE
#define WIDE
#endif

#define BLOCK 2048 /* elements whose ratios are looked at again to find the first largest: they stay in L1 */

#define KERNEL(NAME, T, A, I, U, TOP, FABS)                                                         \
    WIDE int NAME(const T *x, const T *y, const A *allowed, long n, double *out, long *worst) {    \
        I abs_max = 0, ratio_max = 0, rel_max = -1, ulp_max = 0;                                \
        long over = 0, best = 0;                                                                 \
        int bad = 0;                                                                             \
        for (long lo = 0; lo < n; lo += BLOCK) {                                                 \
            long hi = lo + BLOCK < n ? lo + BLOCK : n;                                           \
            I block_ratio = 0;                                                                   \
            for (long i = lo; i < hi; i++) {                                                     \
                T d = FABS(x[i] - y[i]);                 /* |A-B|, as numpy's abs: never -0 */  \
                T t = d / (T)allowed[i];                 /* the ratio, over the bound rounded to T */ \
                bad |= !(d <= TOP) | !(t >= 0) | !(t <= TOP); /* NaN/Inf |A-B|; NaN, negative or Inf ratio */ \
                over += t > 1;                                                                   \
                T ax = FABS(x[i]), ay = FABS(y[i]);                                              \
                T r = d / (ax > ay ? ax : ay);           /* relative; NaN for 0 against 0 */    \
                I bd, bt, br, bx, by;                                                            \
                memcpy(&bd, &d, sizeof d);                                                       \
                memcpy(&bt, &t, sizeof t);                                                       \
                memcpy(&br, &r, sizeof r);                                                       \
                memcpy(&bx, &x[i], sizeof bx);                                                   \
                memcpy(&by, &y[i], sizeof by);                                                   \
                br = r == r ? br : -1;                   /* numpy's fmax skips the NaN */       \
                I u = (I)((U)bx - (U)by);                /* wraps, as numpy's integer subtract */ \
                u = u < 0 ? (I)(0 - (U)u) : u;           /* -0 against +0 stays negative: ignored */ \
                abs_max = bd > abs_max ? bd : abs_max;                                           \
                block_ratio = bt > block_ratio ? bt : block_ratio;                               \
                rel_max = br > rel_max ? br : rel_max;                                           \
                ulp_max = u > ulp_max ? u : ulp_max;                                             \
            }                                                                                    \
            if (block_ratio > ratio_max) { ratio_max = block_ratio; best = lo; } /* the first block */ \
        }                                                                                        \
        T abs_top, ratio, rel;                                                                   \
        memcpy(&abs_top, &abs_max, sizeof abs_top);                                              \
        memcpy(&ratio, &ratio_max, sizeof ratio);                                                \
        memcpy(&rel, &rel_max, sizeof rel);                                                      \
        if (bad || rel_max < 0 || !(rel < 1)) return 1;                                          \
        long at = best; /* the first element of that block with the largest ratio: numpy's argmax */ \
        while (at < n - 1 && !(FABS(x[at] - y[at]) / (T)allowed[at] == ratio)) at++;            \
        out[0] = ratio > 1 ? (double)over : 0.0;                                                 \
        out[1] = (double)abs_top;                                                                \
        out[2] = (double)rel;                                                                    \
        out[3] = (double)ulp_max;                                                                \
        out[4] = (double)ratio;                                                                  \
        *worst = at;                                                                             \
        return 0;                                                                                \
    }

KERNEL(chunk_f32_f64, float, double, int32_t, uint32_t, 3.40282346638528859812e+38F, __builtin_fabsf)
KERNEL(chunk_f32_f32, float, float, int32_t, uint32_t, 3.40282346638528859812e+38F, __builtin_fabsf)
KERNEL(chunk_f64_f64, double, double, int64_t, uint64_t, 1.79769313486231570815e+308, __builtin_fabs)

/* The noise model's estimate of sum_k s_k^2 for sums taken in index order (noise/sums.py
 * `ordered_partial_sums`, whose numpy pass this is, bit for bit): for each of p x q sums, given each
 * block's partial sum blocks[j] (nb, p, q) and its count of nonzero terms counts[j] ((nb, p, q), or
 * (nb, p) where count_q is 1), the larger of the forward and backward sums over blocks of
 * count * max(|running total on either side of the block|)^2. total and out are (p, q) with rows
 * row_total and row_out apart. Each row's q running totals stay in cache while all nb blocks pass. */

#define QMAX 512 /* the widest strip of columns the caller sends */

static inline double larger(double a, double b) { return (a > b || a != a) ? a : b; } /* numpy's maximum */

#define ORDERED_STEP(COUNT)                                                                         \
    for (long e = 0; e < q; e++) {                                                                \
        double cnt = (double)(COUNT), before = run[e], after = before + s[e];                     \
        double top = larger(__builtin_fabs(before), __builtin_fabs(after));                       \
        fw[e] += cnt * top * top;                                                                 \
        top = larger(__builtin_fabs(tot[e] - before), __builtin_fabs(tot[e] - after));            \
        bw[e] += cnt * top * top;                                                                 \
        run[e] = after;                                                                           \
    }

WIDE void ordered_sums(long nb, long p, long q, const double *blocks, const float *counts, long count_q,
                       const double *total, long row_total, double *out, long row_out) {
    double run[QMAX], fw[QMAX], bw[QMAX];
    for (long i = 0; i < p; i++) {
        const double *tot = total + i * row_total;
        for (long e = 0; e < q; e++) run[e] = fw[e] = bw[e] = 0.0;
        for (long j = 0; j < nb; j++) {
            const double *s = blocks + (j * p + i) * q;
            const float *c = counts + (j * p + i) * count_q;
            if (count_q == 1) { ORDERED_STEP(c[0]) } /* one count for the whole row */
            else { ORDERED_STEP(c[e]) }
        }
        for (long e = 0; e < q; e++) out[i * row_out + e] = larger(fw[e], bw[e]);
    }
}
