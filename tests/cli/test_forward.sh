#!/usr/bin/env bash
# forward against the Hugging Face goldens (tests/gen/gen_gpt2_goldens.py), batching
# independence, site selection, and every bad-input path of the forward command.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp

# Tolerance: fp32 engine vs fp32 PyTorch. Both accumulate in different orders
# (BLAS vs MKL/ATen, double-precision reductions here), so elements differ by
# a few ulps of the largest intermediate values (|x| ~ 10): 1e-4 absolute plus
# 1e-4 relative leaves a margin of ~50x over the errors measured (<= 2.4e-6).
TOL="--atol 1e-4 --rtol 1e-4"

# The Llama family (tests/gen/gen_llama_goldens.py): GQA, rotary scaling, biases, head_dim,
# F32/F16/BF16 and shards; measured max abs error 1.9e-5 (logits and every site).
for m in prefix-f32 noprefix-odd-untied f16-sharded bf16 llama-gqa-llama3 qwen2-bias-tied llama-hd6-bias mistral-small; do
    out=$TMP/$m.h5
    if "$SUBSCOPE" forward --model "$D/models/$m" --input "$D/golden/$m.jsonl" --out "$out" --sites '*' --batch 2 >/dev/null 2>"$TMP/err"; then
        if res=$("$H5CMP" $TOL "$D/golden/$m.h5" "$out" 2>&1); then pass "golden $m: logits and every site match transformers"
        else fail "golden $m" "$(printf '%s\n' "$res" | grep -E 'FAIL|h5cmp' | head -5)"; fi
    else
        fail "golden $m" "$(cat "$TMP/err")"
    fi
done
if [ -d "$D/models/tiny-gpt2" ] || [ -d models/tiny-gpt2 ]; then
    tiny=models/tiny-gpt2
    if "$SUBSCOPE" forward --model "$tiny" --input "$D/golden/tiny-gpt2.jsonl" --out "$TMP/tiny.h5" \
        --sites 'blocks.0.hook_resid_pre,blocks.1.mlp.hook_post,blocks.3.attn.hook_pattern,ln_final.hook_normalized' >/dev/null 2>"$TMP/err" &&
        res=$("$H5CMP" $TOL "$D/golden/tiny-gpt2.h5" "$TMP/tiny.h5" 2>&1); then
        pass "golden tiny-gpt2 (bundled model, text prompts through its tokenizer)"
    else fail "golden tiny-gpt2" "$(cat "$TMP/err")" "$(printf '%s\n' "${res:-}" | grep -E 'FAIL|h5cmp' | head -5)"; fi
fi

# Batch size must not change any result beyond rounding (packed sequences, no padding in
# compute). Results are not bit-identical: BLAS picks different kernels and blockings for
# different row counts (a 1-token batch is a matrix-vector product), so sums are ordered
# differently; 1e-5 is ~100 fp32 ulps of the largest activations here (|x| < 1).
m=noprefix-odd-untied
"$SUBSCOPE" forward --model "$D/models/$m" --input "$D/golden/$m.jsonl" --out "$TMP/b1.h5" --sites '*' --batch 1 2>/dev/null
"$SUBSCOPE" forward --model "$D/models/$m" --input "$D/golden/$m.jsonl" --out "$TMP/b5.h5" --sites '*' --batch 5 2>/dev/null
expect_ok "batch 1 and batch 5 agree within 1e-5" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-5 "$TMP/b1.h5" "$TMP/b5.h5"

# Only the requested sites are written; --no-logits drops /logits.
"$SUBSCOPE" forward --model "$D/models/$m" --input "$D/golden/$m.jsonl" --out "$TMP/sel.h5" \
    --sites 'blocks.*.mlp.hook_post' --no-logits 2>/dev/null
list=$(h5ls -r "$TMP/sel.h5" 2>/dev/null | awk '{print $1}' | grep -E '^/(acts/|logits)' | tr '\n' ' ')
if [ "$list" = "/acts/blocks.0.mlp.hook_post /acts/blocks.1.mlp.hook_post /acts/blocks.2.mlp.hook_post " ]; then
    pass "--sites glob selects exactly the matching sites; --no-logits"
else fail "--sites selection" "got: $list"; fi
# An option given twice keeps its last value (README): --sites is not a list of its occurrences.
"$SUBSCOPE" forward --model "$D/models/$m" --input "$D/golden/$m.jsonl" --out "$TMP/sel2.h5" \
    --sites 'blocks.0.mlp.hook_post' --sites 'blocks.1.mlp.hook_post' --no-logits 2>/dev/null
list=$(h5ls -r "$TMP/sel2.h5" 2>/dev/null | awk '{print $1}' | grep -E '^/acts/' | tr '\n' ' ')
[ "$list" = "/acts/blocks.1.mlp.hook_post " ] && pass "an option given twice keeps its last value, as README says" ||
    fail "--sites given twice" "got: $list"

# --loss: each prompt's mean next-token cross-entropy, against the clean losses that
# transformers computed for ablate's goldens (same model, same prompts; tolerance as there:
# 1e-5 absolute + 1e-4 relative on losses of ~1..5). Scored on the logits where they are
# (--no-logits) or from the host copy /logits takes: the same sums, bit for bit.
v1() { h5dump -y -m '%.9g' -d "$1" "$2" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }
AP=$D/ablate/prompts.jsonl
if "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$AP" --batch 3 --no-logits --loss --out "$TMP/loss.h5" 2>"$TMP/err" &&
    "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$AP" --batch 3 --loss --out "$TMP/loss2.h5" 2>>"$TMP/err"; then
    want=$(v1 /clean/loss "$D/golden/ablate-tiny-gpt2.h5") got=$(v1 /loss "$TMP/loss.h5")
    if [ -n "$got" ] && paste -d' ' <(printf '%s' "$want" | tr ',' '\n') <(printf '%s' "$got" | tr ',' '\n') |
        awk 'function a(x){return x<0?-x:x} NF != 2 || a($1-$2) > 1e-5 + 1e-4*a($1) {bad=1} END {exit bad || NR != 8}'; then
        pass "--loss equals transformers' per-prompt loss"
    else fail "--loss vs transformers" "want $want" "got  $got"; fi
    [ "$got" = "$(v1 /loss "$TMP/loss2.h5")" ] && pass "--loss with and without --no-logits: the same values, bit for bit" ||
        fail "--loss with and without --no-logits" "$got" "$(v1 /loss "$TMP/loss2.h5")"
    h5ls "$TMP/loss.h5/logits" >/dev/null 2>&1 && fail "--no-logits --loss stores no /logits" || pass "--no-logits --loss stores no /logits"
else fail "forward --loss runs" "$(cat "$TMP/err")"; fi
# A one-token prompt has no next token: NaN, and its neighbours are unaffected.
printf '{"tokens": [464, 397, 257]}\n{"tokens": [464]}\n' >"$TMP/one.jsonl"
"$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/one.jsonl" --no-logits --loss --out "$TMP/one.h5" 2>/dev/null
got=$(v1 /loss "$TMP/one.h5")
case "$got" in [0-9]*,nan) pass "--loss of a one-token prompt is NaN ($got)" ;; *) fail "--loss of a one-token prompt" "$got" ;; esac
sh=$("$SUBSCOPE" show "$TMP/one.h5" 2>&1)
printf '%s' "$sh" | grep -q "^loss (mean next-token cross-entropy, nats): [0-9.]* nan" &&
    printf '%s' "$sh" | grep -q "mean [0-9.]* over 1 prompts (one-token prompts have none)" &&
    pass "show prints the losses and their mean" || fail "show of a --loss file" "$sh"
# show checks the sizes a forward file declares before reading: a small file can declare billions of
# values never written, which read as the fill value (each was allocated whole before: gigabytes).
if python3 -c "import h5py" 2>/dev/null; then
    huge() { # huge IN OUT: IN with the datasets given as NAME:TYPE:DIMS (unwritten), and n_prompts N
        local out=$2; cp "$1" "$out" && shift 2 && python3 -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r+")
for a in sys.argv[2:]:
    name, t, dims = a.split(":")
    if name == "n_prompts": f.attrs.modify("n_prompts", int(dims)); continue
    dims = tuple(int(x) for x in dims.split(","))
    del f[name]
    f.create_dataset(name, shape=dims, dtype=t, chunks=tuple(min(d, 1 << 16) for d in dims))' "$out" "$@"
    }
    huge "$TMP/one.h5" "$TMP/hl.h5" tokens:i4:2147483648,3 lengths:i4:2147483648 n_prompts::2147483648
    expect_fail "show: /lengths of 2^31 prompts never written refused by its size" \
        "/lengths declares 8589934592 bytes but stores 0: most of it was never written" capped "$SUBSCOPE" show "$TMP/hl.h5"
    huge "$TMP/one.h5" "$TMP/hl2.h5" tokens:i4:3,3 lengths:i4:3
    expect_fail "show: /lengths of another count than n_prompts refused" \
        "/lengths has 3 values for the 2 prompts of n_prompts" "$SUBSCOPE" show "$TMP/hl2.h5"
    huge "$TMP/one.h5" "$TMP/ht.h5" tokens:i4:2,1073741824
    expect_fail "show: /tokens of 2^30 positions for prompts of 3 refused before reading" \
        "/tokens has 1073741824 positions, not the 3 of the longest prompt in /lengths" capped "$SUBSCOPE" show "$TMP/ht.h5"
    huge "$TMP/one.h5" "$TMP/hs.h5" loss:f4:2147483648
    expect_fail "show: /loss of 2^31 values for 2 prompts refused before reading" \
        "/loss holds 2147483648 values, not the 2 expected" capped "$SUBSCOPE" show "$TMP/hs.h5"
    # /logits and activations: only the prompts' own positions are written, and stored (a row of
    # logits of 2^31 values was allocated and read, and each prompt's [T, 2^31] activations).
    "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/one.jsonl" --sites blocks.0.mlp.hook_post --out "$TMP/la.h5" 2>/dev/null
    "$SUBSCOPE" show "$TMP/la.h5" >"$TMP/la.txt" 2>&1 && grep -q "^  \[1\] " "$TMP/la.txt" && grep -q "^  blocks.0.mlp.hook_post: most active" "$TMP/la.txt" &&
        pass "show of a forward file with logits and activations" || fail "show of a forward file" "$(tail -5 "$TMP/la.txt")"
    for d in logits acts/blocks.0.mlp.hook_post; do
        huge "$TMP/la.h5" "$TMP/hw.h5" $d:f4:2,3,2147483648
        expect_fail "show: /$d of width 2^31 never written refused by its size" \
            "/$d stores 0 bytes, under 1/2048 of the 34359738368 its written part declares" capped "$SUBSCOPE" show "$TMP/hw.h5"
    done
else pass "show of huge declared datasets not tested: needs python3 with h5py"; fi

# A UTF-8 byte-order mark at the start of a prompt file is not text: a plain-text file's first
# prompt tokenizes as without it, and a JSONL file not named .jsonl is still read as JSONL.
printf 'The cat says\r\nHi\r\n' >"$TMP/nobom.txt"
printf '\357\273\277The cat says\r\nHi\r\n' >"$TMP/bom.txt"
printf '\357\273\277{"text": "The cat says"}\n{"text": "Hi"}\n' >"$TMP/bomjson.txt"
tk() { h5dump -y -d /tokens "$1" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }
if "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/nobom.txt" --no-logits --out "$TMP/nobom.h5" 2>"$TMP/err" &&
    "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/bom.txt" --no-logits --out "$TMP/bom.h5" 2>>"$TMP/err" &&
    "$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/bomjson.txt" --no-logits --out "$TMP/bomjson.h5" 2>>"$TMP/err"; then
    want=$(tk "$TMP/nobom.h5")
    [ -n "$want" ] && [ "$(tk "$TMP/bom.h5")" = "$want" ] && [ "$(tk "$TMP/bomjson.h5")" = "$want" ] &&
        pass "a byte-order mark at a prompt file's start is skipped (plain text and JSONL): $want" ||
        fail "byte-order mark at a prompt file's start" "want $want" "got  $(tk "$TMP/bom.h5") and $(tk "$TMP/bomjson.h5")"
else fail "prompt files with a byte-order mark" "$(cat "$TMP/err")"; fi

# Provenance attributes.
attrs=$(h5dump -A "$TMP/sel.h5" 2>/dev/null)
ok=1
for a in format_version subscope_version git_commit command_line created model_path model_config dtype device; do
    printf '%s' "$attrs" | grep -q "ATTRIBUTE \"$a\"" || { ok=0; missing=$a; }
done
if [ $ok = 1 ] && printf '%s' "$attrs" | grep -q "blocks.\*.mlp.hook_post"; then pass "root provenance attributes present"
else fail "root provenance attributes" "missing ${missing:-command line}"; fi
# The process's peak resident host memory: more than the model's 3.6 MiB of float32 weights, less than 1 GiB.
hp=$(h5dump -a /host_memory_peak_bytes "$TMP/sel.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ -n "$hp" ] && [ "$hp" -gt 3800000 ] && [ "$hp" -lt 1073741824 ] && pass "host_memory_peak_bytes recorded ($hp)" ||
    fail "host_memory_peak_bytes" "'$hp'"
# bf16 products on the CPU widen their weights a panel at a time, so a bf16 forward holds less
# than a float32 one: here the unembedding (vocab 400000 x d 64) is 51 MB in bf16 and 102 MB
# widened, which the whole-matrix product made on every call (then the bf16 run's peak was
# 188 MiB against the float32 run's 159; now 110).
"${TOOLBIN}mkmodel" --out "$TMP/wide" --layers 1 --d 64 --heads 2 --vocab 400000 --positions 16 --dtype bf16 \
    --prompts "$TMP/wide.jsonl" --lengths 8,8 >/dev/null
peak() { h5dump -a /host_memory_peak_bytes "$1" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p'; }
if SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/wide" --input "$TMP/wide.jsonl" --out "$TMP/w32.h5" --device cpu \
    --no-logits --loss 2>"$TMP/err" && SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/wide" \
    --input "$TMP/wide.jsonl" --out "$TMP/w16.h5" --device cpu --dtype bfloat16 --no-logits --loss 2>"$TMP/err"; then
    p32=$(peak "$TMP/w32.h5") p16=$(peak "$TMP/w16.h5")
    [ -n "$p32" ] && [ -n "$p16" ] && [ "$p16" -lt "$p32" ] &&
        pass "bf16 forward's peak host memory below float32's: $((p16 >> 20)) < $((p32 >> 20)) MiB" ||
        fail "bf16 forward's peak host memory" "bf16 '$p16' bytes, float32 '$p32'"
else fail "forward of a vocabulary-400000 model" "$(cat "$TMP/err")"; fi
# The logits go to the writer as the forward's packed rows, each prompt's own: their padding is the
# dataset's fill value (NaN), neither held nor stored. One batch of prompts of lengths 128 and 7 x 4
# (vocabulary 40000): the rows are 25 MB, the NaN-padded [8, 128, 40000] batch that the whole batch
# once was copied into 164 MB (then the peak with logits was 184 MiB above that without; now 27).
"${TOOLBIN}mkmodel" --out "$TMP/lgm" --layers 1 --d 16 --heads 2 --vocab 40000 --positions 128 \
    --prompts "$TMP/lgm.jsonl" --lengths 128,4,4,4,4,4,4,4 >/dev/null
if SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/lgm" --input "$TMP/lgm.jsonl" --out "$TMP/lg0.h5" --device cpu \
    --batch 8 --no-logits 2>"$TMP/err" && SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/lgm" \
    --input "$TMP/lgm.jsonl" --out "$TMP/lg1.h5" --device cpu --batch 8 2>"$TMP/err"; then
    p0=$(peak "$TMP/lg0.h5") p1=$(peak "$TMP/lg1.h5") rows=$(((128 + 7 * 4) * 40000 * 4))
    [ -n "$p0" ] && [ -n "$p1" ] && [ $((p1 - p0)) -lt $((2 * rows)) ] &&
        pass "forward's logits held once, packed: peak $(((p1 - p0) >> 20)) MiB above --no-logits (rows $((rows >> 20)) MiB)" ||
        fail "forward's peak host memory with logits" "'$p1' bytes, '$p0' without, rows $rows"
    sz=$(stat -c %s "$TMP/lg1.h5")
    [ "$sz" -lt $((2 * rows)) ] && pass "forward's logits file stores no padding ($((sz >> 20)) MiB)" ||
        fail "forward's logits file size" "$sz bytes, rows $rows"
    cell() { h5dump -d /logits -s "$1" -c 1,1,2 "$TMP/lg1.h5" 2>/dev/null | sed -n 's/^ *([0-9,]*): \(.*\)/\1/p' | head -n 1 | tr -d ' '; }
    pad=$(cell 1,4,39998) row=$(cell 1,3,39998)
    [ "$pad" = "nan,nan" ] && [ -n "$row" ] && [ "${row#*nan}" = "$row" ] &&
        pass "forward's padding reads as NaN, the rows as numbers ($row)" || fail "forward's NaN padding" "'$pad', '$row'"
else fail "forward of a vocabulary-40000 model" "$(cat "$TMP/err")"; fi
# The per-token sites too: prompts of lengths 1024 and 7 x 4, MLP width 1024, five sites of
# 2816 floats a token: the rows are 11 MiB, the NaN-padded batch 88 MiB (then the peak with the
# sites was 83 MiB above that without; now 16).
"${TOOLBIN}mkmodel" --out "$TMP/stm" --layers 1 --d 256 --heads 4 --vocab 64 --positions 1024 \
    --prompts "$TMP/stm.jsonl" --lengths 1024,4,4,4,4,4,4,4 >/dev/null
if SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/stm" --input "$TMP/stm.jsonl" --out "$TMP/st0.h5" --device cpu \
    --batch 8 --no-logits 2>"$TMP/err" && SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/stm" \
    --input "$TMP/stm.jsonl" --out "$TMP/st1.h5" --device cpu --batch 8 --no-logits \
    --sites 'blocks.0.mlp.*,blocks.0.hook_resid*' 2>"$TMP/err"; then
    p0=$(peak "$TMP/st0.h5") p1=$(peak "$TMP/st1.h5") rows=$(((1024 + 7 * 4) * 2816 * 4))
    [ -n "$p0" ] && [ -n "$p1" ] && [ $((p1 - p0)) -lt $((3 * rows)) ] &&
        pass "forward's per-token sites held once, packed: peak $(((p1 - p0) >> 20)) MiB above none (rows $((rows >> 20)) MiB)" ||
        fail "forward's peak host memory with sites" "'$p1' bytes, '$p0' without, rows $rows"
    # The attention patterns too, each prompt's own [4, len, len] (16 MiB, and the forward's pattern
    # as much again), not a NaN-padded [8, 4, 1024, 1024] batch of 128 MiB (then the peak with the
    # pattern was 147 MiB above none; now 33).
    if SUBSCOPE_THREADS=2 "$SUBSCOPE" forward --model "$TMP/stm" --input "$TMP/stm.jsonl" --out "$TMP/st2.h5" \
        --device cpu --batch 8 --no-logits --sites 'blocks.0.attn.hook_pattern' 2>"$TMP/err"; then
        p2=$(peak "$TMP/st2.h5") sq=$(((1024 * 1024 + 7 * 4 * 4) * 4 * 4))
        [ -n "$p0" ] && [ -n "$p2" ] && [ $((p2 - p0)) -lt $((4 * sq)) ] &&
            pass "forward's patterns held packed: peak $(((p2 - p0) >> 20)) MiB above none (patterns $((sq >> 20)) MiB)" ||
            fail "forward's peak host memory with patterns" "'$p2' bytes, '$p0' without, patterns $sq"
        cell() { h5dump -d /acts/blocks.0.attn.hook_pattern -s "$1" -c 1,1,1,2 "$TMP/st2.h5" 2>/dev/null |
            sed -n 's/^ *([0-9,]*): \(.*\)/\1/p' | head -n 1 | tr -d ' '; }
        pad=$(cell 1,3,3,4) padq=$(cell 1,3,4,0) sq1=$(cell 1,3,3,3) big=$(cell 0,3,1023,1022)
        [ "$pad" = "nan,nan" ] && [ "$padq" = "nan,nan" ] && [ -n "$sq1" ] && [ "${sq1#*nan}" != "$sq1" ] && [ "${sq1%%,*}" != nan ] &&
            [ -n "$big" ] && [ "${big#*nan}" = "$big" ] &&
            pass "forward's pattern padding reads as NaN, each prompt's square as numbers ($sq1, $big)" ||
            fail "forward's pattern NaN padding" "'$pad', '$padq', '$sq1', '$big'"
    else fail "forward of a 1024-position model with patterns" "$(cat "$TMP/err")"; fi
else fail "forward of a 1024-position model with sites" "$(cat "$TMP/err")"; fi

# ---- bad input: exit 1, a message naming the culprit, no output file ----
P=$D/golden/$m.jsonl
M=$D/models/$m
expect_fail "unknown site named" "unknown site 'blocks.0.mlp.hook_postt'" \
    "$SUBSCOPE" forward --model "$M" --input "$P" --out "$TMP/x.h5" --sites 'blocks.0.mlp.hook_postt'
printf '{"tokens": [1, 2]}\n{"tokens": [1, 2\n' >"$TMP/bad.jsonl"
expect_fail "invalid JSONL names file and line" "bad.jsonl:2:" "$SUBSCOPE" forward --model "$M" --input "$TMP/bad.jsonl" --out "$TMP/x.h5"
printf '{"tokens": [1, 2]}\n{"txt": "a"}\n' >"$TMP/bad2.jsonl"
expect_fail "JSONL line without text/tokens" "bad2.jsonl:2: each line needs exactly one of" "$SUBSCOPE" forward --model "$M" --input "$TMP/bad2.jsonl" --out "$TMP/x.h5"
printf '{"tokens": [1, 100000]}\n' >"$TMP/bad3.jsonl"
expect_fail "token id beyond vocabulary" "token id 100000 is outside the vocabulary" "$SUBSCOPE" forward --model "$M" --input "$TMP/bad3.jsonl" --out "$TMP/x.h5"
python_free_long=$(printf '1, %.0s' $(seq 1 30))
printf '{"tokens": [%s 1]}\n' "$python_free_long" >"$TMP/long.jsonl"
expect_fail "prompt longer than n_positions" "prompt has 31 tokens, more than the limit 24" "$SUBSCOPE" forward --model "$M" --input "$TMP/long.jsonl" --out "$TMP/x.h5"
expect_ok "--truncate cuts long prompts" "$SUBSCOPE" forward --model "$M" --input "$TMP/long.jsonl" --out "$TMP/trunc.h5" --truncate
[ "$(h5dump -d /lengths "$TMP/trunc.h5" 2>/dev/null | grep -m1 '(0):' | tr -d ' ')" = "(0):24" ] && pass "truncated length is n_positions" || fail "truncated length is n_positions"
expect_fail "missing input file" "nope.jsonl: cannot open" "$SUBSCOPE" forward --model "$M" --input "$TMP/nope.jsonl" --out "$TMP/x.h5"
expect_fail "missing model directory" "config.json: cannot open" "$SUBSCOPE" forward --model "$TMP/nomodel" --input "$P" --out "$TMP/x.h5"

# Corrupt weights: truncated file, header pointing outside the file.
cp -r "$M" "$TMP/trunc_model"
size=$(stat -c %s "$M/model.safetensors")
head -c $((size - 100)) "$M/model.safetensors" >"$TMP/trunc_model/model.safetensors"
expect_fail "truncated safetensors" "trunc_model/model.safetensors" "$SUBSCOPE" forward --model "$TMP/trunc_model" --input "$P" --out "$TMP/x.h5"
cp -r "$M" "$TMP/hdr_model"
printf '\xff\xff\xff\x00\x00\x00\x00\x00' | dd of="$TMP/hdr_model/model.safetensors" bs=1 count=8 conv=notrunc 2>/dev/null
expect_fail "header length beyond the file" "hdr_model/model.safetensors" "$SUBSCOPE" forward --model "$TMP/hdr_model" --input "$P" --out "$TMP/x.h5"
# A NaN or an infinity in a weight the model uses: refused, naming the file, tensor and element.
cp -r "$M" "$TMP/nan_model"
size=$(stat -c %s "$M/model.safetensors")
printf '\x00\x00\xc0\x7f' | dd of="$TMP/nan_model/model.safetensors" bs=1 seek=$((size - 4)) conv=notrunc 2>/dev/null
expect_fail "NaN in a float32 weight" "nan_model/model.safetensors: tensor 'wte.weight' holds NaN at element 2423 (row 100, column 23); the weights are corrupt" \
    "$SUBSCOPE" forward --model "$TMP/nan_model" --input "$P" --out "$TMP/x.h5"
cp -r "$D/models/bf16" "$TMP/inf_model"
size=$(stat -c %s "$D/models/bf16/model.safetensors")
printf '\x80\xff' | dd of="$TMP/inf_model/model.safetensors" bs=1 seek=$((size - 2)) conv=notrunc 2>/dev/null
expect_fail "infinity in a bfloat16 weight" "tensor 'wte.weight' holds an infinity at element" \
    "$SUBSCOPE" forward --model "$TMP/inf_model" --input "$D/golden/bf16.jsonl" --out "$TMP/x.h5"
expect_ok "info still opens a model with a NaN weight" "$SUBSCOPE" info --model "$TMP/nan_model"
# A weight stored as integers (same byte size: the header says I32 for F32 data) is refused by
# name when the model is opened, by info too: it used to pass info as "F32,I32 in the files".
cp -r "$D/models/noprefix-odd-untied" "$TMP/int_model"
key='"h.0.attn.c_attn.weight":{"dtype":"'
off=$(grep -abo -F "$key" "$TMP/int_model/model.safetensors" | head -n 1 | cut -d: -f1)
printf 'I' | dd of="$TMP/int_model/model.safetensors" bs=1 seek=$((off + ${#key})) conv=notrunc 2>/dev/null
msg="int_model/model.safetensors: tensor 'h.0.attn.c_attn.weight' has dtype I32; weights must be F32, F16, BF16 or F64"
expect_fail "an I32 weight is refused by info" "$msg" "$SUBSCOPE" info --model "$TMP/int_model"
expect_fail "an I32 weight is refused by forward" "$msg" "$SUBSCOPE" forward --model "$TMP/int_model" \
    --input "$D/golden/noprefix-odd-untied.jsonl" --out "$TMP/x.h5"
cp -r "$M" "$TMP/cfg_model"
sed -i 's/"n_embd": 24/"n_embd": 48/' "$TMP/cfg_model/config.json"
expect_fail "config disagrees with the weights" "has shape [101,24] but config.json implies [101,48]" "$SUBSCOPE" forward --model "$TMP/cfg_model" --input "$P" --out "$TMP/x.h5"
printf '{"n_layer": 2,' >"$TMP/cfg_model/config.json"
expect_fail "invalid config.json" "cfg_model/config.json:1:" "$SUBSCOPE" forward --model "$TMP/cfg_model" --input "$P" --out "$TMP/x.h5"
expect_fail "unwritable output directory" "x.h5" "$SUBSCOPE" forward --model "$M" --input "$P" --out "$TMP/no/such/dir/x.h5"
leftover=$(ls "$TMP" | grep -E '^x\.h5' || true)
[ -z "$leftover" ] && pass "failed runs leave no output or temporary file" || fail "failed runs leave no output" "found: $leftover"

# A run killed half-way leaves no file under the final name.
yes '{"tokens": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}' | head -n 20000 >"$TMP/many.jsonl"
"$SUBSCOPE" forward --model "$M" --input "$TMP/many.jsonl" --out "$TMP/killed.h5" --sites '*' --batch 64 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do ls "$TMP"/killed.h5.tmp.* >/dev/null 2>&1 && break; sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
[ ! -e "$TMP/killed.h5" ] && pass "killed run leaves no file at the output name" || fail "killed run leaves no file at the output name"

# SUBSCOPE_TIMING=1: the first batch and the later ones timed apart, their prompts adding up
yes '{"tokens": [1, 2, 3, 4, 5]}' | head -n 7 >"$TMP/seven.jsonl"
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" forward --model "$M" --input "$TMP/seven.jsonl" --out "$TMP/t.h5" --batch 3 --no-logits 2>&1 >/dev/null |
    grep "timing:")
if printf '%s' "$tl" | grep -Eq '^subscope forward: timing: first batch [0-9]+\.[0-9]+ s \(3 prompts\), later batches [0-9]+\.[0-9]+ s \(4 prompts\)$'; then
    pass "SUBSCOPE_TIMING=1 times the first batch and the later ones"
else fail "SUBSCOPE_TIMING=1 forward" "got: $tl"; fi
tl=$("$SUBSCOPE" forward --model "$M" --input "$TMP/seven.jsonl" --out "$TMP/t.h5" --batch 3 --no-logits 2>&1 | grep -c "timing:")
[ "$tl" = 0 ] && pass "no timing line without SUBSCOPE_TIMING" || fail "no timing line without SUBSCOPE_TIMING"

# Usage errors.
expect_fail "unknown option" "unknown option '--bogus'" "$SUBSCOPE" forward --bogus
expect_fail "missing required option" "--out is required" "$SUBSCOPE" forward --model "$M" --input "$P"
# an option where a value belongs: an error, not a file named --help
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
(S=$(abs "$SUBSCOPE") AM=$(abs "$M") AP=$(abs "$P"); cd "$TMP" && "$S" forward --model "$AM" --input "$AP" --out --help \
    >/dev/null 2>"$TMP/val.err"); rc=$?
[ $rc = 1 ] && grep -q "needs a value (OUT.h5), but the next argument is the option --help" "$TMP/val.err" && [ ! -e "$TMP/--help" ] &&
    pass "--out --help: needs a value, no file written" || fail "--out --help" "exit $rc: $(cat "$TMP/val.err")"
expect_fail "an option as another's value" "--input needs a value (FILE), but the next argument is the option --out" \
    "$SUBSCOPE" forward --model "$M" --input --out "$TMP/x.h5"
expect_fail "bad --batch value" "--batch must be an integer" "$SUBSCOPE" forward --model "$M" --input "$P" --out "$TMP/x.h5" --batch 0
# --max-memory one byte below the weights (430080 bytes: 2 blocks, d 64, vocab 100, 16 positions)
# names both sizes in bytes: in MiB it read "0.4 MiB of weights, more than --max-memory 0.4 MiB"
"${TOOLBIN}mkmodel" --out "$TMP/mm" --layers 2 --d 64 --heads 4 --vocab 100 --positions 16 \
    --prompts "$TMP/mm.jsonl" --lengths 5 >/dev/null
expect_fail "--max-memory just below the weights: the sizes in bytes" \
    "hold 430080 bytes of weights, more than --max-memory 430079 bytes" \
    "$SUBSCOPE" forward --model "$TMP/mm" --input "$TMP/mm.jsonl" --out "$TMP/mm.h5" --device cpu --max-memory 430079
# ... and a small limit in a unit that shows it: "--max-memory 0.0 MiB" it read for 1K
expect_fail "--max-memory 1K: the sizes in KiB, not 0.0 MiB" \
    "hold 420.0 KiB of weights, more than --max-memory 1.0 KiB; split the model" \
    "$SUBSCOPE" forward --model "$TMP/mm" --input "$TMP/mm.jsonl" --out "$TMP/mm.h5" --device cpu --max-memory 1K
expect_ok "--max-memory equal to the weights runs" \
    "$SUBSCOPE" forward --model "$TMP/mm" --input "$TMP/mm.jsonl" --out "$TMP/mm.h5" --device cpu --max-memory 430080
# --max-memory takes what --help says: decimal digits, an optional fraction, a unit. strtod took hex
# and exponents: '0x100000' was 1 MiB and ran, '1e9' a gigabyte.
for v in 0x100000 0x10 0X1A 1e9 1e3K 1.5.2M inf; do
    expect_fail "--max-memory '$v' refused" "--max-memory must be a positive size such as 300000000, 512M or 2G (decimal digits, an optional fraction and K, M, G or T), got '$v'" \
        "$SUBSCOPE" forward --model "$TMP/mm" --input "$TMP/mm.jsonl" --out "$TMP/mm.h5" --device cpu --max-memory "$v"
done
expect_ok "--max-memory 0.5M (a fraction and a unit) runs" \
    "$SUBSCOPE" forward --model "$TMP/mm" --input "$TMP/mm.jsonl" --out "$TMP/mm.h5" --device cpu --max-memory 0.5M
finish
