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

ss_status ss_backend_open(const char *spec, const ss_backend_opts *opts, ss_backend **out) {
    *out = NULL;
    if (!spec || !*spec || !strcmp(spec, "auto")) {
#ifdef SS_HAVE_CUDA
        if (ss_cuda_device_count() > 0) return ss_backend_cuda_open(0, opts, out);
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
