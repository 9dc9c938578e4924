#!/usr/bin/env bash
# bench/gpu/kernel_bench.cu's stop on SIGTERM (what `timeout` sends when a lease's
# --bench-seconds run out), without a GPU: its selftest build (nvcc, no GPU needed) runs
# host cases of 100 ms launches through the same run_case/time_op/die path with --cut-test.
# A SIGTERM after two cases must leave the JSON with exactly the cases finished, the "cut"
# mark naming the next one, and exit 4; gpu_report.py must read the file and say it was cut.
source "$(dirname "$0")/lib.sh"
if ! grep -qE '^NVCC := .+' build/config.mk 2>/dev/null || [ ! -f build/rel/kernels/add.o ]; then
    pass "kernel_bench not checked: no nvcc (build/config.mk) or no nvcc-built kernels"
    finish; exit
fi
KB=build/bench/kernel_bench_json_selftest
if ! out=$(make -f bench/gpu/Makefile "$KB" 2>&1); then
    fail "kernel_bench selftest builds" "$(printf '%s' "$out" | tail -n 3)"
    finish; exit
fi
"$KB" --cut-test 50 --json "$TMP/k.json" 2>"$TMP/k.err" &
pid=$!
for _ in $(seq 200); do # up to 20 s for two finished cases
    [ "$(grep -c '^selftest\.case' "$TMP/k.err")" -ge 2 ] && break
    sleep 0.1
done
kill -TERM $pid
wait $pid
rc=$?
done_n=$(grep -c '^selftest\.case' "$TMP/k.err")
got=$(python3 - "$TMP/k.json" <<'P' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
names = [r["name"] for r in d["results"]]
print(len(names), names == [f"selftest.case{i}" for i in range(len(names))], d["cut"]["signal"], d["cut"]["before"],
      d["cut"]["cases_done"], "stopped" in d)
P
)
want="$done_n True SIGTERM selftest.case$done_n $done_n True"
if [ $rc = 4 ] && [ "$done_n" -ge 2 ] && [ "$done_n" -lt 50 ] && [ "$got" = "$want" ] &&
    grep -q "^kernel_bench: cut by SIGTERM before selftest.case$done_n finished" "$TMP/k.err"; then
    pass "SIGTERM mid-run: the $done_n finished cases and the cut mark written, exit 4"
else
    fail "SIGTERM mid-run" "exit $rc (want 4), $done_n cases on stderr; JSON: ${got:-none} (want $want)" \
        "$(tail -n 2 "$TMP/k.err")"
fi
# gpu_report.py reads the cut file and records why it holds fewer cases
if out=$(python3 bench/gpu/gpu_report.py --kernels "$TMP/k.json" --out "$TMP/m.json" 2>&1) &&
    printf '%s\n' "$out" | grep -q "^note: gpu_kernels cut by SIGTERM before selftest.case$done_n: $done_n cases timed" &&
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert any("cut by SIGTERM" in n for n in d["notes"])' \
        "$TMP/m.json"; then
    pass "gpu_report.py: the cut noted in its output and the merged notes"
else
    fail "gpu_report.py on a cut kernel file" "$(printf '%s' "$out" | tail -n 3)"
fi
# uncut, the same cases end with exit 0 and no cut mark
"$KB" --cut-test 2 --json "$TMP/k2.json" 2>/dev/null
rc=$?
if [ $rc = 0 ] && python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert len(d["results"]) == 2 and "cut" not in d and "stopped" not in d' "$TMP/k2.json"; then
    pass "no signal: every case, no cut mark, exit 0"
else
    fail "no signal" "exit $rc"
fi
# A SIGTERM in the set-up between cases (buffers allocated and filled, seconds for large ones)
# stops the run at the next set-up step (setup_point), naming the set-up after the last case
# finished; before, only the launches checked the flag, so the whole set-up ran first (here 3 s
# of it, in 100 ms steps) and the cut named the next case.
"$KB" --cut-setup-test 20 --json "$TMP/ks.json" 2>"$TMP/ks.err" &
pid=$!
for _ in $(seq 200); do # up to 20 s for two finished cases and the third's set-up begun
    grep -q '^kernel_bench: set-up of selftest.case2$' "$TMP/ks.err" && break
    sleep 0.1
done
sleep 0.5 # well inside the third case's 3 s set-up
t0=$(date +%s%N)
kill -TERM $pid
wait $pid
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
got=$(python3 - "$TMP/ks.json" <<'P' 2>&1
import json, sys
d = json.load(open(sys.argv[1]))
print(len(d["results"]), d["cut"]["signal"], d["cut"]["before"], d["cut"]["cases_done"])
P
)
want="2 SIGTERM the set-up after selftest.case1 2"
if [ $rc = 4 ] && [ "$got" = "$want" ] && [ $ms -lt 1500 ] &&
    grep -q "^kernel_bench: cut by SIGTERM before the set-up after selftest.case1 finished (2 cases done)" "$TMP/ks.err"; then
    pass "SIGTERM in the set-up between cases: stopped within $ms ms, the 2 finished cases and the cut mark written, exit 4"
else
    fail "SIGTERM in the set-up between cases" "exit $rc (want 4) after $ms ms (want < 1500); JSON: ${got:-none} (want $want)" \
        "$(tail -n 2 "$TMP/ks.err")"
fi
# its integer options are digits only (strtoll took a leading space or '+')
for v in '+2' ' 2' '2x' ''; do
    "$KB" --cut-test "$v" --json "$TMP/kx.json" 2>"$TMP/kx.err"
    rc=$?
    [ $rc = 2 ] && grep -qF -- "--cut-test needs an integer in 1..1000, got '$v'" "$TMP/kx.err" && [ ! -e "$TMP/kx.json" ] &&
        pass "--cut-test '$v' refused (exit 2)" || fail "--cut-test '$v' refused" "exit $rc: $(cat "$TMP/kx.err")"
done
# bench/run_all.sh's gpu_kernels step cut by `timeout` as run_bundle.sh cuts it (SIGTERM to the
# whole group): run_all.sh must wait for kernel_bench to write the cases it finished, so that
# the report run_bundle.sh starts once timeout returns finds them (a fake nvidia-smi lists a
# GPU; KERNEL_BENCH is the selftest's host cases)
mkdir -p "$TMP/fakebin"
printf '#!/bin/sh\necho "GPU 0: Fake GPU (UUID: GPU-0)"\n' >"$TMP/fakebin/nvidia-smi"
printf '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --json ] && j=$2; shift; done\nexec %s --cut-test 50 --json "$j"\n' \
    "$PWD/$KB" >"$TMP/fakebin/kb"
chmod +x "$TMP/fakebin/nvidia-smi" "$TMP/fakebin/kb"
PATH="$TMP/fakebin:$PATH" BENCH_WORK="$TMP/work" KERNEL_BENCH="$TMP/fakebin/kb" BENCH_PYTHON=false \
    timeout -k 5 2 bash bench/run_all.sh --gpu-only --no-build --no-install --quick --only gpu_kernels >"$TMP/ra.out" 2>&1
rc=$?
at_return=absent
[ -s "$TMP/work/gpu/kernels.json" ] && at_return=there
n=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(len(d["results"]), d["cut"]["signal"])' \
    "$TMP/work/gpu/kernels.json" 2>&1)
if [ $rc = 124 ] && [ $at_return = there ] && case $n in [1-9]*" SIGTERM") true ;; *) false ;; esac; then
    pass "run_all.sh cut by timeout: kernels.json holds the finished cases ($n) when timeout returns"
else
    fail "run_all.sh cut by timeout" "exit $rc (want 124); kernels.json $at_return when timeout returned: $n" \
        "$(tail -n 3 "$TMP/ra.out")"
fi
sleep 0.3 # the kernel_bench of a run_all.sh that did not wait
finish
