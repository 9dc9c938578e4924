#!/usr/bin/env bash
# The CUDA plugin built from the emulated runtime and kernels (bin/emu/libsubscope-cuda.so,
# Makefile's EMU_PLUGIN): the program's own GPU path, from the command line through the
# plugin's loading to the kernels, run without a GPU; SS_EMU_CENSUS, which lists at exit
# what a command asked of the device; and SS_EMU_HOST_ONLY, which asks it without computing.
source "$(dirname "$0")/lib.sh"
EMU=${TOOLBIN}emu
if [ ! -f "$EMU/libsubscope-cuda.so" ]; then
    fail "emulated plugin built" "$EMU/libsubscope-cuda.so is missing (make test builds it)"
    finish; exit
fi
M=$TMP/m
"${TOOLBIN}mkmodel" --out "$M" --layers 2 --d 64 --heads 4 --vocab 300 --positions 32 --seed 3 \
    --prompts "$TMP/p.jsonl" --lengths 9,12,5,12 >/dev/null
printf '%s\n' '{"name": "z", "site": "blocks.0.mlp.hook_post", "units": [1, 5, 17, 40]}' \
    '{"name": "h", "site": "blocks.1.attn.hook_z", "heads": [2], "mode": "scale", "factor": 0.5}' \
    '{"name": "r", "site": "blocks.1.hook_resid_mid", "mode": "noise", "sigma": 0.3, "seed": 4}' >"$TMP/masks.jsonl"
run() { # run DEVICE OUT [VAR=VALUE...]: ablate's three masks, K = 2 per forward
    local dev=$1 out=$2; shift 2
    env SUBSCOPE_PLUGIN_DIR="$EMU" "$@" "$SUBSCOPE" ablate --model "$M" --input "$TMP/p.jsonl" --masks "$TMP/masks.jsonl" \
        --metrics loss,acc,kl --mask-batch 2 --device "$dev" --out "$out"
}
out=$(run cuda "$TMP/gpu.h5" 2>&1); rc=$?
if [ $rc != 0 ] && printf '%s' "$out" | grep -q "not in this build"; then
    pass "emulated plugin not run: this subscope was built without CUDA"
    finish; exit
fi
[ $rc = 0 ] || fail "ablate --device cuda on the emulated plugin" "exit $rc: $(printf '%s' "$out" | tail -n 3)"
if [ $rc = 0 ] && run cpu "$TMP/cpu.h5" >/dev/null 2>&1 &&
    "${TOOLBIN}h5cmp" --quiet --atol 2e-5 --rtol 1e-4 --only /clean --only /ablate "$TMP/cpu.h5" "$TMP/gpu.h5"; then
    pass "ablate --device cuda through the emulated plugin equals the CPU (2e-5 + 1e-4 relative)"
else
    fail "ablate on the emulated plugin against the CPU" "$("${TOOLBIN}h5cmp" --quiet --atol 2e-5 --rtol 1e-4 \
        --only /clean --only /ablate "$TMP/cpu.h5" "$TMP/gpu.h5" 2>&1 | head -n 3)"
fi
# the root attribute tf32: what the backend did with --tf32 (the GPU's products may use it; the CPU's not)
tf() { h5dump -a /tf32 "$1" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p'; }
tfrun() { SUBSCOPE_PLUGIN_DIR="$EMU" "$SUBSCOPE" forward --model "$M" --input "$TMP/p.jsonl" --no-logits --tf32 --device "$@" >/dev/null 2>&1; }
if [ $rc = 0 ] && tfrun cuda --out "$TMP/tf.h5" && tfrun cpu --out "$TMP/tfc.h5" &&
    [ "$(tf "$TMP/tf.h5")" = 1 ] && [ "$(tf "$TMP/tfc.h5")" = 0 ] && [ "$(tf "$TMP/gpu.h5")" = 0 ]; then
    pass "root attribute tf32: 1 for --tf32 on the GPU, 0 on the CPU and without it"
else fail "root attribute tf32" "gpu --tf32: $(tf "$TMP/tf.h5"), cpu --tf32: $(tf "$TMP/tfc.h5"), gpu: $(tf "$TMP/gpu.h5")"; fi
# the census: the device's masks and scores were used, every allocation was freed
out=$(run cuda "$TMP/gpu2.h5" SS_EMU_CENSUS=1 2>&1 >/dev/null); rc=$?
cnt() { printf '%s\n' "$out" | awk -v k="$1" '$3 == "calls" && $4 == "of" && $5 == k { print $NF }'; }
if [ $rc = 0 ] && printf '%s\n' "$out" | grep -qE '^cuda_emu census: ss_k_mask_apply +[1-9]' &&
    printf '%s\n' "$out" | grep -qE '^cuda_emu census: ss_k_logit_scores +[1-9]' &&
    printf '%s\n' "$out" | grep -qE '^cuda_emu census: product cublas.* m +300 n +[0-9]+ k +64' &&
    [ -n "$(cnt cudaMalloc)" ] && [ "$(cnt cudaMalloc)" = "$(cnt cudaFree)" ]; then
    pass "SS_EMU_CENSUS: the kernels, products and calls of a run ($(cnt cudaMalloc) allocations, all freed)"
else
    fail "SS_EMU_CENSUS" "exit $rc: $(printf '%s\n' "$out" | grep census | head -n 12)"
fi
# trace: each allocation and plan as it happens, placed by the launches before it
out=$(run cuda "$TMP/gpu4.h5" SS_EMU_CENSUS=trace 2>&1 >/dev/null); rc=$?
if [ $rc = 0 ] && printf '%s\n' "$out" | grep -qE '^cuda_emu trace: after [1-9][0-9]* launches \(the last ss_k_[a-z0-9_]+\): cudaMalloc [0-9]+ bytes$' &&
    printf '%s\n' "$out" | grep -qE '^cuda_emu trace: after 0 launches \(the last none\): cudaMalloc' &&
    [ "$(printf '%s\n' "$out" | grep -c ': cudaMalloc ')" = "$(printf '%s\n' "$out" | grep -c ': cudaFree ')" ]; then
    pass "SS_EMU_CENSUS=trace places each allocation after the launches before it"
else
    fail "SS_EMU_CENSUS=trace" "exit $rc: $(printf '%s\n' "$out" | grep trace | head -n 5)"
fi
# SS_EMU_HOST_ONLY: the same launches and products asked for, none computed (the losses read
# back are the zeros of fresh device memory), so that the run's time is its host side's
launches() { printf '%s\n' "$1" | awk '$1 == "cuda_emu" && $3 ~ /^ss_k_/ { print $3, $4 }'; }
full=$out
out=$(run cuda "$TMP/host.h5" SS_EMU_CENSUS=1 SS_EMU_HOST_ONLY=1 2>&1 >/dev/null); rc=$?
zeros=$(h5dump -d /clean/loss "$TMP/host.h5" 2>/dev/null | awk '/DATA \{/ { getline; print; exit }')
if [ $rc = 0 ] && [ -n "$(launches "$out")" ] && [ "$(launches "$out")" = "$(launches "$full")" ] &&
    printf '%s\n' "$zeros" | grep -qE '^ *\(0\): 0(, 0)*$'; then
    pass "SS_EMU_HOST_ONLY: the same launches, nothing computed (clean losses $zeros)"
else
    fail "SS_EMU_HOST_ONLY" "exit $rc; losses '$zeros'; $(diff <(launches "$full") <(launches "$out") | head -n 4)"
fi
out=$(run cuda "$TMP/gpu3.h5" 2>&1 >/dev/null); [ -z "$(printf '%s' "$out" | grep census)" ] &&
    pass "no census without SS_EMU_CENSUS" || fail "census printed unasked" "$(printf '%s' "$out" | head -n 3)"
expect_fail "a plugin directory without the plugin is named" "$TMP/none/libsubscope-cuda.so: not found" \
    env SUBSCOPE_PLUGIN_DIR="$TMP/none" "$SUBSCOPE" ablate --model "$M" --input "$TMP/p.jsonl" \
    --masks "$TMP/masks.jsonl" --device cuda --out "$TMP/x.h5"
[ ! -e "$TMP/x.h5" ] && pass "no output file when the plugin is missing" || fail "output file left behind"
# The CUDA backend's settings are read strictly when it opens: a value it does not take stops the
# command (exit 1, no output file) with a message naming the variable, the value and what it takes.
# Before, SUBSCOPE_PAD_PRODUCTS=1x, SUBSCOPE_FUSE=off, SUBSCOPE_LT_WORKSPACE_MB=' 8' and
# SUBSCOPE_ATTN_GEMM_MIN_LEN=-1 ran with the default (or 8) without a word, and
# SUBSCOPE_COV_KERNEL=tensor was refused only by collect.
for s in "SUBSCOPE_PAD_PRODUCTS=1x|a whole number of bytes in 0..1099511627776" "SUBSCOPE_FUSE=off|1 (on) or 0 (off)" \
    "SUBSCOPE_LT_WORKSPACE_MB= 8|a whole number of MB in 0..65536" \
    "SUBSCOPE_ATTN_GEMM_MIN_LEN=-1|a whole number of tokens in 0..2147483647" \
    "SUBSCOPE_COV_KERNEL=tensor|1, ssyrk, tc, wg, blk or rec" "SUBSCOPE_MLP16=+1|1 or unset (on) or 0 (off)"; do
    kv=${s%%|*} var=${kv%%=*} val=${kv#*=}
    rm -f "$TMP/bad.h5"
    expect_fail "--device cuda: $var='$val' refused" "error: cuda:0: $var='$val': must be ${s#*|}" run cuda "$TMP/bad.h5" "$kv"
    [ ! -e "$TMP/bad.h5" ] || fail "--device cuda: $var='$val' left an output file"
done
# The emulator's own settings too (exit 2 from the emulator, naming the value).
for kv in SS_EMU_CENSUS=yes SS_EMU_HOST_ONLY=2; do
    out=$(run cuda "$TMP/bad.h5" "$kv" 2>&1 >/dev/null); rc=$?
    case "$rc:$out" in 0:*) fail "$kv refused" "exit 0" ;;
    *"cuda_emu: error: ${kv%%=*}='${kv#*=}': must be"*) pass "$kv refused (exit $rc)" ;;
    *) fail "$kv refused naming it" "exit $rc: $(printf '%s' "$out" | tail -n 2)" ;; esac
done
# A NaN or an infinity in a weight is found as the weights go to the device: float32 weights
# uploaded from the file in place, bfloat16 ones uploaded as they are.
nonfinite_case() { # nonfinite_case NAME DTYPE BYTES WANTED
    local d=$TMP/nf_$2 out rc size
    "${TOOLBIN}mkmodel" --out "$d" --layers 2 --d 64 --heads 4 --vocab 300 --positions 32 --seed 3 --dtype "$2" >/dev/null
    size=$(stat -c %s "$d/model.safetensors")
    printf "$3" | dd of="$d/model.safetensors" bs=1 seek=$((size - ${#3} / 4)) conv=notrunc 2>/dev/null
    out=$(SUBSCOPE_PLUGIN_DIR="$EMU" "$SUBSCOPE" forward --model "$d" --input "$TMP/p.jsonl" --device cuda \
        --out "$TMP/nf.h5" 2>&1); rc=$?
    if [ $rc = 1 ] && printf '%s' "$out" | grep -q "$4" && [ ! -e "$TMP/nf.h5" ]; then pass "$1"
    else fail "$1" "exit $rc: $(printf '%s' "$out" | tail -n 2)"; fi
}
nonfinite_case "a NaN in float32 weights is refused on the device path" f32 '\x00\x00\xc0\x7f' \
    "model.safetensors: tensor '.*' holds NaN at element [0-9]*.*; the weights are corrupt"
nonfinite_case "an infinity in bfloat16 weights is refused on the device path" bf16 '\x80\x7f' \
    "model.safetensors: tensor '.*' holds an infinity at element [0-9]*.*; the weights are corrupt"

# predict --generate on the CUDA backend keeps keys and values too (attention_kv,
# kernels/attention_kv.cu): a random GPT-2 (57-token prompt) and a Llama with grouped (4/2)
# key/value heads and rotations (60 tokens), 12 tokens past the context of 64, give the CPU's
# (cached) continuation byte for byte; the census counts the cached kernel once a layer for
# each token up to the context (64 - n passes) and a full-prompt attention (any other
# ss_k_attn_* or the causal softmax) for the prompt's pass, which fills the cache, and for the
# tokens past the context, which recompute
"${TOOLBIN}mkmodel" --out "$TMP/g" --vocab 1024 --positions 64 --std 0.3 >/dev/null && cp models/tiny-gpt2/tokenizer.json "$TMP/g/"
"${TOOLBIN}mkmodel" --out "$TMP/gl" --family llama --heads 4 --kv-heads 2 --vocab 300 --positions 64 --std 0.3 >/dev/null &&
    cp "$SS_TEST_DATA/llama-gguf/hf/tokenizer.json" "$TMP/gl/"
pg=$(printf 'one two %.0s' $(seq 1 28))
pl=$(printf 'one two %.0s' $(seq 1 10))
launches() { # launches FILE REGEX: the launches of the census's kernels whose names match
    awk -v re="$2" '$1 == "cuda_emu" && $2 == "census:" && $3 ~ re { s += $4 } END { print s + 0 }' "$1"
}
for c in "g:$pg" "gl:$pl"; do
    mm=${c%%:*} pr=${c#*:}
    n=$("$SUBSCOPE" tokenize --model "$TMP/$mm" --text "$pr" | tr ',' '\n' | wc -l)
    gc=$(SUBSCOPE_PLUGIN_DIR="$EMU" SS_EMU_CENSUS=1 "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 12 --device cuda 2>"$TMP/gc.err")
    gp=$("$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 12 --device cpu 2>"$TMP/gp.err")
    kv=$(launches "$TMP/gc.err" '^ss_k_attn_kv$')
    full=$(launches "$TMP/gc.err" '^(ss_k_attn_|ss_k_softmax_causal$)')
    full=$((full - kv - $(launches "$TMP/gc.err" '^ss_k_attn_kv_merge$')))
    want_kv=$((2 * (64 - n))) want_full=$((2 * (12 - (64 - n))))
    if [ -n "$gc" ] && [ "$gc" = "$gp" ] && [ "${#gc}" -gt "${#pr}" ] && [ "$kv" = "$want_kv" ] && [ "$full" = "$want_full" ]; then
        pass "predict --generate --device cuda with the key/value cache = the CPU's continuation ($mm, $n tokens; $kv cached attentions, $full full)"
    else
        fail "predict --generate on the emulated plugin ($mm, $n tokens)" "cuda: $gc $(tail -n 2 "$TMP/gc.err" | grep -v census)" \
            "cpu:  $gp $(tail -n 2 "$TMP/gp.err")" "ss_k_attn_kv launches $kv (want $want_kv), full-prompt attention $full (want $want_full)"
    fi
done

# A cache long enough to split its keys over blocks (kernels/attention_kv.cu: one row of 4
# heads leaves the emulation's 16 SMs idle, and the cache holds 512 keys or more): a GPT-2 of
# 640 positions after a 561-token prompt gives the CPU's continuation byte for byte, each
# cached pass running the cached kernel with two splits and the merge kernel once a layer
"${TOOLBIN}mkmodel" --out "$TMP/gs" --vocab 1024 --positions 640 --std 0.3 >/dev/null && cp models/tiny-gpt2/tokenizer.json "$TMP/gs/"
pr=$(printf 'one two %.0s' $(seq 1 280))
gc=$(SUBSCOPE_PLUGIN_DIR="$EMU" SS_EMU_CENSUS=1 "$SUBSCOPE" predict --model "$TMP/gs" --prompt "$pr" --generate 6 --device cuda 2>"$TMP/gc.err")
gp=$("$SUBSCOPE" predict --model "$TMP/gs" --prompt "$pr" --generate 6 --device cpu 2>"$TMP/gp.err")
kv=$(launches "$TMP/gc.err" '^ss_k_attn_kv$') merge=$(launches "$TMP/gc.err" '^ss_k_attn_kv_merge$')
kvb=$(awk '$1 == "cuda_emu" && $2 == "census:" && $3 == "ss_k_attn_kv" { print $5 }' "$TMP/gc.err")
if [ -n "$gc" ] && [ "$gc" = "$gp" ] && [ "${#gc}" -gt "${#pr}" ] && [ "$kv" = 10 ] && [ "$merge" = 10 ] && [ "$kvb" = 80 ]; then
    pass "predict --generate --device cuda with a split long cache = the CPU's continuation (561 tokens; $kv cached attentions, $merge merges)"
else
    fail "predict --generate with a split long cache on the emulated plugin" "cuda: $gc $(tail -n 2 "$TMP/gc.err" | grep -v census)" \
        "cpu:  $gp $(tail -n 2 "$TMP/gp.err")" "ss_k_attn_kv launches $kv (want 10) of $kvb blocks (want 80), merges $merge (want 10)"
fi

# A 16-bit model's cache holds its dtype on the GPU (half fp32's bytes; the cache's rows
# written by ss_k_capture_to, once a layer for each pass, the prompt's included; none for an
# fp32 model): bf16 GPT-2 (57-token prompt) and grouped-query Llama of heads of 64 (60
# tokens), 12 tokens past the context of 64, give the CPU's bf16 continuation (its cache fp32)
# byte for byte; float16 weights (GPU only) give the GPU's recompute's
"${TOOLBIN}mkmodel" --out "$TMP/gb" --vocab 1024 --positions 64 --std 0.3 --dtype bf16 >/dev/null &&
    cp models/tiny-gpt2/tokenizer.json "$TMP/gb/"
"${TOOLBIN}mkmodel" --out "$TMP/glb" --family llama --d 128 --heads 2 --kv-heads 1 --vocab 300 --positions 64 --std 0.3 \
    --dtype bf16 >/dev/null && cp "$SS_TEST_DATA/llama-gguf/hf/tokenizer.json" "$TMP/glb/"
pg=$(printf 'one two %.0s' $(seq 1 28))
for c in "gb:$pg:bfloat16" "glb:$pl:bfloat16" "gb:$pg:float16" "g:$pg:float32"; do
    mm=${c%%:*} rest=${c#*:} dt=${c##*:}
    pr=${rest%:*}
    n=$("$SUBSCOPE" tokenize --model "$TMP/$mm" --text "$pr" | tr ',' '\n' | wc -l)
    gc=$(SUBSCOPE_PLUGIN_DIR="$EMU" SS_EMU_CENSUS=1 "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 12 --device cuda --dtype $dt 2>"$TMP/gc.err")
    if [ "$dt" = float16 ]; then
        gp=$(SUBSCOPE_PLUGIN_DIR="$EMU" SUBSCOPE_PREDICT_RECOMPUTE=1 "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 12 --device cuda --dtype $dt 2>"$TMP/gp.err")
    else
        gp=$("$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 12 --device cpu --dtype $dt 2>"$TMP/gp.err")
    fi
    to=$(launches "$TMP/gc.err" '^ss_k_capture_to$') want_to=$((2 * (64 - n + 1)))
    [ "$dt" = float32 ] && want_to=0
    if [ -n "$gc" ] && [ "$gc" = "$gp" ] && [ "${#gc}" -gt "${#pr}" ] && [ "$to" = "$want_to" ]; then
        pass "predict --generate --device cuda --dtype $dt, the cache in its dtype = the $([ "$dt" = float16 ] && echo "GPU's recompute" || echo "CPU's continuation") ($mm, $n tokens; $to 16-bit cache writes)"
    else
        fail "predict --generate --dtype $dt on the emulated plugin ($mm, $n tokens)" "cuda: $gc $(tail -n 2 "$TMP/gc.err" | grep -v census)" \
            "ref:  $gp $(tail -n 2 "$TMP/gp.err")" "ss_k_capture_to launches $to (want $want_to)"
    fi
done

# trace's forward-mode attribution through the plugin (norm_jvp, swiglu_jvp, attention_jvp and
# the tangent's matrix products on the device, the seeds through host copies) = the CPU's
# prefixes, for the bundled GPT-2 and a grouped-query Llama: sub-models over q (rotated and
# not), k at some positions, z, the MLP's gate and linear halves, ln2, the final norm and
# several sites at once. 2e-5 + 1e-4 relative, as the plugin's other comparisons with the CPU
# (its products sum in another order).
"${TOOLBIN}mkmodel" --out "$TMP/tl" --family llama --layers 2 --d 64 --heads 4 --kv-heads 2 --vocab 50257 --std 0.2 \
    --seed 3 >/dev/null && cp "${SS_TEST_DATA:-tests/data}/gpt2-tokenizer/tokenizer.json" "$TMP/tl/"
printf '%s\n' '{"name": "rq", "site": "blocks.0.attn.hook_rot_q", "units": [1, 3, 17, 40]}' \
    '{"name": "q", "site": "blocks.1.attn.hook_q", "heads": [2]}' \
    '{"name": "kpos", "site": "blocks.0.attn.hook_k", "positions": [0, 2, 5]}' \
    '{"name": "z", "site": "blocks.1.attn.hook_z", "heads": [0]}' \
    '{"name": "gate", "site": "blocks.0.mlp.hook_pre", "units": [5, 50, 200]}' \
    '{"name": "lin", "site": "blocks.1.mlp.hook_pre_linear", "units": [7, 8]}' \
    '{"name": "ln2", "site": "blocks.0.ln2.hook_normalized", "positions": [3]}' \
    '{"name": "lnf", "site": "ln_final.hook_normalized", "units": [9, 10]}' \
    '{"name": "multi", "sites": [{"site": "hook_embed", "units": [1]}, {"site": "blocks.1.hook_resid_mid"}], "positions": [1, 4]}' \
    >"$TMP/tl.jsonl"
printf '%s\n' '{"name": "mlp", "site": "blocks.1.mlp.hook_post", "units": [10, 20, 30]}' \
    '{"name": "z", "site": "blocks.2.attn.hook_z", "heads": [1], "positions": [2, 6]}' \
    '{"name": "pos", "sites": [{"site": "hook_pos_embed", "units": [0, 5]}, {"site": "blocks.0.hook_attn_out"}]}' \
    >"$TMP/tg.jsonl"
# A Llama whose residual stream (64) is wider than q|k|v ((2 + 2) x 8) and the MLP's gate|up
# (2 x 16): a seed on it goes through host copies as wide as the widest of the three (they were
# sized for the wider of the other two: 32 floats a row, 64 read into them).
"${TOOLBIN}mkmodel" --out "$TMP/tn" --family llama --layers 2 --d 64 --heads 2 --kv-heads 1 --head-dim 8 --inner 16 \
    --vocab 50257 --std 0.2 --seed 4 >/dev/null && cp "${SS_TEST_DATA:-tests/data}/gpt2-tokenizer/tokenizer.json" "$TMP/tn/"
printf '%s\n' '{"name": "resid", "site": "blocks.1.hook_resid_pre", "positions": [1, 3]}' \
    '{"name": "out", "sites": [{"site": "blocks.0.hook_mlp_out", "units": [3, 60]}, {"site": "blocks.1.attn.hook_k"}]}' >"$TMP/tn.jsonl"
for c in "$TMP/tl:tl:Llama" "models/tiny-gpt2:tg:GPT-2" "$TMP/tn:tn:narrow-head Llama"; do
    mm=${c%%:*} rest=${c#*:}; js=${rest%%:*} fam=${rest#*:}
    tp="The cow lives on a farm. The cow says moo"
    SUBSCOPE_PLUGIN_DIR="$EMU" "$SUBSCOPE" trace --model "$mm" --prompt "$tp" --submodels "$TMP/$js.jsonl" --device cuda \
        --attribution-pass forward --out "$TMP/$js-gpu.h5" >/dev/null 2>"$TMP/err" &&
        "$SUBSCOPE" trace --model "$mm" --prompt "$tp" --submodels "$TMP/$js.jsonl" --device cpu \
            --attribution-pass prefixes --out "$TMP/$js-cpu.h5" >/dev/null 2>>"$TMP/err" &&
        out=$("${TOOLBIN}h5cmp" --atol 2e-5 --rtol 1e-4 --only /submodels "$TMP/$js-cpu.h5" "$TMP/$js-gpu.h5") &&
        [ "$(h5dump -a /attribution_pass "$TMP/$js-gpu.h5" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"/\1/p')" = forward ] &&
        pass "$fam: trace --device cuda, forward-mode attribution = the CPU's prefixes ($(grep -c . "$TMP/$js.jsonl") sub-models; 2e-5 + 1e-4 relative)" ||
        fail "$fam: trace's forward mode on the emulated plugin" "$(tail -n 3 "$TMP/err"; printf '%s\n' "$out" | grep -v ' ok$' | head -n 4)"
done

# A device too small for trace's forward-mode pass but not for the prefixes (SS_EMU_DEVICE_MB,
# SS_EMU_HOST_ONLY: the allocations are real, the arithmetic is skipped): a 4300-token prompt,
# for which auto picks forward mode (its speed), whose taped forward holds every block and all
# the logits while it computes attention scores. Measured: the prefixes need 163 MiB of this
# device, forward mode 169. auto falls back to the prefixes with a note (it failed with "out of
# GPU memory" before); --attribution-pass forward is refused with the allocation's error.
"${TOOLBIN}mkmodel" --out "$TMP/lp" --layers 1 --d 16 --heads 2 --vocab 1024 --positions 8192 --seed 3 >/dev/null &&
    cp models/tiny-gpt2/tokenizer.json "$TMP/lp/"
printf '{"name": "m", "site": "blocks.0.mlp.hook_post", "units": [1, 2, 3]}\n' >"$TMP/lp.jsonl"
lp=$(for i in $(seq 1 110); do printf '%s ' "The cow lives on a farm and the dog sleeps by the door while the cat watches birds in the old tree."; done)
out=$(SUBSCOPE_PLUGIN_DIR="$EMU" SS_EMU_DEVICE_MB=166 SS_EMU_HOST_ONLY=1 timeout 300 "$SUBSCOPE" trace --model "$TMP/lp" \
    --prompt "$lp" --submodels "$TMP/lp.jsonl" --device cuda --out "$TMP/lp-auto.h5" 2>&1); rc=$?
[ $rc = 0 ] && printf '%s' "$out" | grep -q "trace: attribution by prefixes (forward mode ran out of memory: .*out of GPU memory" &&
    [ "$(h5dump -a /attribution_pass "$TMP/lp-auto.h5" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"/\1/p')" = prefixes ] &&
    pass "trace on a 166 MiB device, 4300 tokens: auto's forward mode runs out of memory, the prefixes run instead, with a note" ||
    fail "trace's fall back to the prefixes on a full device" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
out=$(SUBSCOPE_PLUGIN_DIR="$EMU" SS_EMU_DEVICE_MB=166 SS_EMU_HOST_ONLY=1 timeout 300 "$SUBSCOPE" trace --model "$TMP/lp" \
    --prompt "$lp" --submodels "$TMP/lp.jsonl" --device cuda --attribution-pass forward --out "$TMP/lp-fwd.h5" 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "error: .*out of GPU memory" && [ ! -e "$TMP/lp-fwd.h5" ] &&
    pass "the same with --attribution-pass forward: exit 1, out of GPU memory, no output file" ||
    fail "trace --attribution-pass forward on a full device" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"

finish
