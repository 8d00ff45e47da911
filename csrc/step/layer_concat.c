/* layer_concat.c — Concatenate along a per-sample axis.
 *
 * With C-contiguous rows, joining along axis a is a copy of blocks: for every
 * position o of the leading axes (rows x dims before a), input j contributes
 * one contiguous block of inner_j = prod(its dims from a on) floats, placed
 * after the blocks of inputs 0 .. j-1. The backward copies the blocks of dy
 * back out. Pure copies: the same bits for any thread count. */
#include "step_internal.h"

#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

#define CONCAT_GRAIN ((int64_t)1 << 15)

static int concat_check(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params) {
    (void)n_params;
    const int r = d->out.rank, a = d->axis;
    if (n_in < 1 || a < 0 || a >= r) return FG_ERR_ARG;
    int64_t sum = 0;
    for (int j = 0; j < n_in; j++) {
        if (in[j]->rank != r) return FG_ERR_ARG;
        for (int k = 0; k < r; k++)
            if (k != a && in[j]->dim[k] != d->out.dim[k]) return FG_ERR_ARG;
        sum += in[j]->dim[a];
    }
    return sum == d->out.dim[a] ? FG_OK : FG_ERR_ARG;
}

/* blocks per row and the inner block of input j */
static int64_t outer_of(const fg_node_io *io) {
    int64_t o = 1;
    for (int k = 0; k < io->d->axis; k++) o *= io->d->out.dim[k];
    return o;
}
static int64_t inner_of(const fg_node_io *io, int j) {
    int64_t o = outer_of(io);
    return io->in_size[j] / o;
}

/* dir 0: y blocks <- x blocks; dir 1: dx blocks <- dy blocks; over outer positions [lo, hi) */
static void copy_blocks(const fg_node_io *io, float *y, const float *const *x, float *const *dx, const float *dy,
                        int dir, int64_t lo, int64_t hi) {
    const int64_t total = io->out_size / outer_of(io);
    int64_t off = 0;
    for (int j = 0; j < io->n_in; j++) {
        const int64_t w = inner_of(io, j);
        if (dir == 0) {
            for (int64_t o = lo; o < hi; o++) memcpy(y + o * total + off, x[j] + o * w, (size_t)w * sizeof(float));
        } else if (dx[j]) {
            for (int64_t o = lo; o < hi; o++) memcpy(dx[j] + o * w, dy + o * total + off, (size_t)w * sizeof(float));
        }
        off += w;
    }
}

static int concat_run(const fg_node_io *io, float *y, const float *const *x, float *const *dx, const float *dy,
                      int dir) {
    const int64_t outer = io->rows * outer_of(io);
    int nt = fg_threads_for(io->rows * io->out_size, CONCAT_GRAIN, io->nt);
    if (nt > outer) nt = (int)outer;
    if (nt <= 1) {
        copy_blocks(io, y, x, dx, dy, dir, 0, outer);
        return FG_OK;
    }
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        copy_blocks(io, y, x, dx, dy, dir, outer * t / T, outer * (t + 1) / T);
    }
#endif
    return FG_OK;
}

static int concat_forward(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream) {
    (void)training, (void)stream;
    return concat_run(io, y, x, NULL, NULL, 0);
}

static int concat_backward(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                           float *const *gp) {
    (void)x, (void)y, (void)gp;
    return concat_run(io, NULL, NULL, dx, dy, 1);
}

const fg_layer_ops fg_layer_concat_ops = {
    .name = "concat",
    .check = concat_check,
    .forward = concat_forward,
    .backward = concat_backward,
};
