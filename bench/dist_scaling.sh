#!/usr/bin/env bash
# Data-parallel scaling of `subscope collect` with CPU ranks on this machine (docs/SCALING.md):
# the same collection by one process and by mpirun -np 1 .. N ranks of one thread each, in
# the same run, interleaved, R repetitions; reports wall time, speed-up and parallel efficiency
# against the one-thread process, checks that the ranks' statistics equal the one-process ones,
# and writes bench/results/dist-<host>-<date>[-ckpt<K>].json.
#
#   bench/dist_scaling.sh                       # tiny-gpt2, 6400 prompts, ranks 1 2, 3 reps
#   bench/dist_scaling.sh --ranks "1 2 4" --prompts 12800 --ckpt 800 --host mybox
set -u
cd "$(dirname "$0")/.." || exit 1
MODEL=models/tiny-gpt2 PROMPTS=6400 RANKS="1 2" REPS=3 BATCH=8 CKPT=0 HOST=$(hostname -s) OUTDIR=bench/results
SITES='blocks.*.mlp.hook_post' STATS=mean,cov
usage() { sed -n '2,9p' "$0"; echo "options: --model DIR --prompts N --ranks LIST --reps R --batch B --ckpt K (0: no checkpoints)"
          echo "         --sites GLOB --stats LIST --host LABEL --outdir DIR"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --model) MODEL=$2; shift ;; --prompts) PROMPTS=$2; shift ;; --ranks) RANKS=$2; shift ;;
        --reps) REPS=$2; shift ;; --batch) BATCH=$2; shift ;; --ckpt) CKPT=$2; shift ;;
        --sites) SITES=$2; shift ;; --stats) STATS=$2; shift ;; --host) HOST=$2; shift ;;
        --outdir) OUTDIR=$2; shift ;; -h|--help) usage ;; *) echo "unknown option $1" >&2; usage 1 ;;
    esac; shift
done
command -v mpirun >/dev/null || { echo "dist_scaling: needs mpirun ('make deps')" >&2; exit 1; }
make -s bin/subscope bin/h5cmp >/dev/null || exit 1
W=$(mktemp -d /tmp/ss_dist_bench_XXXXXX)
trap 'rm -rf "$W"' EXIT
# The bundled prompts repeated to PROMPTS lines: every rank gets the same mix of lengths.
n0=$(wc -l <data/demo_prompts.jsonl)
for _ in $(seq 1 $(( (PROMPTS + n0 - 1) / n0 ))); do cat data/demo_prompts.jsonl; done | head -n "$PROMPTS" >"$W/in.jsonl"
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
ck=(); [ "$CKPT" -gt 0 ] && ck=(--checkpoint-every "$CKPT")
# CPU ranks: the default device is a GPU whenever one is visible (every rank of a node would share it)
opts=(--model "$MODEL" --input "$W/in.jsonl" --sites "$SITES" --stats "$STATS" --batch "$BATCH" "${ck[@]}" --device cpu)
# run KEY CMD...: time one run; append the wall seconds to $W/KEY.t and the CPU seconds (user +
# system of the command and every process it waited for: mpirun's ranks included) to $W/KEY.cpu.
# CPU time hardly depends on what else the machine runs; wall time does.
run() {
    local key=$1 r; shift
    if ! r=$( { TIMEFORMAT='%R %U %S'; time "$@" --out "$W/$key.h5" >"$W/$key.log" 2>&1; } 2>&1 ); then
        echo "dist_scaling: $key failed:" >&2; tail -n 3 "$W/$key.log" >&2; exit 1
    fi
    echo "$r" | awk '{printf "%.4f\n", $1}' >>"$W/$key.t"
    echo "$r" | awk '{printf "%.4f\n", $2 + $3}' >>"$W/$key.cpu"
}
load() { awk '{printf "[%s, %s, %s]", $1, $2, $3}' /proc/loadavg; }
median() { sort -g "$1" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
minimum() { sort -g "$1" | head -n 1; }
load0=$(load)
echo "collect: $MODEL, $PROMPTS prompts, batch $BATCH, sites $SITES, stats $STATS, checkpoint every ${CKPT} ; $REPS reps"
for r in $(seq 1 "$REPS"); do
    SUBSCOPE_THREADS=1 run single bin/subscope collect "${opts[@]}"
    for n in $RANKS; do SUBSCOPE_THREADS=1 run "np$n" $MPI -np "$n" -x SUBSCOPE_THREADS bin/subscope collect "${opts[@]}"; done
    SUBSCOPE_THREADS=$(nproc) run threads bin/subscope collect "${opts[@]}"
    echo "  rep $r done"
done
load1=$(load)
t1=$(median "$W/single.t")
ok=true
rows=""
c1=$(median "$W/single.cpu")
printf '%-28s %9s %9s %9s %10s %9s %8s\n' "run" "median s" "min s" "speed-up" "efficiency" "CPU s" "CPU eff"
printf '%-28s %9.3f %9.3f %9s %10s %9.3f %8s\n' "1 process, 1 thread" "$t1" "$(minimum "$W/single.t")" 1.00 1.00 "$c1" 1.00
for n in $RANKS; do
    tn=$(median "$W/np$n.t")
    sp=$(awk -v a="$t1" -v b="$tn" 'BEGIN {printf "%.3f", a / b}')
    ef=$(awk -v s="$sp" -v n="$n" 'BEGIN {printf "%.3f", s / n}')
    cn=$(median "$W/np$n.cpu")
    ce=$(awk -v a="$c1" -v b="$cn" 'BEGIN {printf "%.3f", a / b}')
    bin/h5cmp --quiet --atol 1e-14 --rtol 1e-12 "$W/single.h5" "$W/np$n.h5" >/dev/null 2>&1 && same=true || { same=false; ok=false; }
    printf '%-28s %9.3f %9.3f %9s %10s %9.3f %8s%s\n' "mpirun -np $n, 1 thread each" "$tn" "$(minimum "$W/np$n.t")" "$sp" "$ef" "$cn" "$ce" "$($same || echo '  RESULT DIFFERS')"
    rows="$rows${rows:+,}
  {\"ranks\": $n, \"threads_per_rank\": 1, \"median_s\": $tn, \"min_s\": $(minimum "$W/np$n.t"), \"speedup\": $sp, \"efficiency\": $ef, \"cpu_s_median\": $cn, \"cpu_efficiency\": $ce, \"same_as_one_process\": $same, \"times_s\": [$(paste -sd, "$W/np$n.t")], \"cpu_s\": [$(paste -sd, "$W/np$n.cpu")]}"
done
tt=$(median "$W/threads.t")
printf '%-28s %9.3f %9.3f %9s\n' "1 process, $(nproc) threads" "$tt" "$(minimum "$W/threads.t")" "$(awk -v a="$t1" -v b="$tt" 'BEGIN {printf "%.3f", a / b}')"
mkdir -p "$OUTDIR"
json="$OUTDIR/dist-$HOST-$(date -u +%Y%m%d)$([ "$CKPT" -gt 0 ] && echo "-ckpt$CKPT").json"
cat >"$json" <<EOF
{
 "benchmark": "dist-scaling-collect-cpu",
 "date": "$(date -u +%FT%TZ)",
 "git_commit": "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)",
 "host": "$HOST",
 "device": {"cpu_model": "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)", "logical_cpus": $(nproc), "mpi": "$(mpirun --version 2>/dev/null | head -n 1)"},
 "load_avg_before": $load0,
 "load_avg_after": $load1,
 "settings": {"model": "$MODEL", "prompts": $PROMPTS, "batch": $BATCH, "sites": "$SITES", "stats": "$STATS", "checkpoint_every": $CKPT, "reps": $REPS,
              "note": "wall time of the whole command (start-up, tokenizing, model load included); speed-up against one process with one thread; cpu_s: user+system seconds of the command and its ranks; cpu_efficiency: one process's CPU seconds / the ranks' total"},
 "one_process": {"threads": 1, "median_s": $t1, "min_s": $(minimum "$W/single.t"), "cpu_s_median": $c1, "times_s": [$(paste -sd, "$W/single.t")], "cpu_s": [$(paste -sd, "$W/single.cpu")]},
 "one_process_all_threads": {"threads": $(nproc), "median_s": $tt, "min_s": $(minimum "$W/threads.t"), "times_s": [$(paste -sd, "$W/threads.t")]},
 "ranks": [$rows
 ]
}
EOF
echo "wrote $json"
$ok
