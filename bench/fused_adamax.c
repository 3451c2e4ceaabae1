// The memory roofline in practice: the Adamax step of `bench optimizer` (global-norm clip,
// Adamax moments, decoupled decay, learning-rate scale) hand-written as one OpenMP pass per
// step over 100M f32 parameters in one array, with nothing an XLA backend could do better:
// the norm reads the gradient once, the update reads p, g, m, v once and writes p, m, v once
// (32 bytes per parameter in all). Prints one JSON line, like the other bench scripts.
//
//   gcc -O3 -march=native -ffast-math -fopenmp -o /tmp/fused_adamax bench/fused_adamax.c -lm
//   OMP_NUM_THREADS=$(nproc) /tmp/fused_adamax [params] [steps]
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int n) {
    qsort(values, n, sizeof(double), compare);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
    if (!p || !g || !m || !v) return 1;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        p[i] = 1.0f;
        g[i] = 1e-3f * (float)(i % 7);
        m[i] = 0.0f;
        v[i] = 0.0f;
    }

    // Copy bandwidth as `sirocco bench` measures it: every thread copies its share of 512 MiB.
    size_t bytes = (size_t)512 << 20;
    char *src = malloc(bytes), *dst = malloc(bytes);
    if (!src || !dst) return 1;
    memset(src, 1, bytes);
    memset(dst, 0, bytes);
    double copies[5];
    for (int r = 0; r < 5; r++) {
        double start = now();
#pragma omp parallel
        {
            size_t share = bytes / omp_get_num_threads(), at = share * omp_get_thread_num();
            memcpy(dst + at, src + at, share);
        }
        copies[r] = 2.0 * bytes / (now() - start);
    }
    double copy = median(copies, 5);

    int warmup = 3;
    double *times = malloc(sizeof(double) * steps), *norms = malloc(sizeof(double) * steps);
    float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, lr = 1e-3f, wd = 0.1f;
    for (int step = 0; step < warmup + steps; step++) {
        double start = now();
        double total = 0.0;
#pragma omp parallel for reduction(+ : total)
        for (size_t i = 0; i < n; i++) total += g[i] * g[i];
        float scale = 1.0f / fmaxf(1.0f, sqrtf((float)total));
        double normed = now();
        float correction = 1.0f - powf(b1, (float)(step + 1));
#pragma omp parallel for
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] * scale;
            float mi = b1 * m[i] + (1.0f - b1) * gi;
            float vi = fmaxf(b2 * v[i], fabsf(gi) + eps);
            m[i] = mi;
            v[i] = vi;
            p[i] -= lr * (mi / correction / vi + wd * p[i]);
        }
        if (step >= warmup) {
            times[step - warmup] = now() - start;
            norms[step - warmup] = normed - start;
        }
    }
    double step_s = median(times, steps), norm_s = median(norms, steps);
    double achieved = 32.0 * n / step_s;
    printf("{\"params\": %zu, \"threads\": %d, \"median_step_s\": %.5f, \"median_norm_s\": %.5f, "
           "\"achieved_gb_s\": %.2f, \"copy_bandwidth_gb_s\": %.2f, \"roofline_fraction\": %.3f}\n",
           n, omp_get_max_threads(), step_s, norm_s, achieved / 1e9, copy / 1e9, achieved / copy);
    return 0;
}
