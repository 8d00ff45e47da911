/* fg_blas_share.h — run NumPy's OpenBLAS jobs on fastgrad's OpenMP team
 * (blas_share.c explains why and the contract). */
#ifndef FG_BLAS_SHARE_H
#define FG_BLAS_SHARE_H

/* enable = 1: find the loaded OpenBLAS libraries (pthreads builds with the
 * threads-callback API, OpenBLAS >= 0.3.27) and route their parallel jobs to
 * fastgrad's team; call again to pick up libraries loaded since. enable = 0:
 * give them their own threads back. Returns the number of libraries routed
 * (0 when disabled, none found, or unsupported on this platform/build). */
int fg_blas_share_set(int enable);
int fg_blas_share_enabled(void);
/* libraries currently routed, and the path of the i-th one known (NULL past the end) */
int fg_blas_share_count(void);
const char *fg_blas_share_path(int i);
/* 1 where this build can do it (Linux with glibc, OpenMP) */
int fg_blas_share_supported(void);
/* tests: run every call on the pthread fallback instead of the OpenMP team */
void fg_blas_share_force_pthreads(int on);

#endif
