#!/usr/bin/env bash
# Makes the bundled model pair from scratch with `subscope train`:
#   models/topics-all        trained on harmless + toxic + athlete text
#   models/topics-no-toxic   the same config, seed, steps and tokenizer, without the toxic topic
# Steps: generate data/topics/ (models/gen_topics.py, seeded), train the shared tokenizer on
# the all-topics text (subscope train --vocab-size) and check that every topic keyword is one
# token (models/check_topic_keywords.py), train both models, and measure each
# one's held-out loss and keyword accuracy per topic (data/topics/eval_*.jsonl) with
# `subscope ablate` and a mask that changes nothing (scale factor 1).
#
#   models/train_pair.sh                 # both models (4-7 minutes each on 2 shared cores)
#   models/train_pair.sh all             # only models/topics-all
#   models/train_pair.sh no-toxic        # only models/topics-no-toxic
#   models/train_pair.sh eval            # only the measurements
# Environment: STEPS (default 1500), OUT (scratch directory, default out/topics).
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-both}
STEPS=${STEPS:-1500}
OUT=${OUT:-out/topics}
SUBSCOPE=bin/subscope
[ -x "$SUBSCOPE" ] || make bin/subscope

mkdir -p "$OUT"
# The training text is regenerated rather than committed (12 MB); the held-out prompts and
# keyword lists that this rewrites are committed, and come out identical.
python3 models/gen_topics.py --out data/topics
# A separate labelled set for discovering sub-models (make demo, scripts/workflow.sh), so that
# what is found is then tested on the held-out eval sets it was not found on.
python3 models/gen_topics.py --out "$OUT/discover" --n-train 0 --n-eval 100 --eval-seed 4242 >/dev/null
cp "$OUT/discover/eval_all.jsonl" data/topics/discover_all.jsonl
# The shared tokenizer: `subscope train --vocab-size` trains a byte-level BPE on all three
# topics before it trains a model; a one-step run keeps only that tokenizer, and both models
# are then trained with it (--tokenizer), so they have the same ids.
rm -rf "$OUT/tokenizer-run" "$OUT/tokenizer"
"$SUBSCOPE" train --config models/topics_config.json --data data/topics/train_all.txt --vocab-size 1536 \
    --out "$OUT/tokenizer-run" --steps 1 --batch 1 --seq 64 2>&1 | grep '^wrote' >&2
mkdir -p "$OUT/tokenizer"
cp "$OUT/tokenizer-run/tokenizer.json" "$OUT/tokenizer/"
python3 models/check_topic_keywords.py --tokenizer "$OUT/tokenizer/tokenizer.json" \
    --data data/topics/train_all.txt --keywords data/topics

train() {  # name, data file
    local name=$1 data=$2
    echo "== training models/$name on $data ($STEPS steps)" >&2
    rm -rf "models/$name"
    "$SUBSCOPE" train --config models/topics_config.json --data "$data" --tokenizer "$OUT/tokenizer" \
        --out "models/$name" --steps "$STEPS" --batch 32 --seq 64 --lr 3e-3 --warmup 100 \
        --weight-decay 0.1 --clip 1.0 --seed 1234 --log-every 100
}

case $WHICH in
    both|all) train topics-all data/topics/train_all.txt ;;&
    both|no-toxic) train topics-no-toxic data/topics/train_no_toxic.txt ;;
    all|eval) ;;
    *) echo "usage: $0 [both|all|no-toxic|eval]" >&2; exit 2 ;;
esac

# Per-topic held-out loss and keyword accuracy: each topic's evaluation set with its own
# keyword list, through `subscope ablate` with a mask that changes nothing (the clean run is
# what is read). Loss and accuracies are means over the 150 prompts of a set (each prompt's
# loss is the mean over its positions; keyword accuracy is over the positions whose target
# is a keyword). The table goes to stdout and to $OUT/eval.md.
echo '{"name": "identity", "site": "blocks.0.hook_resid_pre", "mode": "scale", "factor": 1}' \
    > "$OUT/identity.jsonl"
for m in topics-all topics-no-toxic; do
    [ -f "models/$m/model.safetensors" ] || continue
    for t in harmless toxic athlete; do
        "$SUBSCOPE" ablate --model "models/$m" --input "data/topics/eval_$t.jsonl" \
            --masks "$OUT/identity.jsonl" --metrics loss,acc,keyword \
            --keywords "data/topics/keywords_$t.txt" --out "$OUT/eval_${m}_$t.h5" > /dev/null
    done
done
python3 - "$OUT" <<'EOF'
import os, sys, h5py
out = sys.argv[1]
rows = ["| model | eval set | loss (nats) | top-1 acc | keyword acc |", "|---|---|---|---|---|"]
for m in ("topics-all", "topics-no-toxic"):
    for t in ("harmless", "toxic", "athlete"):
        path = os.path.join(out, f"eval_{m}_{t}.h5")
        if not os.path.exists(path):
            continue
        with h5py.File(path, "r") as f:
            g = f["by_label"][t]["clean"]
            rows.append(f"| {m} | {t} | {g['loss'][()]:.3f} | {g['acc'][()]:.3f} | {g['keyword'][()]:.3f} |")
text = "\n".join(rows) + "\n"
open(os.path.join(out, "eval.md"), "w").write(text)
print(text, end="")
EOF
