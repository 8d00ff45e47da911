/* batch.c — gathering a batch: rows p0 .. p0+rows-1 of the permutation
 * (identity when perm is NULL) of every model input, target and sample-weight
 * array. Consecutive rows (no shuffle, or a permutation that happens to run
 * in order) are pointed at in place; otherwise they are copied into the net's
 * workspace (x in parallel over rows when large: a copy, the same bits for
 * any thread count). Labels become int64 (int32 ones are converted). */
#include "step_internal.h"

#include <string.h>

static void gather_rows(float *dst, const float *src, const int64_t *perm, int64_t p0, int64_t rows, int64_t d,
                        int nt) {
    int t = fg_threads_for(rows * d, (int64_t)1 << 16, nt);
    if (t <= 1) {
        for (int64_t i = 0; i < rows; i++) memcpy(dst + i * d, src + perm[p0 + i] * d, (size_t)d * sizeof(float));
        return;
    }
#if FG_HAVE_OPENMP
#pragma omp parallel for num_threads(t) schedule(static)
#endif
    for (int64_t i = 0; i < rows; i++) memcpy(dst + i * d, src + perm[p0 + i] * d, (size_t)d * sizeof(float));
}

int fg_gather(fg_net *n, const int64_t *perm, int64_t p0, int64_t rows, const float *const *x, int64_t x_rows,
              const void *const *y, const int *y_kind, const float *const *sw, int nt) {
    int64_t first = perm ? perm[p0] : p0;
    int consecutive = 1;
    for (int64_t i = 0; i < rows; i++) {
        int64_t idx = perm ? perm[p0 + i] : p0 + i;
        if (idx < 0 || idx >= x_rows) return FG_ERR_ARG;
        if (idx != first + i) consecutive = 0;
    }
    for (int j = 0; j < n->n_inputs; j++) {
        const int64_t d = n->slot_size[j];
        if (consecutive) {
            n->bx[j] = x[j] + first * d;
        } else {
            gather_rows(n->xg[j], x[j], perm, p0, rows, d, nt);
            n->bx[j] = n->xg[j];
        }
    }
    for (int k = 0; k < n->n_outputs; k++) {
        fg_output *o = &n->outs[k];
        const float *w = sw ? sw[k] : NULL;
        if (!w) {
            n->bsw[k] = NULL;
        } else if (consecutive) {
            n->bsw[k] = w + first;
        } else {
            for (int64_t i = 0; i < rows; i++) o->sw[i] = w[perm[p0 + i]];
            n->bsw[k] = o->sw;
        }
        n->blbl[k] = NULL;
        n->btgt[k] = NULL;
        if (o->loss.kind == FG_LOSS_NONE) continue;
        if (o->loss.kind == FG_LOSS_SPARSE_SOFTMAX_XENT) {
            if (y_kind[k] == FG_TARGET_INT64) {
                const int64_t *yy = (const int64_t *)y[k];
                if (consecutive) {
                    n->blbl[k] = yy + first;
                    continue;
                }
                for (int64_t i = 0; i < rows; i++) o->lbl[i] = yy[perm[p0 + i]];
            } else { /* int32 (checked by the caller) */
                const int32_t *yy = (const int32_t *)y[k];
                for (int64_t i = 0; i < rows; i++) o->lbl[i] = yy[perm ? perm[p0 + i] : p0 + i];
            }
            n->blbl[k] = o->lbl;
        } else {
            const float *yy = (const float *)y[k];
            const int64_t c = o->size;
            if (consecutive) {
                n->btgt[k] = yy + first * c;
            } else {
                for (int64_t i = 0; i < rows; i++)
                    memcpy(o->tgt + i * c, yy + perm[p0 + i] * c, (size_t)c * sizeof(float));
                n->btgt[k] = o->tgt;
            }
        }
    }
    return FG_OK;
}
