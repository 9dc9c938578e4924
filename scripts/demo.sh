#!/usr/bin/env bash
# `make demo`: the bundled model end to end — what it is, what it predicts,
# a forward run that stores activations, and what the HDF5 file holds.
set -eu
cd "$(dirname "$0")/.."
SS=bin/subscope
MODEL=models/tiny-gpt2
OUT=out/demo.h5
mkdir -p out
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "the bundled model ($MODEL)"
$SS info --model $MODEL | sed -n '1,12p'

say "next-token prediction"
echo '$ subscope predict --model '$MODEL' --prompt "The cat says" --top 5'
$SS predict --model $MODEL --prompt "The cat says" --top 5
echo
echo '$ subscope predict --model '$MODEL' --prompt "The days go Monday, Tuesday," --generate 24'
$SS predict --model $MODEL --prompt "The days go Monday, Tuesday," --generate 24

say "forward over data/demo_prompts.jsonl, keeping MLP neurons and one attention pattern"
SITES='blocks.*.mlp.hook_post,blocks.0.attn.hook_pattern,ln_final.hook_normalized'
echo "\$ subscope forward --model $MODEL --input data/demo_prompts.jsonl --out $OUT --sites '$SITES'"
$SS forward --model $MODEL --input data/demo_prompts.jsonl --out $OUT --sites "$SITES"

say "what $OUT holds"
$SS show --file $OUT --prompts 6
say "activation statistics of the MLP neurons (collect)"
echo "\$ subscope collect --model $MODEL --input data/demo_prompts.jsonl --sites 'blocks.*.mlp.hook_post' --stats mean,cov,corr,pca:8 --out out/stats.h5"
$SS collect --model $MODEL --input data/demo_prompts.jsonl --sites 'blocks.*.mlp.hook_post' --stats mean,cov,corr,pca:8 --out out/stats.h5
$SS show --file out/stats.h5 | sed -n '/principal components/,$p'

say "a mask sweep (ablate): each mode at several intensities on block 2's MLP, and one head"
echo "\$ subscope ablate --model $MODEL --input tests/data/ablate/prompts.jsonl --masks data/demo_masks.jsonl --metrics loss,acc,keyword,logitdiff,kl --keywords data/demo_keywords.txt --out out/ablate.h5"
$SS ablate --model $MODEL --input tests/data/ablate/prompts.jsonl --masks data/demo_masks.jsonl \
    --metrics loss,acc,keyword,logitdiff,kl --keywords data/demo_keywords.txt --out out/ablate.h5 | grep -E '^(change|mask|\(clean\)|[a-z0-9_.]+ +all)'

say "which MLP neurons drive the answer (attribute: gradient x activation of logit(answer) - logit(wrong))"
echo "\$ subscope attribute --model $MODEL --input tests/data/ablate/prompts.jsonl --sites 'blocks.*.mlp.hook_post' --metric logitdiff --method gradxact --top 6 --out out/attr.h5"
$SS attribute --model $MODEL --input tests/data/ablate/prompts.jsonl --sites 'blocks.*.mlp.hook_post' \
    --metric logitdiff --method gradxact --top 6 --out out/attr.h5

say "the sub-model workflow on the bundled topic pair (models/topics-all, models/topics-no-toxic)"
cat <<'EOT'
Two 4-layer GPT-2s trained by `subscope train` on generated text of three topics (harmless
comments, toxic comments with invented insults, athlete biographies); the second never saw
the toxic topic. On each: collect statistics per topic over a discovery set -> attribute the
toxic prompts' loss to MLP neurons -> discover the 2% of each block's neurons that best separate
toxic from harmless -> trace a toxic and a harmless prompt -> ablate that sub-model in every
mode at several intensities on the held-out sets (150 prompts per topic), with 5 random
control masks per setting -> report.
EOT
for M in topics-all topics-no-toxic; do
    say "workflow on models/$M"
    bash scripts/workflow.sh --model models/$M --discover data/topics/discover_all.jsonl \
        --eval data/topics/eval_all.jsonl --target toxic --versus harmless --keywords data/topics/keywords_toxic.txt \
        --trace "Get lost, you florbid blorf. Nobody asked for your" --trace "Thanks for the lovely photo of your garden" \
        --controls 5 --out out/$M >out/$M.log 2>&1 || { tail -20 out/$M.log; exit 1; }
    sed -n '/-- trace: "Get lost/,/-- trace: "Thanks/p' out/$M.log | sed '$d' | tail -n 16
    grep -E '^(mask |\(clean\)|toxic_vs_harmless\.(zero|scale0\.5|noise1) )' out/$M/ablate.txt
    grep -E '^S1 |sub-model' out/$M.log | tail -n 2
done
# The summary, from the numbers just measured.
delta() { awk -v m="$2" -v l="$3" '$1 == m && $2 == l { print $3 }' "out/$1/ablate.txt"; }
verdict() { grep -E '^S1 ' "out/$1.log" | sed 's/.*-> //'; }
index_of() { grep -E '^S1 ' "out/$1.log" | sed -E 's/.*index ([0-9.]+), controls ([0-9.]+ \+- [0-9.]+).*/\1 (controls \2)/'; }
cat <<EOT

What was found. In models/topics-all the 40 neurons (2% of each block's 512) that best separate
toxic from harmless text, zeroed, change the held-out loss by $(delta topics-all toxic_vs_harmless.zero toxic) nats on toxic prompts,
$(delta topics-all toxic_vs_harmless.zero harmless) on harmless and $(delta topics-all toxic_vs_harmless.zero athlete) on athlete biographies; the report's topic-specificity
index is $(index_of topics-all), so its verdict is: $(verdict topics-all).
In models/topics-no-toxic, the same procedure gives an index of $(index_of topics-no-toxic):
$(verdict topics-no-toxic)$(case "$(verdict topics-no-toxic)" in
    "no topic-specific"*) printf ' — no comparable toxic sub-model, as expected of a model that\nnever saw the topic' ;;
    *) printf ' — unexpected for a model that never saw the toxic topic; see its report' ;;
esac). Pages: out/topics-all/report.html and out/topics-no-toxic/report.html.
EOT

cat <<EOT

The file is at $OUT ($(du -h $OUT | cut -f1)). Open it with h5py:
    import h5py; f = h5py.File("$OUT"); f["acts/blocks.1.mlp.hook_post"]   # [prompt, position, d_mlp]
or look inside with:  h5dump -H $OUT      (layout: docs/FORMAT.md)
EOT
