/* Shared objects that hold the code needing the CUDA libraries (the CUDA
 * backend, the NCCL communicator), loaded on first use: bin/subscope links
 * none of those libraries, so a run on the CPU, `info` or `--help` starts in
 * a few milliseconds on any machine, with or without them (docs/DECISIONS.md
 * "GPU code in plugins"). The plugins' own references to the rest of
 * subscope resolve to the program's symbols (it is linked with -rdynamic). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "subscope/util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char file[64];
    void *handle;
} loaded[4];

/* SUBSCOPE_PLUGIN_DIR, else the directory of the running program. */
static ss_status plugin_path(const char *file, char *path, size_t n) {
    const char *env = getenv("SUBSCOPE_PLUGIN_DIR");
    if (env && *env) {
        if ((size_t)snprintf(path, n, "%s/%s", env, file) >= n) return ss_errorf(SS_ERR_ARG, "SUBSCOPE_PLUGIN_DIR is too long");
        return SS_OK;
    }
    char exe[PATH_MAX];
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return ss_errorf(SS_ERR_IO, "cannot find the running program (/proc/self/exe) to look for %s beside it; "
                                              "set SUBSCOPE_PLUGIN_DIR", file);
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    if ((size_t)snprintf(path, n, "%s/%s", slash ? exe : ".", file) >= n) return ss_errorf(SS_ERR_ARG, "plugin path too long");
    return SS_OK;
}

void *ss_plugin_symbol(const char *file, const char *symbol) {
    pthread_mutex_lock(&lock);
    void *handle = NULL, *sym = NULL;
    size_t slot = 0;
    for (; slot < sizeof loaded / sizeof *loaded && loaded[slot].file[0]; slot++)
        if (!strcmp(loaded[slot].file, file)) handle = loaded[slot].handle;
    char path[PATH_MAX + 80];
    if (!handle && !plugin_path(file, path, sizeof path)) {
        if (access(path, R_OK)) {
            ss_errorf(SS_ERR_UNSUPPORTED, "%s: not found; subscope's GPU code lives there (`make` builds it where the CUDA "
                      "toolkit is; SUBSCOPE_PLUGIN_DIR names another directory)", path);
        } else if (!(handle = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
            const char *why = dlerror();
            ss_errorf(SS_ERR_UNSUPPORTED, "%s: cannot load it: %s (are the CUDA libraries it needs on LD_LIBRARY_PATH?)",
                      path, why ? why : "unknown error");
        } else if (slot < sizeof loaded / sizeof *loaded) {
            snprintf(loaded[slot].file, sizeof loaded[slot].file, "%s", file);
            loaded[slot].handle = handle; /* kept open for the process's life */
        }
    }
    if (handle && !(sym = dlsym(handle, symbol)))
        ss_errorf(SS_ERR_UNSUPPORTED, "%s has no symbol '%s' (a plugin from another build of subscope?)", file, symbol);
    pthread_mutex_unlock(&lock);
    return sym;
}
