/* Choosing a backend by name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_internal.h"
#include "subscope/backend.h"
#include "subscope/util.h"

#ifdef SS_HAVE_CUDA
/* The CUDA backend: linked into this program (the unit tests' emulated copy,
 * kernel_check, a library user who links it), or else loaded from the plugin
 * libsubscope-cuda.so beside bin/subscope when a GPU is asked for
 * (ss_plugin_symbol), so that runs on the CPU never load the CUDA libraries. */
#pragma weak ss_backend_cuda_open
#pragma weak ss_backend_cuda_close
#pragma weak ss_cuda_device_count
typedef struct cuda_api {
    ss_status (*open)(int device, const ss_backend_opts *opts, ss_backend **out);
    void (*close)(ss_backend *be);
    int (*count)(void);
} cuda_api;

static const cuda_api *cuda(void) {
    static cuda_api api;
    if (api.open) return &api;
    if (ss_backend_cuda_open) {
        api = (cuda_api){ss_backend_cuda_open, ss_backend_cuda_close, ss_cuda_device_count};
        return &api;
    }
    cuda_api p = {(ss_status(*)(int, const ss_backend_opts *, ss_backend **))ss_plugin_symbol(
                      "libsubscope-cuda.so", "ss_backend_cuda_open"),
                  (void (*)(ss_backend *))ss_plugin_symbol("libsubscope-cuda.so", "ss_backend_cuda_close"),
                  (int (*)(void))ss_plugin_symbol("libsubscope-cuda.so", "ss_cuda_device_count")};
    if (!p.open || !p.close || !p.count) return NULL;
    api = p;
    return &api;
}

/* Whether an NVIDIA driver is there at all (its device nodes, or WSL's), so
 * that "auto" on a machine without one does not load the plugin to find out. */
static int driver_present(void) {
    static const char *const nodes[] = {"/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg"};
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++)
        if (!access(nodes[i], F_OK)) return 1;
    return 0;
}
#endif

const char *ss_backend_cuda_status(char *buf, size_t n) {
#ifdef SS_HAVE_CUDA
    const cuda_api *api = cuda();
    const int count = api ? api->count() : 0;
    if (!api) snprintf(buf, n, "unavailable: %s", ss_last_error());
    else snprintf(buf, n, "%s, %d device%s visible", ss_backend_cuda_open ? "linked in" : "plugin loaded", count,
                  count == 1 ? "" : "s");
#else
    snprintf(buf, n, "not in this build (nvcc and cuBLAS were not found when it was built)");
#endif
    return buf;
}

int ss_local_rank(void) {
    /* Open MPI, Slurm, MPICH/Intel MPI, in that order. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        int64_t r;
        if (v && ss_parse_int(v, &r) && r >= 0 && r < 65536) return (int)r;
    }
    return 0;
}

int ss_device_for_rank(int local_rank, int n_devices) { return n_devices > 0 ? local_rank % n_devices : 0; }

static ss_status open_cpu(ss_backend **out) {
    ss_status st = ss_cpu_blas_ready();
    if (!st) *out = (ss_backend *)ss_backend_cpu();
    return st;
}

ss_status ss_attn_seqs_check(const ss_backend *be, const char *op, int64_t n_seq, const int64_t *start,
                             const int64_t *len, int64_t rows) {
    if (rows < 0) rows = INT64_MAX;
    for (int64_t s = 0; s < n_seq; s++)
        if (start[s] < 0 || len[s] < 0 || start[s] > rows - len[s])
            return ss_errorf(SS_ERR_ARG, "%s: %s: sequence %lld (start %lld, len %lld) is outside rows 0..%lld", be->name,
                             op, (long long)s, (long long)start[s], (long long)len[s], (long long)rows);
    return SS_OK;
}

ss_status ss_backend_open(const char *spec, const ss_backend_opts *opts, ss_backend **out) {
    *out = NULL;
    /* "cuda" and "auto" without a number: the GPU of this process's rank on
     * its node, so that ranks started together do not all share cuda:0. */
    if (!spec || !*spec || !strcmp(spec, "auto")) {
#ifdef SS_HAVE_CUDA
        const int driver = driver_present();
        const cuda_api *api = ss_backend_cuda_open || driver ? cuda() : NULL;
        if (!api && driver) /* a GPU machine should not quietly run on its CPU */
            ss_eprintf("subscope: warning: an NVIDIA driver is present, but %s; running on the CPU\n",
                       ss_last_error());
        const int n = api ? api->count() : 0;
        if (n > 0) return api->open(ss_device_for_rank(ss_local_rank(), n), opts, out);
#endif
        return open_cpu(out);
    }
    if (!strcmp(spec, "cpu")) return open_cpu(out);
    if (!strncmp(spec, "cuda", 4) && (spec[4] == 0 || spec[4] == ':')) {
        int dev = 0;
#ifdef SS_HAVE_CUDA
        const cuda_api *api = cuda();
        if (!api) return ss_error_context(SS_ERR_UNSUPPORTED, "device '%s'", spec);
        if (!spec[4]) dev = ss_device_for_rank(ss_local_rank(), api->count());
#endif
        if (spec[4] == ':') {
            int64_t v;
            if (!ss_parse_int(spec + 5, &v) || v < 0 || v > 1024)
                return ss_errorf(SS_ERR_ARG, "--device '%s': expected cuda:N with N a device number", spec);
            dev = (int)v;
        }
#ifdef SS_HAVE_CUDA
        return api->open(dev, opts, out);
#else
        (void)dev;
        return ss_errorf(SS_ERR_UNSUPPORTED,
                         "device '%s': this build of subscope has no CUDA backend (nvcc and cuBLAS were not found "
                         "when it was built; `make` lists the features)", spec);
#endif
    }
    return ss_errorf(SS_ERR_ARG, "--device: unknown device '%s' (use cpu, cuda, cuda:N or auto)", spec);
}

void ss_backend_close(ss_backend *be) {
    if (!be) return;
    if (be == ss_backend_cpu()) { /* one backend for the process: its released blocks go back to malloc */
        ss_cpu_cache_drop();
        return;
    }
#ifdef SS_HAVE_CUDA
    const cuda_api *api = cuda(); /* loaded already: be came from it */
    if (api) api->close(be);
#endif
}
