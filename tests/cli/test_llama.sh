#!/usr/bin/env bash
# Every job on Llama-family models (the random-weight goldens of tests/gen/gen_llama_goldens.py;
# forward and attribute are checked against transformers in test_forward.sh / test_attribute.sh):
# collect, ablate at the family's own sites (kv heads, rotary, up projection), discover,
# data-parallel runs equal to one process, bfloat16 placement, and the refusals.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp
M=$D/models/llama-gqa-llama3   # 6 heads / 2 kv heads, d_head 8, d_mlp 80, vocab 113
P=$D/golden/llama-gqa-llama3.jsonl

# Labelled prompts over the model's vocabulary.
for i in 0 1 2 3 4 5 6 7 8 9; do
    lab=$([ $((i % 2)) = 0 ] && echo even || echo odd)
    printf '{"tokens": [%d, %d, %d, %d, %d, %d], "label": "%s"}\n' $((i * 7 % 113)) $((i * 13 % 113)) $((i * 29 % 113)) \
        $((i * 31 % 113)) $((i * 37 % 113)) $((i * 41 % 113)) "$lab"
done >"$TMP/lab.jsonl"

out=$("$SUBSCOPE" info --model "$M" 2>&1)
printf '%s' "$out" | grep -q "architecture llama (Llama family" && printf '%s' "$out" | grep -q "2 key/value heads" &&
    printf '%s' "$out" | grep -q "blocks.L.attn.hook_rot_k  *\[kv_head 2, d_head 8\]" &&
    printf '%s' "$out" | grep -q "blocks.L.mlp.hook_pre_linear" && ! printf '%s' "$out" | grep -q hook_pos_embed &&
    pass "info: Llama family, grouped-query heads, rotary and up-projection sites, no hook_pos_embed" ||
    fail "info on a Llama model" "$(printf '%s' "$out" | head -8)"

# the architecture line names every bias: attention_bias is q/k/v and o (Llama), Qwen2's q/k/v alone
a1=$("$SUBSCOPE" info --model "$D/models/llama-hd6-bias" | grep '^architecture')
a2=$("$SUBSCOPE" info --model "$D/models/qwen2-bias-tied" | grep '^architecture')
case "$a1|$a2" in *"q/k/v/o biases, MLP biases)|"*"tied lm_head, q/k/v biases)") pass "info: the biases named (attention_bias: q/k/v/o; Qwen2: q/k/v)" ;;
    *) fail "info: biases" "$a1" "$a2" ;; esac

# info --config: the parameter count from config.json alone equals the loaded model's, for
# every golden model of both families; a Llama-2-7B-shaped config gives its known 6738415616.
ok=1
for m in llama-gqa-llama3 qwen2-bias-tied llama-hd6-bias mistral-small prefix-f32 noprefix-odd-untied; do
    a=$("$SUBSCOPE" info --model "$D/models/$m" | awk '/^parameters/ {print $2}')
    b=$("$SUBSCOPE" info --config "$D/models/$m/config.json" | awk '/^parameters/ {print $2}')
    [ -n "$a" ] && [ "$a" = "$b" ] || { ok=0; bad="$m: $a vs $b"; }
done
[ $ok = 1 ] && pass "info --config counts the parameters of every golden model exactly" || fail "info --config parameters" "$bad"
printf '%s' '{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
  "num_attention_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}' >"$TMP/7b.json"
out=$("$SUBSCOPE" info --config "$TMP/7b.json" --tokens 16384 2>&1)
printf '%s' "$out" | grep -q "^parameters   6738415616 (6.74 B): weights 25.1 GiB in float32, 12.6 GiB in bfloat16" &&
    printf '%s' "$out" | grep -q "^16384 tokens" &&
    printf '%s' "$out" | grep -q "^collect      .*: 128.0 MiB per d_model site, 924.5 MiB per MLP site, 28.9 GiB for all 32 MLP sites" &&
    pass "info --config on a 7B shape: parameters, weights per dtype, batch totals, collect's device statistics" ||
    fail "info --config 7B" "$(printf '%s' "$out" | head -4)"
sum=$("$SUBSCOPE" info --config "$TMP/7b.json" --pipeline 4 | awk '/^stage/ {s += $5} END {printf "%.0f", s}')
[ "$sum" = 6738415616 ] && pass "info --config --pipeline 4: the stages' parameters add up to the model's" || fail "info --pipeline stages" "sum $sum"

# collect: per-group statistics at the up projection and the kv-head keys.
expect_ok "collect at hook_pre_linear and hook_k with --group-by" "$SUBSCOPE" collect --model "$M" --input "$TMP/lab.jsonl" \
    --sites 'blocks.*.mlp.hook_pre_linear,blocks.0.attn.hook_k' --stats mean,cov,corr,pca:3 --group-by label --out "$TMP/st.h5"
h5ls -r "$TMP/st.h5" 2>/dev/null | grep -q "/stats/blocks.0.attn.hook_k/cov Dataset {16, 16}" &&
    h5ls -r "$TMP/st.h5" 2>/dev/null | grep -q "/groups/odd/stats/blocks.1.mlp.hook_pre_linear/mean Dataset {80}" &&
    pass "collect: hook_k has Hkv*d_head = 16 units; groups written" || fail "collect shapes" "$(h5ls -r "$TMP/st.h5" | head -5)"

# ablate: scale 1 changes nothing, bit for bit, at every family-specific site.
i=0
for spec in 'blocks.0.attn.hook_rot_q", "heads": [5]' 'blocks.1.attn.hook_rot_k", "heads": [1]' \
            'blocks.0.attn.hook_v", "heads": [0]' 'blocks.1.mlp.hook_pre_linear", "units": [3, 79]'; do
    printf '{"name": "s%d", "site": "%s, "mode": "scale", "factor": 1.0}\n' $i "$spec"
    i=$((i + 1))
done >"$TMP/scale1.jsonl"
if "$SUBSCOPE" ablate --model "$M" --input "$TMP/lab.jsonl" --masks "$TMP/scale1.jsonl" --out "$TMP/s1.h5" >/dev/null 2>"$TMP/err"; then
    c=$(h5dump -d /clean/loss "$TMP/s1.h5" | sed -n '/DATA/,/}/p' | tail -n +2)
    for i in 0 1 2 3; do
        a=$(h5dump -d /ablate/s$i/loss "$TMP/s1.h5" | sed -n '/DATA/,/}/p' | tail -n +2)
        [ -n "$c" ] && [ "$a" = "$c" ] && pass "ablate scale 1 (mask s$i): loss identical to clean" || fail "ablate scale 1 (mask s$i)" "$a" "$c"
    done
else fail "ablate scale-1 masks run" "$(cat "$TMP/err")"; fi
# zeroing the value of a kv head changes the loss of every prompt; zeroing its rotated key
# (all scores equal) changes it differently.
"$SUBSCOPE" ablate --model "$M" --input "$TMP/lab.jsonl" --mask 'blocks.0.attn.hook_v[head=1]' \
    --mask 'blocks.0.attn.hook_rot_k[head=1]' --mask 'blocks.0.mlp.hook_pre_linear' --out "$TMP/z.h5" >"$TMP/table" 2>&1 &&
    grep -q "hook_v\[head=1\]" "$TMP/table" && pass "ablate: zero masks at kv heads and the up projection run, table printed" ||
    fail "ablate zero masks" "$(tail -3 "$TMP/table")"
expect_fail "a kv-head index past Hkv is refused" "head 2 out of range for blocks.0.attn.hook_k (2 heads)" \
    "$SUBSCOPE" ablate --model "$M" --input "$TMP/lab.jsonl" --mask 'blocks.0.attn.hook_k[head=2]' --out "$TMP/bad.h5"
expect_fail "hook_pos_embed does not exist in a rotary model" "unknown site 'hook_pos_embed'" \
    "$SUBSCOPE" forward --model "$M" --input "$P" --sites hook_pos_embed --out "$TMP/bad.h5"

# discover from the statistics.
expect_ok "discover clusters Llama MLP units" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*.mlp.hook_pre_linear' \
    --method cluster --out "$TMP/disc.h5"

# bfloat16 weights (rounded on placement, bf16 products with fp32 accumulation): close to fp32.
"$SUBSCOPE" forward --model "$M" --input "$P" --out "$TMP/f32.h5" >/dev/null 2>&1
expect_ok "forward --dtype bfloat16 runs" "$SUBSCOPE" forward --model "$M" --input "$P" --dtype bfloat16 --out "$TMP/bf.h5"
# bf16 rounding of every weight and of the matmul inputs (rel. 2^-9) through 2 layers moves the
# logits (|x| up to ~8 with these random weights) by 0.12 at most (measured): 0.25 + 5% leaves 2x.
expect_ok "bfloat16 logits within 0.25 of float32" "$H5CMP" --quiet --atol 0.25 --rtol 0.05 --only /logits "$TMP/f32.h5" "$TMP/bf.h5"

# Data-parallel: the same per-prompt values as one process.
if command -v mpirun >/dev/null 2>&1; then
    # Open MPI leaks by design at exit (as in test_dist.sh); its vader copy needs ptrace rights.
    export ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none
    MPI="mpirun --allow-run-as-root --oversubscribe"
    SUBSCOPE_THREADS=1 "$SUBSCOPE" attribute --model "$M" --input "$TMP/lab.jsonl" --sites 'blocks.*' --metric loss --method gradxact --out "$TMP/a1.h5" >/dev/null 2>&1
    if SUBSCOPE_THREADS=1 timeout 120 $MPI -np 2 "$SUBSCOPE" attribute --model "$M" --input "$TMP/lab.jsonl" --sites 'blocks.*' \
        --metric loss --method gradxact --out "$TMP/a2.h5" >/dev/null 2>"$TMP/err"; then
        expect_ok "attribute with 2 ranks equals one process, bit for bit" "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric "$TMP/a1.h5" "$TMP/a2.h5"
    else fail "attribute under mpirun -np 2" "$(tail -3 "$TMP/err")"; fi
else
    echo "  skip: no mpirun on this machine (data-parallel check)"
fi

# Refusals name what is unsupported.
mkdir -p "$TMP/bad"
cp "$M/model.safetensors" "$TMP/bad/"
sed 's/"silu"/"gelu"/' "$M/config.json" >"$TMP/bad/config.json"
expect_fail "hidden_act other than silu is refused" "\"hidden_act\" \"gelu\" is not supported" \
    "$SUBSCOPE" forward --model "$TMP/bad" --input "$P" --out "$TMP/bad.h5"
sed 's/"num_key_value_heads": 2/"num_key_value_heads": 3/' "$M/config.json" >"$TMP/bad/config.json"
expect_fail "a tensor whose shape disagrees with the config is named" "has shape [16,48] but config.json implies [24,48]" \
    "$SUBSCOPE" forward --model "$TMP/bad" --input "$P" --out "$TMP/bad.h5"
finish
