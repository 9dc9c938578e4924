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

cat <<EOT

The file is at $OUT ($(du -h $OUT | cut -f1)). Open it with h5py:
    import h5py; f = h5py.File("$OUT"); f["acts/blocks.1.mlp.hook_post"]   # [prompt, position, d_mlp]
or look inside with:  h5dump -H $OUT      (layout: docs/FORMAT.md)
EOT
