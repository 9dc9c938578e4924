/* libFuzzer target: the input is a whole .safetensors file. Whatever the
 * parser accepts must be safe to read: every tensor's bytes are touched,
 * floating ones through ss_tensor_to_f32 in bounded chunks and scanned for
 * NaN and infinities (ss_tensor_nonfinite). */
#include <stdint.h>
#include <string.h>

#include "subscope/safetensors.h"

static float sink[256];

/* Converts t in chunks of at most 256 elements through a 1-D view. */
static void touch_float(const ss_tensor_info *t) {
    size_t es = ss_dtype_size(t->dtype), n = t->nbytes / es;
    for (size_t i = 0; i < n; i += 256) {
        size_t k = n - i < 256 ? n - i : 256;
        ss_tensor_info v = *t;
        v.ndim = 1;
        v.shape[0] = (int64_t)k;
        v.nbytes = k * es;
        v.data = (const uint8_t *)t->data + i * es;
        if (ss_tensor_to_f32(&v, sink, k) != SS_OK) __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_safetensors *st = NULL;
    if (ss_safetensors_parse(data, size, "fuzz.safetensors", &st) != SS_OK) {
        if (st) __builtin_trap(); /* failure must leave *out NULL */
        return 0;
    }
    volatile uint8_t acc = 0;
    for (size_t i = 0; i < ss_safetensors_count(st); i++) {
        const ss_tensor_info *t = ss_safetensors_at(st, i);
        if (ss_safetensors_find(st, t->name) != t) __builtin_trap();
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size)) __builtin_trap();
        for (size_t b = 0; b < t->nbytes; b++) acc ^= p[b];
        switch (t->dtype) {
        case SS_DTYPE_F32: case SS_DTYPE_F16: case SS_DTYPE_BF16: case SS_DTYPE_F64:
            touch_float(t);
            /* The scan for NaN and infinities: an index inside the tensor, or none. */
            {
                size_t at = 0;
                const char *bad = ss_tensor_nonfinite(t, &at);
                if (bad && at >= t->nbytes / ss_dtype_size(t->dtype)) __builtin_trap();
            }
            /* The whole-tensor call must agree on the element count check. */
            if (t->nbytes / ss_dtype_size(t->dtype) != 1 && ss_tensor_to_f32(t, sink, 1) == SS_OK) __builtin_trap();
            break;
        default:
            if (ss_tensor_to_f32(t, sink, t->nbytes / ss_dtype_size(t->dtype)) != SS_ERR_UNSUPPORTED) __builtin_trap();
            break;
        }
    }
    (void)acc;
    ss_safetensors_free(st);
    return 0;
}
