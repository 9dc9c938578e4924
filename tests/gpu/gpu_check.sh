#!/usr/bin/env bash
# make gpu-check: everything that needs a real GPU, in one run that a person
# starts on a GPU machine (no network needed):
#
#   1. detect the GPU (nvidia-smi) and build subscope for its compute
#      capability (CUDA_ARCH, machine code + PTX) in build/gpu-sm<CC>/;
#   2. run every CUDA kernel natively against the CPU reference at small,
#      edge-case and model-sized shapes (tests/gpu/kernel_check.c), the
#      backward ops' kernels reported on a line of their own;
#   3. run `subscope forward`, `subscope attribute` (the backward pass, both attention-backward
#      variants) and `subscope collect` (cublasSsyrk and the cov_lower kernel; cuSOLVER PCA) on the
#      CPU and on the GPU for the bundled model
#      and for random GPT-2 models (bin/mkmodel: GPT-2 small's shape, a wider
#      bf16 one with d_head 128 and 2048 positions, a ragged f16 one) and
#      compare logits and every site with h5cmp; `predict --generate` too: tiny-gpt2's
#      continuation on the CPU, on the GPU and recomputed there, and small bf16 and fp16 models'
#      (heads of 64, 128 and 32; the key/value cache held in their dtype) compared token by
#      token where their logit margins allow (gen_cmp); `trace`'s forward-mode attribution on the
#      GPU against the CPU's prefixes (tiny-gpt2 and the GGUF test Llama);
#   3b. the NCCL communicator (SUBSCOPE_DIST=nccl, src/dist/comm_nccl.c):
#      info --dist and a data-parallel `collect` on the GPU under mpirun
#      (2 ranks, one GPU each, when there are 2 GPUs; NCCL refuses two ranks
#      on one GPU, so with one GPU 1 rank, bootstrapped over MPI and through
#      a rendezvous file as under srun) against one process without NCCL;
#   4. run compute-sanitizer (memcheck, racecheck, synccheck, initcheck) over
#      kernel_check --quick and memcheck/racecheck over a small forward;
#   5. print one summary table and write it, with nvidia-smi's report, the
#      driver, toolkit and commit, to bench/results/gpu-check-<gpu>-<date>.json (a dry run's to build/gpu-check/).
#
# usage: tests/gpu/gpu_check.sh [--quick] [--keep] [--no-sanitizer] [--only STEPS] [--no-build] [--emulated]
#   --quick         bundled, ragged and the generation's small models only, kernel_check --quick,
#                   memcheck only
#   --emulated      no GPU: the tree's build (bin/) with the CUDA plugin built from the emulated
#                   kernels (bin/emu, kernels/README.md) and kernel_check_emu, slowly; NCCL and
#                   the sanitizers skipped; a rehearsal of the checks' plumbing and of the host
#                   code, not of a GPU's arithmetic, recorded under build/gpu-check/; each
#                   step's time limit 20 times a GPU's, GPU_CHECK_BUDGET 10800 unless set
#   --no-build      use the tree's build as it is (bin/, build/config.mk), e.g. unpacked from
#                   tests/gpu/bundle.sh's tarball on a node without compilers or HDF5 headers
#   --keep          keep the random models and HDF5 outputs under build/gpu-check/
#   --no-sanitizer  skip step 4
#   --only STEPS    run only these of kernels,forward,nccl,sanitizer (comma-separated;
#                   detection and the build always run)
# Environment: GPU_CHECK_ATOL/GPU_CHECK_RTOL (CPU-vs-GPU forward tolerance,
# default 2e-4 each; GPU_CHECK_BF16_NMSE, default 1e-4, the whole-dataset NMSE bound for
# --dtype bfloat16; GPU_CHECK_LLAMA_NMSE, default 1e-3, the same for the random Llama models
# through the tensor-core attention; GPU_CHECK_GEN_BF16 and GPU_CHECK_GEN_FP16, default 3e-2 and
# 5e-3, the generation comparisons' bounds on the chosen tokens' logits relative to the largest),
# GPU_CHECK_JOBS (make -j, default: cores up to 16),
# GPU_CHECK_DEVICE (what the forward checks compare with the CPU, default
# cuda; "cpu" dry-runs the comparison plumbing on a machine without a GPU),
# GPU_CHECK_MATCH (an extended regular expression: the CPU-vs-GPU comparisons whose
# name it does not match are skipped, to spend a short lease on a few; the random models
# and prompt files are made only for the comparisons it selects),
# GPU_CHECK_BUDGET (seconds for the whole run, default 540: a step that
# would start later is skipped, a running one is stopped at the deadline, and
# the summary is still written), NVIDIA_SMI (the nvidia-smi to run; the CLI
# tests point it at fakes).
#
# Every step's failure is recorded and the script goes on to the summary.
# Exit status: 0 all checks passed, 1 some check failed, 2 no GPU visible
# (nothing was run).
set -u
cd "$(dirname "$0")/../.." || exit 2
ROOT=$(pwd)

QUICK=0 KEEP=0 SANITIZE=1 BUILD=1 EMU=0 STEPS=kernels,forward,nccl,sanitizer
while [ $# -gt 0 ]; do
    a=$1; shift
    case $a in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --no-sanitizer) SANITIZE=0 ;;
    --no-build) BUILD=0 ;;
    --emulated) EMU=1 BUILD=0 ;;
    --only)
        STEPS=${1:-}; shift
        [[ $STEPS =~ ^((kernels|forward|nccl|sanitizer),?)+$ ]] || { echo "gpu_check: --only takes kernels,forward,nccl,sanitizer" >&2; exit 2; } ;;
    -h | --help) sed -n '2,/^set -u$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown option $a (see --help)" >&2; exit 2 ;;
    esac
done
want() { [[ ,$STEPS, == *,$1,* ]]; }

NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
ATOL=${GPU_CHECK_ATOL:-2e-4}
DEV=${GPU_CHECK_DEVICE:-cuda}
RTOL=${GPU_CHECK_RTOL:-2e-4}
BUDGET=${GPU_CHECK_BUDGET:-540}
BF16_NMSE=${GPU_CHECK_BF16_NMSE:-1e-4}
LLAMA_NMSE=${GPU_CHECK_LLAMA_NMSE:-1e-3} # the random Llama models through the tensor-core attention (below)
GEN_BF16=${GPU_CHECK_GEN_BF16:-3e-2} # predict --generate of 16-bit models: gen_cmp's bounds (below)
GEN_FP16=${GPU_CHECK_GEN_FP16:-5e-3}
num_re='^[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$'
for v in "$ATOL" "$RTOL" "$BUDGET" "$BF16_NMSE" "$LLAMA_NMSE" "$GEN_BF16" "$GEN_FP16"; do
    [[ $v =~ $num_re ]] || { echo "gpu_check: GPU_CHECK_ATOL/RTOL/BUDGET/BF16_NMSE/LLAMA_NMSE/GEN_BF16/GEN_FP16 must be numbers (got \"$v\")" >&2; exit 2; }
done
# fp32 means fp32: the CPU-vs-GPU tolerances assume TF32 is off.
unset SUBSCOPE_TF32
T_START=$(date +%s)

# ---- 1a. is there a GPU? ----------------------------------------------------
no_gpu() {
    echo "gpu_check: no GPU visible: $1" >&2
    echo "gpu_check: make gpu-check needs a machine with an NVIDIA GPU and its driver; nothing was run." >&2
    exit 2
}
# A plugin directory holding the emulated plugin (its census's text is in it) makes any run an
# emulated one, so that its results are never filed as a GPU's.
if [ $EMU = 0 ] && [ -n "${SUBSCOPE_PLUGIN_DIR:-}" ] &&
    grep -aq "cuda_emu census" "$SUBSCOPE_PLUGIN_DIR/libsubscope-cuda.so" 2>/dev/null; then
    echo "gpu_check: SUBSCOPE_PLUGIN_DIR holds the emulated plugin: running as --emulated" >&2
    EMU=1 BUILD=0
fi
if [ $EMU = 1 ]; then
    export SUBSCOPE_PLUGIN_DIR=${SUBSCOPE_PLUGIN_DIR:-$ROOT/bin/emu}
    NVIDIA_SMI=true
    [ -n "${GPU_CHECK_BUDGET:-}" ] || BUDGET=10800 # its steps take about 20 times as long
    q="emulated, 9.0, -, -, $SUBSCOPE_PLUGIN_DIR/libsubscope-cuda.so" # as nvidia-smi's query below
elif ! command -v "$NVIDIA_SMI" >/dev/null 2>&1; then
    no_gpu "nvidia-smi not found (no NVIDIA driver on this machine)"
elif [ -n "${CUDA_VISIBLE_DEVICES+x}" ] && [ -z "$CUDA_VISIBLE_DEVICES" ]; then
    no_gpu "CUDA_VISIBLE_DEVICES is set to the empty string"
fi
# CUDA's device 0 is the first entry of CUDA_VISIBLE_DEVICES when it is set.
sel=()
first=${CUDA_VISIBLE_DEVICES:-}
first=${first%%,*}
[ -n "$first" ] && sel=(-i "$first")
if [ $EMU = 0 ] && ! q=$("$NVIDIA_SMI" "${sel[@]}" --query-gpu=name,compute_cap,memory.total,driver_version,pci.bus_id --format=csv,noheader 2>&1); then
    no_gpu "nvidia-smi failed: $(printf '%s' "$q" | head -n 2 | tr '\n' ' ')"
fi
q=$(printf '%s\n' "$q" | grep -v '^[[:space:]]*$' | head -n 1)
[ -n "$q" ] || no_gpu "nvidia-smi lists no GPU"
IFS=',' read -r GPU_NAME GPU_CC GPU_MEM GPU_DRIVER GPU_BUS <<<"$q"
trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
GPU_NAME=$(trim "$GPU_NAME"); GPU_CC=$(trim "$GPU_CC"); GPU_MEM=$(trim "$GPU_MEM")
GPU_DRIVER=$(trim "${GPU_DRIVER:-}"); GPU_BUS=$(trim "${GPU_BUS:-}")
[[ $GPU_CC =~ ^[0-9]+\.[0-9]+$ ]] || no_gpu "nvidia-smi gave no usable compute capability (\"$q\")"
ARCH=${GPU_CC/./}

# ---- bookkeeping ------------------------------------------------------------
WORK=$ROOT/build/gpu-check
LOGS=$WORK/logs
rm -rf "$LOGS" && mkdir -p "$LOGS" "$WORK/models" "$WORK/out" || { echo "gpu_check: cannot create $WORK" >&2; exit 1; }
O=build/gpu-sm$ARCH
B=$ROOT/$O/bin
[ $BUILD = 0 ] && O=build B=$ROOT/bin
CHECKS=() RESULTS=() DETAILS=() SECS=()
record() { # record NAME PASS|FAIL|SKIP DETAILS SECONDS
    CHECKS+=("$1"); RESULTS+=("$2"); DETAILS+=("$3"); SECS+=("${4:-0}")
    printf '  %-4s %-40s %s\n' "$2" "$1" "$3"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Runs a command with a time limit (clamped to what is left of the budget),
# output to a log (with RUN_STDOUT=FILE set, its stdout to FILE); returns its
# status: 124 on timeout, 125 (and runs nothing) when the budget is spent.
run_logged() { # run_logged LOG SECONDS CMD...
    local log=$1 lim=$2 left; shift 2
    [ $EMU = 1 ] && lim=$((lim * 20)) # the emulation runs a GPU's steps about that much slower
    left=$(( T_START + ${BUDGET%.*} - $(date +%s) ))
    echo "\$ $*" >"$log"
    if [ $left -lt 5 ]; then echo "skipped: the time budget (GPU_CHECK_BUDGET=${BUDGET}s) is spent" >>"$log"; return 125; fi
    [ $left -lt "$lim" ] && lim=$left
    if [ -n "${RUN_STDOUT:-}" ]; then timeout --signal=TERM --kill-after=10 "$lim" "$@" >"$RUN_STDOUT" 2>>"$log"
    else timeout --signal=TERM --kill-after=10 "$lim" "$@" >>"$log" 2>&1; fi
}
# Why a logged command failed: its last line, or the timeout.
why() { # why LOG RC
    if [ "$2" = 124 ]; then echo "timed out (step limit or GPU_CHECK_BUDGET)"
    else tail -n 1 "$1" | cut -c 1-200; fi
}
# A step that did not run for lack of time is SKIP, not FAIL.
budget_skip() { # budget_skip NAME RC SECONDS: records and returns 0 if rc says "budget spent"
    [ "$2" = 125 ] || return 1
    record "$1" SKIP "time budget spent (GPU_CHECK_BUDGET=${BUDGET}s)" "$3"
}

echo "gpu_check: GPU 0: $GPU_NAME, compute capability $GPU_CC, $GPU_MEM, driver $GPU_DRIVER"
SMI_FULL=$("$NVIDIA_SMI" 2>&1 || true)
DRIVER_CUDA=$(printf '%s\n' "$SMI_FULL" | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
record "gpu detected" PASS "$GPU_NAME, sm_$ARCH, $GPU_MEM, driver $GPU_DRIVER (CUDA ${DRIVER_CUDA:-?})"

# ---- 1b. build for this GPU ---------------------------------------------------
JOBS=${GPU_CHECK_JOBS:-$(n=$(nproc 2>/dev/null || echo 4); [ "$n" -gt 16 ] && n=16; echo "$n")}
t0=$(now)
BUILD_OK=0
if [ $BUILD = 0 ]; then
    echo "--no-build: using $O/config.mk and ${B#"$ROOT"/}/ as they are" >"$LOGS/build.log"
    build_rc=0
else
    run_logged "$LOGS/build.log" 900 make --no-print-directory -j"$JOBS" O="$O" CUDA_ARCH="$ARCH" all
    build_rc=$?
fi
if [ $build_rc = 0 ]; then
    if grep -q '^HAVE_CUBLAS := 1' "$O/config.mk" && grep -q '^NVCC :=' "$O/config.mk" && [ -x "$B/kernel_check" ] &&
        { [ -e "$B/libsubscope-cuda.so" ] || [ -e "$B/.real/libsubscope-cuda.so" ]; }; then
        BUILD_OK=1
    fi
    # emulated: the program must load a CUDA plugin at all (built with CUDA), and the emulated
    # plugin and kernel_check must be there (make test builds both)
    if [ $EMU = 1 ]; then
        BUILD_OK=0
        grep -q '^HAVE_CUBLAS := 1' "$O/config.mk" && grep -q '^NVCC :=' "$O/config.mk" &&
            [ -e "$SUBSCOPE_PLUGIN_DIR/libsubscope-cuda.so" ] && [ -x "$B/kernel_check_emu" ] && BUILD_OK=1
        [ $BUILD_OK = 1 ] || echo "--emulated needs a build with CUDA, $SUBSCOPE_PLUGIN_DIR/libsubscope-cuda.so and $B/kernel_check_emu (make test builds them)" >>"$LOGS/build.log"
    fi
fi
NVCC=$(sed -n 's/^NVCC := //p' "$O/config.mk" 2>/dev/null)
CUDA_HOME=$(sed -n 's/^CUDA_HOME := //p' "$O/config.mk" 2>/dev/null)
NVCC_VER=$([ -n "$NVCC" ] && "$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
if [ $BUILD_OK = 1 ]; then
    sass=""
    if command -v "${CUDA_HOME:-/nonexistent}/bin/cuobjdump" >/dev/null 2>&1; then
        sass=$("$CUDA_HOME/bin/cuobjdump" --list-elf --list-ptx "$O/rel/kernels/attention.o" 2>/dev/null |
            grep -oE 'sm_[0-9]+[a-z]?(\.cubin|\.ptx)' | sort -u | tr '\n' ' ')
    fi
    record "$([ $BUILD = 0 ] && echo prebuilt || echo build) (CUDA_ARCH=$ARCH)" PASS "$O, nvcc ${NVCC_VER:-?}; attention.o holds: ${sass:-?}" "$(elapsed "$t0")"
else
    why=$(grep -E 'error|Error' "$LOGS/build.log" | head -n 3 | tr '\n' ' ')
    [ -z "$why" ] && ! grep -q '^HAVE_CUBLAS := 1' "$O/config.mk" 2>/dev/null && why="CUDA backend not built: nvcc or cuBLAS not found (see $O/features.txt)"
    record "build (CUDA_ARCH=$ARCH)" FAIL "${why:-see $LOGS/build.log}" "$(elapsed "$t0")"
fi
if [ -n "$NVCC_VER" ] && [ -n "$DRIVER_CUDA" ] &&
    awk -v t="$NVCC_VER" -v d="$DRIVER_CUDA" 'BEGIN { split(t, a, "."); split(d, b, "."); exit !(a[1] > b[1] || (a[1] == b[1] && a[2] > b[2])) }'; then
    echo "gpu_check: warning: the toolkit (CUDA $NVCC_VER) is newer than the driver supports (CUDA $DRIVER_CUDA);" \
        "if every GPU step fails with 'driver version is insufficient', install a matching toolkit or driver"
fi

# ---- 2. kernels natively against the CPU reference ---------------------------
kernel_summary() { # kernel_summary LOG: "N cases, M failed (...)" and the failing case names
    local s f
    s=$(grep -E '^kernel_check: [0-9]+ cases' "$1" | tail -n 1 | sed 's/^kernel_check: //')
    f=$(grep -E '^CASE .*FAIL' "$1" | head -n 3 | sed -E 's/^CASE +//; s/ +n=.*//; s/ FAIL.*//' | tr '\n' ';')
    [ -z "$s" ] && s="no summary line: $(tail -n 1 "$1" | cut -c 1-150)"
    printf '%s%s' "$s" "${f:+; failing: $f}"
}
if ! want kernels; then
    :
elif [ $BUILD_OK = 1 ]; then
    t0=$(now)
    kq=(); [ $QUICK = 1 ] && kq=(--quick)
    kc=$B/kernel_check; [ $EMU = 1 ] && kc=$B/kernel_check_emu
    run_logged "$LOGS/kernel_check.log" 300 "$kc" "${kq[@]}"
    rc=$?
    if ! budget_skip "kernels vs CPU reference" $rc 0; then
        res=PASS; [ $rc -ne 0 ] && res=FAIL
        det=$(kernel_summary "$LOGS/kernel_check.log"); [ $rc = 124 ] && det="timed out; $det"
        record "kernels vs CPU reference" $res "$det" "$(elapsed "$t0")"
        # The backward ops' cases ("CASE bwd ...": layernorm/gelu/attention/
        # embed backward, softmax_xent, sum_rows, and the backend's cuBLAS
        # matmul_tn and zero) get their own line, so a forward-only pass
        # cannot hide a backward failure in the total.
        nb=$(grep -cE '^CASE bwd ' "$LOGS/kernel_check.log")
        fb=$(grep -E '^CASE bwd .*FAIL' "$LOGS/kernel_check.log" | head -n 3 | sed -E 's/^CASE +//; s/ +n=.*//; s/ FAIL.*//' | tr '\n' ';')
        nfb=$(grep -cE '^CASE bwd .*FAIL' "$LOGS/kernel_check.log")
        if [ "$nb" = 0 ]; then record "backward kernels vs CPU reference" FAIL "no bwd case ran ($det)"
        elif [ "$nfb" = 0 ] && [ $rc -ne 124 ]; then record "backward kernels vs CPU reference" PASS "$nb cases"
        else record "backward kernels vs CPU reference" FAIL "$nb cases, $nfb failed${fb:+; failing: $fb}$([ $rc = 124 ] && echo '; timed out')"; fi
    fi
else
    record "kernels vs CPU reference" SKIP "build failed"
fi

# ---- 3. forward on CPU and GPU -------------------------------------------------
# compare_forward NAME MODEL PROMPTS SITES [extra forward args]: forward on
# both devices, h5cmp everything (the CPU file is the expected one). With
# RUN_CMD=attribute the same for `subscope attribute` (the backward pass).
compare_forward() {
    local name=$1 model=$2 prompts=$3 sites=$4; shift 4
    local tag=${name//[^A-Za-z0-9_.-]/_} t0 rc out det
    selected "$name" || return 0
    need "$model" "$prompts" || return 1
    local cmd=(forward --compress 0)
    [ "${RUN_CMD:-forward}" = attribute ] && cmd=(attribute)
    [ "${RUN_CMD:-forward}" = collect ] && cmd=(collect)
    [ "${RUN_CMD:-forward}" = ablate ] && cmd=(ablate)
    [ "${RUN_CMD:-forward}" = patch ] && cmd=(patch)
    local sarg=(--sites "$sites")
    [ "$sites" = - ] && sarg=() # ablate: the masks name the sites
    t0=$(now)
    out=$WORK/out/$tag
    run_logged "$LOGS/fwd-$tag-cpu.log" 300 "$B/subscope" "${cmd[@]}" --model "$model" --input "$prompts" \
        --out "$out-cpu.h5" "${sarg[@]}" --device cpu "$@"
    rc=$?
    budget_skip "$name" $rc 0 && return
    if [ $rc != 0 ]; then
        record "$name" FAIL "CPU forward failed: $(why "$LOGS/fwd-$tag-cpu.log" $rc)" "$(elapsed "$t0")"
        return
    fi
    run_logged "$LOGS/fwd-$tag-cuda.log" 300 "$B/subscope" "${cmd[@]}" --model "$model" --input "$prompts" \
        --out "$out-cuda.h5" "${sarg[@]}" --device "$DEV" "$@"
    rc=$?
    if [ $rc != 0 ]; then
        budget_skip "$name" $rc 0 || record "$name" FAIL "GPU forward failed: $(why "$LOGS/fwd-$tag-cuda.log" $rc)" "$(elapsed "$t0")"
        rm -f "$out-cpu.h5"
        return
    fi
    local tol=(--atol "${CMP_ATOL:-$ATOL}" --rtol "${CMP_RTOL:-$RTOL}")
    [ -n "${CMP_NMSE:-}" ] && tol=(--nmse "$CMP_NMSE")
    local only
    for only in ${CMP_ONLY:-}; do tol+=(--only "$only"); done
    run_logged "$LOGS/cmp-$tag.log" 300 "$B/h5cmp" "${tol[@]}" "$out-cpu.h5" "$out-cuda.h5"
    rc=$?
    if budget_skip "$name" $rc 0; then rm -f "$out-cpu.h5" "$out-cuda.h5"; return; fi
    # the largest max_abs over the float datasets, and where
    local worst
    worst=$(awk 'BEGIN { m = -1 } /max_abs=/ { for (i = 1; i <= NF; i++) if ($i ~ /^max_abs=/) { v = substr($i, 9) + 0; if (v > m) { m = v; w = $1 } } }
                 END { if (w != "") printf "max |cpu-gpu| %.2e at %s", m, w }' "$LOGS/cmp-$tag.log")
    det=$(grep -E '^h5cmp:' "$LOGS/cmp-$tag.log" | tail -n 1 | sed 's/^h5cmp: //')
    if [ $rc = 0 ]; then
        record "$name" PASS "$det; $worst" "$(elapsed "$t0")"
    else
        [ $rc = 124 ] && det="h5cmp timed out"
        record "$name" FAIL "${det:-h5cmp exit $rc}; first: $(grep -m 1 FAIL "$LOGS/cmp-$tag.log" | cut -c 1-160)" "$(elapsed "$t0")"
    fi
    [ $KEEP = 1 ] || [ $rc != 0 ] || rm -f "$out-cpu.h5" "$out-cuda.h5"
}

# compare_trace NAME MODEL SUBMODELS PROMPT: trace's attribution by the forward-mode pass on
# the GPU (norm_jvp, swiglu_jvp, attention_jvp and the tangent's products) against the CPU's
# prefixes (backward passes), every /submodels dataset with h5cmp at the forward's tolerance.
compare_trace() {
    local name=$1 model=$2 subs=$3 prompt=$4 tag=${1//[^A-Za-z0-9_.-]/_} t0 rc out det
    selected "$name" || return 0
    need "$model" "$subs" || return 1
    t0=$(now)
    out=$WORK/out/$tag
    run_logged "$LOGS/trace-$tag-cpu.log" 300 "$B/subscope" trace --model "$model" --prompt "$prompt" \
        --submodels "$subs" --attribution-pass prefixes --device cpu --out "$out-cpu.h5"
    rc=$?
    budget_skip "$name" $rc 0 && return
    if [ $rc != 0 ]; then record "$name" FAIL "CPU trace failed: $(why "$LOGS/trace-$tag-cpu.log" $rc)" "$(elapsed "$t0")"; return; fi
    run_logged "$LOGS/trace-$tag-cuda.log" 300 "$B/subscope" trace --model "$model" --prompt "$prompt" \
        --submodels "$subs" --attribution-pass forward --device "$DEV" --out "$out-cuda.h5"
    rc=$?
    if [ $rc != 0 ]; then
        budget_skip "$name" $rc 0 || record "$name" FAIL "GPU trace failed: $(why "$LOGS/trace-$tag-cuda.log" $rc)" "$(elapsed "$t0")"
        return
    fi
    run_logged "$LOGS/cmp-$tag.log" 300 "$B/h5cmp" --atol "$ATOL" --rtol "$RTOL" --only /submodels "$out-cpu.h5" "$out-cuda.h5"
    rc=$?
    budget_skip "$name" $rc 0 && return
    det=$(grep -E '^h5cmp:' "$LOGS/cmp-$tag.log" | tail -n 1 | sed 's/^h5cmp: //')
    if [ $rc = 0 ]; then record "$name" PASS "$det" "$(elapsed "$t0")"
    else record "$name" FAIL "${det:-h5cmp exit $rc}; first: $(grep -m 1 FAIL "$LOGS/cmp-$tag.log" | cut -c 1-160)" "$(elapsed "$t0")"; fi
}

# selected NAME: whether GPU_CHECK_MATCH (if set) selects the comparison NAME; if not, it is
# recorded as skipped
selected() {
    [ -z "${GPU_CHECK_MATCH:-}" ] || [[ $1 =~ $GPU_CHECK_MATCH ]] && return 0
    record "$1" SKIP "not selected (GPU_CHECK_MATCH)" 0
    return 1
}
# With GPU_CHECK_MATCH set, make_model and prompts make nothing at once: they leave the command
# in DEFERRED under the directory or file it would write, and the first selected comparison that
# reads it makes it (need), so that no model or prompt file is made for cases the filter skips
# (gpt2-small's shape, wide-bf16 and the Llama ones took about 15 s of a lease's host time)
declare -A DEFERRED=() DEFER_FAILED=()
defer() { # defer PATH CMD...: 0 (and CMD left for need) when GPU_CHECK_MATCH is set, else 1
    [ -n "${GPU_CHECK_MATCH:-}" ] && [ -z "${MAKING:-}" ] || return 1
    DEFERRED[$1]=$(printf '%q ' "${@:2}")
}
# made PATH: whether PATH is there or is left for need to make
made() { [ -s "$1" ] || [ -n "${DEFERRED[$1]:-}" ]; }
need() { # need PATH...: makes those of PATHs left by defer; 1 if one of them could not be made
    local p c
    for p in "$@"; do
        [ -z "${DEFER_FAILED[$p]:-}" ] || return 1
        c=${DEFERRED[$p]:-}
        [ -n "$c" ] || continue
        unset 'DEFERRED[$p]'
        eval "MAKING=1 $c" || { DEFER_FAILED[$p]=1; return 1; }
    done
}
# make_model NAME MKMODEL-ARGS...: a random model under $WORK/models/NAME
make_model() {
    local name=$1; shift
    local dir=$WORK/models/$name
    defer "$dir" make_model "$name" "$@" && return 0
    run_logged "$LOGS/mkmodel-$name.log" 300 "$B/mkmodel" --out "$dir" "$@"
    local rc=$?
    [ $rc = 0 ] && return 0
    budget_skip "mkmodel $name" $rc 0 || record "mkmodel $name" FAIL "$(why "$LOGS/mkmodel-$name.log" $rc)"
    return 1
}
prompts() { # prompts MODEL VOCAB FILE LENGTHS
    local log=$LOGS/prompts-$(basename "$3").log
    defer "$3" prompts "$@" && return 0
    run_logged "$log" 60 "$B/mkmodel" --vocab "$2" --seed 3 --prompts "$3" --lengths "$4"
    local rc=$?
    [ $rc = 0 ] && return 0
    budget_skip "prompts for $1" $rc 0 || record "prompts for $1 ($4 tokens)" FAIL "$(tail -n 1 "$log")"
    return 1
}
# Sites without hook_pattern except in one layer: that layer takes the
# pattern-writing attention kernel, the others the flash kernel.
flash_sites() { echo "blocks.$1.attn.hook_pattern,blocks.*.attn.hook_z,blocks.*.hook_resid_post,ln_final.hook_normalized"; }

# gen_cmp A.log B.log RTOL: two greedy continuations traced by SUBSCOPE_PREDICT_TRACE=1 (each
# step's chosen id and logit, the runner-up's), step by step. Where the tokens agree, the chosen
# token's logits must agree within RTOL x max(|logit|, 1) (tol); at the first step where they
# differ, each run's chosen token must lead its runner-up by at most 2 tol (two runs whose logits
# are each within tol of the other's cannot part on a wider margin), and nothing is compared
# after it (the contexts differ). A logit that is not a finite number (nan, inf: a broken run,
# which greedy decoding still continues, with token 0) fails it: awk compares a NaN as it pleases
# (mawk finds it below any bound). Prints one line (PASS/FAIL, the steps that agreed, the largest
# relative difference of their logits, where and on what margins the runs parted); status 0 on PASS.
gen_cmp() {
    awk -v rtol="$3" '
        FNR == 1 { f++ }
        { k = index($0, "predict: step "); if (k > 1) $0 = substr($0, k) } # after a token on stdout (one log)
        $1 == "predict:" && $2 == "step" {
            n[f]++; id[f, $3] = $5; l[f, $3] = $7; rl[f, $3] = $11
            num = "^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"
            if (bad == "" && ($7 !~ num || $11 !~ num))
                bad = sprintf("FAIL step %d of %s: logit %s, runner-up %s (not finite numbers)", $3, FILENAME, $7, $11)
        }
        END {
            if (bad != "") { printf "%s", bad; exit 1 }
            m = n[1] < n[2] ? n[1] : n[2]; worst = 0
            for (i = 0; i < m; i++) {
                a = l[1, i]; b = l[2, i]; s = a < 0 ? -a : a; t = b < 0 ? -b : b; s = s > t ? s : t; s = s > 1 ? s : 1
                tol = rtol * s
                if (id[1, i] == id[2, i]) {
                    d = a - b; d = d < 0 ? -d : d
                    if (d / s > worst) worst = d / s
                    if (d > tol) { printf "FAIL step %d, token %s: logits %.6g and %.6g (%.2e apart, tol %.2e)", i, id[1, i], a, b, d / s, rtol; exit 1 }
                    continue
                }
                ma = a - rl[1, i]; mb = b - rl[2, i]; ok = ma <= 2 * tol && mb <= 2 * tol
                printf "%s %d equal (%.1e), parted at %d on margins %.3g, %.3g (<= %.3g)", ok ? "PASS" : "FAIL", i, worst, i, ma, mb, 2 * tol
                exit !ok
            }
            if (m == 0 || n[1] != n[2]) { printf "FAIL %d and %d steps traced", n[1], n[2]; exit 1 }
            printf "PASS %d equal (%.1e)", m, worst
        }' "$1" "$2"
}
# compare_generate NAME MODEL CPU-DTYPE GPU-DTYPE RTOL TOKENIZER MKMODEL-ARGS...: a small random
# model (bin/mkmodel, under build/gpu-check/models/MODEL, with TOKENIZER's tokenizer.json), then
# `predict --generate 24` of GEN_PROMPT on the CPU, on the GPU with its key/value cache (held in
# a 16-bit model's dtype) and on the GPU recomputing every pass (SUBSCOPE_PREDICT_RECOMPUTE=1),
# each pair by gen_cmp: cached vs CPU, recomputed vs CPU, cached vs recomputed
compare_generate() {
    local name=$1 mn=$2 cdt=$3 gdt=$4 rtol=$5 tok=$6 model tag t0 rc mode dev dt e res=PASS det="" line pair
    shift 6
    selected "$name" || return 0
    t0=$(now)
    make_model "$mn" "$@" && need "$WORK/models/$mn" || return
    model=$WORK/models/$mn
    cp "$tok/tokenizer.json" "$model/" || { record "$name" FAIL "cannot copy $tok/tokenizer.json" "$(elapsed "$t0")"; return; }
    tag=${name//[^A-Za-z0-9_.-]/_}
    [ "$DEV" = cpu ] && gdt=$cdt # a dry run: the CPU takes no float16
    for mode in cpu cached recomputed; do
        dev=$DEV e=() dt=$gdt
        [ $mode = cpu ] && dev=cpu dt=$cdt
        [ $mode = recomputed ] && e=(SUBSCOPE_PREDICT_RECOMPUTE=1)
        run_logged "$LOGS/gen-$tag-$mode.log" 120 env SUBSCOPE_PREDICT_TRACE=1 "${e[@]}" "$B/subscope" predict \
            --model "$model" --prompt "$GEN_PROMPT" --generate 24 --device "$dev" --dtype "$dt"
        rc=$?
        budget_skip "$name" $rc "$(elapsed "$t0")" && return
        if [ $rc != 0 ]; then
            record "$name" FAIL "$mode run failed: $(why "$LOGS/gen-$tag-$mode.log" $rc)" "$(elapsed "$t0")"
            return
        fi
    done
    for pair in cached:cpu recomputed:cpu cached:recomputed; do
        line=$(gen_cmp "$LOGS/gen-$tag-${pair%%:*}.log" "$LOGS/gen-$tag-${pair#*:}.log" "$rtol") || res=FAIL
        det="$det${det:+; }${pair/:/ vs } ${line}"
    done
    record "$name" $res "$det" "$(elapsed "$t0")"
    [ $KEEP = 1 ] || rm -rf "$model"
}

if ! want forward; then
    :
elif [ $BUILD_OK = 1 ]; then
    echo "gpu_check: forward on CPU and GPU (tolerance |cpu-gpu| <= $ATOL + $RTOL*|cpu|)"
    # bundled model: its text prompts through the tokenizer, then token ids up to n_positions
    tiny=models/tiny-gpt2
    compare_forward "forward tiny-gpt2 demo prompts, all sites" "$tiny" data/demo_prompts.jsonl '*'
    prompts "$tiny" 1024 "$WORK/models/tiny-lengths.jsonl" 1,2,31,32,33,64,127,128 &&
        compare_forward "forward tiny-gpt2 1..128 tokens, all sites" "$tiny" "$WORK/models/tiny-lengths.jsonl" '*' --batch 3
    compare_forward "forward tiny-gpt2 flash path" "$tiny" "$WORK/models/tiny-lengths.jsonl" "$(flash_sites 2)"
    # products with the bias in cuBLASLt's epilogue (SUBSCOPE_BIAS_EPILOGUE=1), fp32: same tolerance
    SUBSCOPE_BIAS_EPILOGUE=1 compare_forward "forward tiny-gpt2 demo prompts, bias epilogue (cuBLASLt)" "$tiny" \
        data/demo_prompts.jsonl '*'
    # the backward pass: attribute on both devices (gradients are O(1e-3..1), so the
    # forward's tolerance holds; the GPU attention backward reads P and dS from scratch)
    # ablate: every metric, scored on the device (logit_scores, gather); the losses, accuracies
    # and logit differences carry the forward's rounding, and the KL values are O(1e-3..1)
    RUN_CMD=ablate compare_forward "ablate tiny-gpt2 zero/scale/mean/resample masks, every metric" "$tiny" \
        tests/data/ablate/prompts.jsonl - --masks tests/data/ablate/masks.jsonl --metrics loss,acc,logitdiff,kl
    RUN_CMD=attribute compare_forward "attribute tiny-gpt2 logitdiff gradxact, all sites" "$tiny" tests/data/ablate/prompts.jsonl '*' \
        --metric logitdiff --method gradxact
    RUN_CMD=attribute compare_forward "attribute tiny-gpt2 1..128 tokens, loss grad, all sites" "$tiny" "$WORK/models/tiny-lengths.jsonl" '*' \
        --metric loss --method grad --batch 3
    # attributions formed on the device (attr_product), only the sums over positions brought back (seq_sums)
    RUN_CMD=attribute compare_forward "attribute tiny-gpt2 atp --reduce positions, device sums" "$tiny" \
        tests/data/patch/clean.jsonl 'blocks.*.mlp.hook_post,blocks.2.attn.hook_z' --metric logitdiff --method atp \
        --corrupt tests/data/patch/corrupt.jsonl --reduce positions
    # patch: K copies of a prompt a pass from the patched block, the pieces written on the device
    # (patch_pieces); the metrics (the effects divide by clean - corrupt, 1e-3 for one pair)
    CMP_ONLY="/clean_metric /corrupt_metric /patched_metric" RUN_CMD=patch compare_forward \
        "patch tiny-gpt2 per neuron, pieces on the device" "$tiny" tests/data/patch/clean.jsonl \
        'blocks.2.mlp.hook_post,blocks.1.attn.hook_z,hook_embed' --corrupt tests/data/patch/corrupt.jsonl --per neuron
    # integrated gradients' steps on the device (ig_point, ig_add, ig_attr)
    RUN_CMD=attribute compare_forward "attribute tiny-gpt2 ig:8 --recompute" "$tiny" tests/data/patch/clean.jsonl \
        'blocks.1.mlp.hook_post,blocks.2.attn.hook_z' --metric logitdiff --method ig:8 --recompute
    # trace's forward-mode attribution on the GPU against the CPU's prefixes: the bundled GPT-2 and
    # a grouped-query Llama (the GGUF test model), sub-models over MLP, attention and residual sites
    printf '%s\n' '{"name": "mlp", "site": "blocks.1.mlp.hook_post", "units": [10, 20, 30]}' \
        '{"name": "z", "site": "blocks.2.attn.hook_z", "heads": [1], "positions": [2, 6]}' \
        '{"name": "q_resid", "sites": [{"site": "blocks.0.attn.hook_q", "heads": [3]}, {"site": "blocks.1.hook_resid_mid"}]}' \
        >"$WORK/models/trace-gpt2.jsonl"
    printf '%s\n' '{"name": "rot_q", "site": "blocks.0.attn.hook_rot_q", "heads": [1]}' \
        '{"name": "k", "site": "blocks.1.attn.hook_k", "positions": [1, 3]}' \
        '{"name": "gate_lin", "sites": [{"site": "blocks.0.mlp.hook_pre", "units": [5, 50]}, {"site": "blocks.1.mlp.hook_pre_linear", "units": [7]}]}' \
        >"$WORK/models/trace-llama.jsonl"
    compare_trace "trace tiny-gpt2, forward-mode attribution vs CPU prefixes" "$tiny" "$WORK/models/trace-gpt2.jsonl" \
        "The cow lives on a farm. The cow says moo, and the dog sleeps by the door"
    compare_trace "trace tiny GQA Llama (GGUF), forward-mode attribution vs CPU prefixes" tests/data/llama-gguf/tiny-f32.gguf \
        "$WORK/models/trace-llama.jsonl" "The cow lives on a farm. The cow says moo"
    # the attention backward that recomputes P (kernels/attention_backward_rc.cu), forced by a zero budget
    SUBSCOPE_ATTN_BWD_WORKSPACE_MB=0 RUN_CMD=attribute compare_forward \
        "attribute tiny-gpt2 1..128 tokens, loss grad, recomputed attention backward" "$tiny" \
        "$WORK/models/tiny-lengths.jsonl" '*' --metric loss --method grad --batch 3
    # the Llama family (tests/data/models: grouped-query attention with llama3 rotary scaling,
    # Qwen2's q/k/v biases with tied embeddings, head size 6 with biases, Mistral): every site, then
    # the backward pass, then bf16 products with SwiGLU's and RMSNorm's outputs kept in 16 bits
    # (SUBSCOPE_MLP16=1, SUBSCOPE_NORM16=1)
    for lm in llama-gqa-llama3:113 qwen2-bias-tied:97 llama-hd6-bias:89 mistral-small:71; do
        d=tests/data/models/${lm%%:*}
        prompts "${lm%%:*}" "${lm##*:}" "$WORK/models/${lm%%:*}.jsonl" 1,7,20,24 || continue
        compare_forward "forward ${lm%%:*}, all sites" "$d" "$WORK/models/${lm%%:*}.jsonl" '*'
        RUN_CMD=attribute compare_forward "attribute ${lm%%:*}, loss grad, all sites" "$d" "$WORK/models/${lm%%:*}.jsonl" \
            '*' --metric loss --method grad
        SUBSCOPE_MLP16=1 SUBSCOPE_NORM16=1 CMP_NMSE=$BF16_NMSE compare_forward \
            "forward ${lm%%:*}, --dtype bfloat16, 16-bit SwiGLU and RMSNorm outputs (nmse $BF16_NMSE)" "$d" \
            "$WORK/models/${lm%%:*}.jsonl" 'blocks.*.hook_resid_post,ln_final.hook_normalized' --dtype bfloat16
    done
    # the attention backward through cuBLAS (P again, dP, the softmax's backward kernel, dQ/dK/dV
    # products), forced for these short prompts as the long ones take it
    SUBSCOPE_ATTN_GEMM_MIN_LEN=1 RUN_CMD=attribute compare_forward \
        "attribute tiny-gpt2 1..128 tokens, loss grad, attention backward through cuBLAS" "$tiny" \
        "$WORK/models/tiny-lengths.jsonl" '*' --metric loss --method grad --batch 3
    # collect: the device's fp64 means, fp32-accumulated covariance and cuSOLVER's components
    # against the CPU's float64 and LAPACK (covariances ~0.1..10; fp32 accumulation over a few
    # thousand rows: 1e-5 relative, so 1e-4 absolute + 1e-3 relative on every statistic)
    CMP_ATOL=1e-4 CMP_RTOL=1e-3 RUN_CMD=collect compare_forward "collect tiny-gpt2 mean, cov, pca:4 (cuSOLVER)" "$tiny" \
        data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov,pca:4
    # the same with cublasSsyrk instead of the triangular fp32 kernel (the default below d 3072)
    SUBSCOPE_COV_KERNEL=ssyrk CMP_ATOL=1e-4 CMP_RTOL=1e-3 RUN_CMD=collect compare_forward "collect tiny-gpt2 mean, cov (cublasSsyrk)" \
        "$tiny" data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov
    # and with the tensor-core kernel (cov_lower_tc.cu): centred values rounded to bf16 move each
    # covariance by up to 2^-7 of sqrt(var_i var_j), so the file is judged by NMSE like bf16 runs
    SUBSCOPE_COV_KERNEL=tc CMP_NMSE=$BF16_NMSE RUN_CMD=collect compare_forward \
        "collect tiny-gpt2 mean, cov (tensor-core cov_lower_tc, nmse $BF16_NMSE)" \
        "$tiny" data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov
    # and the blocked triangle through cuBLAS (cov_lower_blk.cu, the same roundings), in blocks
    # of 192: the 512-wide MLP sites take all three of its calls (inner blocks, a narrower last
    # row, the corner)
    SUBSCOPE_COV_KERNEL=blk SUBSCOPE_COV_BLOCK=192 CMP_NMSE=$BF16_NMSE RUN_CMD=collect compare_forward \
        "collect tiny-gpt2 mean, cov (blocked cuBLAS triangle, nmse $BF16_NMSE)" \
        "$tiny" data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov
    # and its recursive plan (strided batches) halved down to 64: 128-wide sites one level,
    # the 512-wide MLP sites three
    SUBSCOPE_COV_KERNEL=rec SUBSCOPE_COV_BLOCK=64 CMP_NMSE=$BF16_NMSE RUN_CMD=collect compare_forward \
        "collect tiny-gpt2 mean, cov (recursive cuBLAS triangle, nmse $BF16_NMSE)" \
        "$tiny" data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov
    # and with the wgmma kernel (cov_lower_wg.cu, the same roundings; Hopper only)
    if [ "$ARCH" = 90 ]; then
        SUBSCOPE_COV_KERNEL=wg CMP_NMSE=$BF16_NMSE RUN_CMD=collect compare_forward \
            "collect tiny-gpt2 mean, cov (wgmma cov_lower_wg, nmse $BF16_NMSE)" \
            "$tiny" data/demo_prompts.jsonl 'blocks.*.mlp.hook_post,blocks.2.hook_resid_post' --stats mean,cov
    fi
    # tiny-gpt2's continuation on the CPU and on the GPU (stdout: the text), then on the GPU
    # without its key/value cache (kernels/attention_kv.cu): the whole prompt through the tiled
    # attention for every token; each check only where GPU_CHECK_MATCH selects it
    tiny_predict() { # tiny_predict NAME DEVICE [VAR=VALUE...]: text in $WORK/out/predict-NAME.txt
        local n=$1 d=$2; shift 2
        RUN_STDOUT=$WORK/out/predict-$n.txt run_logged "$LOGS/predict-$n.log" 120 env "$@" "$B/subscope" predict \
            --model "$tiny" --prompt 'The cat says' --generate 24 --device "$d"
    }
    pn1="predict --generate 24, cpu = cuda" pn2="predict --generate 24 on cuda, cached = recomputed"
    rm -f "$WORK"/out/predict-*.txt
    if selected "$pn1"; then
        t0=$(now)
        tiny_predict cpu cpu; rc=$?
        tiny_predict cuda "$DEV"; rc2=$?
        a=$(cat "$WORK/out/predict-cpu.txt" 2>/dev/null) g=$(cat "$WORK/out/predict-cuda.txt" 2>/dev/null)
        if [ $rc = 125 ] || [ $rc2 = 125 ]; then budget_skip "$pn1" 125 "$(elapsed "$t0")"
        elif [ -n "$a" ] && [ "$a" = "$g" ]; then record "$pn1" PASS "\"$(printf '%s' "$a" | head -c 80)\"" "$(elapsed "$t0")"
        else record "$pn1" FAIL "cpu: \"$(printf '%s' "$a" | head -c 60)\" cuda: \"$(printf '%s' "$g" | head -c 60)\" $(tail -n 1 "$LOGS/predict-cuda.log")" "$(elapsed "$t0")"; fi
    fi
    if selected "$pn2"; then
        t0=$(now) rc=0
        [ -f "$WORK/out/predict-cuda.txt" ] || { tiny_predict cuda "$DEV"; rc=$?; }
        tiny_predict cuda-recompute "$DEV" SUBSCOPE_PREDICT_RECOMPUTE=1; rc2=$?
        g=$(cat "$WORK/out/predict-cuda.txt" 2>/dev/null) r=$(cat "$WORK/out/predict-cuda-recompute.txt" 2>/dev/null)
        if [ $rc = 125 ] || [ $rc2 = 125 ]; then budget_skip "$pn2" 125 "$(elapsed "$t0")"
        elif [ -n "$g" ] && [ "$r" = "$g" ]; then record "$pn2" PASS "" "$(elapsed "$t0")"
        else record "$pn2" FAIL "cached: \"$(printf '%s' "$g" | head -c 60)\" recomputed: \"$(printf '%s' "$r" | head -c 60)\" $(tail -n 1 "$LOGS/predict-cuda-recompute.log")" "$(elapsed "$t0")"; fi
    fi
    [ $KEEP = 1 ] || rm -f "$WORK"/out/predict-*.txt
    # 16-bit models' key/value cache, held in their dtype on the GPU (copy_rows16, attention_kv
    # reading bf16/fp16): 24 greedy tokens from a 17-token (GPT-2) or 48-token (Llama) prompt, all
    # within the 128 positions, so every token after the prompt's pass reads the cache. Three
    # arithmetics, none the other's bit for bit, so the continuations are compared by gen_cmp:
    # - bf16 at heads of 64 (GPT-2, 2 heads) and 128 (Llama, 2 query heads over 1 key/value
    #   head): the recompute's tensor-core attention rounds Q, K, V and P to bf16 (a Llama's k
    #   rotated in bf16 after the product's rounding); the cached passes attend in fp32 over K
    #   and V rounded to bf16 (the prompt's own pass over the fp32 K and V it caches); the CPU
    #   in fp32 over fp32 K and V;
    # - bf16 at heads of 32 (GPT-2, 4 heads), where no tensor-core attention runs: the recompute
    #   attends in fp32 over fp32 K and V as the CPU does (they differ by the products' summation
    #   order only), while the cache's rounding moves the cached run away from both: expected,
    #   and seen under the emulation, cached 3.7e-3 from either, recomputed 2.4e-7 from the CPU
    #   (the emulated products are the CPU's); only the bound below is checked (on a GPU the
    #   products' summation order flips bf16 roundings too, as much as the cache's rounding);
    # - fp16 at heads of 64 and 128: the CPU in fp32 (fp16 weights are for GPUs; widened exactly),
    #   the GPU's products on fp16 inputs and its recompute's attention fp32 (attention_lowp is
    #   bf16's), the cache rounded to fp16.
    # Bounds (GPU_CHECK_GEN_BF16, GPU_CHECK_GEN_FP16): bf16 $GEN_BF16 of the top logit, fp16
    # $GEN_FP16. Under the emulation every pair agreed on all 24 tokens, the logits at most 6.6e-3
    # apart in bf16 (recomputed vs CPU, heads of 128) and 5.9e-4 in fp16 (cached vs recomputed,
    # heads of 128). The same models at --std 0.3 were 3 to 5 times as far apart and parted on
    # near ties (margins of 0.01 to 0.13 logits, tops near 10), which gen_cmp let pass.
    GEN_PROMPT=$(printf 'one two %.0s' $(seq 1 8))
    for gm in "gen-g64:bf16:64:--heads 2" "gen-l128:bf16:128:--family llama --heads 2 --kv-heads 1 --head-dim 128" \
        "gen-g32:bf16:32:--heads 4" "gen-g64f:f16:64:--heads 2" "gen-l128f:f16:128:--family llama --heads 2 --kv-heads 1 --head-dim 128"; do
        IFS=: read -r gn gd dh ga <<<"$gm"
        gt=$tiny gv=1024
        [[ $ga == *llama* ]] && gt=tests/data/llama-gguf/hf gv=300
        if [ "$gd" = bf16 ]; then gl="bf16, heads of $dh, cached/recomputed/cpu" gc=bfloat16 gg=bfloat16 gtol=$GEN_BF16
        else gl="fp16, heads of $dh, cached/recomputed/cpu fp32" gc=float32 gg=float16 gtol=$GEN_FP16; fi
        # shellcheck disable=SC2086 # ga is a list of options
        compare_generate "generate $gn, $gl (rtol $gtol)" "$gn" $gc $gg "$gtol" "$gt" --d 128 $ga --vocab $gv --positions 128 \
            --std 0.1 --dtype "$gd" --seed 5
    done

    # ragged: d 200, 5 heads of 40, d_mlp 700, vocab 1001, erf GELU, untied, f16 weights
    if make_model ragged --layers 3 --d 200 --heads 5 --inner 700 --vocab 1001 --positions 300 --act gelu --untied \
        --dtype f16 --std 0.05 --seed 11 --no-prefix; then
        prompts ragged 1001 "$WORK/models/ragged.jsonl" 1,2,31,32,33,100,299,300 &&
            compare_forward "forward ragged-f16 (d 200, dh 40), all sites" "$WORK/models/ragged" "$WORK/models/ragged.jsonl" '*' &&
            compare_forward "forward ragged-f16 flash path" "$WORK/models/ragged" "$WORK/models/ragged.jsonl" "$(flash_sites 1)" &&
            RUN_CMD=attribute compare_forward "attribute ragged-f16 loss grad, all sites" "$WORK/models/ragged" "$WORK/models/ragged.jsonl" '*' \
                --metric loss --method grad
    fi
    if [ $QUICK = 0 ]; then
        # GPT-2 small's shape, f32, tied
        if make_model gpt2-small --layers 12 --d 768 --heads 12 --vocab 50257 --positions 1024 --std 0.05 --seed 1; then
            m=$WORK/models/gpt2-small
            prompts gpt2-small 50257 "$WORK/models/small-short.jsonl" 1,7,32,33,100,129 &&
                compare_forward "forward gpt2-small shape, 6 prompts <=129 tok, all sites" "$m" "$WORK/models/small-short.jsonl" '*'
            # prompts of 512 tokens or more take the cuBLAS attention path (cuda_backend.c);
            # SUBSCOPE_ATTN_GEMM_MIN_LEN=0 keeps the attention kernels for the same prompts
            prompts gpt2-small 50257 "$WORK/models/small-long.jsonl" 1024,700,3 &&
                compare_forward "forward gpt2-small shape, 1024 tok, flash+pattern" "$m" "$WORK/models/small-long.jsonl" "$(flash_sites 11)" &&
                SUBSCOPE_ATTN_GEMM_MIN_LEN=0 compare_forward "forward gpt2-small shape, 1024 tok, attention kernels" "$m" \
                    "$WORK/models/small-long.jsonl" "$(flash_sites 11)" &&
                RUN_CMD=attribute compare_forward "attribute gpt2-small shape, 1024 tok, loss gradxact" "$m" "$WORK/models/small-long.jsonl" \
                    'blocks.*.hook_resid_pre,blocks.*.mlp.hook_post' --metric loss --method gradxact --reduce positions
            # bf16 matrix products: CPU reference vs cublasGemmEx. Both round A
            # to bf16 the same way; accumulation order differs, so an element
            # near a bf16 rounding boundary rounds the other way, and that one
            # ulp (2^-8 relative) travels on through 12 layers: on an H100, 0.5%
            # of the last layer's elements moved by up to 0.05 while each dataset's
            # NMSE stayed <= 2.5e-5. So each dataset is judged as a whole:
            # NMSE <= GPU_CHECK_BF16_NMSE (default 1e-4, a 1% relative norm error).
            # (the defaults: the bias in cuBLASLt's epilogue, tensor-core attention where no
            # pattern is wanted and every 16-bit path; then without any of them)
            CMP_NMSE=$BF16_NMSE compare_forward "forward gpt2-small shape, --dtype bfloat16 (nmse $BF16_NMSE)" \
                "$m" "$WORK/models/small-short.jsonl" "$(flash_sites 0)" --dtype bfloat16
            SUBSCOPE_BIAS_EPILOGUE=0 SUBSCOPE_ATTN_TC=0 SUBSCOPE_MLP16=0 SUBSCOPE_NORM16=0 SUBSCOPE_QKV16=0 SUBSCOPE_Z16=0 \
                CMP_NMSE=$BF16_NMSE compare_forward \
                "forward gpt2-small shape, --dtype bfloat16, bias kernel, fp32 attention (nmse $BF16_NMSE)" \
                "$m" "$WORK/models/small-short.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # GELU's output kept in bf16 by cuBLASLt's epilogue (SUBSCOPE_MLP16, alone: the
            # other 16-bit paths, on by default, off); the sites asked for leave the MLPs'
            # insides alone, so every layer takes the path
            SUBSCOPE_MLP16=1 SUBSCOPE_NORM16=0 SUBSCOPE_QKV16=0 SUBSCOPE_Z16=0 CMP_NMSE=$BF16_NMSE compare_forward \
                "forward gpt2-small shape, --dtype bfloat16, 16-bit MLP activations (nmse $BF16_NMSE)" \
                "$m" "$WORK/models/small-short.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # the norms writing the products' rows in bf16 (SUBSCOPE_NORM16 alone), with and
            # without the MLP's 16-bit activations (which then take the MLP's rows themselves)
            SUBSCOPE_NORM16=1 SUBSCOPE_MLP16=0 SUBSCOPE_QKV16=0 SUBSCOPE_Z16=0 CMP_NMSE=$BF16_NMSE compare_forward \
                "forward gpt2-small shape, --dtype bfloat16, 16-bit norm outputs (nmse $BF16_NMSE)" \
                "$m" "$WORK/models/small-short.jsonl" "$(flash_sites 0)" --dtype bfloat16
            SUBSCOPE_NORM16=1 SUBSCOPE_MLP16=1 SUBSCOPE_QKV16=0 SUBSCOPE_Z16=0 CMP_NMSE=$BF16_NMSE compare_forward \
                "forward gpt2-small shape, --dtype bfloat16, 16-bit norms and MLP activations (nmse $BF16_NMSE)" \
                "$m" "$WORK/models/small-short.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # the tensor-core attention (kernels/flash_attention_tc.cu, bf16 Q, K, V and
            # probabilities; a bf16 model's default; here without the 16-bit paths) on every layer
            # but the one whose pattern is asked for;
            # bf16 rounding of attention's operands on top of the products', judged the same way.
            # The pattern is layer 0's: on an H100, layer 11's pattern (fp32 kernel, fed by 11
            # layers of bf16 attention) differed at NMSE 1.7e-4 while hook_z of layer 0 (the kernel
            # alone) differed at 1.6e-5 and every residual at <= 3.5e-5 (measured with the first
            # tensor-core kernel, since replaced; the same roundings); a sharp softmax of these
            # random weights amplifies the score differences upstream rounding leaves
            made "$WORK/models/small-long.jsonl" &&
                SUBSCOPE_MLP16=0 SUBSCOPE_NORM16=0 SUBSCOPE_QKV16=0 SUBSCOPE_Z16=0 CMP_NMSE=$BF16_NMSE compare_forward \
                    "forward gpt2-small shape, 1024 tok, bf16, tensor-core attention (nmse $BF16_NMSE)" "$m" \
                    "$WORK/models/small-long.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # ... fed by the QKV product's bf16 output (SUBSCOPE_QKV16 alone; layer 0 keeps
            # its pattern, so the other layers take it)
            made "$WORK/models/small-long.jsonl" &&
                SUBSCOPE_QKV16=1 SUBSCOPE_MLP16=0 SUBSCOPE_NORM16=0 SUBSCOPE_Z16=0 CMP_NMSE=$BF16_NMSE compare_forward \
                    "forward gpt2-small shape, 1024 tok, bf16, tensor-core attention from bf16 q/k/v (nmse $BF16_NMSE)" "$m" \
                    "$WORK/models/small-long.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # ... with one query tile per warp (SUBSCOPE_ATTN_QT=1; the default takes two, with
            # the same arithmetic per row, so kernel_check also asks them to agree bit for bit)
            made "$WORK/models/small-long.jsonl" &&
                SUBSCOPE_ATTN_QT=1 CMP_NMSE=$BF16_NMSE compare_forward \
                    "forward gpt2-small shape, 1024 tok, bf16, tensor-core attention, 1 query tile a warp (nmse $BF16_NMSE)" "$m" \
                    "$WORK/models/small-long.jsonl" "$(flash_sites 0)" --dtype bfloat16
            # ... and every 16-bit path at once (the default since the twentieth session's H100
            # run), z handed to its output product in bf16 too (hook_z is not asked for, so
            # layers 1..11 convert nothing)
            made "$WORK/models/small-long.jsonl" &&
                SUBSCOPE_QKV16=1 SUBSCOPE_Z16=1 SUBSCOPE_NORM16=1 SUBSCOPE_MLP16=1 CMP_NMSE=$BF16_NMSE compare_forward \
                    "forward gpt2-small shape, 1024 tok, bf16, all 16-bit paths (nmse $BF16_NMSE)" "$m" \
                    "$WORK/models/small-long.jsonl" "blocks.0.attn.hook_pattern,blocks.*.hook_resid_post,ln_final.hook_normalized" \
                    --dtype bfloat16
            # ... with the QKV and MLP-in products' bias rounded to bf16 (SUBSCOPE_BIAS16=1; by
            # default only where cuBLASLt declines an fp32 bias with a bf16 output)
            made "$WORK/models/small-long.jsonl" &&
                SUBSCOPE_BIAS16=1 SUBSCOPE_QKV16=1 SUBSCOPE_Z16=1 SUBSCOPE_NORM16=1 SUBSCOPE_MLP16=1 CMP_NMSE=$BF16_NMSE \
                    compare_forward "forward gpt2-small shape, 1024 tok, bf16, all 16-bit paths, bf16 bias (nmse $BF16_NMSE)" \
                    "$m" "$WORK/models/small-long.jsonl" \
                    "blocks.0.attn.hook_pattern,blocks.*.hook_resid_post,ln_final.hook_normalized" --dtype bfloat16
            [ $KEEP = 1 ] || rm -rf "$m"
        fi
        # wider: d 1024, 8 heads of 128, 2048 positions, bf16 weights, untied
        if make_model wide-bf16 --layers 6 --d 1024 --heads 8 --vocab 32000 --positions 2048 --dtype bf16 --untied \
            --std 0.04 --seed 2; then
            m=$WORK/models/wide-bf16
            prompts wide-bf16 32000 "$WORK/models/wide-short.jsonl" 1,64,129,300 &&
                compare_forward "forward wide-bf16 (dh 128), 4 prompts, all sites" "$m" "$WORK/models/wide-short.jsonl" '*'
            prompts wide-bf16 32000 "$WORK/models/wide-long.jsonl" 2048,31 &&
                compare_forward "forward wide-bf16, 2048 tok, flash+pattern" "$m" "$WORK/models/wide-long.jsonl" "$(flash_sites 0)" --no-logits
            made "$WORK/models/wide-long.jsonl" &&
                SUBSCOPE_ATTN_TC=1 CMP_NMSE=$BF16_NMSE compare_forward \
                    "forward wide-bf16 (dh 128), 2048 tok, tensor-core attention (nmse $BF16_NMSE)" "$m" \
                    "$WORK/models/wide-long.jsonl" "$(flash_sites 0)" --no-logits
            [ $KEEP = 1 ] || rm -rf "$m"
        fi
        # the Llama family through the tensor-core attention, which the small models of
        # tests/data (heads of 6 and 8) never reach: rotary q and k, 8 query heads over 2
        # key/value heads of 64 and of 128, prompts to 1024 tokens, bf16. Every 16-bit path
        # off and one query tile a warp (fp32 rotation, the pack kernel), then q/k/v from the
        # QKV product in bf16 rotated there (SUBSCOPE_QKV16=1 alone), then the default: every
        # 16-bit path (the gate|up product's too), two query tiles a warp. Judged at NMSE
        # 1e-3 ($LLAMA_NMSE): the emulated backend on the
        # first model with prompts of 1, 64, 129 and 300 tokens measured the logits at 2.5e-5
        # from the CPU with fp32 attention, 9.9e-5 with the tensor-core attention, 1.06e-4
        # with q/k/v from the product and 1.29e-4 with every path (4 layers of bf16 attention,
        # each about 2e-5); a wrong rotation or head mapping moves them by 1e-2 or more
        for spec in "llama-gqa64:--d 512 --head-dim 64" "llama-gqa128:--d 1024 --head-dim 128"; do
            ln=${spec%%:*}
            # shellcheck disable=SC2086
            make_model "$ln" --family llama --layers 4 ${spec#*:} --heads 8 --kv-heads 2 --vocab 4096 \
                --positions 2048 --rope-theta 500000 --dtype bf16 --untied --std 0.04 --seed 4 || continue
            m=$WORK/models/$ln
            if prompts "$ln" 4096 "$WORK/models/$ln.jsonl" 1,64,129,1024; then
                lsites='blocks.*.hook_resid_post,ln_final.hook_normalized'
                SUBSCOPE_NORM16=0 SUBSCOPE_MLP16=0 SUBSCOPE_Z16=0 SUBSCOPE_GU16=0 SUBSCOPE_ATTN_QT=1 SUBSCOPE_QKV16=0 \
                    CMP_NMSE=$LLAMA_NMSE compare_forward \
                    "forward $ln, bf16, tensor-core attention, no 16-bit path (nmse $LLAMA_NMSE)" \
                    "$m" "$WORK/models/$ln.jsonl" "$lsites" --dtype bfloat16
                SUBSCOPE_NORM16=0 SUBSCOPE_MLP16=0 SUBSCOPE_Z16=0 SUBSCOPE_GU16=0 SUBSCOPE_ATTN_QT=1 SUBSCOPE_QKV16=1 \
                    CMP_NMSE=$LLAMA_NMSE compare_forward \
                    "forward $ln, bf16, q/k/v from the product, rotated in bf16 (nmse $LLAMA_NMSE)" \
                    "$m" "$WORK/models/$ln.jsonl" "$lsites" --dtype bfloat16
                CMP_NMSE=$LLAMA_NMSE compare_forward \
                    "forward $ln, bf16, the default: every 16-bit path, 2 query tiles a warp (nmse $LLAMA_NMSE)" \
                    "$m" "$WORK/models/$ln.jsonl" "$lsites" --dtype bfloat16
            fi
            [ $KEEP = 1 ] || rm -rf "$m"
        done
    fi
else
    record "forward cpu vs cuda" SKIP "build failed"
fi

# ---- 3b. the NCCL communicator ------------------------------------------------
# nccl_collect NAME NP ENV...: collect on the GPU with SUBSCOPE_DIST=nccl on NP
# ranks (each on the GPU of its local rank) against the one-process file.
nccl_collect() {
    local name=$1 np=$2 t0 rc out; shift 2
    t0=$(now)
    out=$WORK/out/nccl-$np-${name//[^A-Za-z0-9]/_}.h5
    # one rank needs no launcher: without mpirun it runs as a plain process
    local launch=(mpirun --allow-run-as-root --oversubscribe -np "$np")
    [ "$np" = 1 ] && ! command -v mpirun >/dev/null 2>&1 && launch=()
    run_logged "$LOGS/nccl-$np-${name//[^A-Za-z0-9]/_}.log" 240 "${launch[@]}" \
        env SUBSCOPE_DIST=nccl SUBSCOPE_DIST_TIMEOUT=60 "$@" bash -c 'exec "$0" "$@" --device cuda:${OMPI_COMM_WORLD_LOCAL_RANK:-0}' \
        "$B/subscope" collect "${NCCL_COPTS[@]}" --out "$out"
    rc=$?
    budget_skip "$name" $rc 0 && return
    if [ $rc != 0 ]; then record "$name" FAIL "$(why "$LOGS/nccl-$np-${name//[^A-Za-z0-9]/_}.log" $rc)" "$(elapsed "$t0")"; return; fi
    if "$B/h5cmp" --quiet --atol 1e-14 --rtol 1e-12 "$WORK/out/nccl-ref.h5" "$out" >"$LOGS/nccl-cmp-$np.log" 2>&1; then
        record "$name" PASS "= one process (counts exact, stats 1e-12)" "$(elapsed "$t0")"
    else record "$name" FAIL "differs from one process: $(head -n 2 "$LOGS/nccl-cmp-$np.log" | tr '\n' ' ' | cut -c 1-160)" "$(elapsed "$t0")"; fi
    rm -f "$out"
}
if ! want nccl; then
    :
elif [ $EMU = 1 ]; then
    record "nccl communicator" SKIP "emulated: no NCCL (tests/cli/test_nccl.sh tests it over an emulation of NCCL)"
elif [ $BUILD_OK = 0 ]; then
    record "nccl communicator" SKIP "build failed"
elif ! grep -q '^HAVE_NCCL := 1' "$O/config.mk"; then
    record "nccl communicator" FAIL "this build has no NCCL (see $O/features.txt)"
else
    NGPU=$("$NVIDIA_SMI" -L 2>/dev/null | grep -c '^GPU ')
    [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && NGPU=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
    t0=$(now)
    run_logged "$LOGS/nccl-info.log" 120 env SUBSCOPE_DIST=nccl SUBSCOPE_DIST_TIMEOUT=60 "$B/subscope" info --dist
    rc=$?
    if grep -q '^backend  nccl (NCCL' "$LOGS/nccl-info.log" && grep -q 'comm-device cuda:0' "$LOGS/nccl-info.log"; then
        record "nccl info --dist, 1 rank" PASS "$(sed -n 's/^backend  //p' "$LOGS/nccl-info.log" | cut -c 1-100)" "$(elapsed "$t0")"
    else budget_skip "nccl info --dist, 1 rank" $rc 0 || record "nccl info --dist, 1 rank" FAIL "$(why "$LOGS/nccl-info.log" $rc)" "$(elapsed "$t0")"; fi
    NCCL_COPTS=(--model models/tiny-gpt2 --input data/demo_prompts.jsonl --sites 'blocks.*.mlp.hook_post,blocks.0.hook_resid_pre'
        --stats mean,cov,corr --batch 2)
    run_logged "$LOGS/nccl-ref.log" 240 "$B/subscope" collect "${NCCL_COPTS[@]}" --device cuda --out "$WORK/out/nccl-ref.h5"
    rc=$?
    if [ $rc = 0 ]; then
        if ! command -v mpirun >/dev/null 2>&1; then
            record "nccl collect over MPI" SKIP "no mpirun ('make deps'); one rank without a launcher only"
            nccl_collect "nccl collect, 1 rank (no launcher)" 1
        elif [ "$NGPU" -ge 2 ]; then
            nccl_collect "nccl collect, 2 ranks (MPI bootstrap)" 2
        else
            record "nccl collect, 2 ranks" SKIP "needs 2 GPUs (NCCL refuses two ranks on one GPU); 1 rank only"
            nccl_collect "nccl collect, 1 rank (MPI bootstrap)" 1
        fi
        mkdir -p "$WORK/rdv"
        nccl_collect "nccl collect, 1 rank (rendezvous file)" 1 SUBSCOPE_NCCL_RENDEZVOUS="$WORK/rdv" SLURM_PROCID=0 SLURM_NTASKS=1 \
            SLURM_JOB_ID=$$ SLURM_LOCALID=0
        if [ -n "$(ls -A "$WORK/rdv" 2>/dev/null)" ]; then record "nccl rendezvous file removed" FAIL "left: $(ls -A "$WORK/rdv")"; fi
        rm -rf "$WORK/rdv" "$WORK/out/nccl-ref.h5"
    else
        budget_skip "nccl collect" $rc 0 || record "nccl collect" FAIL "one-process reference failed: $(why "$LOGS/nccl-ref.log" $rc)"
    fi
fi

# ---- 4. compute-sanitizer -----------------------------------------------------
CS=""
# bin/ has a link in full toolkits; compute-sanitizer/ holds the binary itself.
for c in "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" "${CUDA_HOME:-/nonexistent}/compute-sanitizer/compute-sanitizer" \
         /usr/local/cuda/compute-sanitizer/compute-sanitizer "$(command -v compute-sanitizer 2>/dev/null)"; do
    [ -n "$c" ] && [ -x "$c" ] && { CS=$c; break; }
done
CS_VER=$([ -n "$CS" ] && "$CS" --version 2>/dev/null | sed -n 's/.*Version \([0-9.]*\).*/\1/p' | head -n 1)
sanitize() { # sanitize NAME TOOL-ARGS... -- CMD...
    local name=$1; shift
    local targs=() t0 rc log errs
    while [ "$1" != "--" ]; do targs+=("$1"); shift; done
    shift
    log=$LOGS/san-${name//[^A-Za-z0-9_.-]/_}.log
    t0=$(now)
    run_logged "$log" 240 "$CS" "${targs[@]}" --error-exitcode 99 --print-limit 20 "$@"
    rc=$?
    budget_skip "$name" $rc 0 && return
    errs=$(grep -E '^========= (ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY)' "$log" | sed 's/^========= //' | tr '\n' ' ')
    # Clean means: exit 0 (the program's own status; 99 if the tool found
    # errors), a summary line, and zero errors in every summary; a tool's
    # "0 hazards" alone is not enough (the program may have died).
    local nerr
    nerr=$(grep -oE '(ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazards? displayed \([0-9]+ error)' "$log" |
        grep -oE '[0-9]+ error' | awk '{ s += $1 } END { print s + 0 }')
    if [ $rc = 0 ] && [ -n "$errs" ] && [ "$nerr" = 0 ]; then record "$name" PASS "$errs" "$(elapsed "$t0")"
    elif [ $rc = 124 ]; then record "$name" FAIL "timed out after $(elapsed "$t0") s" "$(elapsed "$t0")"
    else record "$name" FAIL "exit $rc; ${errs:-no sanitizer summary; }$(grep -m 1 -E '^========= (Invalid|Race|Barrier|Uninitialized|Leaked|Program hit|Error|Warning)' "$log" | cut -c 1-140)" "$(elapsed "$t0")"; fi
}
if ! want sanitizer; then
    :
elif [ $SANITIZE = 0 ]; then
    record "compute-sanitizer" SKIP "--no-sanitizer"
elif [ $EMU = 1 ]; then
    record "compute-sanitizer" SKIP "emulated: no GPU to watch"
elif [ $BUILD_OK = 0 ]; then
    record "compute-sanitizer" SKIP "build failed"
elif [ -z "$CS" ]; then
    record "compute-sanitizer" FAIL "compute-sanitizer not found (CUDA toolkit at ${CUDA_HOME:-?})"
else
    echo "gpu_check: compute-sanitizer $CS_VER"
    printf '%s\n' '{"tokens": [5, 17, 300, 2, 999, 64, 1, 8]}' '{"tokens": [3]}' '{"tokens": [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 40]}' >"$WORK/models/san.jsonl"
    sanitize "memcheck kernel_check --quick" --tool memcheck --leak-check full -- "$B/kernel_check" --quick
    sanitize "memcheck forward tiny-gpt2 (cuBLAS+kernels)" --tool memcheck --leak-check full -- \
        "$B/subscope" forward --model models/tiny-gpt2 --input "$WORK/models/san.jsonl" --out "$WORK/out/san-mem.h5" \
        --sites 'blocks.0.attn.hook_pattern,blocks.*.hook_resid_post,blocks.1.attn.hook_q' --device "$DEV" --compress 0
    sanitize "memcheck attribute tiny-gpt2 (backward kernels)" --tool memcheck --leak-check full -- \
        "$B/subscope" attribute --model models/tiny-gpt2 --input "$WORK/models/san.jsonl" --out "$WORK/out/san-attr.h5" \
        --sites 'blocks.*.hook_resid_pre,blocks.1.attn.hook_q' --metric loss --method gradxact --device "$DEV"
    if [ $QUICK = 0 ]; then
        sanitize "racecheck kernel_check --quick" --tool racecheck --racecheck-report all -- "$B/kernel_check" --quick
        sanitize "synccheck kernel_check --quick" --tool synccheck -- "$B/kernel_check" --quick
        sanitize "initcheck kernel_check --quick" --tool initcheck -- "$B/kernel_check" --quick
        sanitize "racecheck forward tiny-gpt2" --tool racecheck -- \
            "$B/subscope" forward --model models/tiny-gpt2 --input "$WORK/models/san.jsonl" --out "$WORK/out/san-race.h5" \
            --sites 'blocks.0.attn.hook_pattern,blocks.*.hook_resid_post' --device "$DEV" --compress 0
    fi
    rm -f "$WORK/out/san-mem.h5" "$WORK/out/san-race.h5" "$WORK/out/san-attr.h5"
fi

# ---- 5. summary -----------------------------------------------------------------
TOTAL_S=$(( $(date +%s) - T_START ))
n_fail=0 n_pass=0 n_skip=0
for r in "${RESULTS[@]}"; do
    case $r in PASS) n_pass=$((n_pass + 1)) ;; FAIL) n_fail=$((n_fail + 1)) ;; *) n_skip=$((n_skip + 1)) ;; esac
done
echo
echo "== gpu-check summary: $GPU_NAME (sm_$ARCH), $(date -u +%Y-%m-%dT%H:%M:%SZ), ${TOTAL_S}s"
printf '%-52s %-6s %7s  %s\n' check result seconds details
printf '%-52s %-6s %7s  %s\n' ----- ------ ------- -------
for i in "${!CHECKS[@]}"; do
    printf '%-52s %-6s %7s  %s\n' "${CHECKS[$i]}" "${RESULTS[$i]}" "${SECS[$i]}" "${DETAILS[$i]}"
done
echo "$n_pass passed, $n_fail failed, $n_skip skipped (logs: ${LOGS#"$ROOT"/})"

json_str() { # a JSON string literal
    printf '%s' "$1" | awk 'BEGIN { ORS = ""; print "\"" }
        { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r"); gsub(/[\001-\037]/, " ");
          if (NR > 1) print "\\n"; print }
        END { print "\"" }'
}
if [ -n "${SUBSCOPE_GIT_COMMIT:-}" ]; then COMMIT=$SUBSCOPE_GIT_COMMIT # run_bundle.sh: the bundle's commit
else
    COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
SAFE_NAME=$(printf '%s' "$GPU_NAME" | tr -c 'A-Za-z0-9._-' '-' | sed 's/--*/-/g; s/^-//; s/-$//')
# a dry run (GPU_CHECK_DEVICE other than cuda) measured nothing on the GPU it names: its
# record stays in the work directory, out of bench/results
RES_DIR=bench/results
[ "$DEV" = cuda ] && [ $EMU = 0 ] || RES_DIR=$WORK
mkdir -p "$RES_DIR"
RES=$RES_DIR/gpu-check-$SAFE_NAME-$STAMP.json
{
    echo "{"
    echo "  \"benchmark\": \"gpu-check\","
    echo "  \"date\": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)"),"
    echo "  \"git_commit\": $(json_str "$COMMIT"),"
    echo "  \"host\": $(json_str "$(hostname 2>/dev/null || echo unknown)"),"
    echo "  \"options\": {\"quick\": $QUICK, \"emulated\": $EMU, \"sanitizer\": $SANITIZE, \"steps\": $(json_str "$STEPS"), \"atol\": $ATOL, \"rtol\": $RTOL, \"budget_s\": $BUDGET},"
    echo "  \"gpu\": {"
    echo "    \"name\": $(json_str "$GPU_NAME"), \"compute_capability\": $(json_str "$GPU_CC"), \"cuda_arch\": $(json_str "$ARCH"),"
    echo "    \"memory_total\": $(json_str "$GPU_MEM"), \"pci_bus_id\": $(json_str "$GPU_BUS"),"
    echo "    \"driver_version\": $(json_str "$GPU_DRIVER"), \"driver_cuda_version\": $(json_str "${DRIVER_CUDA:-}")"
    echo "  },"
    echo "  \"toolkit\": {\"nvcc\": $(json_str "${NVCC:-}"), \"nvcc_version\": $(json_str "${NVCC_VER:-}"), \"compute_sanitizer_version\": $(json_str "${CS_VER:-}")},"
    echo "  \"host_cpu\": {\"model\": $(json_str "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)"), \"logical_cpus\": $(nproc 2>/dev/null || echo 0)},"
    echo "  \"elapsed_s\": $TOTAL_S,"
    echo "  \"passed\": $n_pass, \"failed\": $n_fail, \"skipped\": $n_skip,"
    echo "  \"checks\": ["
    for i in "${!CHECKS[@]}"; do
        sep=,; [ "$i" -eq $((${#CHECKS[@]} - 1)) ] && sep=
        echo "    {\"check\": $(json_str "${CHECKS[$i]}"), \"result\": $(json_str "${RESULTS[$i]}"), \"seconds\": ${SECS[$i]}, \"details\": $(json_str "${DETAILS[$i]}")}$sep"
    done
    echo "  ],"
    echo "  \"kernel_cases\": $(json_str "$(grep -E '^CASE' "$LOGS/kernel_check.log" 2>/dev/null)"),"
    echo "  \"nvidia_smi\": $(json_str "$SMI_FULL")"
    echo "}"
} >"$RES"
echo "gpu_check: results in $RES"
[ $KEEP = 1 ] || rm -rf "$WORK/models"
[ $n_fail -eq 0 ]
