/* libFuzzer target: the input is a model.safetensors.index.json, read by
 * ss_weights_open from a directory that holds two fixed shards (tensors a, b
 * and c, d) and no model.safetensors, as a sharded model's directory is read.
 * Whatever the index says (shard names with paths, unknown shards, tensors a
 * shard lacks, repeated names) must end in an error or in a set of weights
 * where every listed tensor is found by its name and its bytes can be read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "subscope/safetensors.h"

static char dir[96], index_path[160];

/* A shard of two F32 tensors of n1 and n2 values. */
static int write_shard(const char *name, const char *t1, int n1, const char *t2, int n2) {
    char hdr[256], path[200];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[0,%d]},"
                      "\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],\"data_offsets\":[%d,%d]}}",
                      t1, n1, 4 * n1, t2, n2, 4 * n1, 4 * (n1 + n2));
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    int ok = fwrite(len, 1, 8, f) == 8 && fwrite(hdr, 1, (size_t)hl, f) == (size_t)hl;
    for (int i = 0; i < n1 + n2 && ok; i++) {
        float v = (float)i;
        ok = fwrite(&v, sizeof v, 1, f) == 1;
    }
    return fclose(f) == 0 && ok;
}

static void cleanup(void) {
    static const char *const files[] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors"};
    char path[200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "%s/ss_fuzz_index_%ld", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (long)getpid());
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    if ((mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0) ||
        !write_shard("model-00001-of-00002.safetensors", "a", 3, "b", 5) ||
        !write_shard("model-00002-of-00002.safetensors", "c", 2, "d", 1)) {
        fprintf(stderr, "fuzz_weights_index: cannot set up %s\n", dir);
        exit(1);
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(index_path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    if (fclose(f) != 0 || w != size) return 0;
    ss_weights *ws = NULL;
    if (ss_weights_open(dir, &ws) != SS_OK) {
        if (ws) __builtin_trap(); /* failure must leave *out NULL */
        return 0;
    }
    volatile uint8_t acc = 0;
    for (size_t i = 0; i < ss_weights_count(ws); i++) {
        const ss_tensor_info *t = ss_weights_at(ws, i);
        if (!t || ss_weights_find(ws, t->name) != t) __builtin_trap();
        for (size_t b = 0; b < t->nbytes; b++) acc ^= ((const uint8_t *)t->data)[b];
    }
    (void)acc;
    ss_weights_free(ws);
    return 0;
}
