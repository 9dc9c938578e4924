#!/usr/bin/env bash
# bench/bench_ablate.py's own plumbing, which otherwise first runs on a lent GPU: on the
# emulated CUDA plugin (bin/emu) with a stand-in for the PyTorch peer (fakes/peer_python: the
# masks' names, zero losses, one second), a tiny sweep must give its JSON: the passes, their
# split with the first masked forward, the steady batch past the first of two, and the run
# with CUDA_MODULE_LOADING=EAGER.
source "$(dirname "$0")/lib.sh"
EMU=${TOOLBIN}emu
if ! python3 -c "import h5py" 2>/dev/null; then
    pass "bench_ablate.py not run: needs python3 with h5py"
    finish; exit
fi
if [ ! -f "$EMU/libsubscope-cuda.so" ] || ! grep -q '^HAVE_CUBLAS := 1' build/config.mk 2>/dev/null; then
    pass "bench_ablate.py not run: needs a build with CUDA and the emulated plugin"
    finish; exit
fi
M=$TMP/m
"${TOOLBIN}mkmodel" --out "$M" --layers 2 --d 64 --heads 2 --vocab 300 --positions 32 --seed 5 >/dev/null
out=$(SUBSCOPE_PLUGIN_DIR="$EMU" python3 bench/bench_ablate.py --model "$M" --subscope "$SUBSCOPE" \
    --python "$(dirname "$0")/fakes/peer_python" --device cuda --masks 8 --prompts 2 --prompt-batches 2 --tokens 8 --reps 1 --no-unbatched \
    --workdir "$TMP/w" --json "$TMP/a.json" 2>&1); rc=$?
if [ $rc = 0 ] && python3 - "$TMP/a.json" <<'P'
import json, sys
r = json.load(open(sys.argv[1]))["results"]["m"]
s = r["subscope"]
assert s["batched"]["median_passes_s"] > 0, s["batched"]
sp = s["batched"]["passes_split"][0]
assert sp["masked_forwards"] == 2 and 0 < sp["first_masked_s"] < sp["masked_s"], sp
assert sp["batches"] == 2 and 0 < sp["past_first_batch_s"] < s["batched"]["median_passes_s"], sp
assert r["prompt_batches"] == 2 and r["speedup_vs_peer_steady"] > 0
assert abs(r["peer"]["per_batch_s"] - r["peer"]["median_s"] / 2) < 1e-12
assert s["eager"]["median_passes_s"] > 0 and s["identity"]["median_passes_s"] > 0, s
assert r["speedup_vs_peer_passes_only"] > 0
P
then
    pass "bench_ablate.py on the emulated GPU: passes, their split, the steady batch, the eager run"
else
    fail "bench_ablate.py on the emulated GPU" "exit $rc: $(printf '%s' "$out" | tail -n 5)"
fi
printf '%s' "$out" | grep -q "with CUDA_MODULE_LOADING=EAGER: passes" && printf '%s' "$out" | grep -q "the first [0-9.]* s" &&
    printf '%s' "$out" | grep -q "each side past its first of 2" &&
    pass "bench_ablate.py prints the eager passes and the first masked forward" ||
    fail "bench_ablate.py summary" "$(printf '%s' "$out" | tail -n 8)"
finish
