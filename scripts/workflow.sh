#!/usr/bin/env bash
# The sub-model workflow end to end on one model:
#   collect (grouped by label) -> attribute -> discover -> trace -> ablate sweep -> report
#
#   scripts/workflow.sh --model DIR --discover FILE --eval FILE --target LABEL --versus LABEL \
#       --out DIR [--keywords FILE] [--trace TEXT]... [--controls K] [--fraction F] [--sites GLOBS]
#
# --discover and --eval are JSONL prompt files with a "label" on every line (use different
# prompts for the two, so that what is found is tested on data it was not found on).
# Sub-models are the units whose activations separate --target from --versus (Cohen's d over
# the discovery prompts), weighted by their gradient x activation attribution to the loss on
# the discovery prompts of --target; --fraction of each site's units (default 0.02).
# The sweep runs every ablation mode at several intensities on the combined sub-model, with
# --controls K random control masks per setting (default 3), and the report judges it.
# Prints each step's command and where its output went; bin/subscope must be built.
set -euo pipefail
SS=${SUBSCOPE:-bin/subscope}
MODEL="" DISC="" EVAL="" TARGET="" VERSUS="" OUT="" KW="" CONTROLS=3 FRACTION=0.02 SITES='blocks.*.mlp.hook_post'
TRACES=()
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift ;;
        --discover) DISC=$2; shift ;;
        --eval) EVAL=$2; shift ;;
        --target) TARGET=$2; shift ;;
        --versus) VERSUS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keywords) KW=$2; shift ;;
        --trace) TRACES+=("$2"); shift ;;
        --controls) CONTROLS=$2; shift ;;
        --fraction) FRACTION=$2; shift ;;
        --sites) SITES=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "workflow.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
    esac
    shift
done
for v in MODEL:model DISC:discover EVAL:eval TARGET:target VERSUS:versus OUT:out; do
    var=${v%%:*}
    [ -n "${!var}" ] || { echo "workflow.sh: --${v#*:} is required (--help)" >&2; exit 2; }
done
mkdir -p "$OUT"
step() { printf '\n\033[1m-- %s\033[0m\n' "$1"; shift; printf '$ %s\n' "$*"; "$@"; }

# 1. statistics per label, over the discovery prompts
step "collect: activation statistics per label" \
    "$SS" collect --model "$MODEL" --input "$DISC" --sites "$SITES" --stats mean,cov,corr --group-by label \
    --out "$OUT/stats.h5"
# 2. attribution of the target label's loss to every unit
# (JSON-parsed, not grepped: any spacing, and a label is matched whole, not as a pattern)
python3 -c 'import json, sys
n = 0
with open(sys.argv[1], encoding="utf-8-sig") as f, open(sys.argv[3], "w", encoding="utf-8") as out:
    for line in f:
        if line.strip() and json.loads(line).get("label") == sys.argv[2]:
            out.write(line if line.endswith("\n") else line + "\n"); n += 1
sys.exit(0 if n else 1)' "$DISC" "$TARGET" "$OUT/discover-$TARGET.jsonl" ||
    { echo "workflow.sh: no prompt of $DISC has label $TARGET" >&2; exit 1; }
step "attribute: gradient x activation of the loss on the $TARGET prompts" \
    "$SS" attribute --model "$MODEL" --input "$OUT/discover-$TARGET.jsonl" --sites "$SITES" --metric loss \
    --method gradxact --reduce prompts --top 5 --out "$OUT/attr.h5"
# 3. candidate sub-models
step "discover: units that separate $TARGET from $VERSUS, weighted by attribution" \
    "$SS" discover --stats "$OUT/stats.h5" --attr "$OUT/attr.h5" --sites "$SITES" --method contrast \
    --contrast "$TARGET:$VERSUS" --fraction "$FRACTION" --out "$OUT/submodels.h5" --masks-out "$OUT/submodels.masks.jsonl"
# The combined sub-model (every site) is the one the sweep tests.
COMBINED="${TARGET}_vs_${VERSUS}"
grep -F "\"name\": \"$COMBINED\"" "$OUT/submodels.masks.jsonl" >"$OUT/combined.jsonl" ||
    { echo "workflow.sh: discover wrote no sub-model named $COMBINED to $OUT/submodels.masks.jsonl" >&2; exit 1; }
# 4. trace prompts through the sub-models
for i in "${!TRACES[@]}"; do
    step "trace: \"${TRACES[$i]}\"" "$SS" trace --model "$MODEL" --prompt "${TRACES[$i]}" \
        --submodels "$OUT/combined.jsonl" --stats "$OUT/stats.h5" --out "$OUT/trace$i.h5"
done
# 5. every mode at several intensities, with controls
python3 - "$OUT/combined.jsonl" "$OUT/sweep.jsonl" <<'EOF'
import json, sys
base = json.loads(open(sys.argv[1]).readline())
settings = [("zero", {}), ("mean", {}), ("resample", {})]
settings += [("scale", {"factor": f}) for f in (0.75, 0.5, 0.25)]
settings += [(m, {"sigma": s, "relative": True}) for m in ("noise", "negnoise") for s in (0.5, 1.0, 2.0)]
with open(sys.argv[2], "w") as out:
    for mode, extra in settings:
        m = {k: v for k, v in base.items() if k not in ("name", "mode")}
        tag = mode + "".join(f"{v:g}" for k, v in extra.items() if k != "relative")
        m.update(name=f"{base['name']}.{tag}", mode=mode, seed=11, **extra)
        out.write(json.dumps(m) + "\n")
EOF
metrics=loss,acc,kl
kwargs=()
[ -n "$KW" ] && metrics=loss,acc,keyword,kl kwargs=(--keywords "$KW")
# (the table is shown without the control masks' rows; they are all in the file)
step "ablate: every mode at several intensities, $CONTROLS controls per setting, on the evaluation prompts" \
    "$SS" ablate --model "$MODEL" --input "$EVAL" --masks "$OUT/sweep.jsonl" --stats "$OUT/stats.h5" \
    --metrics "$metrics" "${kwargs[@]}" --controls "$CONTROLS" --out "$OUT/ablate.h5" >"$OUT/ablate.txt"
grep -v '~ctrl' "$OUT/ablate.txt"
# 6. the page
step "report" "$SS" report "$OUT/ablate.h5" --out "$OUT/report.html" --title "$(basename "$MODEL"): $COMBINED"
