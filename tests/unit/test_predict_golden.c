/* The bundled model against transformers' own next-token predictions and
 * greedy continuations (tests/data/golden/tiny-gpt2-predict.json, written by
 * tests/gen/gen_gpt2_goldens.py). The generator checked that every top-5 gap
 * is > 1e-4 in probability and every greedy step's logit gap > 1e-3, so fp32
 * rounding cannot reorder them; probabilities are compared to 2e-5 (the
 * golden prints 6 decimals, and fp32 softmax over 1024 ids agrees to ~1e-6). */
#include <math.h>
#include <stdlib.h>

#include "subscope/forward.h"
#include "subscope/json.h"
#include "subscope/util.h"
#include "test.h"

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

TEST(predict_golden_tiny_gpt2_top5_and_greedy) {
    char path[512];
    snprintf(path, sizeof path, "%s/golden/tiny-gpt2-predict.json", ss_test_data_dir());
    char *txt;
    size_t len;
    CHECK_OK(ss_file_read(path, &txt, &len));
    ss_json_doc *doc;
    ss_status st = ss_json_parse(txt, len, path, &doc);
    free(txt);
    CHECK_OK(st);
    ss_model *m = NULL;
    st = ss_model_load("models/tiny-gpt2", &m);
    if (st) { ss_json_free(doc); CHECK_OK(st); }
    const int64_t V = m->cfg.vocab_size;
    const ss_json *prompts = ss_json_get(ss_json_root(doc), "prompts");
    CHECK(prompts && prompts->len >= 2);
    for (size_t p = 0; p < prompts->len; p++) {
        const ss_json *pr = &prompts->items[p];
        const char *text;
        CHECK(ss_json_get_str(pr, "text", &text) == 1);
        int32_t *ids;
        size_t n;
        CHECK_OK(ss_tokenizer_encode(m->tok, text, strlen(text), &ids, &n));
        const ss_json *gt = ss_json_get(pr, "tokens");
        CHECK(gt->len == n);
        for (size_t i = 0; i < n; i++) CHECK(ids[i] == gt->items[i].i);
        const ss_json *greedy = ss_json_get(pr, "greedy_ids"), *top = ss_json_get(pr, "top5");
        ids = realloc(ids, (n + greedy->len) * sizeof *ids);
        for (size_t g = 0; g < greedy->len; g++) {
            int64_t start = 0, l = (int64_t)n;
            ss_packing pk = {1, l, &start, &l, 0};
            ss_forward_opts o = {.logits = SS_LOGITS_LAST};
            float *lg = NULL;
            CHECK_OK(ss_forward(m, ss_backend_cpu(), ids, &pk, &o, &lg));
            if (g == 0) {
                double mx = lg[argmax(lg, V)], sum = 0;
                for (int64_t v = 0; v < V; v++) sum += exp((double)lg[v] - mx);
                for (size_t k = 0; k < top->len; k++) {
                    int64_t id = argmax(lg, V), want;
                    double prob = exp((double)lg[id] - mx) / sum, wp;
                    CHECK(ss_json_get_int(&top->items[k], "id", &want) == 1 && ss_json_get_num(&top->items[k], "prob", &wp) == 1);
                    CHECK_MSG(id == want, "prompt %zu: top-%zu id %lld, transformers %lld", p, k + 1, (long long)id, (long long)want);
                    CHECK_NEAR(prob, wp, 2e-5);
                    lg[id] = -INFINITY;
                }
                free(lg);
                CHECK_OK(ss_forward(m, ss_backend_cpu(), ids, &pk, &o, &lg));
            }
            int64_t next = argmax(lg, V);
            free(lg);
            CHECK_MSG(next == greedy->items[g].i, "prompt %zu: greedy step %zu gives %lld, transformers %lld", p, g,
                      (long long)next, (long long)greedy->items[g].i);
            ids[n++] = (int32_t)next;
        }
        free(ids);
    }
    ss_model_free(m);
    ss_json_free(doc);
}
