#!/usr/bin/env bash
# Runs the benchmark suite: builds subscope, makes the benchmark model, runs every step
# that this machine can run, and prints a short table per step. Results go to
# bench/results/<kind>-<host>-<date>.json.
#
#   bench/run_all.sh                       GPT-2 small shape, 32 prompts x 128 tokens, 3 reps
#   bench/run_all.sh --small --prompts 16  6-layer d=512 model, fewer prompts (slow or shared machines)
#
# Options: --small, --prompts N, --tokens T, --batch B, --threads N, --reps R,
#          --no-peer-h5, --only STEP (a step name below), --host LABEL.
# Environment: BENCH_PYTHON (an interpreter that has torch, transformers, safetensors,
#          h5py, numpy; default python3, or a venv made in bench/work/venv if those are
#          missing), BENCH_WORK (models and scratch, default bench/work), MAKE_JOBS (2).
#
# Steps: CPU_STEPS always run; GPU_STEPS run only where `nvidia-smi -L` lists a GPU, and
# are skipped with a message elsewhere. A new benchmark is a function bench_<name> below
# plus its name in one of the two lists.
set -euo pipefail

CPU_STEPS="cpu_forward"
GPU_STEPS=""   # none yet: the CUDA backend is not built (see docs/ROADMAP.md)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_WORK:-$ROOT/bench/work}"
SMALL=0 PROMPTS=32 TOKENS=128 BATCH=16 THREADS="$(nproc)" REPS=3 PEER_H5=1 ONLY="" HOST=""

die() { echo "run_all.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

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
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
    shift
done

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

# ---- prerequisites ----

ensure_python() {
    local need="import torch, transformers, safetensors, h5py, numpy"
    PY="${BENCH_PYTHON:-python3}"
    command -v "$PY" >/dev/null 2>&1 || die "$PY not found; install python3 (and pip)"
    if "$PY" -c "$need" 2>/dev/null; then return; fi
    if [ -z "${BENCH_PYTHON:-}" ] && [ -x "$WORK/venv/bin/python" ] && "$WORK/venv/bin/python" -c "$need" 2>/dev/null; then
        PY="$WORK/venv/bin/python"; return
    fi
    [ -z "${BENCH_PYTHON:-}" ] || die "BENCH_PYTHON=$BENCH_PYTHON lacks one of torch, transformers, safetensors, h5py, numpy"
    # A venv, so that a system Python marked externally managed (PEP 668) is left alone.
    say "python3 lacks torch/transformers/safetensors/h5py/numpy: installing them with pip into $WORK/venv"
    mkdir -p "$WORK"
    python3 -m venv "$WORK/venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv), or set BENCH_PYTHON"
    "$WORK/venv/bin/python" -m pip install --quiet --upgrade pip
    "$WORK/venv/bin/python" -m pip install --quiet torch transformers safetensors h5py numpy
    PY="$WORK/venv/bin/python"
}

ensure_time() {
    [ -x /usr/bin/time ] && /usr/bin/time -v true 2>/dev/null && return
    say "/usr/bin/time (GNU time, for peak RSS) is missing: installing the Debian package 'time'"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq time >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo apt-get install -y -qq time >/dev/null
    fi
    [ -x /usr/bin/time ] || die "could not install GNU time; apt-get install time"
}

build() {
    say "building bin/subscope"
    make -j"${MAKE_JOBS:-2}" >/dev/null || die "make failed; run make to see why"
    [ -x bin/subscope ] || die "make did not produce bin/subscope"
}

# ---- steps ----

bench_cpu_forward() {
    local name; if [ "$SMALL" = 1 ]; then name=small; else name=gpt2-small; fi
    local model="$WORK/$name" prompts="$WORK/$name/prompts-${PROMPTS}x${TOKENS}.jsonl"
    say "model $model, prompts $prompts"
    "$PY" bench/make_model.py --out "$model" $([ "$SMALL" = 1 ] && echo --small) \
        --prompts "$prompts" --n-prompts "$PROMPTS" --tokens "$TOKENS" >&2
    say "cpu_forward: subscope forward vs transformers ($THREADS threads, batch $BATCH, $REPS reps)"
    "$PY" bench/bench_forward.py --model "$model" --prompts "$prompts" --python "$PY" \
        --batch "$BATCH" --threads "$THREADS" --reps "$REPS" \
        $([ "$PEER_H5" = 0 ] && echo --no-peer-h5) ${HOST:+--host "$HOST"}
}

# ---- main ----

ensure_python
ensure_time
build
ran=0 known=0
for step in $CPU_STEPS; do
    [ -z "$ONLY" ] || [ "$ONLY" = "$step" ] || continue
    "bench_$step"; ran=$((ran + 1)); known=1
done
for step in $GPU_STEPS; do [ "$ONLY" != "$step" ] || known=1; done
if [ -n "$GPU_STEPS" ]; then
    if have_gpu; then
        for step in $GPU_STEPS; do
            [ -z "$ONLY" ] || [ "$ONLY" = "$step" ] || continue
            "bench_$step"; ran=$((ran + 1))
        done
    else
        say "no GPU (nvidia-smi -L lists none): skipping $GPU_STEPS"
    fi
else
    say "no GPU benchmarks exist yet"
fi
[ -n "$ONLY" ] && [ "$known" = 0 ] && die "no step named '$ONLY' (have: $CPU_STEPS $GPU_STEPS)"
