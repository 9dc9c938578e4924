#!/usr/bin/env bash
# The NCCL communicator without a GPU (docs/DISTRIBUTED.md "NCCL"):
# - bin/subscope with SUBSCOPE_DIST=nccl refuses clearly: "this build has no
#   NCCL" in a build without it, "sees no CUDA device" in one with it on a
#   machine without a GPU (the real run is in tests/gpu/gpu_check.sh);
# - the communicator API tests (tests/unit/test_dist_api.c) under mpirun with
#   2 and 3 ranks, on MPI and on the NCCL communicator's own code over its
#   emulation (tests/unit/nccl_emu.c), with a small staging chunk so that
#   messages and device all-reduces go in many pieces; a rank that never
#   sends, and one whose send never leaves, stop within the timeout naming
#   the peer; more ranks on a host than GPUs is refused.
source "$(dirname "$0")/lib.sh"
: "${TEST_BIN:=bin/test_unit}"
export ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none

if grep -q '^HAVE_NCCL := 1' build/config.mk 2>/dev/null && grep -q '^NVCC :=' build/config.mk 2>/dev/null; then
    # Built with NCCL: without a usable GPU the open stops at the device.
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        pass "SUBSCOPE_DIST=nccl with a GPU present: checked by make gpu-check instead"
    else
        expect_fail "SUBSCOPE_DIST=nccl without a GPU: a clear error" "sees no CUDA device" env SUBSCOPE_DIST=nccl "$SUBSCOPE" info --dist
    fi
else
    expect_fail "SUBSCOPE_DIST=nccl in a build without NCCL: refused" "this build has no NCCL" env SUBSCOPE_DIST=nccl "$SUBSCOPE" info --dist
fi
expect_fail "SUBSCOPE_DIST=gloo: refused, naming the choices" "SUBSCOPE_DIST='gloo': must be auto (single process or MPI, from the launcher) or nccl" \
    env SUBSCOPE_DIST=gloo "$SUBSCOPE" info --dist

if ! command -v mpirun >/dev/null 2>&1; then
    echo "  skip: no mpirun on this machine, so no multi-rank runs ('make deps' installs openmpi-bin libopenmpi-dev)"
    finish; exit
fi
MPI="mpirun --allow-run-as-root --oversubscribe"
# api_run NAME NP FILTER ENV...: the unit binary's FILTER tests on NP ranks, all passing on every rank.
api_run() {
    local name=$1 np=$2 filter=$3 out n; shift 3
    out=$(timeout 120 $MPI -np "$np" env SUBSCOPE_DIST_TIMEOUT=20 "$@" "$TEST_BIN" "$filter" 2>&1)
    n=$(printf '%s\n' "$out" | grep -cE '^[1-9][0-9]* passed, 0 failed')
    if [ "$n" = "$np" ]; then pass "$name"
    else fail "$name" "$(printf '%s\n' "$out" | grep -E 'FAIL|tests/unit|passed|rror' | head -n 6)"; fi
}
for n in 2 3; do
    api_run "communicator API, MPI, $n ranks" $n dist_api SS_TEST_BACKEND=mpi
    api_run "communicator API, NCCL code over its emulation, $n ranks (1000-byte staging)" $n dist_api \
        SS_TEST_BACKEND=nccl SUBSCOPE_DIST=nccl SUBSCOPE_NCCL_CHUNK=1000
done
api_run "communicator API, MPI without the sender thread (SUBSCOPE_SEND_THREAD=0), 2 ranks" 2 dist_api \
    SS_TEST_BACKEND=mpi SUBSCOPE_SEND_THREAD=0
api_run "MPI: a rank that never sends is named after 1 s" 2 dist_stall_times
api_run "MPI: a background send that is never received is named after 1 s" 2 dist_stall_isend
api_run "MPI without the sender thread: a send that is never received is named after 1 s" 2 dist_stall_isend \
    SUBSCOPE_SEND_THREAD=0
api_run "NCCL (emulated): a rank that never sends is named, the communicator aborted" 2 dist_stall_times SUBSCOPE_DIST=nccl
api_run "NCCL (emulated): a send that never leaves is named" 2 dist_stall_times SUBSCOPE_DIST=nccl SS_TEST_STALL=send
api_run "NCCL (emulated): a failed ncclSend's message, NCCL's text in it, is kept whole after the abort" 2 \
    dist_failed_nccl_send SUBSCOPE_DIST=nccl
# Whole jobs with the NCCL communicator (its emulation) as the world: data-parallel collect and
# forward on 2 and 3 ranks, and 2 copies of a 2-stage pipeline on 4, against one process.
# The ranks run the jobs inside the unit-test binary, which takes OpenBLAS's own choice of
# kernels (it does not start through subscope's main): the one-process references keep that
# choice too (SUBSCOPE_BLAS_CORE=keep), or a CPU that OpenBLAS does not know would compare
# two kernels' rounding (docs/DECISIONS.md, "OpenBLAS's kernels on a CPU it does not know").
export SUBSCOPE_THREADS=1 SUBSCOPE_BLAS_CORE=keep
"$SUBSCOPE" collect --model models/tiny-gpt2 --input data/demo_prompts.jsonl --batch 2 --device cpu \
    --sites 'blocks.*.mlp.hook_post,ln_final.hook_normalized' --stats mean,cov,pca:3 --out "$TMP/c1.h5" 2>/dev/null
"$SUBSCOPE" forward --model models/tiny-gpt2 --input data/demo_prompts.jsonl --batch 2 --device cpu \
    --sites 'blocks.1.attn.hook_pattern,blocks.*.hook_resid_post' --out "$TMP/f1.h5" 2>/dev/null
for np_p in "2 0" "3 0" "4 2"; do
    set -- $np_p
    rm -rf "$TMP/jobs"; mkdir -p "$TMP/jobs"
    what="$1 ranks"; [ "$2" = 0 ] || what="$1 ranks, 2 copies of a $2-stage pipeline"
    api_run "NCCL (emulated): collect and forward jobs run, $what" $1 dist_jobs_over_the_world \
        SUBSCOPE_DIST=nccl SS_TEST_JOB_OUT="$TMP/jobs" SS_TEST_JOB_PIPELINE=$2
    expect_ok "NCCL (emulated), $what: collect = one process within 1e-12" \
        "${TOOLBIN}h5cmp" --quiet --atol 1e-14 --rtol 1e-12 --only /stats "$TMP/c1.h5" "$TMP/jobs/collect.h5"
    expect_ok "NCCL (emulated), $what: forward = one process, bit for bit" \
        "${TOOLBIN}h5cmp" --quiet --atol 0 --rtol 0 --only /acts --only /logits "$TMP/f1.h5" "$TMP/jobs/forward.h5"
done

# forward on the emulated GPU, where every rank's sites reach its hook one batch late and a rank
# that sends them to the writer ends each batch one pass late: 2 and 3 data-parallel ranks and 2
# copies of a 2-stage pipeline (MPI) write what one process on the emulated GPU writes, bit for bit.
rm -rf "$TMP/gjobs1"; mkdir -p "$TMP/gjobs1"
if SS_TEST_JOB_OUT="$TMP/gjobs1" SS_TEST_JOB_GPU=1 "$TEST_BIN" dist_jobs_over_the_world >"$TMP/gj1.log" 2>&1 &&
   grep -q "^1 passed, 0 failed" "$TMP/gj1.log"; then
    for np_p in "2 0" "3 0" "4 2" "3 3"; do
        set -- $np_p
        rm -rf "$TMP/gjobs"; mkdir -p "$TMP/gjobs"
        what="$1 ranks"; [ "$2" = 0 ] || what="$1 ranks, $(( $1 / $2 )) cop$([ $(( $1 / $2 )) = 1 ] && echo y || echo ies) of a $2-stage pipeline"
        api_run "emulated GPU, MPI: collect and forward jobs run, $what" $1 dist_jobs_over_the_world \
            SS_TEST_JOB_OUT="$TMP/gjobs" SS_TEST_JOB_GPU=1 SS_TEST_JOB_PIPELINE=$2
        expect_ok "emulated GPU, $what: forward (sites handed over one batch late) = one process, bit for bit" \
            "${TOOLBIN}h5cmp" --quiet --atol 0 --rtol 0 --only /acts --only /logits "$TMP/gjobs1/forward.h5" "$TMP/gjobs/forward.h5"
    done
else fail "emulated GPU: one-process collect and forward" "$(tail -3 "$TMP/gj1.log")"; fi

out=$(timeout 60 $MPI -np 2 env SUBSCOPE_DIST=nccl SS_NCCL_EMU_DEVICES=1 "$TEST_BIN" dist_api_identity 2>&1)
if printf '%s' "$out" | grep -q "2 ranks on host .* but it has 1 visible CUDA device: NCCL needs a GPU of its own"; then
    pass "NCCL (emulated): 2 ranks on a host with 1 GPU refused before NCCL would hang"
else fail "NCCL: 2 ranks on 1 GPU" "$(printf '%s' "$out" | grep -E 'tests/unit' | head -n 2)"; fi
finish
