#!/usr/bin/env bash
# Pipeline-parallel bubble: `collect --pipeline P` on a random 8-block GPT-2 (d 512) with M
# micro-batches (= batches), one thread per rank, against one process in the same run. Reports
# per P the wall time, the speed-up over one process, the bubble the stages measured
# (pipeline_bubble_fraction: time waiting for a neighbour / all stage time) and the ideal
# (P-1)/(M+P-1) of a pipeline whose stages take equal time; then the same for `attribute`
# (forward and backward passes, the 1F1B schedule) at several --micro-batches; then, on 2 stages of
# a model whose head costs 2.7 blocks (vocabulary 16384), `attribute` and `ablate` with the default
# split (balanced by multiply-adds: 5,3) against --pipeline-blocks even (4,4), the median of 3 runs
# each. Writes bench/results/pipeline-<host>-<date>.json.
#
#   bench/pipeline_bubble.sh                 P = 2 and 4, M = 32 batches of 4 prompts x 64 tokens
#   bench/pipeline_bubble.sh --stages 2,4,8 --batches 64 --host LABEL
#   bench/pipeline_bubble.sh --stages 4 --batches 128 --collect-only    (the collect rows alone)
#
# On a machine with fewer cores than P ranks the stages share cores: the measured waiting then
# includes time a stage's core was busy with another stage, and the JSON says how many cores
# there were.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAGES=2,4 M=32 HOST="$(hostname -s 2>/dev/null || hostname)" ONLY_COLLECT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --stages) STAGES="${2:?}"; shift ;;
        --batches) M="${2:?}"; shift ;;
        --host) HOST="${2:?}"; shift ;;
        --collect-only) ONLY_COLLECT=1 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "pipeline_bubble.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
command -v mpirun >/dev/null || { echo "pipeline_bubble.sh: needs mpirun (make deps)" >&2; exit 1; }
[ -x bin/subscope ] && [ -x bin/mkmodel ] || make -s bin/subscope bin/mkmodel >&2
W="${BENCH_WORK:-$ROOT/bench/work}/pipeline"
mkdir -p "$W"
B=4
lengths=$(python3 -c "print(','.join(['64'] * ($M * $B)))" 2>/dev/null || printf '64%.0s,' $(seq 1 $((M * B))) | sed 's/,$//')
bin/mkmodel --out "$W/model" --layers 8 --d 512 --heads 8 --vocab 2048 --positions 128 --seed 7 \
    --prompts "$W/prompts.jsonl" --lengths "$lengths" >/dev/null
export SUBSCOPE_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
# CPU ranks, one thread each, unbound (as dist_scaling.sh), and --device cpu everywhere: the
# default device is a GPU whenever one is visible, and on the H100 node (16 cores, one GPU) every
# stage then ran on that one GPU, time-sliced, so the bubbles measured 43%, 71%, 85% at 2, 4, 8
# stages, close to a serial pipeline's (P-1)/P (50%, 75%, 87.5%), against 4.7% at 2 stages on
# the 2-core development VM, which has no GPU
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
opts=(--model "$W/model" --input "$W/prompts.jsonl" --sites 'blocks.*.hook_resid_post' --stats mean --batch $B
      --device cpu)
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
t0=$(now); bin/subscope collect "${opts[@]}" --out "$W/p1.h5" 2>/dev/null; t1=$(now)
base=$(calc "$t1 - $t0")
rows="{\"stages\": 1, \"seconds\": $base, \"speedup\": 1.0}"
printf '%-7s %9s %8s %16s %14s\n' stages seconds speedup "bubble measured" "bubble ideal" >&2
printf '%-7s %9.2f %8.2f %16s %14s\n' 1 "$base" 1.00 - - >&2
for P in ${STAGES//,/ }; do
    t0=$(now)
    $MPI -np "$P" bin/subscope collect "${opts[@]}" --pipeline "$P" --out "$W/p$P.h5" 2>/dev/null
    t1=$(now)
    sec=$(calc "$t1 - $t0")
    attr() { h5dump -a "$1" "$W/p$P.h5" | sed -n 's/.*(0): \(.*\)$/\1/p'; }
    bub=$(attr /pipeline_bubble_fraction)
    ideal=$(calc "($P - 1) / ($M + $P - 1)")
    sp=$(calc "$base / $sec")
    printf '%-7s %9.2f %8.2f %15.1f%% %13.1f%%   waits per stage (s): %s\n' "$P" "$sec" "$sp" "$(calc "100 * $bub")" \
        "$(calc "100 * $ideal")" "$(attr /pipeline_wait_seconds)" >&2
    rows="$rows, {\"stages\": $P, \"seconds\": $sec, \"speedup\": $sp, \"bubble_measured\": $bub, \"bubble_ideal\": $ideal,"
    rows="$rows \"stage_busy_seconds\": [$(attr /pipeline_busy_seconds)], \"stage_wait_seconds\": [$(attr /pipeline_wait_seconds)]}"
done
sends=$(mpirun --allow-run-as-root --oversubscribe -np 2 bin/subscope info --dist 2>/dev/null | sed -n 's/^sends *//p')
echo "sends between stages: ${sends:-?}" >&2
collect_json="{\"benchmark\": \"pipeline_bubble\", \"host\": \"$HOST\", \"cores\": $(nproc), \"date\": \"$(date -u +%FT%TZ)\",
 \"commit\": \"${SUBSCOPE_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo ?)}\", \"sends\": \"$sends\",
 \"model\": \"random GPT-2, 8 blocks, d 512, 8 heads, vocab 2048\", \"micro_batches\": $M, \"prompts_per_batch\": $B,
 \"tokens_per_prompt\": 64, \"threads_per_rank\": 1, \"job\": \"collect --sites 'blocks.*.hook_resid_post' --stats mean\",
 \"runs\": [$rows]"
if [ "$ONLY_COLLECT" = 1 ]; then
    out="bench/results/pipeline-$HOST-$(date -u +%Y%m%d)-collect.json"
    cat >"$out" <<JSON
$collect_json}
JSON
    echo "wrote $out" >&2
    exit 0
fi
# attribute (gradxact, the forward and the backward pass) on the first 16 batches: the 1F1B schedule
# with at most --micro-batches W batches in flight per stage (1: a batch's backward pass before the
# next forward; 2; default P), against one process. Ideal bubble (P-1)/(M+P-1) for M = 16 batches
# (W >= 2), (P-1)/P with W = 1.
head -n $((16 * B)) "$W/prompts.jsonl" >"$W/prompts16.jsonl"
aopts=(--device cpu --model "$W/model" --input "$W/prompts16.jsonl" --sites 'blocks.*.hook_resid_post' --method gradxact
       --reduce prompts --batch $B)
t0=$(now); bin/subscope attribute "${aopts[@]}" --out "$W/a1.h5" >/dev/null 2>&1; t1=$(now)
abase=$(calc "$t1 - $t0")
arows="{\"stages\": 1, \"seconds\": $abase, \"speedup\": 1.0}"
printf '\nattribute gradxact, 16 batches\n%-7s %14s %9s %8s %16s %14s\n' stages micro-batches seconds speedup "bubble measured" "bubble ideal" >&2
printf '%-7s %14s %9.2f %8.2f %16s %14s\n' 1 - "$abase" 1.00 - - >&2
for P in ${STAGES//,/ }; do
    for MB in $(printf '%s\n' 1 2 "$P" | sort -un); do
        t0=$(now)
        $MPI -np "$P" bin/subscope attribute "${aopts[@]}" --pipeline "$P" --micro-batches "$MB" --out "$W/a$P.h5" >/dev/null 2>&1
        t1=$(now)
        sec=$(calc "$t1 - $t0")
        bub=$(h5dump -a /pipeline_bubble_fraction "$W/a$P.h5" | sed -n 's/.*(0): \(.*\)$/\1/p')
        if [ "$MB" = 1 ]; then ideal=$(calc "($P - 1) / $P"); else ideal=$(calc "($P - 1) / (16 + $P - 1)"); fi
        sp=$(calc "$abase / $sec")
        printf '%-7s %14s %9.2f %8.2f %15.1f%% %13.1f%%\n' "$P" "$MB" "$sec" "$sp" "$(calc "100 * $bub")" "$(calc "100 * $ideal")" >&2
        arows="$arows, {\"stages\": $P, \"micro_batches\": $MB, \"seconds\": $sec, \"speedup\": $sp, \"bubble_measured\": $bub, \"bubble_ideal\": $ideal}"
    done
done
# The default split against the even one, where the head is costly: 8 blocks of d 512 and a head of
# 512 x 16384 (2.7 blocks); 16 batches.
bl=$(python3 -c "print(','.join(['64'] * (16 * $B)))" 2>/dev/null || printf '64%.0s,' $(seq 1 $((16 * B))) | sed 's/,$//')
bin/mkmodel --out "$W/bighead" --layers 8 --d 512 --heads 8 --vocab 16384 --positions 128 --seed 7 \
    --prompts "$W/bh.jsonl" --lengths "$bl" >/dev/null
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); calc "$t1 - $t0"; }
srows=""
printf '\nsplit of 2 stages, head = 2.7 blocks (median of 3)\n%-10s %9s %9s %9s %8s\n' job "1 process" balanced even gain >&2
for job in attribute ablate; do
    if [ $job = attribute ]; then jo=(attribute --sites 'blocks.*.hook_resid_post' --method gradxact --reduce prompts)
    else jo=(ablate --mask 'blocks.6.mlp.hook_post[1,2,3]' --metrics loss,kl); fi
    jo+=(--model "$W/bighead" --input "$W/bh.jsonl" --batch $B --device cpu)
    one=() bal=() even=()
    for _ in 1 2 3; do
        one+=("$(timed bin/subscope "${jo[@]}" --out "$W/s1.h5")")
        bal+=("$(timed $MPI -np 2 bin/subscope "${jo[@]}" --pipeline 2 --out "$W/s2.h5")")
        even+=("$(timed $MPI -np 2 bin/subscope "${jo[@]}" --pipeline 2 --pipeline-blocks even --out "$W/s3.h5")")
    done
    o=$(median3 "${one[@]}") b=$(median3 "${bal[@]}") e=$(median3 "${even[@]}")
    printf '%-10s %9.2f %9.2f %9.2f %7.2fx\n' $job "$o" "$b" "$e" "$(calc "$e / $b")" >&2
    srows="$srows${srows:+, }{\"job\": \"$job\", \"one_process_seconds\": $o, \"balanced_5_3_seconds\": $b, \"even_4_4_seconds\": $e, \"balanced_gain\": $(calc "$e / $b")}"
done
out="bench/results/pipeline-$HOST-$(date -u +%Y%m%d).json"
cat >"$out" <<JSON
$collect_json,
 "attribute_job": "attribute --method gradxact --reduce prompts, 16 batches, 1F1B with at most micro_batches in flight per stage (ideal bubble: (P-1)/(16+P-1); with 1, (P-1)/P)",
 "attribute_runs": [$arows],
 "split_job": "2 stages of a random GPT-2 with 8 blocks of d 512 and vocabulary 16384 (head = 2.7 blocks), 16 batches of 4 x 64 tokens: attribute gradxact, ablate one mask at block 6 (loss, kl); default split (balanced, 5,3) vs --pipeline-blocks even (4,4), median of 3",
 "split_runs": [$srows]}
JSON
echo "wrote $out" >&2
