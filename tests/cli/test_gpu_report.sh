#!/usr/bin/env bash
# bench/gpu/gpu_report.py's C2 row, which otherwise first meets its input on a lent GPU: from
# the seventh run's kernel JSON (bench/results/h200-20261128.json, an H200), with its d 768
# covariance cases replaced by made-up times, the row must pick the fastest triangle of every
# plan (cuBLASLt's included, cov_lower_*.lt*), judge it against the faster full product
# (GemmEx or cuBLASLt's, gemmex_full.lt*), pass or fail on 1.4x, and skip failed cases.
source "$(dirname "$0")/lib.sh"
if ! command -v python3 >/dev/null 2>&1; then
    pass "gpu_report.py not checked: no python3 here"
    finish; exit
fi
# kernels_json FILE BLK128_LT_MS: the H200 kernel JSON with these d 768 cases instead of its own
kernels_json() {
    python3 - "$1" "$2" <<'P'
import json, sys
k = json.load(open("bench/results/h200-20261128.json"))["kernels"]
k["results"] = [r for r in k["results"] if not r["name"].startswith("cov.d768.")]
def case(name, ms):
    k["results"].append({"name": name, "median_ms": ms, "min_ms": ms})
case("cov.d768.gemmex_full.bf16", 0.038)
case("cov.d768.gemmex_full.lt0.bf16", 0.030)        # cuBLASLt's full product beats GemmEx
case("cov.d768.gemmex_full.lt0k2in.bf16", 0.036)
case("cov.d768.cov_lower_blk128.bf16", 0.034)
case("cov.d768.cov_lower_blk128.lt2.bf16", float(sys.argv[2]))
case("cov.d768.cov_lower_lt.lt0.bf16", 0.025)
case("cov.d768.ssyrk.fp32", 1.3)
case("cov.d768.cov_lower.f32", 0.35)
k["results"].append({"name": "cov.d768.cov_lower_blk192.lt0k4ws.bf16", "error": "wrong lower triangle"})
json.dump(k, open(sys.argv[1], "w"))
P
}
# c2 MERGED: the d 768 C2 row as "value status note"
c2() {
    python3 -c '
import json, sys
t = [x for x in json.load(open(sys.argv[1]))["targets"] if x["id"] == "C2" and "768" in x["what"]]
print(t[0]["value"], t[0]["status"], t[0]["note"]) if len(t) == 1 else print("rows:", t)' "$1"
}
kernels_json "$TMP/k1.json" 0.020
out=$(python3 bench/gpu/gpu_report.py --kernels "$TMP/k1.json" --out "$TMP/m1.json" 2>&1) ||
    fail "gpu_report.py ran" "$(printf '%s' "$out" | tail -n 3)"
row=$(c2 "$TMP/m1.json")
case "$row" in
"1.50x PASS cov_lower_blk128.lt2.bf16 0.020 ms vs gemmex_full.lt0.bf16 0.030 ms"*)
    pass "C2: cuBLASLt's blocks against cuBLASLt's full product, 1.50x PASS" ;;
*) fail "C2 with cuBLASLt cases" "got: $row" ;;
esac
# slower blocks: cuBLASLt's fill-mode triangle is the best, 0.030 / 0.025 = 1.20x, short of 1.4x
kernels_json "$TMP/k2.json" 0.040
python3 bench/gpu/gpu_report.py --kernels "$TMP/k2.json" --out "$TMP/m2.json" >/dev/null 2>&1
row=$(c2 "$TMP/m2.json")
case "$row" in
"1.20x FAIL cov_lower_lt.lt0.bf16 0.025 ms vs gemmex_full.lt0.bf16 0.030 ms"*)
    pass "C2: the fill-mode triangle wins, 1.20x FAIL" ;;
*) fail "C2 judged against the faster full product" "got: $row" ;;
esac
# A cut kernel file (kernel_bench's SIGTERM stop: "cut" and "stopped", the cases before it)
# and an incomplete forward file: the report says so on its output and in the merged notes.
python3 - "$TMP/k1.json" "$TMP/kcut.json" "$TMP/fcut.json" <<'P'
import json, sys
k = json.load(open(sys.argv[1]))
k["results"] = k["results"][:5]
k["stopped"] = "cut by SIGTERM before gemm.x finished (5 cases done)"
k["cut"] = {"signal": "SIGTERM", "before": "gemm.x", "cases_done": 5}
json.dump(k, open(sys.argv[2], "w"))
json.dump({"benchmark": "forward-gpu", "complete": False, "results": [],
           "settings": {"prompts": 64, "tokens": 1024, "batch": 16, "reps": 2}}, open(sys.argv[3], "w"))
P
out=$(python3 bench/gpu/gpu_report.py --kernels "$TMP/kcut.json" --forward "$TMP/fcut.json" --out "$TMP/mcut.json" 2>&1)
notes=$(python3 -c 'import json, sys; print("|".join(json.load(open(sys.argv[1]))["notes"]))' "$TMP/mcut.json" 2>&1)
if printf '%s\n' "$out" | grep -q "^note: gpu_kernels cut by SIGTERM before gemm.x: 5 cases timed, the later ones not run" &&
    [ "$notes" = "gpu_kernels cut by SIGTERM before gemm.x: 5 cases timed, the later ones not run|gpu_forward incomplete (cut or failed): 0 models finished" ]; then
    pass "a cut kernel file and an incomplete forward file are noted"
else
    fail "cut files noted" "notes: $notes" "$(printf '%s' "$out" | tail -n 2)"
fi
# a report interrupted while it writes (its time limit) leaves the earlier merged file whole
cp "$TMP/m1.json" "$TMP/keep.json"
python3 - "$TMP/k2.json" "$TMP/keep.json" >/dev/null 2>&1 <<'P'
import json, runpy, sys
def cut_dump(obj, f, **kw):
    f.write('{"benchmark": "gp')
    raise KeyboardInterrupt
json.dump = cut_dump
sys.argv = ["gpu_report.py", "--kernels", sys.argv[1], "--out", sys.argv[2]]
runpy.run_path("bench/gpu/gpu_report.py", run_name="__main__")
P
if cmp -s "$TMP/m1.json" "$TMP/keep.json"; then pass "an interrupted write leaves the earlier file whole"
else fail "an interrupted write" "the earlier merged file changed: $(head -c 60 "$TMP/keep.json")"; fi
# --merge of a truncated file: says it is not JSON (not "no such file"), exit 1
head -c 100 "$TMP/m1.json" >"$TMP/trunc.json"
out=$(python3 bench/gpu/gpu_report.py --merge "$TMP/trunc.json" --kernels "$TMP/k1.json" --out "$TMP/m3.json" 2>&1); rc=$?
if [ $rc = 1 ] && printf '%s' "$out" | grep -q "trunc.json: not a JSON document" && [ ! -e "$TMP/m3.json" ]; then
    pass "--merge of a truncated file: a clear error, nothing written"
else
    fail "--merge of a truncated file" "exit $rc: $(printf '%s' "$out" | tail -n 2)"
fi
finish
