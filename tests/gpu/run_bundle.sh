#!/usr/bin/env bash
# The GPU checks and benchmarks in one call on a GPU node that has only the CUDA
# toolkit's libraries, from a tarball made by tests/gpu/bundle.sh (a short lease, a
# cluster's compute node). At the root of a checkout of the bundle's commit:
#
#   tests/gpu/run_bundle.sh BUNDLE.tar.xz --out DIR [--kernel-filters "F;F..."] [--check-budget S] [--check-steps STEPS] [--bench STEPS]
#                           [--bench-seconds S] [--bench-args "ARGS"] [--pipeline-seconds S]
#                           [--pipeline-args "ARGS"] [--pipeline-cpus A-B] [--profile-seconds S]
#                           [--profile-env "VAR=VALUE ...[; VAR=VALUE ...]"]
#
#   1. unpacks the bundle (bin/, build/config.mk, .bundle/lib; .bundle/commit becomes
#      SUBSCOPE_GIT_COMMIT, the commit the results record);
#   2. finds the directories of cuBLAS, cuSOLVER, the CUDA runtime and NCCL (ldconfig,
#      then /usr/local/cuda and Python's nvidia-* wheels) for SUBSCOPE_CUDA_LIBS;
#   2b. with --kernel-filters, bin/kernel_check --filter F for each F (separated by ";"),
#      at most 120 s each, into kernel-check-filters.txt: the cases a change touched,
#      before the rest;
#   3. runs tests/gpu/gpu_check.sh --no-build with GPU_CHECK_BUDGET=S (default 300;
#      0 skips it), with --check-steps only those of kernels,forward,nccl,sanitizer
#      (gpu_check's --only);
#   4. runs each of the comma-separated bench/run_all.sh steps (default
#      gpu_kernels,gpu_forward; "none" skips them) with --gpu-only --no-build
#      --no-install --quick and ARGS, all of them within S seconds (default 150); a step cut
#      by the limit keeps what it finished (kernel_bench's cases with "cut", gpu_forward's
#      models), which run_all.sh --only report then merges;
#   5. with --pipeline-seconds S (default 0: skip), where mpirun runs the bundled
#      program on several ranks, bench/pipeline_bubble.sh ARGS (--pipeline-args; default
#      --stages 2,4,8) on the node's CPU cores within S seconds (the 4-stage bubble of
#      issue 8 wants >= 4 free cores; e.g. "--stages 4 --batches 128 --collect-only");
#      with --pipeline-cpus A-B it runs from the start instead, alongside steps 2b-4, on cores
#      A..B (taskset) while they run on the others: for steps that time nothing on the host
#      (kernel_check, the sanitizers), so that a lease's minutes are not spent twice;
#   5b. with --profile-seconds S (default 0: skip; needs the bench's bench/work/gpt2-small),
#      one steady bf16 forward batch's kernels (16 prompts x 1024 tokens: a run of two batches
#      less a run of one, tests/gpu/ncu_batch.py, so the load does not count) and ncu's
#      per-kernel summary of one collect batch at the 12 MLP sites, under the --profile-env
#      variables (several sets separated by ";": the forward is profiled under each in turn,
#      the collect batch under the first), within S seconds;
#   6. writes gpu-check.txt, bench.txt, pipeline.txt, profile.txt, the result JSON files and logs.tgz
#      (every log) to DIR and prints the summaries last.
# Exit status: gpu_check's (0 passed, 1 a check failed, 2 no GPU), or 1 when the
# bundle cannot be unpacked.
set -u
CALLER=$PWD
cd "$(dirname "$0")/../.." || exit 1
T0=$(date +%s)
BUNDLE="" OUTDIR="" KFILTERS="" CHECK_BUDGET=300 CHECK_STEPS=kernels,forward,nccl,sanitizer STEPS=gpu_kernels,gpu_forward BENCH_S=150 BENCH_ARGS="" PIPE_S=0 PIPE_ARGS="--stages 2,4,8" PIPE_CPUS="" PROF_S=0 PROF_ENV=""
while [ $# -gt 0 ]; do
    case $1 in
    --out) OUTDIR=${2:?--out needs a directory}; shift ;;
    --kernel-filters) KFILTERS=${2:-}; shift ;;
    --check-budget) CHECK_BUDGET=${2:?}; shift ;;
    --check-steps) CHECK_STEPS=${2:?}; shift ;;
    --bench) STEPS=${2:?}; shift ;;
    --bench-seconds) BENCH_S=${2:?}; shift ;;
    --bench-args) BENCH_ARGS=${2:-}; shift ;;
    --pipeline-seconds) PIPE_S=${2:?}; shift ;;
    --pipeline-args) PIPE_ARGS=${2:-}; shift ;;
    --pipeline-cpus) PIPE_CPUS=${2:?}; shift ;;
    --profile-seconds) PROF_S=${2:?}; shift ;;
    --profile-env) PROF_ENV=${2:-}; shift ;;
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run_bundle.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) BUNDLE=$1 ;;
    esac
    shift
done
[ -n "$BUNDLE" ] && [ -n "$OUTDIR" ] || { echo "run_bundle.sh: need BUNDLE.tar.xz and --out DIR (see --help)" >&2; exit 1; }
# relative paths are the caller's, not the checkout root's this script runs in
case $BUNDLE in /*) ;; *) BUNDLE=$CALLER/$BUNDLE ;; esac
case $OUTDIR in /*) ;; *) OUTDIR=$CALLER/$OUTDIR ;; esac
for v in "$CHECK_BUDGET" "$BENCH_S" "$PIPE_S" "$PROF_S"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "run_bundle.sh: --check-budget, --bench-seconds, --pipeline-seconds and --profile-seconds take whole seconds (got \"$v\")" >&2; exit 1; }
done
if [ -n "$PIPE_CPUS" ]; then
    [[ $PIPE_CPUS =~ ^([0-9]+)-([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -le "${BASH_REMATCH[2]}" ] &&
        [ "${BASH_REMATCH[2]}" -lt "$(nproc)" ] ||
        { echo "run_bundle.sh: --pipeline-cpus wants A-B, cores of this machine's $(nproc) (got \"$PIPE_CPUS\")" >&2; exit 1; }
    [ "$PIPE_S" -gt 0 ] || { echo "run_bundle.sh: --pipeline-cpus needs --pipeline-seconds S" >&2; exit 1; }
    command -v taskset >/dev/null || { echo "run_bundle.sh: --pipeline-cpus needs taskset (util-linux)" >&2; exit 1; }
fi
mkdir -p "$OUTDIR" || exit 1
tar xf "$BUNDLE" || { echo "run_bundle.sh: cannot unpack $BUNDLE" >&2; exit 1; }
[ -s .bundle/commit ] && export SUBSCOPE_GIT_COMMIT=$(cat .bundle/commit)

dirs=""
for n in libcublas.so.13 libcublasLt.so.13 libcusolver.so.12 libcusparse.so.12 libnvJitLink.so.13 libcudart.so.13 \
    libnccl.so.2; do
    p=$(ldconfig -p 2>/dev/null | awk -v n="$n" '$1 == n { print $NF; exit }')
    [ -z "$p" ] && p=$(find /usr/local/cuda/lib64/ /usr/local/cuda/targets/*/lib/ /usr/lib/x86_64-linux-gnu/ \
        /opt/*/.venv/lib/python3*/site-packages/nvidia/ -name "$n" 2>/dev/null | head -n 1)
    echo "run_bundle.sh: $n: ${p:-not found}"
    [ -n "$p" ] && dirs="$dirs:$(dirname "$p")"
done
SUBSCOPE_CUDA_LIBS=$(printf '%s\n' "${dirs#:}" | tr ':' '\n' | awk 'NF && !seen[$0]++' | paste -sd:)
export SUBSCOPE_CUDA_LIBS PATH="$PWD/bin:$PATH"
echo "run_bundle.sh: SUBSCOPE_CUDA_LIBS=$SUBSCOPE_CUDA_LIBS"
bin/subscope info --dist 2>&1 | tail -n 1

pipeline_bench() {
    # the bundled program must run under this node's mpirun (its MPI library is the bundle's)
    if command -v mpirun >/dev/null &&
        timeout 60 mpirun --allow-run-as-root --oversubscribe -np 2 bin/subscope info --dist 2>&1 | grep -q "^ranks    2"; then
        tp=$(date +%s)
        # the results are named after the GPU node (its GPU), not this machine's hostname
        label=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 | tr -c 'A-Za-z0-9\n' - |
            tr 'A-Z' 'a-z' | sed 's/-*$//')
        # shellcheck disable=SC2086 # the arguments are words on purpose
        timeout -k 5 "$PIPE_S" bash bench/pipeline_bubble.sh $PIPE_ARGS --host "${label:-$(hostname -s)}-node-cpu" \
            >"$OUTDIR/pipeline.txt" 2>&1
        echo "run_bundle.sh: pipeline_bubble exit $? after $(($(date +%s) - tp)) s on $(nproc) cores"
        find bench/results -name 'pipeline-*.json' -newermt "@$T0" -exec cp {} "$OUTDIR/" \;
    else
        echo "run_bundle.sh: pipeline bench skipped: no mpirun that runs the bundled program on 2 ranks"
    fi
}
pipe_pid=""
if [ -n "$PIPE_CPUS" ]; then
    # alongside the steps below: it on cores PIPE_CPUS, this shell (and so they) on the others
    others=$(seq 0 $(($(nproc) - 1)) | awk -v a="${PIPE_CPUS%-*}" -v b="${PIPE_CPUS#*-}" '$1 < a || $1 > b' | paste -sd,)
    taskset -c "$PIPE_CPUS" bash -c "$(declare -f pipeline_bench); $(declare -p PIPE_S PIPE_ARGS OUTDIR T0); pipeline_bench" \
        >"$OUTDIR/pipeline-alongside.txt" 2>&1 &
    pipe_pid=$!
    [ -n "$others" ] && taskset -pc "$others" $$ >/dev/null
    echo "run_bundle.sh: the pipeline bench runs alongside on cores $PIPE_CPUS, the rest on ${others:-the same cores}"
fi
rc=0
if [ -n "$KFILTERS" ]; then
    IFS=';' read -ra kfs <<<"$KFILTERS"
    for f in "${kfs[@]}"; do
        f=$(printf '%s' "$f" | xargs) # trimmed
        [ -n "$f" ] || continue
        echo "== bin/kernel_check --filter \"$f\""
        timeout -k 5 120 bin/kernel_check --filter "$f" 2>&1
        echo "exit $?"
    done >"$OUTDIR/kernel-check-filters.txt"
    echo "run_bundle.sh: kernel_check filters done after $(($(date +%s) - T0)) s:" \
        "$(grep -c '^CASE .* ok' "$OUTDIR/kernel-check-filters.txt") ok," \
        "$(grep -c '^CASE .*FAIL' "$OUTDIR/kernel-check-filters.txt") failed"
    grep -E '^CASE .*FAIL|^exit [^0]' "$OUTDIR/kernel-check-filters.txt" | head -n 20
fi
if [ "$CHECK_BUDGET" -gt 0 ]; then
    GPU_CHECK_BUDGET=$CHECK_BUDGET bash tests/gpu/gpu_check.sh --no-build --only "$CHECK_STEPS" >"$OUTDIR/gpu-check.txt" 2>&1
    rc=$?
    find bench/results -name 'gpu-check-*.json' -newermt "@$T0" -exec cp {} "$OUTDIR/" \;
    echo "run_bundle.sh: gpu_check exit $rc after $(($(date +%s) - T0)) s"
fi
tb=$(date +%s)
if [ "$STEPS" != none ] && [ "$rc" != 2 ]; then
    cut=0
    for s in ${STEPS//,/ }; do
        left=$((BENCH_S - ($(date +%s) - tb)))
        if [ $left -lt 10 ]; then echo "run_bundle.sh: bench $s skipped (time)"; continue; fi
        # shellcheck disable=SC2086 # BENCH_ARGS is a list of options
        timeout -k 5 $left bash bench/run_all.sh --gpu-only --no-build --no-install --quick --only "$s" $BENCH_ARGS \
            >>"$OUTDIR/bench.txt" 2>&1
        src=$?
        echo "run_bundle.sh: bench $s exit $src after $(($(date +%s) - T0)) s"
        [ $src = 124 ] || [ $src = 137 ] && cut=1
    done
    # a step cut by the time limit merged nothing: merge what the steps left (gpu_forward
    # keeps each finished model), outside the limit, as it only reads small JSON files
    if [ $cut = 1 ]; then
        timeout 120 bash bench/run_all.sh --gpu-only --no-build --no-install --only report >>"$OUTDIR/bench.txt" 2>&1
        echo "run_bundle.sh: report of the cut steps exit $? after $(($(date +%s) - T0)) s"
    fi
    find bench/results -name '*.json' ! -name 'gpu-check-*' -newermt "@$T0" -exec cp {} "$OUTDIR/" \;
fi
if [ "$PIPE_S" -gt 0 ] && [ -z "$PIPE_CPUS" ]; then
    pipeline_bench
elif [ -n "$pipe_pid" ]; then
    wait "$pipe_pid"
    cat "$OUTDIR/pipeline-alongside.txt"
    echo "run_bundle.sh: waited for the pipeline bench alongside until $(($(date +%s) - T0)) s"
fi
if [ "$PROF_S" -gt 0 ]; then
    ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
    m=bench/work/gpt2-small
    if [ -z "$ncu" ] || [ ! -f "$m/config.json" ]; then
        echo "run_bundle.sh: profile skipped: ${ncu:+no $m (the gpu_forward bench makes it)}${ncu:-no ncu}"
    else
        tp=$(date +%s)
        python3 -c 'import random; random.seed(5); print("\n".join("{\"tokens\": [%s]}" % ",".join(str(random.randrange(50257)) for _ in range(1024)) for _ in range(16)))' \
            >/tmp/profile-prompts.jsonl
        prof() { # prof TITLE LAUNCHES SUBSCOPE-ARGS...: ncu's per-kernel summary of the first LAUNCHES kernels
            local title=$1 n=$2; shift 2
            left=$((PROF_S - ($(date +%s) - tp)))
            [ $left -ge 10 ] || { echo "== $title: skipped (time)"; return; }
            echo "== $title (env: ${PROF_ENV:-none}; ncu --clock-control none, first $n launches)"
            # shellcheck disable=SC2086 # PROF_ENV is a list of assignments
            timeout -k 5 $left env $PROF_ENV "$ncu" --clock-control none --metrics gpu__time_duration.sum \
                --print-summary per-kernel --launch-count "$n" bin/subscope "$@" --model "$m" \
                --input /tmp/profile-prompts.jsonl --device cuda --batch 16 --compress 0 2>&1 |
                grep -v "^==PROF== Profiling" | cut -c 1-600
            echo "exit ${PIPESTATUS[0]}"
        }
        # one steady forward batch: the kernels of a run with two batches less those of a run with
        # one (tests/gpu/ncu_batch.py), so the load's conversions and first-batch work cancel
        head -n 16 /tmp/profile-prompts.jsonl >/tmp/profile-1.jsonl
        { cat /tmp/profile-prompts.jsonl; cat /tmp/profile-prompts.jsonl; } >/tmp/profile-2.jsonl
        csvprof() { # csvprof ENV PROMPTS OUT.csv: every launch's GPU time, ncu's raw CSV
            left=$((PROF_S - ($(date +%s) - tp)))
            [ $left -ge 10 ] || return 1
            # shellcheck disable=SC2086 # $1 is a list of assignments
            timeout -k 5 $left env $1 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv \
                bin/subscope forward --dtype bfloat16 --no-logits --out /tmp/prof-f.h5 --model "$m" --input "$2" \
                --device cuda --batch 16 --compress 0 >"$3" 2>"${3%.csv}.err"
        }
        # --profile-env: one set of variables, or several separated by ";" (each set's forward
        # profiled in turn; the CSV files go to build/gpu-profile/, which logs.tgz holds)
        IFS=';' read -ra prof_sets <<<"${PROF_ENV:-}"
        [ ${#prof_sets[@]} -gt 0 ] || prof_sets=("")
        mkdir -p build/gpu-profile
        {
            for i in "${!prof_sets[@]}"; do
                penv=$(printf '%s' "${prof_sets[$i]}" | xargs) # trimmed
                echo "== forward --dtype bfloat16, one steady batch of 16 x 1024 tokens (env: ${penv:-none})"
                one=build/gpu-profile/forward-$i-1batch.csv two=build/gpu-profile/forward-$i-2batch.csv
                if csvprof "$penv" /tmp/profile-1.jsonl "$one" && csvprof "$penv" /tmp/profile-2.jsonl "$two"; then
                    python3 tests/gpu/ncu_batch.py "$one" "$two"
                    # what the backend said of cuBLASLt (SUBSCOPE_LT_LOG=1 in the set: each plan)
                    grep -h "cuBLASLt" "${two%.csv}.err" 2>/dev/null | sort -u
                else
                    echo "skipped or failed (time, or ncu's exit status); the CSV files are in build/gpu-profile/"
                fi
            done
            PROF_ENV=$(printf '%s' "${prof_sets[0]}" | xargs)
            prof "collect --stats mean,cov at blocks.*.mlp.hook_post, fp32, one batch" 300 collect \
                --sites 'blocks.*.mlp.hook_post' --stats mean,cov --out /tmp/prof-c.h5
        } >"$OUTDIR/profile.txt" 2>&1
        echo "run_bundle.sh: profile done after $(($(date +%s) - tp)) s"
    fi
fi
tar czf "$OUTDIR/logs.tgz" build/gpu-check/logs bench/work/gpu/*.json build/gpu-profile 2>/dev/null
[ -f "$OUTDIR/gpu-check.txt" ] && sed -n '/== gpu-check summary/,$p' "$OUTDIR/gpu-check.txt"
[ -f "$OUTDIR/bench.txt" ] && sed -n '/^targets/,$p' "$OUTDIR/bench.txt" | tail -n 45
[ -f "$OUTDIR/pipeline.txt" ] && tail -n 20 "$OUTDIR/pipeline.txt"
[ -f "$OUTDIR/profile.txt" ] && cat "$OUTDIR/profile.txt"
echo "run_bundle.sh: $(($(date +%s) - T0)) s in all; results in $OUTDIR"
exit $rc
