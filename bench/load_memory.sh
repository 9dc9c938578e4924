#!/usr/bin/env bash
# Host memory and time of loading a BF16 checkpoint and placing it on a GPU in bfloat16: the
# eager load (every tensor converted to a float32 host copy first) against the deferred load
# the jobs use (tensors straight from the mapped files to the device). Runs on the emulated GPU
# (bench/load_memory.c), whose device memory is host memory: the peak resident size counts it,
# and is also given with all of it subtracted. Random GPT-2,
# 8 blocks of d 512, vocabulary 32000 (41.6 M parameters); each mode in its own process,
# 3 times. Writes bench/results/load-memory-<host>-<date>.json.
#
#   bench/load_memory.sh [--host LABEL] [--layers L] [--d D] [--vocab V]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HOST="$(hostname -s 2>/dev/null || hostname)" LAYERS=8 D=512 VOCAB=32000
while [ $# -gt 0 ]; do
    case "$1" in
        --host) HOST="${2:?}"; shift ;;
        --layers) LAYERS="${2:?}"; shift ;;
        --d) D="${2:?}"; shift ;;
        --vocab) VOCAB="${2:?}"; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "load_memory.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
BUILD=$(make -s --no-print-directory print-build 2>/dev/null || echo build/rel)
make -s "$BUILD/bench/load_memory" bin/mkmodel >&2
W="${BENCH_WORK:-$ROOT/bench/work}/load"
mkdir -p "$W"
bin/mkmodel --out "$W/model" --layers "$LAYERS" --d "$D" --heads 8 --vocab "$VOCAB" --dtype bf16 --seed 3 >/dev/null
rows=""
for rep in 1 2 3; do
    for mode in eager deferred; do
        row=$("$BUILD/bench/load_memory" "$W/model" $mode bf16)
        rows="$rows${rows:+, }$row"
        echo "$row" >&2
    done
done
out="bench/results/load-memory-$HOST-$(date -u +%Y%m%d).json"
python3 - "$out" "$HOST" "$LAYERS" "$D" "$VOCAB" "[$rows]" <<'PY'
import json, statistics, sys
out, host, layers, d, vocab, rows = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), json.loads(sys.argv[6])
summ = {}
for mode in ("eager", "deferred"):
    r = [x for x in rows if x["mode"] == mode]
    summ[mode] = {k: statistics.median(x[k] for x in r)
                  for k in ("host_bytes_without_device", "peak_resident_bytes", "load_seconds", "place_seconds")}
e, f = summ["eager"], summ["deferred"]
ratio = e["peak_resident_bytes"] / f["peak_resident_bytes"]
speed = (e["load_seconds"] + e["place_seconds"]) / (f["load_seconds"] + f["place_seconds"])
json.dump({"benchmark": "load_memory", "host": host, "model": f"random GPT-2, {layers} blocks, d {d}, vocabulary {vocab}, BF16 safetensors",
           "placement": "bfloat16 on the emulated GPU (device bytes subtracted from the peak resident size)",
           "median_of_3": summ, "eager_over_deferred_peak_resident": ratio,
           "note": "peak_resident_bytes includes the emulated device's memory (host memory here); host_bytes_without_device "
                   "subtracts all of it, though at the peak moment part of it may not have been written yet, so it can "
                   "understate a transient (a tensor's file pages are resident until they are uploaded)", "deferred_speedup_load_and_place": speed,
           "runs": rows}, open(out, "w"), indent=1)
mib = 1 << 20
print(f"peak resident memory (the emulated device's included): eager {e['peak_resident_bytes'] / mib:.1f} MiB, "
      f"deferred {f['peak_resident_bytes'] / mib:.1f} MiB ({ratio:.2f}x less); without the device's "
      f"{e['host_bytes_without_device'] / mib:.1f} vs {f['host_bytes_without_device'] / mib:.1f} MiB; "
      f"load + place {e['load_seconds'] + e['place_seconds']:.3f} s vs {f['load_seconds'] + f['place_seconds']:.3f} s "
      f"({speed:.2f}x)", file=sys.stderr)
print(f"wrote {out}", file=sys.stderr)
PY
