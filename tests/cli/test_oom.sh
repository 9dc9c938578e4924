#!/usr/bin/env bash
# Out of memory under an address-space limit (ulimit -v, as some batch systems set): a clear
# error and exit 1 within the timeout, never a hang (OpenBLAS retries a failed buffer mapping
# forever: src/backend/cpu_ops.c and src/cli/main.c say what subscope does about it), and no
# output file left behind. A random GPT-2 whose logits (8 x 512 x 20000 floats, 328 MB) cannot
# fit under the limits used here.
source "$(dirname "$0")/lib.sh"
if [ "${SAN:-0}" = 1 ]; then
    pass "out-of-memory checks not run: the sanitizers reserve more address space than these limits"
    finish; exit
fi
if ! (ulimit -v 400000) 2>/dev/null; then
    pass "out-of-memory checks not run: ulimit -v cannot be set here"
    finish; exit
fi
M=$TMP/m
"${TOOLBIN}mkmodel" --out "$M" --layers 2 --d 256 --heads 4 --vocab 20000 --positions 512 --seed 9 \
    --prompts "$TMP/p.jsonl" --lengths 512,512,512,512,512,512,512,512 >/dev/null
# oom NAME LIMIT_KB [ENV...]: forward under the limit must exit 1 saying "out of memory"
oom() {
    local n=$1 lim=$2; shift 2
    local out rc
    out=$(ulimit -v "$lim"; env "$@" timeout 60 "$SUBSCOPE" forward --model "$M" --input "$TMP/p.jsonl" \
        --out "$TMP/$n.h5" --device cpu --batch 8 2>&1); rc=$?
    if [ $rc = 1 ] && printf '%s' "$out" | grep -q "error: out of memory" && [ ! -e "$TMP/$n.h5" ]; then
        pass "$n: exit 1, $(printf '%s' "$out" | grep -o 'out of memory[^,;(]*' | head -n 1)"
    else
        fail "$n" "exit $rc (124: it hung)$([ -e "$TMP/$n.h5" ] && echo ', and it left its output file')" \
            "$(printf '%s' "$out" | tail -n 2)"
    fi
}
# too tight for OpenBLAS's work buffers of every thread (the backend's start says so), or
# on one thread for the logits
oom "limit 290 MiB" 300000
# one thread: the first allocation that does not fit is named
oom "limit 370 MiB, one thread" 380000 SUBSCOPE_THREADS=1
# near the limit with two threads, a sweep over the limits where the run ends in the start's
# error, in an allocation's error or in success (about 400-450 MB here): every run must end,
# with exit 0 or the error. Before the buffers were taken from OpenBLAS's allocator at the
# start, about one run in five in this range hung in its first product.
hung=""
for lim in 400000 405000 410000 415000 420000 425000 430000 435000 440000 445000 450000; do
    out=$(ulimit -v "$lim"; SUBSCOPE_THREADS=2 timeout 60 "$SUBSCOPE" forward --model "$M" --input "$TMP/p.jsonl" \
        --out "$TMP/near.h5" --device cpu --batch 8 --no-logits 2>&1); rc=$?
    if [ $rc = 1 ] && printf '%s' "$out" | grep -q "error: out of memory" && [ ! -e "$TMP/near.h5" ]; then :
    elif [ $rc = 0 ] && [ -s "$TMP/near.h5" ]; then rm -f "$TMP/near.h5"
    else hung="$hung ${lim}k:exit$rc"; rm -f "$TMP/near.h5"
    fi
done
[ -z "$hung" ] && pass "two threads near the limit (400-450 MB, 11 runs): every run ended in success or the error" ||
    fail "two threads near the limit" "runs that hung (124) or failed otherwise:$hung"
# a limit the run fits in: the same command succeeds (the limit alone is not refused)
out=$(ulimit -v 4000000; timeout 120 "$SUBSCOPE" forward --model "$M" --input "$TMP/p.jsonl" --out "$TMP/ok.h5" \
    --device cpu --batch 8 --no-logits 2>&1) && [ -s "$TMP/ok.h5" ] &&
    pass "under a 3.8 GiB limit the forward runs" || fail "forward under a 3.8 GiB limit" "$(printf '%s' "$out" | tail -n 2)"
# the restart under a limit keeps the process's name (ps, pgrep): started again as
# /proc/self/exe it was called "exe"
(ulimit -v 4000000; exec "$SUBSCOPE" forward --model "$M" --input "$TMP/p.jsonl" --out "$TMP/name.h5" --device cpu \
    --batch 8 --no-logits >/dev/null 2>&1) &
pid=$! names=""
for _ in $(seq 1 100); do c=$(cat "/proc/$pid/comm" 2>/dev/null) || break; names="$names $c"; sleep 0.01; done
wait $pid
case "$names" in *subscope*) case "$names" in *" exe"*) fail "the process's name after the restart" "$names" ;;
    *) pass "the restart keeps the name 'subscope'" ;; esac ;;
    *) fail "the process's name after the restart: never seen" "$names" ;; esac
# trace's attribution runs the prompt's prefixes in batches of about 4096 rows: a 235-token
# prompt (27730 rows) fits in 1 GB; all its prefixes in one batch needed 1.25 GB for one
# product's activations (about 2.5 GB at the peak)
T=$TMP/tm
"${TOOLBIN}mkmodel" --out "$T" --layers 2 --d 256 --heads 4 --vocab 1024 --positions 512 --seed 3 >/dev/null
cp models/tiny-gpt2/tokenizer.json "$T/"
S="The cow lives on a farm and the dog sleeps by the door while the cat watches birds in the old tree."
printf '{"name": "m", "site": "blocks.1.mlp.hook_post", "units": [10, 20, 30]}\n' >"$TMP/sm.jsonl"
for p in prefixes forward; do
    out=$(ulimit -v 1000000; timeout 120 "$SUBSCOPE" trace --model "$T" --prompt "$S $S $S $S $S $S" --submodels "$TMP/sm.jsonl" \
        --attribution-pass $p --out "$TMP/trace-$p.h5" --device cpu 2>&1); rc=$?
    [ $rc = 0 ] && [ -s "$TMP/trace-$p.h5" ] &&
        pass "trace of a 235-token prompt under a 1 GB limit ($([ $p = prefixes ] && echo "prefixes in batches" || echo "forward mode: one taped forward"))" ||
        fail "trace of a 235-token prompt under 1 GB ($p)" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
done

# collect's PCA works in the covariance it has just written (dsyevr overwrites its input), not in
# a copy of it: at d = 4096 (128 MiB a matrix) with one thread, mean,pca:4 fits in about 490 MB;
# with the copy it needed about 610 MB, and under 527 MiB failed copying the matrix. At d = 16384
# the copy was 2 GiB more at the peak.
C=$TMP/c4k
"${TOOLBIN}mkmodel" --out "$C" --layers 1 --d 32 --heads 2 --vocab 50 --positions 16 --inner 4096 --seed 3 \
    --prompts "$TMP/c4k.jsonl" --lengths 16,16,9 >/dev/null
out=$(ulimit -v 540000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" collect --model "$C" --input "$TMP/c4k.jsonl" \
    --sites blocks.0.mlp.hook_post --stats mean,pca:4 --out "$TMP/c4k.h5" --device cpu 2>&1); rc=$?
[ $rc = 0 ] && [ -s "$TMP/c4k.h5" ] && pass "collect pca:4 at d 4096 under 527 MiB (no copy of the covariance)" ||
    fail "collect pca:4 at d 4096 under 527 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"

# the blocks the CPU backend keeps for its next requests (the forward's, about 32 MiB here) give
# way to the job's own allocations after its passes: with one thread, collect at d 2048 over 16 x
# 128 tokens needs about 266 MiB; with the blocks kept, its covariance (32 MiB) failed under 299
C2=$TMP/c2k
"${TOOLBIN}mkmodel" --out "$C2" --layers 1 --d 64 --heads 2 --vocab 500 --positions 128 --inner 2048 --seed 3 \
    --prompts "$TMP/c2k.jsonl" --lengths "$(printf '128,%.0s' $(seq 1 15))128" >/dev/null
out=$(ulimit -v 289000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" collect --model "$C2" --input "$TMP/c2k.jsonl" \
    --sites blocks.0.mlp.hook_post --stats mean,pca:4 --out "$TMP/c2k.h5" --device cpu --batch 16 2>&1); rc=$?
[ $rc = 0 ] && [ -s "$TMP/c2k.h5" ] && pass "collect at d 2048 under 282 MiB (the backend's kept blocks give way)" ||
    fail "collect at d 2048 under 282 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"

# collect --resume reads each checkpointed co-moment matrix straight into its running totals: it
# read a copy first (one d x d matrix more; 2 GiB at d 16384), and at d 4096 with one thread
# needed about 580 MB, where a fresh run (and now the resumed one) needs about 470. The
# checkpoint is the one a run killed after its first round leaves.
"${TOOLBIN}mkmodel" --prompts "$TMP/r4k.jsonl" --vocab 50 --lengths "$(printf '16,%.0s' $(seq 1 39))16" >/dev/null
SUBSCOPE_THREADS=1 "$SUBSCOPE" collect --model "$C" --input "$TMP/r4k.jsonl" --sites blocks.0.mlp.hook_post \
    --stats mean,cov --out "$TMP/r4k.h5" --device cpu --checkpoint-every 1 --batch 1 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do [ -e "$TMP/r4k.h5.ckpt" ] && break; sleep 0.02; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if [ -e "$TMP/r4k.h5.ckpt" ] && [ ! -e "$TMP/r4k.h5" ]; then
    out=$(ulimit -v 520000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" collect --model "$C" --input "$TMP/r4k.jsonl" \
        --sites blocks.0.mlp.hook_post --stats mean,cov --out "$TMP/r4k.h5" --device cpu --checkpoint-every 1 \
        --batch 1 --resume 2>&1); rc=$?
    [ $rc = 0 ] && [ -s "$TMP/r4k.h5" ] && printf '%s' "$out" | grep -q "^resuming from" &&
        pass "collect --resume at d 4096 under 508 MiB (the checkpoint's co-moments read in place)" ||
        fail "collect --resume at d 4096 under 508 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
else
    fail "a killed collect at d 4096 left a checkpoint to resume"
fi

# discover keeps only the diagonal of cov (each unit's variance), read a block of rows at a time:
# contrast read three whole [d, d] covariances (the two labels' and the overall one, 3 x 128 MiB
# at d 4096) and cluster both cov and corr, where it needs corr alone. One thread: contrast fits
# in about 100 MB (it needed about 480), cluster in about 350 (it needed about 470).
printf '%s\n' '{"tokens": [1, 2, 3, 4, 5, 6, 7], "label": "a"}' '{"tokens": [9, 8, 7, 6, 5], "label": "a"}' \
    '{"tokens": [11, 12, 13, 14, 15, 16], "label": "b"}' '{"tokens": [21, 22, 23, 24, 3, 4, 5, 6], "label": "b"}' >"$TMP/g.jsonl"
if "$SUBSCOPE" collect --model "$C" --input "$TMP/g.jsonl" --sites blocks.0.mlp.hook_post --stats mean,cov,corr \
    --group-by label --out "$TMP/g.h5" --device cpu >/dev/null 2>&1; then
    out=$(ulimit -v 200000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" discover --stats "$TMP/g.h5" --method contrast \
        --contrast a:b --sites blocks.0.mlp.hook_post --out "$TMP/dc.h5" 2>&1); rc=$?
    [ $rc = 0 ] && [ -s "$TMP/dc.h5" ] && pass "discover contrast at d 4096 under 195 MiB (variances, not covariances)" ||
        fail "discover contrast at d 4096 under 195 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
    out=$(ulimit -v 410000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" discover --stats "$TMP/g.h5" --method cluster \
        --sites blocks.0.mlp.hook_post --out "$TMP/dk.h5" 2>&1); rc=$?
    [ $rc = 0 ] && [ -s "$TMP/dk.h5" ] && pass "discover cluster at d 4096 under 400 MiB (corr, and of cov the diagonal)" ||
        fail "discover cluster at d 4096 under 400 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
    # ablate's units' spread (relative noise, also trace and patch) from the same diagonal: it read
    # the whole covariance (one thread: about 320 MB needed, now about 240)
    printf '%s\n' '{"name": "n", "site": "blocks.0.mlp.hook_post", "units": [1, 2, 3], "mode": "noise", "sigma": 0.5, "relative": true}' \
        >"$TMP/noise.jsonl"
    out=$(ulimit -v 290000; SUBSCOPE_THREADS=1 timeout 120 "$SUBSCOPE" ablate --model "$C" --input "$TMP/g.jsonl" \
        --masks "$TMP/noise.jsonl" --stats "$TMP/g.h5" --out "$TMP/an.h5" --device cpu 2>&1); rc=$?
    [ $rc = 0 ] && [ -s "$TMP/an.h5" ] && pass "ablate relative noise at d 4096 under 283 MiB (cov's diagonal only)" ||
        fail "ablate relative noise at d 4096 under 283 MiB" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
else
    fail "collect --group-by label at d 4096 for discover" "$("$SUBSCOPE" collect --model "$C" --input "$TMP/g.jsonl" \
        --sites blocks.0.mlp.hook_post --stats mean,cov,corr --group-by label --out "$TMP/g.h5" --device cpu 2>&1 | tail -n 1)"
fi

# --device cuda under a limit: the CUDA driver's start fails with "out of memory" (it reserves
# far more address space than it uses; the emulated runtime does the same with 8 GiB), and the
# error says that a limit is set
EMU=${TOOLBIN}emu
if [ -f "$EMU/libsubscope-cuda.so" ]; then
    out=$(ulimit -v 2000000; SUBSCOPE_PLUGIN_DIR="$EMU" timeout 60 "$SUBSCOPE" forward --model "$M" \
        --input "$TMP/p.jsonl" --out "$TMP/gpu.h5" --device cuda --batch 8 2>&1); rc=$?
    [ $rc = 1 ] && printf '%s' "$out" | grep -q "no usable CUDA device: out of memory.*an address-space limit is set (ulimit -v: 1953 MiB)" &&
        [ ! -e "$TMP/gpu.h5" ] && pass "--device cuda under a 1953 MiB limit: the error names the limit" ||
        fail "--device cuda under a limit" "exit $rc" "$(printf '%s' "$out" | tail -n 2)"
else
    fail "emulated plugin built" "$EMU/libsubscope-cuda.so is missing (make test builds it)"
fi
finish
