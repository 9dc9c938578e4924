/* Host memory of loading a model and placing it on a GPU: the eager load
 * (ss_model_load: every 16-bit tensor converted to a float32 host copy
 * first) against the deferred one the jobs use (ss_model_load_deferred:
 * tensors go from the mapped files to the device a chunk at a time). Built
 * against the emulated CUDA runtime, whose device memory is host memory: the
 * peak resident size counts it, and is also given with the device's bytes
 * subtracted (which can understate a transient: at the peak, part of the
 * device's block may not have been written yet).
 *
 *   load_memory MODEL_DIR eager|deferred [bf16|f16|f32]
 *
 * prints one JSON object. Run each mode in its own process (the peak is the
 * process's): bench/load_memory.sh does, and writes bench/results/. */
#include <stdio.h>
#include <string.h>

#include "subscope/backend.h"
#include "subscope/model.h"
#include "subscope/util.h"

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[2], "eager") && strcmp(argv[2], "deferred"))) {
        fprintf(stderr, "usage: load_memory MODEL_DIR eager|deferred [bf16|f16|f32]\n");
        return 2;
    }
    const char *dt = argc > 3 ? argv[3] : "bf16";
    const int wdtype = !strcmp(dt, "f32") ? SS_WDTYPE_F32 : !strcmp(dt, "f16") ? SS_WDTYPE_F16 : SS_WDTYPE_BF16;
    const int deferred = !strcmp(argv[2], "deferred");
    ss_model *m = NULL;
    ss_backend *gpu = NULL;
    const int64_t rss0 = ss_peak_host_bytes();
    const double t0 = ss_now();
    ss_status st = deferred ? ss_model_load_deferred(argv[1], 0, -1, &m) : ss_model_load(argv[1], &m);
    const double t1 = ss_now();
    if (!st) st = ss_backend_cuda_open(0, NULL, &gpu);
    if (!st) st = ss_model_place(m, gpu, wdtype);
    const double t2 = ss_now();
    if (st) {
        fprintf(stderr, "load_memory: %s\n", ss_last_error());
        return 1;
    }
    size_t in_use = 0, peak = 0;
    gpu->memory_stats(gpu, &in_use, &peak);
    const int64_t rss = ss_peak_host_bytes();
    printf("{\"mode\": \"%s\", \"placed_dtype\": \"%s\", \"weight_dtypes\": \"%s\", \"parameters\": %lld, "
           "\"load_seconds\": %.4f, \"place_seconds\": %.4f, \"peak_resident_bytes\": %lld, "
           "\"resident_before_load_bytes\": %lld, \"emulated_device_bytes\": %zu, \"host_bytes_without_device\": %lld}\n",
           argv[2], dt, m->weight_dtypes, (long long)m->n_params, t1 - t0, t2 - t1, (long long)rss, (long long)rss0,
           peak, (long long)(rss - (int64_t)peak));
    ss_model_free(m);
    ss_backend_cuda_close(gpu);
    return 0;
}
