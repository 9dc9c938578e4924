#!/usr/bin/env bash
# Runs the benchmark suite: builds subscope, makes the benchmark models, runs each step
# that this machine can run, and prints a short table per step. CPU results go to
# bench/results/cpu-<host>-<date>.json; on a GPU machine the GPU results (kernels,
# forward, targets) go to bench/results/<device>-<date>.json. The issue's targets are
# printed last, with pass/fail.
#
#   bench/run_all.sh                       GPT-2 small shape, 32 prompts x 128 tokens, 3 reps
#   bench/run_all.sh --small --prompts 16  6-layer d=512 model, fewer prompts (slow or shared machines)
#   bench/run_all.sh --quick               everything, short (CPU: 4 prompts x 32 tokens, 1 rep)
#   bench/run_all.sh --gpu-only            the GPU steps only (a short GPU session)
#   bench/run_all.sh --only cpu_ablate     the mask sweep: subscope ablate vs a PyTorch hook loop
#   bench/run_all.sh --only cpu_attribute  attribution cost vs forward and PyTorch; atp vs patch
#   bench/run_all.sh --only cpu_collect    statistics at every MLP site vs the forward pass
#   bench/run_all.sh --only cpu_llama      SmolLM2-135M shape: subscope vs transformers Llama on the CPU
#   bench/run_all.sh --only gpu_llama --no-install   Llama 1B / 7B shapes in bf16 on the GPU vs HF
#   bench/run_all.sh --gpu-only --no-build --only report   no step: merge what the steps left
#                                          in bench/work and print the targets (after a step was cut)
#
# Options: --small, --prompts N, --tokens T, --batch B, --threads N, --reps R,
#          --no-peer-h5, --only STEP (a step name below), --host LABEL, --quick,
#          --gpu-only, --no-install (never pip/apt-get: machines without network),
#          --no-build (use bin/subscope and build/bench/kernel_bench as they are, e.g.
#          built elsewhere and copied to a GPU machine that has no nvcc),
#          --gpu-models LIST (default gpt2-small,gpt2-medium,gpt2-large),
#          --gpu-prompts N (prompts of 1024 tokens per GPU run, default 128; batch 16 = 16k tokens),
#          --gpu-modes LIST (gpu_forward's subscope precisions, default fp32,tf32,bf16; MODE+attnk
#          runs MODE with the attention kernels instead of the cuBLAS path for long prompts,
#          MODE+tc / +notc with / without the tensor-core attention kernel (SUBSCOPE_ATTN_TC);
#          +epi, +noepi, +nofuse: see bench/gpu/bench_gpu_forward.py),
#          --llama-models LIST (gpu_llama's shapes, default llama-1b,llama-7b),
#          --llama-prompts N (gpu_llama: prompts of 1024 tokens, default 64; batch 16 = 16k tokens),
#          --llama-modes LIST (gpu_llama's subscope modes, default bf16; the variants of --gpu-modes,
#          e.g. bf16,bf16+notc to time bf16 without the tensor-core attention at head size 128 too),
#          --no-cpu-1b (cpu_llama: skip the one subscope-only run of the llama-1b shape),
#          --ablate-runs LIST (gpu_ablate's runs, default sweep,large,bf16: the 256-mask sweep in
#          fp32, the large masked batches, the sweep in bf16 on both sides; each takes about 70 s,
#          most of it the peer's start-up, so a short lease runs the one it needs).
# Environment: BENCH_PYTHON (an interpreter that has torch, transformers, safetensors,
#          h5py, numpy; default python3, or a venv made in bench/work/venv if those are
#          missing), BENCH_WORK (models and scratch, default bench/work), KERNEL_BENCH (gpu_kernels'
#          program, default build/bench/kernel_bench), MAKE_JOBS (2;
#          nproc where a GPU is visible), CUDA_ARCH (default: the GPU's, e.g. 90).
#
# Steps: CPU_STEPS always run; GPU_STEPS run only where `nvidia-smi -L` lists a GPU, and
# are skipped with a message elsewhere. A new benchmark is a function bench_<name> below
# plus its name in one of the two lists. The peers (PyTorch / Hugging Face) run only
# where python has torch and transformers; where it has not and pip cannot install them
# (no network, --no-install), the CPU steps that are comparisons with PyTorch (cpu_forward,
# cpu_ablate, cpu_llama) are skipped, cpu_attribute runs without its peer, cpu_collect needs
# none, and the GPU steps run without a peer (gpu_ablate is skipped).
set -euo pipefail

CPU_STEPS="cpu_forward cpu_ablate cpu_attribute cpu_collect cpu_llama"
GPU_STEPS="gpu_kernels gpu_forward gpu_attribute gpu_collect gpu_ablate gpu_llama"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK:-$ROOT/bench/work}"
SMALL=0 PROMPTS=32 TOKENS=128 BATCH=16 THREADS="$(nproc)" REPS=3 PEER_H5=1 ONLY="" HOST=""
QUICK=0 GPU_ONLY=0 INSTALL=1 BUILD=1 GPU_MODELS="gpt2-small,gpt2-medium,gpt2-large" GPU_PROMPTS=128
GPU_MODES="fp32,tf32,bf16"
LLAMA_MODELS="llama-1b,llama-7b" LLAMA_PROMPTS=64 LLAMA_MODES=bf16 CPU_1B=1 ABLATE_RUNS=sweep,large,bf16
PY=""          # interpreter with the peer's packages, or empty
PEER_WHY=""    # why there is none
GPU_WORK="$WORK/gpu"
KERNEL_BENCH="${KERNEL_BENCH:-build/bench/kernel_bench}"
NOTES=()

die() { echo "run_all.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
# SIGTERM (a time limit's timeout sends it to the whole process group) or SIGINT reaches the
# running step too. Trapped, bash runs the trap only once that step has exited: kernel_bench
# has then written the cases it finished (exit 4), bench_gpu_forward.py the models it had,
# before this script exits and so before `timeout` returns to a caller that merges them
# (tests/gpu/run_bundle.sh runs `--only report` after a cut step). Untrapped, this script
# died at once and the report could run before the cut step's JSON was written.
trap 'say "cut by SIGTERM: the finished results are in $GPU_WORK (--only report merges them)"; exit 143' TERM
trap 'say "cut by SIGINT: the finished results are in $GPU_WORK (--only report merges them)"; exit 130' INT

while [ $# -gt 0 ]; do
    case "$1" in
        --small) SMALL=1 ;;
        --prompts) PROMPTS="${2:?}"; shift ;;
        --tokens) TOKENS="${2:?}"; shift ;;
        --batch) BATCH="${2:?}"; shift ;;
        --threads) THREADS="${2:?}"; shift ;;
        --reps) REPS="${2:?}"; shift ;;
        --no-peer-h5) PEER_H5=0 ;;
        --only) ONLY="${2:?}"; shift ;;
        --host) HOST="${2:?}"; shift ;;
        --quick) QUICK=1 ;;
        --gpu-only) GPU_ONLY=1 ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --gpu-models) GPU_MODELS="${2:?}"; shift ;;
        --gpu-prompts) GPU_PROMPTS="${2:?}" GPU_PROMPTS_SET=1; shift ;;
        --gpu-modes) GPU_MODES="${2:?}"; shift ;;
        --llama-models) LLAMA_MODELS="${2:?}"; shift ;;
        --llama-prompts) LLAMA_PROMPTS="${2:?}"; shift ;;
        --llama-modes) LLAMA_MODES="${2:?}"; shift ;;
        --no-cpu-1b) CPU_1B=0 ;;
        --ablate-runs) ABLATE_RUNS="${2:?}"; shift
            [[ ,$ABLATE_RUNS, =~ ^(,(sweep|large|bf16))+,$ ]] || die "--ablate-runs takes sweep,large,bf16 (got '$ABLATE_RUNS')" ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            echo "CPU_STEPS: $CPU_STEPS"; echo "GPU_STEPS: $GPU_STEPS"; echo "(--only also takes 'report')"; exit 0 ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    # Short everywhere: the CPU part on the small model, the GPU part with fewer prompts.
    # (an explicit --gpu-prompts still counts)
    SMALL=1 PROMPTS=4 TOKENS=32 BATCH=4 REPS=1 PEER_H5=0 LLAMA_PROMPTS=32 CPU_1B=0
    [ -n "${GPU_PROMPTS_SET:-}" ] || GPU_PROMPTS=32
fi
HOST="${HOST:-$(hostname -s 2>/dev/null || hostname)}"
CPU_JSON="$ROOT/bench/results/cpu-$HOST-$(date -u +%Y%m%d).json"
ABLATE_JSON="$ROOT/bench/results/cpu-ablate-$HOST-$(date -u +%Y%m%d).json"
ATTR_JSON="$ROOT/bench/results/cpu-attribute-$HOST-$(date -u +%Y%m%d).json"
COLLECT_JSON="$ROOT/bench/results/cpu-collect-$HOST-$(date -u +%Y%m%d).json"
LLAMA_CPU_JSON="$ROOT/bench/results/cpu-llama-$HOST-$(date -u +%Y%m%d).json"
GPU_COLLECT_JSON="$ROOT/bench/results/gpu-collect-$HOST-$(date -u +%Y%m%d).json"
GPU_ABLATE_JSON="$ROOT/bench/results/gpu-ablate-$HOST-$(date -u +%Y%m%d).json"
GPU_ABLATE_LARGE_JSON="$ROOT/bench/results/gpu-ablate-large-$HOST-$(date -u +%Y%m%d).json"
GPU_ABLATE_BF16_JSON="$ROOT/bench/results/gpu-ablate-bf16-$HOST-$(date -u +%Y%m%d).json"
# A quick run is a smoke test: its CPU numbers (128 tokens) stay out of bench/results.
[ "$QUICK" = 0 ] || CPU_JSON="$WORK/cpu-quick-$HOST.json" ABLATE_JSON="$WORK/cpu-ablate-quick-$HOST.json" ATTR_JSON="$WORK/cpu-attribute-quick-$HOST.json" COLLECT_JSON="$WORK/cpu-collect-quick-$HOST.json" LLAMA_CPU_JSON="$WORK/cpu-llama-quick-$HOST.json"

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

# ---- prerequisites ----

# Sets PY to an interpreter that has the peer's packages, or leaves it empty with
# PEER_WHY saying why. Never fatal: a GPU machine without network still runs the GPU steps.
ensure_python() {
    local need="import torch, transformers, safetensors, h5py, numpy"
    command -v python3 >/dev/null 2>&1 || die "python3 not found; the benchmark drivers need it (standard library only)"
    local cand="${BENCH_PYTHON:-python3}"
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "$need" 2>/dev/null; then PY="$cand"; return; fi
    if [ -n "${BENCH_PYTHON:-}" ]; then
        PEER_WHY="peer skipped: BENCH_PYTHON=$BENCH_PYTHON lacks one of torch, transformers, safetensors, h5py, numpy"
        say "$PEER_WHY"; return
    fi
    if [ -x "$WORK/venv/bin/python" ] && "$WORK/venv/bin/python" -c "$need" 2>/dev/null; then
        PY="$WORK/venv/bin/python"; return
    fi
    if [ "$INSTALL" = 0 ]; then
        local missing
        missing=$(python3 -c 'import importlib.util as u; print(" ".join(m for m in ("torch", "transformers", "safetensors", "h5py", "numpy") if u.find_spec(m) is None))' 2>/dev/null) || missing=""
        PEER_WHY="peer skipped: not installed (python3 lacks ${missing:-torch/transformers/safetensors/h5py/numpy}; --no-install: pip install torch transformers safetensors h5py numpy, or set BENCH_PYTHON)"
        say "$PEER_WHY"; return
    fi
    # A venv, so that a system Python marked externally managed (PEP 668) is left alone.
    # Short network timeouts: on a machine without network this gives up in seconds.
    say "python3 lacks torch/transformers/safetensors/h5py/numpy: installing them with pip into $WORK/venv"
    mkdir -p "$WORK"
    if python3 -m venv "$WORK/venv" &&
        "$WORK/venv/bin/python" -m pip install --quiet --timeout 15 --retries 1 --upgrade pip &&
        "$WORK/venv/bin/python" -m pip install --quiet --timeout 15 --retries 1 torch transformers safetensors h5py numpy; then
        PY="$WORK/venv/bin/python"; return
    fi
    PEER_WHY="peer skipped: not installed (pip could not install torch transformers safetensors h5py numpy into $WORK/venv; no network? set BENCH_PYTHON to an interpreter that has them)"
    say "$PEER_WHY"
}

# GNU time (peak RSS) for the CPU step; fails if it is missing and cannot be installed.
ensure_time() {
    [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1 && return 0
    [ "$INSTALL" = 1 ] || return 1
    say "/usr/bin/time (GNU time, for peak RSS) is missing: installing the Debian package 'time'"
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && apt-get install -y -qq time >/dev/null; } || true
    elif command -v sudo >/dev/null 2>&1; then
        { sudo apt-get update -qq && sudo apt-get install -y -qq time >/dev/null; } || true
    fi
    [ -x /usr/bin/time ]
}

# The GPU's architecture as nvcc names it (compute capability 9.0 -> 90).
gpu_arch() { nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .\r'; }

build() {
    local jobs="${MAKE_JOBS:-2}" arch=()
    if [ "$GPU" = 1 ]; then
        jobs="${MAKE_JOBS:-$(nproc)}"
        CUDA_ARCH="${CUDA_ARCH:-$(gpu_arch)}"
        # The kernels are sm_90 code (+ compute_90 PTX): nothing older can run them.
        case "$CUDA_ARCH" in '' | [0-8][0-9]) CUDA_ARCH=90 ;; esac
        # The top-level Makefile builds for sm_90 unless it knows CUDA_ARCH.
        grep -q 'CUDA_ARCH' Makefile && arch=(CUDA_ARCH="$CUDA_ARCH")
    fi
    CUDA_ARCH="${CUDA_ARCH:-90}"
    if [ "$BUILD" = 0 ]; then
        [ -x bin/subscope ] || die "--no-build: bin/subscope does not exist"
        say "--no-build: using bin/subscope as it is ($(bin/subscope --version))"; return
    fi
    say "building bin/subscope${arch[*]:+ (${arch[*]})}"
    make -j"$jobs" "${arch[@]}" >/dev/null || die "make failed; run make to see why"
    [ -x bin/subscope ] || die "make did not produce bin/subscope"
}

cuda_built() { grep -q '^NVCC := .' build/config.mk && grep -q '^HAVE_CUBLAS := 1' build/config.mk; }

# ---- steps ----

bench_cpu_forward() {
    if [ -z "$PY" ]; then
        say "cpu_forward skipped: it compares with PyTorch CPU; $PEER_WHY"
        NOTES+=("cpu_forward skipped: $PEER_WHY"); return
    fi
    if ! ensure_time; then
        say "cpu_forward skipped: GNU time (/usr/bin/time -v) is missing; apt-get install time"
        NOTES+=("cpu_forward skipped: no GNU time"); return
    fi
    local name; if [ "$SMALL" = 1 ]; then name=small; else name=gpt2-small; fi
    local model="$WORK/$name" prompts="$WORK/$name/prompts-${PROMPTS}x${TOKENS}.jsonl"
    say "model $model, prompts $prompts"
    "$PY" bench/make_model.py --out "$model" $([ "$SMALL" = 1 ] && echo --small) \
        --prompts "$prompts" --n-prompts "$PROMPTS" --tokens "$TOKENS" >&2
    say "cpu_forward: subscope forward vs transformers ($THREADS threads, batch $BATCH, $REPS reps)"
    "$PY" bench/bench_forward.py --model "$model" --prompts "$prompts" --python "$PY" \
        --batch "$BATCH" --threads "$THREADS" --reps "$REPS" \
        $([ "$PEER_H5" = 0 ] && echo --no-peer-h5) --host "$HOST" --json "$CPU_JSON"
}

# A sweep of 256 masks over 8 prompts x 16 tokens on the bundled models/tiny-gpt2 and
# on the benchmark model: subscope ablate (default masks per forward, and --mask-batch 1)
# vs the PyTorch hook loop, one mask per forward (bench_ablate.py, peer_ablate.py).
bench_cpu_ablate() {
    if [ -z "$PY" ]; then
        say "cpu_ablate skipped: it compares with PyTorch CPU; $PEER_WHY"
        NOTES+=("cpu_ablate skipped: $PEER_WHY"); return
    fi
    local name masks=256 prompts=8 tokens=16 models=(--model models/tiny-gpt2)
    if [ "$SMALL" = 1 ]; then name=small; else name=gpt2-small; fi
    [ "$QUICK" = 1 ] && masks=32 prompts=4 tokens=8
    "$PY" bench/make_model.py --out "$WORK/$name" $([ "$SMALL" = 1 ] && echo --small) --prompts none >&2
    models+=(--model "$WORK/$name")
    say "cpu_ablate: subscope ablate vs a PyTorch hook loop ($masks masks, $prompts x $tokens tokens, $THREADS threads)"
    "$PY" bench/bench_ablate.py "${models[@]}" --python "$PY" --masks "$masks" --prompts "$prompts" \
        --tokens "$tokens" --threads "$THREADS" --reps "$REPS" --host "$HOST" --workdir "$WORK/ablate" \
        --json "$ABLATE_JSON"
}

bench_gpu_kernels() {
    if ! cuda_built; then
        say "gpu_kernels skipped: no nvcc/cuBLAS in build/config.mk"; NOTES+=("gpu_kernels skipped: no CUDA toolkit"); return
    fi
    if [ "$BUILD" = 1 ]; then
        say "gpu_kernels: building build/bench/kernel_bench (sm_$CUDA_ARCH)"
        make -f bench/gpu/Makefile CUDA_ARCH="$CUDA_ARCH" >/dev/null || die "building kernel_bench failed: make -f bench/gpu/Makefile"
    fi
    [ -x "$KERNEL_BENCH" ] || die "$KERNEL_BENCH does not exist (make -f bench/gpu/Makefile)"
    mkdir -p "$GPU_WORK"
    rm -f "$GPU_WORK/kernels.json"
    local reps=20 rc=0
    [ "$QUICK" = 1 ] && reps=5
    say "gpu_kernels: kernels and cuBLAS GEMMs (median of $reps, L2 flushed before each launch)"
    "$KERNEL_BENCH" --reps "$reps" --json "$GPU_WORK/kernels.json" || rc=$?
    case $rc in
        0) ;;
        1) NOTES+=("gpu_kernels: some cases failed (kernels.results[].error)") ;;
        4) NOTES+=("gpu_kernels cut by a signal (kernels.cut)"); say "gpu_kernels cut: the finished cases are kept" ;;
        *) rm -f "$GPU_WORK/kernels.json"; NOTES+=("gpu_kernels failed (exit $rc)"); say "gpu_kernels failed (exit $rc)" ;;
    esac
}

# A random-weight model for the GPU runs (make_model.py's standard-library writer: no torch
# needed; speed does not depend on the values). $2: f32 (default, in $WORK/<shape>) or bf16
# (in $WORK/<shape>-bf16, sharded past 5 GB).
gpu_model() {
    local shape="$1" dtype="${2:-f32}" dir="$WORK/$1"
    [ "$dtype" = f32 ] || dir="$WORK/$1-$dtype"
    if ! [ -f "$dir/.made" ] || ! [ -f "$dir/model.safetensors" -o -f "$dir/model.safetensors.index.json" ]; then
        mkdir -p "$dir"
        python3 bench/make_model.py --out "$dir" --shape "$shape" --dtype "$dtype" --prompts none --stdlib >&2 ||
            die "make_model.py --shape $shape --dtype $dtype failed"
        touch "$dir/.made"
    fi
    echo "$dir"
}

# Llama family on the CPU (issue 9): subscope forward on the SmolLM2-135M shape (F32, made by
# transformers) vs transformers' LlamaForCausalLM with eager and sdpa attention, same prompts,
# alternating reps (bench_forward.py); then, if memory allows, one subscope-only run of the
# Llama-3.2-1B shape (BF16 file, computed in fp32) -- a side-by-side run of that shape does
# not fit a short session on a small machine.
bench_cpu_llama() {
    if [ -z "$PY" ]; then
        say "cpu_llama skipped: it compares with PyTorch CPU; $PEER_WHY"
        NOTES+=("cpu_llama skipped: $PEER_WHY"); return
    fi
    if ! ensure_time; then
        say "cpu_llama skipped: GNU time (/usr/bin/time -v) is missing; apt-get install time"
        NOTES+=("cpu_llama skipped: no GNU time"); return
    fi
    local n=8 t=128 b=8 model="$WORK/smollm2-135m" solo=()
    [ "$QUICK" = 1 ] && n=2 t=32 b=2
    local prompts="$model/prompts-${n}x${t}.jsonl"
    "$PY" bench/make_model.py --out "$model" --shape smollm2-135m --prompts "$prompts" --n-prompts "$n" --tokens "$t" >&2
    if [ "$CPU_1B" = 1 ]; then
        local avail_kb
        avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
        if [ "${avail_kb:-0}" -ge $((10 * 1024 * 1024)) ]; then
            local big="$WORK/llama-1b-bf16"
            python3 bench/make_model.py --out "$big" --shape llama-1b --dtype bf16 --stdlib \
                --prompts "$big/prompts-1x128.jsonl" --n-prompts 1 --tokens 128 >&2
            solo=(--solo-model "$big" --solo-prompts "$big/prompts-1x128.jsonl" --solo-reps 1)
        else
            say "cpu_llama: llama-1b run skipped: under 10 GiB of memory available"
            NOTES+=("cpu_llama: llama-1b run skipped (under 10 GiB available)")
        fi
    fi
    say "cpu_llama: subscope forward vs transformers LlamaForCausalLM (eager, sdpa) on smollm2-135m ($n x $t tokens, batch $b, $THREADS threads, $REPS reps)"
    "$PY" bench/bench_forward.py --model "$model" --prompts "$prompts" --python "$PY" --peer-attn eager,sdpa \
        --batch "$b" --threads "$THREADS" --reps "$REPS" "${solo[@]}" \
        $([ "$PEER_H5" = 0 ] && echo --no-peer-h5) --host "$HOST" --json "$LLAMA_CPU_JSON"
}

# Llama family on the GPU (issue 9): the Llama-3.2-1B and Llama-2-7B shapes with BF16
# weights, subscope forward --device cuda --dtype bfloat16 vs Hugging Face bf16 with eager
# and sdpa attention, 16 x 1024 = 16k tokens per batch. Target: >= 60% MFU on the 7B shape
# and faster than HF (gpu_report.py, L1-L3).
bench_gpu_llama() {
    if ! cuda_built; then
        say "gpu_llama skipped: bin/subscope was built without CUDA"; NOTES+=("gpu_llama skipped: no CUDA build"); return
    fi
    local models=() shapes=() m reps=3 rc=0 mem_mib avail_gb
    [ "$QUICK" = 1 ] && reps=2
    mem_mib=$(nvidia-smi -i 0 --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n1 | tr -d ' ')
    IFS=, read -r -a shapes <<<"$LLAMA_MODELS"
    for m in "${shapes[@]}"; do
        # 7B in bf16: 12.6 GiB of weights, 16 GiB in all for subscope (subscope info --config);
        # the HF peer holds about as much again while it runs.
        if [ "$m" = llama-7b ] && [ "${mem_mib:-0}" -lt 40000 ]; then
            say "gpu_llama: $m skipped: the GPU has ${mem_mib:-?} MiB (< 40000)"; NOTES+=("gpu_llama: $m skipped (GPU memory)"); continue
        fi
        avail_gb=$(df -Pk "$WORK" 2>/dev/null | awk 'NR==2 {print int($4 / 1048576)}')
        if [ "$m" = llama-7b ] && ! [ -f "$WORK/$m-bf16/.made" ] && [ "${avail_gb:-0}" -lt 16 ]; then
            say "gpu_llama: $m skipped: ${avail_gb:-?} GiB free on disk (< 16)"; NOTES+=("gpu_llama: $m skipped (disk)"); continue
        fi
        say "gpu_llama: writing $m (bf16) if missing"
        models+=("$(gpu_model "$m" bf16)")
    done
    [ "${#models[@]}" -gt 0 ] || { NOTES+=("gpu_llama: no model to run"); return; }
    mkdir -p "$GPU_WORK"
    rm -f "$GPU_WORK/llama.json"
    say "gpu_llama: subscope forward --device cuda --dtype bfloat16 vs HF bf16 eager/sdpa ($LLAMA_PROMPTS prompts x 1024 tokens, batch 16)"
    python3 bench/gpu/bench_gpu_forward.py --models "$(IFS=,; echo "${models[*]}")" ${PY:+--python "$PY"} \
        --modes "$LLAMA_MODES" --peer-dtypes bf16 --peer-attn eager,sdpa --prompts "$LLAMA_PROMPTS" --tokens 1024 --batch 16 \
        --reps "$reps" --fixed-reps 1 --warm-once --peaks "$GPU_WORK/kernels.json" --json "$GPU_WORK/llama.json" \
        --workdir "$GPU_WORK/scratch" || rc=$?
    [ "$rc" = 0 ] || NOTES+=("gpu_llama: some runs failed (exit $rc; llama.results[].subscope.*.error)")
}

# Attribution (issue 6): gradxact's cost against forward (and a PyTorch forward+backward),
# and attribution patching against patching each unit (bench/bench_attribute.py).
bench_cpu_attribute() {
    local name; if [ "$SMALL" = 1 ]; then name=small; else name=gpt2-small; fi
    local model="$WORK/$name" prompts="$WORK/$name/prompts-8x${TOKENS}.jsonl" peer=()
    python3 bench/make_model.py --out "$model" $([ "$SMALL" = 1 ] && echo --small) --stdlib \
        --prompts "$prompts" --n-prompts 8 --tokens "$TOKENS" >&2
    [ -n "$PY" ] || { peer=(--no-peer "${PEER_WHY#peer skipped: }"); say "cpu_attribute: its PyTorch peer is skipped: ${PEER_WHY#peer skipped: }"; }
    say "cpu_attribute: attribute gradxact vs forward${PY:+ and PyTorch}; atp vs patch --per neuron"
    ${PY:-python3} bench/bench_attribute.py --model "$model" --prompts "$prompts" --device cpu --batch 8 \
        --reps "$REPS" "${peer[@]}" --json "$ATTR_JSON"
}

# Statistics (issue 4): collect --stats mean,cov at every MLP site against the same job with one
# small site's mean (the forward pass), net of the fixed cost (bench/bench_collect.py). On a GPU
# the target: <= 1.15 x forward + the covariance products at cublasSsyrk's rate (from gpu_kernels).
bench_cpu_collect() {
    local name; if [ "$SMALL" = 1 ]; then name=small; else name=gpt2-small; fi
    local model="$WORK/$name" prompts="$WORK/$name/prompts-16x${TOKENS}.jsonl"
    python3 bench/make_model.py --out "$model" $([ "$SMALL" = 1 ] && echo --small) --stdlib \
        --prompts "$prompts" --n-prompts 16 --tokens "$TOKENS" >&2
    say "cpu_collect: collect --stats mean,cov at every MLP site vs the forward pass"
    python3 bench/bench_collect.py --model "$model" --prompts "$prompts" --device cpu --batch 8 --reps "$REPS" \
        --json "$COLLECT_JSON" || NOTES+=("cpu_collect failed")
}

bench_gpu_collect() {
    if ! cuda_built; then
        say "gpu_collect skipped: bin/subscope was built without CUDA"; NOTES+=("gpu_collect skipped: no CUDA build"); return
    fi
    local model prompts kern=() reps=3
    [ "$QUICK" = 1 ] && reps=2
    model=$(gpu_model gpt2-small)
    prompts="$GPU_WORK/collect-prompts-32x1024.jsonl"
    mkdir -p "$GPU_WORK"
    python3 bench/make_model.py --out "$model" --shape gpt2-small --stdlib --prompts "$prompts" --n-prompts 32 --tokens 1024 >&2
    [ -f "$GPU_WORK/kernels.json" ] && kern=(--kernels "$GPU_WORK/kernels.json")
    say "gpu_collect: collect --stats mean,cov at 12 MLP sites vs the forward pass (32 x 1024 tokens, batch 16)"
    python3 bench/bench_collect.py --model "$model" --prompts "$prompts" --device cuda --batch 16 --reps "$reps" \
        ${kern[@]+"${kern[@]}"} --json "$GPU_COLLECT_JSON" || NOTES+=("gpu_collect failed")
}

bench_gpu_attribute() {
    if ! cuda_built; then
        say "gpu_attribute skipped: bin/subscope was built without CUDA"; NOTES+=("gpu_attribute skipped: no CUDA build"); return
    fi
    local model prompts peer=()
    model=$(gpu_model gpt2-small)
    prompts="$GPU_WORK/attr-prompts-16x1024.jsonl"
    mkdir -p "$GPU_WORK"
    python3 bench/make_model.py --out "$model" --shape gpt2-small --stdlib --prompts "$prompts" --n-prompts 16 --tokens 1024 >&2
    [ -n "$PY" ] || { peer=(--no-peer "${PEER_WHY#peer skipped: }"); say "gpu_attribute: its PyTorch peer is skipped: ${PEER_WHY#peer skipped: }"; }
    say "gpu_attribute: attribute gradxact vs forward on the GPU (16 x 1024 tokens); atp vs patch --per neuron"
    # variant attnk: the attention kernels instead of cuBLAS for these 1024-token prompts, forward and backward
    ${PY:-python3} bench/bench_attribute.py --model "$model" --prompts "$prompts" --device cuda --batch 8 \
        --reps 3 "${peer[@]}" --variant attnk:SUBSCOPE_ATTN_GEMM_MIN_LEN=0 --json "$GPU_WORK/attribute.json" ||
        NOTES+=("gpu_attribute failed")
}

# Issue 5 on the GPU, against the PyTorch hook loop on the same GPU: cpu_ablate's 256-mask sweep
# over 8 prompts x 16 tokens (short prompts, where a hook loop pays a launch-bound forward per
# mask; target >= 20x), then 32 masks over 16 prompts x 512 tokens (compute-bound) for the
# masked-vs-clean throughput (the same masks as identities; target >= 80%).
bench_gpu_ablate() {
    if ! cuda_built; then
        say "gpu_ablate skipped: bin/subscope was built without CUDA"; NOTES+=("gpu_ablate skipped: no CUDA build"); return
    fi
    if [ -z "$PY" ]; then
        say "gpu_ablate skipped: it compares with PyTorch on the GPU; $PEER_WHY"; NOTES+=("gpu_ablate skipped: $PEER_WHY"); return
    fi
    local model
    model=$(gpu_model gpt2-small)
    say "gpu_ablate: subscope ablate vs a PyTorch hook loop on the GPU ($ABLATE_RUNS: 256 masks, 2 batches of 8 x 16 tokens; 32 masks, 16 x 512)"
    [[ ,$ABLATE_RUNS, == *,sweep,* ]] && { "$PY" bench/bench_ablate.py --model "$model" --python "$PY" --device cuda --step gpu_ablate --masks 256 --prompts 8 \
        --prompt-batches 2 --tokens 16 --reps 3 --host "$HOST" --workdir "$GPU_WORK/ablate" \
        --json "$GPU_ABLATE_JSON" || NOTES+=("gpu_ablate (sweep) failed"); }
    [[ ,$ABLATE_RUNS, == *,large,* ]] && { "$PY" bench/bench_ablate.py --model "$model" --python "$PY" --device cuda --step gpu_ablate_large --masks 32 \
        --prompts 16 --tokens 512 --reps 3 --no-unbatched --host "$HOST" --workdir "$GPU_WORK/ablate-large" \
        --json "$GPU_ABLATE_LARGE_JSON" || NOTES+=("gpu_ablate (large batches) failed"); }
    # the sweep again with bf16 products on both sides: float32 bounds it by the fp32 rate
    # (bench/README.md), where the peer's loop is bound by its launches either way
    [[ ,$ABLATE_RUNS, == *,bf16,* ]] || return 0
    "$PY" bench/bench_ablate.py --model "$model" --python "$PY" --device cuda --step gpu_ablate_bf16 --masks 256 \
        --prompts 8 --prompt-batches 2 --tokens 16 --reps 3 --dtype bfloat16 --no-unbatched --host "$HOST" --workdir "$GPU_WORK/ablate-bf16" \
        --json "$GPU_ABLATE_BF16_JSON" || NOTES+=("gpu_ablate (bf16 sweep) failed")
}

bench_gpu_forward() {
    if ! cuda_built; then
        say "gpu_forward skipped: bin/subscope was built without CUDA"; NOTES+=("gpu_forward skipped: no CUDA build"); return
    fi
    local models=() shapes=() m reps=3 rc=0 peer
    [ "$QUICK" = 1 ] && reps=2
    # the peer runs in the precisions the modes use (bf16+tc -> bf16), each once
    peer=$(tr ',' '\n' <<<"$GPU_MODES" | sed 's/+.*//' | awk 'NF && !seen[$0]++' | paste -sd,)
    IFS=, read -r -a shapes <<<"$GPU_MODELS"
    for m in "${shapes[@]}"; do models+=("$(gpu_model "$m")"); done
    mkdir -p "$GPU_WORK"
    rm -f "$GPU_WORK/forward.json"
    say "gpu_forward: subscope forward --device cuda vs Hugging Face on the GPU ($GPU_PROMPTS prompts x 1024 tokens, batch 16)"
    python3 bench/gpu/bench_gpu_forward.py --models "$(IFS=,; echo "${models[*]}")" ${PY:+--python "$PY"} \
        --prompts "$GPU_PROMPTS" --batch 16 --reps "$reps" --modes "$GPU_MODES" --peer-dtypes "$peer" --peaks "$GPU_WORK/kernels.json" \
        --json "$GPU_WORK/forward.json" --workdir "$GPU_WORK/scratch" || rc=$?
    [ "$rc" = 0 ] || NOTES+=("gpu_forward: some runs failed (exit $rc; forward.results[].subscope.*.error)")
}

# ---- main ----

known=0
for step in $CPU_STEPS $GPU_STEPS report; do [ "$ONLY" != "$step" ] || known=1; done
[ -n "$ONLY" ] && [ "$known" = 0 ] && die "no step named '$ONLY' (have: $CPU_STEPS $GPU_STEPS report)"
# Every step writes under $WORK; on a fresh checkout (a GPU machine) it does not exist yet.
mkdir -p "$WORK" || die "cannot create $WORK"
GPU=0
have_gpu && GPU=1
ensure_python
build
CPU_RAN=0
if [ "$GPU_ONLY" = 1 ]; then
    say "--gpu-only: skipping $CPU_STEPS"
else
    for step in $CPU_STEPS; do
        [ -z "$ONLY" ] || [ "$ONLY" = "$step" ] || continue
        [ "$step" = cpu_forward ] && rm -f "$CPU_JSON"
        "bench_$step"
        [ "$step" = cpu_forward ] && [ -f "$CPU_JSON" ] && CPU_RAN=1
    done
fi
if [ "$GPU" = 1 ]; then
    say "GPU: $(nvidia-smi -L | head -n1)"
    for step in $GPU_STEPS; do
        [ -z "$ONLY" ] || [ "$ONLY" = "$step" ] || continue
        "bench_$step"
    done
fi

# The targets of issues 3, 4, 5, 6 and 9 with pass/fail; on a GPU machine also the merged
# bench/results/<device>-<date>.json. Each GPU step replaces its own file in
# $GPU_WORK, so `--only gpu_kernels` then `--only gpu_forward` (two shorter calls)
# merge into one result; the forward step takes its peaks from kernels.json.
report=(python3 bench/gpu/gpu_report.py)
[ "$CPU_RAN" = 1 ] && report+=(--cpu "$CPU_JSON")
if [ "$GPU" = 1 ]; then
    [ -f "$GPU_WORK/kernels.json" ] && report+=(--kernels "$GPU_WORK/kernels.json")
    [ -f "$GPU_WORK/forward.json" ] && report+=(--forward "$GPU_WORK/forward.json")
    [ -f "$GPU_WORK/llama.json" ] && report+=(--llama "$GPU_WORK/llama.json")
    [ -f "$GPU_COLLECT_JSON" ] && report+=(--collect "$GPU_COLLECT_JSON")
    [ -f "$GPU_ABLATE_JSON" ] && report+=(--ablate "$GPU_ABLATE_JSON")
    [ -f "$GPU_ABLATE_LARGE_JSON" ] && report+=(--ablate-large "$GPU_ABLATE_LARGE_JSON")
    [ -f "$GPU_ABLATE_BF16_JSON" ] && report+=(--ablate-bf16 "$GPU_ABLATE_BF16_JSON")
    [ -f "$GPU_WORK/attribute.json" ] && report+=(--attribute "$GPU_WORK/attribute.json")
    report+=(--results bench/results)
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do report+=(--note "$n"); done
fi
"${report[@]}"
if [ "$GPU" = 0 ]; then
    echo "GPU part skipped: no GPU is visible (nvidia-smi -L lists none), so $GPU_STEPS did not run"
fi
