/* Choosing a backend by name. */
#include <stdlib.h>
#include <string.h>

#include "subscope/backend.h"

int ss_backend_has_cuda(void) {
#ifdef SS_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int ss_local_rank(void) {
    /* Open MPI, Slurm, MPICH/Intel MPI, in that order. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        char *end;
        long r = v ? strtol(v, &end, 10) : -1;
        if (v && *v && !*end && r >= 0 && r < 65536) return (int)r;
    }
    return 0;
}

int ss_device_for_rank(int local_rank, int n_devices) { return n_devices > 0 ? local_rank % n_devices : 0; }

ss_status ss_backend_open(const char *spec, const ss_backend_opts *opts, ss_backend **out) {
    *out = NULL;
    /* "cuda" and "auto" without a number: the GPU of this process's rank on
     * its node, so that ranks started together do not all share cuda:0. */
    if (!spec || !*spec || !strcmp(spec, "auto")) {
#ifdef SS_HAVE_CUDA
        const int n = ss_cuda_device_count();
        if (n > 0) return ss_backend_cuda_open(ss_device_for_rank(ss_local_rank(), n), opts, out);
#endif
        *out = (ss_backend *)ss_backend_cpu();
        return SS_OK;
    }
    if (!strcmp(spec, "cpu")) {
        *out = (ss_backend *)ss_backend_cpu();
        return SS_OK;
    }
    if (!strncmp(spec, "cuda", 4) && (spec[4] == 0 || spec[4] == ':')) {
        int dev = 0;
#ifdef SS_HAVE_CUDA
        if (!spec[4]) dev = ss_device_for_rank(ss_local_rank(), ss_cuda_device_count());
#endif
        if (spec[4] == ':') {
            char *end;
            long v = strtol(spec + 5, &end, 10);
            if (end == spec + 5 || *end || v < 0 || v > 1024)
                return ss_errorf(SS_ERR_ARG, "device '%s': expected cuda:N with N a device number", spec);
            dev = (int)v;
        }
#ifdef SS_HAVE_CUDA
        return ss_backend_cuda_open(dev, opts, out);
#else
        (void)dev;
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "device '%s': this build of subscope has no CUDA backend (nvcc and cuBLAS were not found "
                         "when it was built; `make` lists the features)", spec);
#endif
    }
    return ss_errorf(SS_ERR_ARG, "unknown device '%s' (use cpu, cuda, cuda:N or auto)", spec);
}

void ss_backend_close(ss_backend *be) {
    if (!be || be == ss_backend_cpu()) return;
#ifdef SS_HAVE_CUDA
    ss_backend_cuda_close(be);
#endif
}
