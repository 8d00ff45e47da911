/* blas_share.c — one thread pool for fastgrad and NumPy's OpenBLAS.
 *
 * Why: OpenBLAS (pthreads build, as NumPy and SciPy wheels ship it) keeps its
 * own worker threads, which spin for a while after every call; libgomp's
 * workers do the same after each of fastgrad's parallel regions. On a machine
 * with as many threads as cores, the two pools then spin on each other's cores,
 * and a program that alternates NumPy matmuls with fastgrad calls runs each
 * part 2-80x slower than alone (benchmarks/bench_coexistence.py).
 *
 * What: OpenBLAS >= 0.3.27 lets the caller run its parallel jobs
 * (openblas_set_threads_callback_function). fastgrad hands it a callback that
 * runs the jobs on fastgrad's own OpenMP team, so the process has one pool and
 * whichever library runs next finds the workers warm instead of fighting them.
 * OpenBLAS still chooses how many jobs a call has (its thread setting, which
 * threadpoolctl limits as before); the results are OpenBLAS's own, only the
 * threads that run the jobs change.
 *
 * The contract the callback keeps:
 * - all jobs of a call run at the same time, on distinct threads (OpenBLAS's
 *   level-3 jobs wait for each other's packed panels, so running them one
 *   after another would deadlock): an OpenMP team of exactly numjobs threads,
 *   or, where OpenMP cannot give that (nested in a parallel region, dynamic
 *   teams), one pthread per job;
 * - job t gets thread number t: OpenBLAS indexes its per-thread buffers by it,
 *   so two calls must not overlap — concurrent callers (NumPy releases the GIL)
 *   take turns on a mutex; a nested call from inside a job (OpenBLAS makes
 *   none) would run on pthreads rather than wait for itself;
 * - each job runs with the caller's floating-point control word (MXCSR), as
 *   OpenBLAS's own threads do when built with CONSISTENT_FPCSR;
 * - a forked child gets OpenBLAS's own threading back (libgomp's pool does
 *   not survive fork; OpenBLAS rebuilds its own after fork).
 *
 * Linux with glibc only (dl_iterate_phdr finds the loaded OpenBLAS copies);
 * elsewhere fg_blas_share_set reports that nothing was found. */
#define _GNU_SOURCE
#include "fg_common.h"
#include "fg_blas_share.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#if defined(__linux__) && defined(__GLIBC__)
#define FG_BLAS_SHARE_SUPPORTED 1
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__) /* the CPU, with or without FG_X86's AVX copies */
#define FG_BLAS_X86_CPU 1
#include <immintrin.h>
#endif
#else
#define FG_BLAS_SHARE_SUPPORTED 0
#endif

#if FG_BLAS_SHARE_SUPPORTED && FG_HAVE_OPENMP

typedef void (*fg_blas_dojob)(int thread_num, void *jobdata, int dojob_data);
typedef void (*fg_blas_threads_cb)(int sync, fg_blas_dojob dojob, int numjobs, size_t jobdata_elsize,
                                   void *jobdata, int dojob_data);
typedef void (*fg_blas_set_cb)(fg_blas_threads_cb cb);
typedef int (*fg_blas_get_parallel)(void);

#define FG_BLAS_MAX_LIBS 8
static struct {
    fg_blas_set_cb set;
    char path[512];
} g_libs[FG_BLAS_MAX_LIBS];
static int g_n_libs = 0;
static int g_enabled = 0;
static int g_atfork_registered = 0;
static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER;  /* one BLAS call at a time */
static pthread_mutex_t g_set_mu = PTHREAD_MUTEX_INITIALIZER;   /* fg_blas_share_set */
static __thread int g_in_call = 0;
static int g_force_pthreads = 0; /* tests: exercise the fallback path */

static unsigned fp_get(void) {
#if defined(FG_BLAS_X86_CPU)
    return _mm_getcsr();
#else
    return 0;
#endif
}
static void fp_set(unsigned v) {
#if defined(FG_BLAS_X86_CPU)
    _mm_setcsr(v);
#else
    (void)v;
#endif
}

typedef struct {
    fg_blas_dojob dojob;
    char *base;
    size_t elsize;
    int dd;
    unsigned fp;
    int t;
} job_arg;

/* Job t on the calling thread, with the caller's MXCSR, marked as inside a
 * call so that a nested BLAS call from the job never waits for the lock its
 * own call holds. */
static void run_job(const job_arg *a, int t) {
    unsigned saved = fp_get();
    int was_in = g_in_call;
    g_in_call = 1;
    fp_set(a->fp);
    a->dojob(t, a->base + (size_t)t * a->elsize, a->dd);
    fp_set(saved);
    g_in_call = was_in;
}

static void *pthread_job(void *p) {
    job_arg *a = p;
    run_job(a, a->t);
    return NULL;
}

/* One pthread per job 1..n-1, job 0 on the caller (the fallback when OpenMP
 * cannot give a full team). pthread_create failing with EAGAIN is retried; a
 * job whose thread still cannot start runs inline after the others started,
 * which is the best left to do when the process is out of threads. */
static void run_on_pthreads(const job_arg *proto, int numjobs) {
    enum { MAXJ = 256 };
    pthread_t th[MAXJ];
    job_arg args[MAXJ];
    int started[MAXJ] = {0};
    if (numjobs > MAXJ) numjobs = MAXJ; /* OpenBLAS never asks for more than its MAX_CPU_NUMBER */
    for (int t = 1; t < numjobs; t++) {
        args[t] = *proto;
        args[t].t = t;
        for (int attempt = 0; attempt < 100 && !started[t]; attempt++)
            started[t] = pthread_create(&th[t], NULL, pthread_job, &args[t]) == 0;
    }
    run_job(proto, 0);
    for (int t = 1; t < numjobs; t++)
        if (!started[t]) run_job(proto, t);
    for (int t = 1; t < numjobs; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

static void fg_blas_callback(int sync, fg_blas_dojob dojob, int numjobs, size_t elsize, void *jobdata,
                             int dojob_data) {
    (void)sync; /* OpenBLAS's pthreads server always waits (sync = 1) */
    job_arg a = {dojob, (char *)jobdata, elsize, dojob_data, fp_get(), 0};
    if (numjobs <= 1) {
        if (numjobs == 1) dojob(0, jobdata, dojob_data);
        return;
    }
    if (g_in_call) { /* re-entered from one of our own jobs: never wait for ourselves */
        run_on_pthreads(&a, numjobs);
        return;
    }
    pthread_mutex_lock(&g_call_mu);
    g_in_call = 1;
    int ran = 0;
    if (!g_force_pthreads && !omp_in_parallel() && numjobs <= omp_get_thread_limit()) {
#pragma omp parallel num_threads(numjobs)
        {
            /* all or nothing: a short team would leave jobs waiting forever */
            if (omp_get_num_threads() == numjobs) {
                int t = omp_get_thread_num();
                run_job(&a, t);
                if (t == 0) ran = 1;
            }
        }
    }
    if (!ran) run_on_pthreads(&a, numjobs);
    g_in_call = 0;
    pthread_mutex_unlock(&g_call_mu);
}

static void atfork_child(void) {
    /* libgomp's workers are gone in the child: give OpenBLAS its own back */
    for (int i = 0; i < g_n_libs; i++) g_libs[i].set(NULL);
    g_enabled = 0;
    pthread_mutex_init(&g_call_mu, NULL);
    pthread_mutex_init(&g_set_mu, NULL);
}

/* OpenBLAS exports its API under a prefix and suffix in the NumPy/SciPy wheels
 * (scipy_openblas_..._64_ style); try the spellings in use. */
static void *find_symbol(void *h, const char *base) {
    static const char *const prefixes[] = {"", "scipy_"};
    static const char *const suffixes[] = {"", "64_", "_64", "64"};
    char name[160];
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++)
        for (size_t s = 0; s < sizeof suffixes / sizeof *suffixes; s++) {
            snprintf(name, sizeof name, "%s%s%s", prefixes[p], base, suffixes[s]);
            void *f = dlsym(h, name);
            if (f) return f;
        }
    return NULL;
}

static int collect_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    const char *path = info->dlpi_name;
    if (!path || !*path || g_n_libs >= FG_BLAS_MAX_LIBS) return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!strstr(base, "openblas")) return 0;
    void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) return 0;
    fg_blas_set_cb set = (fg_blas_set_cb)find_symbol(h, "openblas_set_threads_callback_function");
    fg_blas_get_parallel par = (fg_blas_get_parallel)find_symbol(h, "openblas_get_parallel");
    /* only OpenBLAS's own pthreads server (get_parallel 1) competes with us; an
       OpenMP build already runs on an OpenMP runtime */
    if (set && par && par() == 1) {
        for (int i = 0; i < g_n_libs; i++)
            if (g_libs[i].set == set) set = NULL; /* the same library under two names */
        if (set) {
            g_libs[g_n_libs].set = set;
            snprintf(g_libs[g_n_libs].path, sizeof g_libs[g_n_libs].path, "%s", path);
            g_n_libs++;
        }
    }
    dlclose(h); /* drops the reference RTLD_NOLOAD took; the library stays loaded */
    return 0;
}

int fg_blas_share_set(int enable) {
    pthread_mutex_lock(&g_set_mu);
    if (enable) {
        dl_iterate_phdr(collect_object, NULL); /* picks up libraries loaded since the last call */
        if (!g_atfork_registered) {
            pthread_atfork(NULL, NULL, atfork_child);
            g_atfork_registered = 1;
        }
    }
    /* take the call lock so no BLAS call is between its jobs while we switch */
    pthread_mutex_lock(&g_call_mu);
    for (int i = 0; i < g_n_libs; i++) g_libs[i].set(enable ? fg_blas_callback : NULL);
    g_enabled = enable && g_n_libs > 0;
    pthread_mutex_unlock(&g_call_mu);
    int n = enable ? g_n_libs : 0;
    pthread_mutex_unlock(&g_set_mu);
    return n;
}

int fg_blas_share_enabled(void) { return g_enabled; }

int fg_blas_share_count(void) { return g_enabled ? g_n_libs : 0; }

const char *fg_blas_share_path(int i) { return (i >= 0 && i < g_n_libs) ? g_libs[i].path : NULL; }

int fg_blas_share_supported(void) { return 1; }

void fg_blas_share_force_pthreads(int on) { g_force_pthreads = on ? 1 : 0; }

#else /* not Linux/glibc, or no OpenMP */

int fg_blas_share_set(int enable) { (void)enable; return 0; }
int fg_blas_share_enabled(void) { return 0; }
int fg_blas_share_count(void) { return 0; }
const char *fg_blas_share_path(int i) { (void)i; return NULL; }
int fg_blas_share_supported(void) { return 0; }
void fg_blas_share_force_pthreads(int on) { (void)on; }

#endif
