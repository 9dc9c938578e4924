#!/usr/bin/env bash
# Checks the GPU benchmark's plumbing on a machine without a GPU (needs make, nvcc and
# python3 with torch + transformers for the peer double):
#   - kernel_bench builds, and without a GPU exits 3 saying "no GPU";
#   - its JSON writer's output (kernel_bench_json_selftest) parses and gpu_report.py reads it;
#   - bench_gpu_forward.py runs end to end with test doubles (a subscope that runs
#     --device cpu, a python whose peer runs on the CPU) on models/tiny-gpt2 and
#     gpu_report.py merges everything into one JSON with the targets;
#   - the same for a Llama-family model (gpu_llama's settings) with the L1-L3 rows.
# Prints "selftest: ok" or the first failure. Run from anywhere: bench/gpu/selftest.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
python3 -c "import torch, transformers" 2>/dev/null ||
    fail "the peer double needs python3 with torch and transformers (pip install torch transformers), which this machine lacks"

make -j2 >/dev/null
make -f bench/gpu/Makefile build/bench/kernel_bench build/bench/kernel_bench_json_selftest >/dev/null
if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "selftest: a GPU is visible; the 'no GPU' check is skipped"
else
    rc=0
    build/bench/kernel_bench >"$T/kb.out" 2>&1 || rc=$?
    [ "$rc" = 3 ] && grep -q "no GPU" "$T/kb.out" || fail "kernel_bench without a GPU: exit $rc, $(cat "$T/kb.out")"
fi
build/bench/kernel_bench_json_selftest >"$T/kernels.json"

cat >"$T/subscope" <<EOF
#!/usr/bin/env bash
[ -n "\${SUBSCOPE_ATTN_GEMM_MIN_LEN+x}" ] && echo "\$SUBSCOPE_ATTN_GEMM_MIN_LEN" >>"$T/attnk.log"
[ -n "\${SUBSCOPE_ATTN_TC+x}" ] && echo "\$SUBSCOPE_ATTN_TC" >>"$T/tc.log"
[ -n "\${SUBSCOPE_BIAS_EPILOGUE+x}" ] && echo "\$SUBSCOPE_ATTN_TC:\$SUBSCOPE_BIAS_EPILOGUE" >>"$T/epi.log"
args=(); for a in "\$@"; do [ "\$a" = cuda ] && a=cpu; args+=("\$a"); done
exec "$ROOT/bin/subscope" "\${args[@]}"
EOF
cat >"$T/python" <<'EOF'
#!/usr/bin/env bash
if [ "$1" = -c ]; then exec python3 -c "import torch, transformers"; fi
args=(); for a in "$@"; do [ "$a" = cuda ] && a=cpu; [ "$a" = tf32 ] && a=fp32; args+=("$a"); done
exec python3 "${args[@]}"
EOF
chmod +x "$T/subscope" "$T/python"
python3 bench/gpu/bench_gpu_forward.py --models models/tiny-gpt2 --subscope "$T/subscope" --python "$T/python" \
    --modes fp32,tf32,bf16,bf16+attnk,bf16+tc,bf16+tc+epi --prompts 4 --batch 2 --reps 1 --peaks "$T/kernels.json" \
    --json "$T/forward.json" 2>"$T/fwd.err" || fail "bench_gpu_forward.py: $(tail -5 "$T/fwd.err")"
# the +attnk variant ran with the attention kernels forced (and only it)
[ "$(sort -u "$T/attnk.log" 2>/dev/null)" = 0 ] || fail "bench_gpu_forward.py: bf16+attnk did not set SUBSCOPE_ATTN_GEMM_MIN_LEN=0"
[ "$(sort -u "$T/tc.log" 2>/dev/null)" = 1 ] || fail "bench_gpu_forward.py: bf16+tc did not set SUBSCOPE_ATTN_TC=1"
[ "$(sort -u "$T/epi.log" 2>/dev/null)" = 1:1 ] || fail "bench_gpu_forward.py: bf16+tc+epi did not set both variables"
python3 bench/gpu/gpu_report.py --kernels "$T/kernels.json" --forward "$T/forward.json" \
    --cpu bench/results/cpu-dev-20261125.json --out "$T/merged.json" >"$T/report.out" ||
    fail "gpu_report.py: $(tail -5 "$T/report.out")"
python3 - "$T/merged.json" <<'EOF' || fail "merged JSON: see above"
import json, sys
d = json.load(open(sys.argv[1]))
ids = {t["id"] for t in d["targets"]}
assert ids == {"T1", "T2", "T3", "T4", "L1", "L2", "L3", "C1", "C2", "C3", "A1", "A2", "G1", "G2"}, ids
assert all(t["status"] == "not run" for t in d["targets"] if t["id"] in ("C1", "A1", "A2", "G1", "G2")), d["targets"]
k = d["kernels"]
assert k["device"]["peaks"]["bf16_tflops"] == 989.4 and k["copy_gbs"] == 2600
assert any("error" in r for r in k["results"]) and any(r.get("pct_of_copy") for r in k["results"])
f = d["forward"]["results"][0]
assert f["subscope"]["bf16+attnk"]["env"] == {"SUBSCOPE_ATTN_GEMM_MIN_LEN": "0"}, f["subscope"]["bf16+attnk"]
assert f["subscope"]["bf16+tc"]["env"] == {"SUBSCOPE_ATTN_TC": "1"}, f["subscope"]["bf16+tc"]
assert f["subscope"]["bf16+tc+epi"]["env"] == {"SUBSCOPE_ATTN_TC": "1", "SUBSCOPE_BIAS_EPILOGUE": "1"}
for mode in ("fp32", "tf32", "bf16", "bf16+attnk", "bf16+tc", "bf16+tc+epi"):
    s = f["subscope"][mode]
    assert "error" not in s, s
    assert s["tokens_per_s"] > 0 and s["mfu_pct"] is not None, s
for dt in ("fp32", "tf32", "bf16"):
    assert f["peer"][dt]["tokens_per_s"] > 0, f["peer"][dt]
assert "subscope_bf16_over_peer_bf16" in f["speedup"]
EOF
# gpu_llama's plumbing: a stdlib-written BF16 Llama (2 shards), subscope bf16 vs the peer
# with eager and sdpa attention, the L1-L3 rows (not run: no 7B shape here).
python3 bench/make_model.py --out "$T/llama-tiny" --shape llama-tiny --dtype bf16 --max-shard-mb 0.2 --stdlib \
    --prompts none >/dev/null || fail "make_model.py --shape llama-tiny"
[ -f "$T/llama-tiny/model.safetensors.index.json" ] || fail "llama-tiny: no shard index"
python3 bench/gpu/bench_gpu_forward.py --models "$T/llama-tiny" --subscope "$T/subscope" --python "$T/python" \
    --modes bf16 --peer-dtypes bf16 --peer-attn eager,sdpa --prompts 4 --tokens 64 --batch 2 --reps 1 \
    --json "$T/llama.json" 2>"$T/llama.err" || fail "bench_gpu_forward.py (llama): $(tail -5 "$T/llama.err")"
python3 bench/gpu/gpu_report.py --forward "$T/forward.json" --llama "$T/llama.json" --out "$T/merged2.json" \
    >"$T/report2.out" || fail "gpu_report.py --llama: $(tail -5 "$T/report2.out")"
grep -q "Llama-family forward" "$T/report2.out" || fail "gpu_report.py printed no Llama table"
python3 - "$T/merged2.json" <<'PYEOF' || fail "merged JSON (llama): see above"
import json, sys
d = json.load(open(sys.argv[1]))
t = {x["id"]: x for x in d["targets"]}
assert {"L1", "L2", "L3"} <= set(t) and t["L1"]["status"] == "not run", t.get("L1")
r = d["llama"]["results"][0]
assert r["family"] == "llama" and r["matmul_params"] == 2 * (64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 160), r
assert r["subscope"]["bf16"]["tokens_per_s"] > 0, r["subscope"]
for k in ("bf16-eager", "bf16-sdpa"):
    assert r["peer"][k]["tokens_per_s"] > 0 and r["peer"][k]["attn_implementation"] == k[5:], r["peer"][k]
    assert f"subscope_bf16_over_peer_{k}" in r["speedup"]
PYEOF
# issues 4, 5, 6: the report reads their steps' JSON (here the CPU runs' files and an attribute
# run on the tiny model, CPU numbers standing in) and the kernel JSON's covariance cases
"$ROOT/bin/mkmodel" --vocab 1024 --seed 3 --prompts "$T/attr.jsonl" --lengths 16,16,16,16 >/dev/null
python3 bench/bench_attribute.py --model models/tiny-gpt2 --prompts "$T/attr.jsonl" --device cpu --batch 2 --reps 1 \
    --no-peer --atp-pairs 2 --variant attnk:SUBSCOPE_ATTN_GEMM_MIN_LEN=0 --json "$T/attribute.json" >/dev/null 2>&1 ||
    fail "bench_attribute.py --variant"
python3 bench/gpu/gpu_report.py --kernels "$T/kernels.json" --attribute "$T/attribute.json" \
    --ablate bench/results/cpu-ablate-vm-20261126.json --ablate-large bench/results/cpu-ablate-masked-vm-20261126.json \
    --ablate-bf16 bench/results/h100-gpu-ablate-20261126T1905Z.json --collect bench/results/h100-collect-20261126T1307Z.json --out "$T/merged3.json" >"$T/report3.out" ||
    fail "gpu_report.py with the issue steps: $(tail -5 "$T/report3.out")"
python3 - "$T/merged3.json" <<'PYEOF' || fail "merged JSON (issue steps): see above"
import json, sys
d = json.load(open(sys.argv[1]))
t = {}
for x in d["targets"]:
    t.setdefault(x["id"], []).append(x)
for k in ("C1", "C2", "C3", "A1", "A2", "G1", "G2"):
    assert k in t, (k, sorted(t))
assert t["C1"][0]["status"] == "PASS" and t["A1"][0]["status"] == "FAIL" and t["A2"][0]["status"] == "PASS", t
assert len(t["A1"]) == 2 and "bf16" in t["A1"][1]["what"] and t["A1"][1]["value"] == "5.3x", t["A1"]
assert d["ablate_bf16"]["results"], "the bf16 sweep's JSON is kept in the merged file"
assert t["G1"][0]["status"] in ("PASS", "FAIL") and "attnk" in t["G1"][0]["note"], t["G1"]
assert t["G2"][0]["status"] in ("PASS", "FAIL") and d["attribute"]["variants"]["attnk"]["env"], d["attribute"]
PYEOF
echo "selftest: ok"
