#!/usr/bin/env bash
# Data-parallel runs under mpirun (docs/DISTRIBUTED.md): collect, forward, ablate, attribute and patch with 2 and 3 ranks
# against one process, checkpoints written by 3 ranks, a rank killed (SIGKILL: mpirun stops the
# job) and a rank hung (SIGSTOP: the communicator's timeout stops it), each leaving no output,
# and a resume with another number of ranks. Skipped, with the reason, where mpirun is missing.
source "$(dirname "$0")/lib.sh"
H5CMP=${TOOLBIN}h5cmp
M=models/tiny-gpt2
P=data/demo_prompts.jsonl
if ! command -v mpirun >/dev/null 2>&1; then
    echo "  skip: no mpirun on this machine ('make deps' installs openmpi-bin libopenmpi-dev)"
    finish; exit
fi
# Two cores shared by up to three ranks: one thread each, and the same thread count in the
# one-process reference (the split of a product between threads changes its fp32 rounding).
export SUBSCOPE_THREADS=1
# OpenMPI leaks by design at exit; containers often forbid the cross-process copies of its
# shared-memory transport (ptrace scope), which it would otherwise try first.
export ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI="mpirun --allow-run-as-root --oversubscribe"

out=$($MPI -np 2 "$SUBSCOPE" info --dist 2>&1)
if printf '%s' "$out" | grep -q "^backend  mpi" && printf '%s' "$out" | grep -q "^ranks    2" &&
   printf '%s' "$out" | grep -q "^rank 1 .*host"; then pass "info --dist under mpirun -np 2: mpi backend, 2 ranks, one line each"
else fail "info --dist under mpirun" "$(printf '%s' "$out" | tail -n 4)"; fi
printf '%s' "$out" | grep -q "^sends    in the background" &&
    pass "info --dist under mpirun: MPI_THREAD_MULTIPLE granted, sends go through the sender thread" ||
    fail "info --dist: background sends" "$(printf '%s' "$out" | grep '^sends')"
out=$(SUBSCOPE_SEND_THREAD=0 $MPI -np 2 "$SUBSCOPE" info --dist 2>&1)
printf '%s' "$out" | grep -q "^sends    blocking" && pass "info --dist with SUBSCOPE_SEND_THREAD=0: no sender thread" ||
    fail "info --dist, SUBSCOPE_SEND_THREAD=0" "$(printf '%s' "$out" | grep '^sends')"
out=$("$SUBSCOPE" info --dist 2>&1)
printf '%s' "$out" | grep -q "^backend  single" && pass "info --dist alone: single process" || fail "info --dist alone" "$out"
# Each rank says what it can do with GPUs: the plugin loaded (and the devices it sees), or why not.
if [ -e "$(dirname "$SUBSCOPE")/libsubscope-cuda.so" ]; then
    printf '%s' "$out" | grep -qE "cuda (plugin loaded|linked in), [0-9]+ devices? visible" &&
        pass "info --dist: the CUDA plugin loads and counts the devices" || fail "info --dist cuda" "$out"
    out=$(SUBSCOPE_PLUGIN_DIR=/nonexistent "$SUBSCOPE" info --dist 2>&1)
    printf '%s' "$out" | grep -q "cuda unavailable: /nonexistent/libsubscope-cuda.so: not found" &&
        pass "info --dist: a missing CUDA plugin is named" || fail "info --dist, no plugin" "$out"
    # under a folder of 1000 characters, the reason after it is kept (cut at 400 bytes before)
    out=$(SUBSCOPE_PLUGIN_DIR="/nonexistent/$(printf '%01000d' 0)" "$SUBSCOPE" info --dist 2>&1)
    printf '%s' "$out" | grep -q "0000/libsubscope-cuda.so: not found; .*SUBSCOPE_PLUGIN_DIR names another directory)\$" &&
        pass "info --dist: a missing CUDA plugin under a long folder is named, reason and all" || fail "info --dist, no plugin, long folder" "$out"
else
    printf '%s' "$out" | grep -q "cuda not in this build" && pass "info --dist: no CUDA in this build" || fail "info --dist cuda" "$out"
fi

# Commands that run in one process refuse to start as several ranks (each would do the whole job
# and write the same file); trace takes ranks only as a pipeline's stages.
res=$($MPI -np 2 "$SUBSCOPE" trace --model $M --prompt 'The cat' --submodels data/demo_submodels.jsonl --out "$TMP/tr.h5" 2>&1); rc=$?
if [ $rc -ne 0 ] && printf '%s' "$res" | grep -q "subscope trace: error: started as one of 2 ranks (OMPI_COMM_WORLD_SIZE=2), but trace runs in one process" &&
   [ ! -e "$TMP/tr.h5" ]; then pass "trace under mpirun -np 2 without --pipeline: refused before it starts, no file"
else fail "trace under mpirun -np 2" "exit $rc" "$(printf '%s' "$res" | head -n 2)"; fi
res=$($MPI -np 2 "$SUBSCOPE" trace --model $M --prompt 'The cat' --submodels data/demo_submodels.jsonl --pipeline 1 2>&1); rc=$?
[ $rc -ne 0 ] && printf '%s' "$res" | grep -q "but trace runs in one process" &&
    pass "trace --pipeline 1 under mpirun -np 2: refused (a one-stage pipeline is one process)" ||
    fail "trace --pipeline 1 under mpirun -np 2" "exit $rc" "$(printf '%s' "$res" | head -n 2)"
res=$($MPI -np 2 "$SUBSCOPE" info --model $M 2>&1); rc=$?
[ $rc -ne 0 ] && printf '%s' "$res" | grep -q "but info runs in one process (except info --dist)" &&
    pass "info --model under mpirun -np 2: refused" || fail "info --model under mpirun -np 2" "exit $rc" "$(printf '%s' "$res" | head -n 2)"
expect_ok "a launcher's single task may run one-process commands" env OMPI_COMM_WORLD_SIZE=1 "$SUBSCOPE" tokenize --model $M --text hi
# --out's folder is checked before the run, by rank 0 only, which writes it: another rank may run
# where the folder is not (a node-local --out), here rank 1 in a working folder without sub/.
mkdir -p "$TMP/wa/sub" "$TMP/wb"
SS_ABS=$(cd "$(dirname "$SUBSCOPE")" && pwd)/$(basename "$SUBSCOPE")
res=$($MPI -np 1 --wdir "$TMP/wa" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --out sub/x.h5 : \
    -np 1 --wdir "$TMP/wb" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --out sub/x.h5 2>&1); rc=$?
[ $rc = 0 ] && [ -s "$TMP/wa/sub/x.h5" ] && [ ! -e "$TMP/wb/sub" ] &&
    pass "--out's folder is rank 0's: rank 1 runs where it is not" || fail "--out's folder on rank 1" "exit $rc" "$(printf '%s' "$res" | tail -n 3)"
res=$($MPI -np 1 --wdir "$TMP/wb" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --out sub/x.h5 : \
    -np 1 --wdir "$TMP/wa" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --out sub/x.h5 2>&1); rc=$?
[ $rc != 0 ] && printf '%s' "$res" | grep -q "cannot write in sub" && pass "... and rank 0 refuses one it cannot write in" ||
    fail "--out's folder missing on rank 0" "exit $rc" "$(printf '%s' "$res" | tail -n 3)"
# Under --pipeline P, forward, patch and trace write from the first copy's last stage (rank P-1),
# not rank 0: that rank checks. Rank 0 refused a folder only the writer has, and the writer's
# missing folder was found only when the file was created.
mkdir -p "$TMP/wc/sub"
res=$($MPI -np 1 --wdir "$TMP/wb" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --pipeline 2 --out sub/p.h5 : \
    -np 1 --wdir "$TMP/wc" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --pipeline 2 --out sub/p.h5 2>&1); rc=$?
[ $rc = 0 ] && [ -s "$TMP/wc/sub/p.h5" ] && [ ! -e "$TMP/wb/sub" ] &&
    pass "forward --pipeline 2: --out's folder is the last stage's (rank 1), not rank 0's" ||
    fail "forward --pipeline 2, --out's folder on the writer only" "exit $rc" "$(printf '%s' "$res" | grep subscope | tail -n 3)"
res=$($MPI -np 1 --wdir "$TMP/wc" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --pipeline 2 --out sub/q.h5 : \
    -np 1 --wdir "$TMP/wb" "$SS_ABS" forward --model "$PWD/$M" --input "$PWD/$P" --pipeline 2 --out sub/q.h5 2>&1); rc=$?
[ $rc != 0 ] && printf '%s' "$res" | grep -q "subscope forward: error: --out sub/q.h5: cannot write in sub" &&
    pass "... and the last stage refuses one it cannot write in, before the run" ||
    fail "forward --pipeline 2, --out's folder missing on the writer" "exit $rc" "$(printf '%s' "$res" | grep subscope | tail -n 3)"

# Statistics: counts exact; the rest differs from one process only by the order of fp64 Chan
# merges (a few ulps): 1e-12 relative, and 1e-14 absolute for entries that are nearly zero
# (covariances of nearly independent units, ~1e-7 here, whose own relative error is larger).
awk 'NR % 3 == 0 {sub(/}$/, ", \"label\": \"a\"}")} NR % 3 {sub(/}$/, ", \"label\": \"b\"}")} {print}' $P >"$TMP/lab.jsonl"
CS='blocks.0.hook_resid_pre,blocks.*.mlp.hook_post,blocks.1.attn.hook_z'
copts=(--model $M --input "$TMP/lab.jsonl" --sites "$CS" --stats mean,cov,corr --group-by label --batch 3)
"$SUBSCOPE" collect "${copts[@]}" --out "$TMP/c1.h5" 2>/dev/null
for n in 2 3; do
    if ! res=$($MPI -np $n "$SUBSCOPE" collect "${copts[@]}" --out "$TMP/c$n.h5" 2>&1); then fail "collect -np $n runs" "$res"; continue; fi
    if res=$("$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/c1.h5" "$TMP/c$n.h5" 2>&1); then
        pass "collect -np $n = one process (counts exact, mean/cov/corr 1e-12, per label too)"
    else fail "collect -np $n vs one process" "$(printf '%s' "$res" | head -n 4)"; fi
done
ranks=$(h5dump -a /ranks "$TMP/c3.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ "$ranks" = 3 ] && pass "the file records 3 ranks" || fail "ranks attribute" "got '$ranks'"

# Forward: each rank runs whole batches of the one-process run, so values are identical.
FS='blocks.0.hook_resid_pre,blocks.*.mlp.hook_post,blocks.1.attn.hook_pattern'
"$SUBSCOPE" forward --model $M --input $P --sites "$FS" --batch 3 --loss --out "$TMP/f1.h5" 2>/dev/null
for n in 2 3; do
    if ! res=$($MPI -np $n "$SUBSCOPE" forward --model $M --input $P --sites "$FS" --batch 3 --loss --out "$TMP/f$n.h5" 2>&1); then
        fail "forward -np $n runs" "$res"; continue; fi
    if res=$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/f1.h5" "$TMP/f$n.h5" 2>&1); then
        pass "forward -np $n = one process, bit for bit (tokens, logits, losses, activations, patterns in input order)"
    else fail "forward -np $n vs one process" "$(printf '%s' "$res" | head -n 4)"; fi
done

# A rank whose block has fewer axes than its dataset (rank 1: the unit binary's
# rank_forward_crafted_block, /logits as [prompt, position]) is refused by the writer, naming the
# rank, the dataset and both axis counts, and no file is left; before, the block was queued with a
# zero count for the missing axis, wrote nothing, and the run ended as if complete.
TU_ABS=$(cd "$(dirname "$SUBSCOPE")" && pwd)/test_unit
if [ -x "$TU_ABS" ]; then
    rm -f "$TMP/crafted.h5"
    res=$(timeout 120 $MPI -np 1 "$SS_ABS" forward --model $M --input $P --batch 3 --device cpu --out "$TMP/crafted.h5" : \
        -np 1 env SS_TEST_CRAFTED_BLOCK=1 "$TU_ABS" rank_forward_crafted_block 2>&1); rc=$?
    [ $rc != 0 ] && printf '%s' "$res" | grep -q "rank 1 (host [^)]*) sent a block of 2 axes for /logits, which has 3" &&
        [ ! -e "$TMP/crafted.h5" ] && pass "forward -np 2: a block with fewer axes than its dataset is refused, naming both, no file" ||
        fail "forward -np 2, a block of fewer axes" "exit $rc" "$(printf '%s' "$res" | grep -E 'subscope|FAIL' | tail -n 3)"
else
    echo "  skip: no $TU_ABS (make bin/test_unit) for the crafted rank"
fi

# ablate and attribute: each rank runs whole batches of the one-process run and rank 0 gathers
# the per-prompt values, so they are identical (atol 0), and so is the printed table. The masks
# include what needs the whole input: mean and relative-noise masks from the input's unit
# statistics (merged across ranks) and resample donors from every prompt (shared); patch masks
# take the rank's own pairs. Sums over prompts (attribute --reduce prompts) add the ranks' float64
# sums in rank order instead of one prompt at a time: they may differ in the last float64 bits,
# so in float32 by at most about an ulp (1e-6 relative here; measured: identical).
PC=tests/data/patch/clean.jsonl PK=tests/data/patch/corrupt.jsonl
printf '%s\n' '{"name": "p_resid1", "site": "blocks.1.hook_resid_pre", "mode": "patch"}' \
    '{"name": "r_mlp1", "site": "blocks.1.mlp.hook_post", "mode": "resample", "seed": 3}' \
    '{"name": "m_z0", "site": "blocks.0.attn.hook_z", "heads": [1], "mode": "mean"}' >"$TMP/pm.jsonl"
dist_same() { # dist_same KEY NAME TOL CMD...: CMD --out under 1, 2 and 3 ranks; files within TOL, tables equal
    local key=$1 name=$2 tol=$3 n res; shift 3
    "$@" --out "$TMP/$key-1.h5" >"$TMP/$key-1.txt" 2>/dev/null
    for n in 2 3; do
        if ! res=$($MPI -np $n "$@" --out "$TMP/$key-$n.h5" 2>&1 >"$TMP/$key-$n.txt"); then fail "$name -np $n runs" "$res"; continue; fi
        if ! res=$("$H5CMP" --quiet $tol "$TMP/$key-1.h5" "$TMP/$key-$n.h5" 2>&1); then
            fail "$name -np $n vs one process" "$(printf '%s' "$res" | head -n 4)"
        elif ! cmp -s "$TMP/$key-1.txt" "$TMP/$key-$n.txt"; then
            fail "$name -np $n: the table differs" "$(diff "$TMP/$key-1.txt" "$TMP/$key-$n.txt" | head -n 4)"
        else pass "$name -np $n = one process ($tol), the same table"; fi
    done
}
EXACT="--atol 0 --rtol 0"
dist_same abl "ablate (zero/scale/mean/resample/noise, controls, labels)" "$EXACT" "$SUBSCOPE" ablate --model $M \
    --input "$TMP/lab.jsonl" --masks data/demo_masks.jsonl --controls 1 --batch 3
dist_same pat "ablate (patch/resample/mean, 4 pairs)" "$EXACT" "$SUBSCOPE" ablate --model $M --input $PC --patch-from $PK \
    --masks "$TMP/pm.jsonl" --metrics loss,logitdiff,kl --batch 1
# Mean and relative-noise masks without --stats: the unit statistics are merged along one tree over
# the prompts, whatever the ranks. Merged in rank order, they moved some units' float32 means a
# step from one process's (4 units of blocks.0.hook_resid_mid on 2 ranks here), and losses in the 7th digit.
for s in blocks.0.mlp.hook_pre blocks.1.mlp.hook_post blocks.2.mlp.hook_post blocks.0.hook_resid_mid \
    blocks.0.hook_attn_out; do
    printf '{"name": "mean_%s", "site": "%s", "mode": "mean"}\n' $s $s
done >"$TMP/mean.jsonl"
printf '{"name": "rel", "site": "blocks.1.hook_resid_mid", "mode": "noise", "sigma": 0.5, "relative": true}\n' \
    >>"$TMP/mean.jsonl"
head -4 $P >"$TMP/p4.jsonl"
dist_same mean "ablate mean/relative-noise masks without --stats (4 prompts, batches of 1)" "$EXACT" "$SUBSCOPE" ablate \
    --model $M --input "$TMP/p4.jsonl" --masks "$TMP/mean.jsonl" --metrics loss,kl --batch 1
# ... also where a rank's prompts start off a block's boundary and the count is not a power of two:
# 7 prompts on 3 ranks (0-2, 3-4, 5-6; a tree that merged prompts 3 and 4, an unaligned pair, moved
# blocks.2.mlp.hook_post's losses in the 8th digit, which 4 prompts did not show), and 1 prompt, the
# later ranks without any (empty shards).
head -7 $P >"$TMP/p7.jsonl"
head -1 $P >"$TMP/p1.jsonl"
dist_same mean7 "ablate mean/relative-noise masks without --stats (7 prompts, batches of 1)" "$EXACT" "$SUBSCOPE" ablate \
    --model $M --input "$TMP/p7.jsonl" --masks "$TMP/mean.jsonl" --metrics loss,kl --batch 1
dist_same mean1 "ablate mean/relative-noise masks without --stats (1 prompt: ranks without prompts)" "$EXACT" "$SUBSCOPE" \
    ablate --model $M --input "$TMP/p1.jsonl" --masks "$TMP/mean.jsonl" --metrics loss,kl --batch 1
dist_same gx "attribute gradxact (per position)" "$EXACT" "$SUBSCOPE" attribute --model $M --input "$TMP/lab.jsonl" \
    --sites 'blocks.*.mlp.hook_post,blocks.1.attn.hook_z' --batch 3
dist_same rp "attribute --reduce prompts" "--atol 1e-12 --rtol 1e-6" "$SUBSCOPE" attribute --model $M --input "$TMP/lab.jsonl" \
    --sites 'blocks.*.mlp.hook_post' --reduce prompts --batch 3
dist_same ig "attribute ig:4 --reduce positions (completeness per prompt)" "$EXACT" "$SUBSCOPE" attribute --model $M \
    --input $PC --sites 'blocks.1.mlp.hook_post,blocks.0.hook_resid_mid' --metric logitdiff --method ig:4 --reduce positions --batch 1
# patch: the ranks split the pairs; each pair's passes are one process's, so values are identical.
dist_same ptc "patch --per position (4 pairs)" "$EXACT" "$SUBSCOPE" patch --model $M --clean $PC --corrupt $PK \
    --sites 'blocks.*.hook_resid_pre,blocks.1.attn.hook_z' --per position
ranks=$(h5dump -a /ranks "$TMP/ptc-3.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ "$ranks" = 3 ] && pass "the patch file records 3 ranks" || fail "patch ranks attribute" "got '$ranks'"
# An error on the ranks (a bad mask) stops every rank with a message; no file.
res=$(timeout 60 $MPI -np 2 "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[512]' --out "$TMP/bad.h5" 2>&1); rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && printf '%s' "$res" | grep -q "error on rank [01] of 2 .*stopping every rank:.*512" && [ ! -e "$TMP/bad.h5" ]; then
    pass "ablate -np 2 with a bad mask: every rank stops (exit $rc) with the message, no file"
else fail "ablate -np 2 with a bad mask" "exit $rc" "$(printf '%s' "$res" | tail -n 3)"; fi
# Each rank reads the files by itself: a rank that reads another copy (a node's stale one) is
# refused, naming it, rather than mixing other prompts into the file (rank 1 reads $TMP/alt*).
sed 's/The/A/' $P >"$TMP/alt.jsonl"
sed 's/The/A/' $PK >"$TMP/altk.jsonl"
cat >"$TMP/rank1.sh" <<EOF
#!/bin/bash
a=()
for x in "\$@"; do
    if [ "\$OMPI_COMM_WORLD_RANK" = 1 ]; then [ "\$x" = $P ] && x=$TMP/alt.jsonl; [ "\$x" = $PK ] && x=$TMP/altk.jsonl; fi
    a+=("\$x")
done
exec "\${a[@]}"
EOF
chmod +x "$TMP/rank1.sh"
other_copy() { # other_copy NAME FILE CMD...: rank 1 reads another copy of FILE
    local name=$1 file=$2 res rc; shift 2
    res=$(timeout 60 $MPI -np 2 "$TMP/rank1.sh" "$@" --out "$TMP/oc.h5" 2>&1); rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && printf '%s' "$res" | grep -q "rank 1 (host .*) reads a different copy of $file than rank 0" &&
       [ ! -e "$TMP/oc.h5" ]; then pass "$name: rank 1 reading another copy of $file is refused, naming it; no file"
    else fail "$name: rank 1 reads another copy of $file" "exit $rc" "$(printf '%s' "$res" | grep -m 2 'error\|wrote')"; fi
}
other_copy forward $P "$SUBSCOPE" forward --model $M --input $P --sites blocks.0.mlp.hook_post
other_copy ablate $P "$SUBSCOPE" ablate --model $M --input $P --masks data/demo_masks.jsonl
other_copy collect $P "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post
other_copy patch $PK "$SUBSCOPE" patch --model $M --clean $PC --corrupt $PK --sites blocks.1.hook_resid_pre
other_copy "attribute --method atp" $PK "$SUBSCOPE" attribute --model $M --input $PC --corrupt $PK --method atp --sites blocks.1.mlp.hook_post


# Checkpoints: 3 ranks write them (rank 0), a killed job leaves the last one, and 3 ranks
# resume a checkpoint that 2 ranks wrote.
for i in $(seq 1 200); do cat $P; done >"$TMP/big.jsonl"
BS='blocks.*.mlp.hook_post'
bopts=(--model $M --input "$TMP/big.jsonl" --sites "$BS" --stats mean,cov --batch 8 --checkpoint-every 400)
"$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/b1.h5" 2>/dev/null
$MPI -np 3 "$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/b3.h5" >/dev/null 2>&1
expect_ok "collect -np 3 with checkpoints = one process" "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/b1.h5" "$TMP/b3.h5"

t0=$(date +%s)
timeout 60 $MPI -np 2 "$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/k.h5" >"$TMP/k.log" 2>&1 &
mp=$!
for _ in $(seq 1 300); do [ -e "$TMP/k.h5.ckpt" ] && break; sleep 0.02; done
r1=$(rank_pid $mp 1)
[ -n "$r1" ] && kill -9 "$r1"
wait $mp; rc=$?; dt=$(( $(date +%s) - t0 ))
if [ -n "$r1" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank 1" "$TMP/k.log" && [ ! -e "$TMP/k.h5" ]; then
    pass "rank 1 killed: the job stops (exit $rc, ${dt}s), the message names rank 1 and its host, no output file"
else fail "killed rank" "pid '$r1', exit $rc after ${dt}s, output $( [ -e "$TMP/k.h5" ] && echo exists || echo absent)" "$(tail -n 5 "$TMP/k.log")"; fi
if [ -e "$TMP/k.h5.ckpt" ]; then
    $MPI -np 3 "$SUBSCOPE" collect "${bopts[@]}" --resume --out "$TMP/k.h5" >/dev/null 2>&1
    expect_ok "resume with 3 ranks from the checkpoint of 2 = one uninterrupted process" \
        "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/b1.h5" "$TMP/k.h5"
    [ ! -e "$TMP/k.h5.ckpt" ] && pass "checkpoint removed once the result is whole" || fail "checkpoint left behind"
else fail "the killed job left its checkpoint"; fi

# Stopped by a signal in the middle of the run (SIGTERM to rank 0, the writer; SIGINT, Ctrl-C's,
# to rank 1): the job ends within seconds (mpirun stops the other rank), with no output or
# temporary file; the temporaries' handler must not hold the rank in a blocking wait.
for who in "0 TERM" "1 INT"; do
    read -r rk sig <<<"$who"
    rm -f "$TMP"/g.h5*
    timeout 60 $MPI -np 2 "$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/g.h5" >"$TMP/g.log" 2>&1 &
    mp=$!
    for _ in $(seq 1 300); do [ -e "$TMP/g.h5.ckpt" ] && break; sleep 0.02; done
    r=$(rank_pid $mp $rk)
    t0=$(date +%s)
    [ -n "$r" ] && kill -$sig "$r"
    wait $mp; rc=$?; dt=$(( $(date +%s) - t0 ))
    left=$(ls -A "$TMP" | grep '^g\.h5' | grep -v '^g\.h5\.ckpt$')
    if [ -n "$r" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $dt -le 10 ] && [ -z "$left" ]; then
        pass "SIG$sig to rank $rk during collect -np 2: the job stops (exit $rc, ${dt}s), no output or temporary"
    else fail "SIG$sig to rank $rk during collect -np 2" "pid '$r', exit $rc after ${dt}s, left: $left" "$(tail -n 3 "$TMP/g.log")"; fi
done
rm -f "$TMP"/g.h5*

# A rank that hangs (stopped): rank 0 gives up after SUBSCOPE_DIST_TIMEOUT seconds and names it.
t0=$(date +%s)
SUBSCOPE_DIST_TIMEOUT=2 timeout 60 $MPI -np 2 "$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/s.h5" >"$TMP/s.log" 2>&1 &
mp=$!
for _ in $(seq 1 300); do [ -e "$TMP/s.h5.ckpt" ] && break; sleep 0.02; done
r1=$(rank_pid $mp 1)
[ -n "$r1" ] && kill -STOP "$r1"
wait $mp; rc=$?; dt=$(( $(date +%s) - t0 ))
[ -n "$r1" ] && kill -9 "$r1" 2>/dev/null
if [ -n "$r1" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank 1 (host .*) did not" "$TMP/s.log" && [ ! -e "$TMP/s.h5" ]; then
    pass "rank 1 hung: timeout after 2 s stops the job (exit $rc, ${dt}s), naming rank 1 and its host"
else fail "hung rank" "pid '$r1', exit $rc after ${dt}s" "$(tail -n 5 "$TMP/s.log")"; fi
finish
