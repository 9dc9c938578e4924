/* libFuzzer target: the input is a whole GGUF file. Whatever the parser
 * accepts must be safe to use: every metadata value is walked (nested arrays
 * included), every lookup agrees with the table, every tensor's bytes lie in
 * the input, and supported tensors dequantise row by row. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "subscope/gguf.h"
#include "subscope/gguf_model.h"

static float sink[1024];
static volatile uint64_t acc;

static void walk_value(const ss_gguf_value *v, int depth) {
    if (depth > 16) __builtin_trap(); /* the parser limits nesting */
    if (v->type == SS_GGUF_STRING) {
        if (v->str.s[v->str.len] != '\0') __builtin_trap();
        for (size_t i = 0; i < v->str.len; i++) acc += (uint8_t)v->str.s[i];
        return;
    }
    if (v->type != SS_GGUF_ARRAY) {
        acc += v->u ^ (uint64_t)v->i;
        return;
    }
    for (uint64_t i = 0; i < v->count; i++) {
        ss_gguf_value e;
        if (!ss_gguf_array_get(v, i, &e)) __builtin_trap();
        walk_value(&e, depth + 1);
    }
    ss_gguf_value past;
    if (ss_gguf_array_get(v, v->count, &past)) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ss_gguf *g = NULL;
    if (ss_gguf_parse(data, size, "fuzz.gguf", &g) != SS_OK) {
        if (g) __builtin_trap(); /* failure must leave *out NULL */
        return 0;
    }
    for (size_t i = 0; i < ss_gguf_kv_count(g); i++) {
        const ss_gguf_kv *kv = ss_gguf_kv_at(g, i);
        if (ss_gguf_find(g, kv->key) != &kv->value) __builtin_trap();
        walk_value(&kv->value, 0);
    }
    for (size_t i = 0; i < ss_gguf_tensor_count(g); i++) {
        const ss_gguf_tensor *t = ss_gguf_tensor_at(g, i);
        if (ss_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size)) __builtin_trap();
        for (size_t b = 0; b < t->nbytes; b++) acc += p[b];
        size_t row = (size_t)t->ne[0], rows = row ? t->n_elements / row : 0;
        if (!ss_ggml_type_supported(t->type)) {
            if (ss_gguf_rows_to_f32(g, t, 0, rows ? 1 : 0, sink) != SS_ERR_UNSUPPORTED) __builtin_trap();
            continue;
        }
        if (row == 0 || row > sizeof sink / sizeof sink[0]) continue;
        size_t per = sizeof sink / sizeof sink[0] / row;
        for (size_t r = 0; r < rows; r += per) {
            size_t k = rows - r < per ? rows - r : per;
            if (ss_gguf_rows_to_f32(g, t, r, k, sink) != SS_OK) __builtin_trap();
        }
        if (ss_gguf_rows_to_f32(g, t, rows, 1, sink) != SS_ERR_ARG) __builtin_trap();
    }
    /* The model's view of the metadata: a config (sane when accepted) and the tokenizer. */
    ss_config c;
    if (ss_gguf_model_config(g, &c) == SS_OK &&
        (c.n_layer <= 0 || c.n_head <= 0 || ss_config_kv_heads(&c) <= 0 || c.n_head % ss_config_kv_heads(&c) ||
         ss_config_d_head(&c) <= 0 || ss_config_d_head(&c) % 2 || c.vocab_size <= 0))
        __builtin_trap();
    ss_tokenizer *tok = NULL;
    if (ss_gguf_tokenizer_load(g, &tok) == SS_OK && tok) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (ss_tokenizer_encode(tok, "Hello 123 world", 15, &ids, &n) == SS_OK) acc += n;
        free(ids);
        ss_tokenizer_free(tok);
    }
    ss_gguf_free(g);
    return 0;
}
