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
finish
