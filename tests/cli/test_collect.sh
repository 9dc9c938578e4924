#!/usr/bin/env bash
# collect: statistics against a plain float64 two-pass reference computed from the activations
# `forward` dumps (tests/tools/statsref.c), batching invariance, positions, groups, checkpoints,
# resume after kill -9, and refusals.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp
REF=${TOOLBIN}statsref
M=models/tiny-gpt2
P=data/demo_prompts.jsonl
SITES='blocks.0.hook_resid_pre,blocks.*.mlp.hook_post,blocks.1.attn.hook_z'

# Same activations, two ways of summing: collect (per-prompt chunks, Chan merges) and the
# reference (all rows at once). Differences are float64 rounding: 1e-9 relative is ~10^7 ulps
# of slack, 1e-10 absolute covers covariances that are nearly zero.
"$SUBSCOPE" forward --model $M --input $P --out "$TMP/acts.h5" --sites "$SITES" --no-logits --batch 16 2>/dev/null
"$REF" "$TMP/acts.h5" "$TMP/ref.h5"
"$SUBSCOPE" collect --model $M --input $P --sites "$SITES" --stats mean,cov,corr,pca:4 --out "$TMP/c16.h5" --batch 16 2>/dev/null
if res=$("$H5CMP" --quiet --atol 1e-10 --rtol 1e-9 "$TMP/ref.h5" "$TMP/c16.h5" 2>&1); then pass "count, mean, cov, corr equal the float64 two-pass reference"
else fail "stats vs reference" "$(printf '%s' "$res" | head -5)"; fi
"$SUBSCOPE" forward --model $M --input $P --out "$TMP/acts_last.h5" --sites "$SITES" --no-logits --batch 16 2>/dev/null
"$REF" "$TMP/acts_last.h5" "$TMP/ref_last.h5" last
"$SUBSCOPE" collect --model $M --input $P --sites "$SITES" --stats mean,cov,corr --positions last --out "$TMP/clast.h5" --batch 16 2>/dev/null
expect_ok "--positions last equals the reference over last positions" "$H5CMP" --quiet --atol 1e-10 --rtol 1e-9 "$TMP/ref_last.h5" "$TMP/clast.h5"

# numpy's float64 statistics (tests/gen/gen_collect_goldens.py) of the activations forward
# produced when the goldens were made. Another machine's BLAS, or another split of a product
# between threads, rounds the fp32 forward differently by ~1e-7 of the activations' scale
# (~0.3 here): 1e-6 relative plus 2e-7 absolute (for entries near zero) allows that for the
# counts, means and covariances. Correlations divide by standard deviations, some of them small
# (hook_z), which amplifies it: 1e-6 absolute (a correlation lies in [-1, 1]), as over the 8
# last positions. (An AVX-512 machine's OpenBLAS put one hook_z correlation 3.1e-7 from the
# golden.) The statistics themselves are checked exactly (1e-9) against the two-pass reference above.
GS='blocks.0.hook_resid_pre,blocks.1.attn.hook_z'
"$SUBSCOPE" collect --model $M --input $P --sites "$GS" --stats mean,cov,corr --out "$TMP/gn.h5" --batch 16 2>/dev/null
only=()
for s in ${GS//,/ }; do only+=(--only "/stats/$s/count" --only "/stats/$s/mean" --only "/stats/$s/cov"); done
expect_ok "collect equals numpy float64 goldens (all positions: count, mean, cov)" "$H5CMP" --quiet --atol 2e-7 --rtol 1e-6 \
    "${only[@]}" "$D/golden/collect-tiny-gpt2.h5" "$TMP/gn.h5"
expect_ok "collect equals numpy float64 goldens (all positions: corr)" "$H5CMP" --quiet --atol 1e-6 --rtol 1e-6 \
    --only /stats/blocks.0.hook_resid_pre/corr --only /stats/blocks.1.attn.hook_z/corr "$D/golden/collect-tiny-gpt2.h5" "$TMP/gn.h5"
"$SUBSCOPE" collect --model $M --input $P --sites "$GS" --stats mean,cov,corr --positions last --out "$TMP/gnl.h5" --batch 16 2>/dev/null
expect_ok "collect equals numpy float64 goldens (last positions)" "$H5CMP" --quiet --atol 1e-6 --rtol 1e-6 "$D/golden/collect-tiny-gpt2-last.h5" "$TMP/gnl.h5"

# Batching changes only the forward pass's rounding (BLAS blocking), ~1e-6 of the activations.
"$SUBSCOPE" collect --model $M --input $P --sites "$SITES" --stats mean,cov,corr,pca:4 --out "$TMP/c1.h5" --batch 1 2>/dev/null
"$SUBSCOPE" collect --model $M --input $P --sites "$SITES" --stats mean,cov,corr,pca:4 --out "$TMP/c7.h5" --batch 7 2>/dev/null
expect_ok "batch 1 vs 16: within fp32 forward rounding" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-4 --only /stats/blocks.0 "$TMP/c16.h5" "$TMP/c1.h5"
expect_ok "batch 7 vs 16: within fp32 forward rounding" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-4 --only /stats/blocks.0 "$TMP/c16.h5" "$TMP/c7.h5"
n=$(h5dump -d /stats/blocks.0.mlp.hook_post/pca/values "$TMP/c16.h5" 2>/dev/null | grep -c '(0)')
[ "$n" -ge 1 ] && pass "pca values written" || fail "pca values written"

# Groups: per-label statistics, counts add up.
awk 'NR % 2 {sub(/}$/, ", \"label\": \"odd\"}")} !(NR % 2) {sub(/}$/, ", \"label\": \"even\"}")} {print}' $P >"$TMP/lab.jsonl"
"$SUBSCOPE" collect --model $M --input "$TMP/lab.jsonl" --sites blocks.1.mlp.hook_post --group-by label --out "$TMP/g.h5" 2>/dev/null
cnt() { h5dump -d "$1" "${2:-$TMP/g.h5}" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p; s/^ *\([0-9][0-9]*\) *$/\1/p' | head -n 1; }
all=$(cnt /stats/blocks.1.mlp.hook_post/count); odd=$(cnt /groups/odd/stats/blocks.1.mlp.hook_post/count); even=$(cnt /groups/even/stats/blocks.1.mlp.hook_post/count)
[ -n "$all" ] && [ -n "$odd" ] && [ $((odd + even)) = "$all" ] && pass "--group-by label: group counts add up ($odd + $even = $all)" || fail "--group-by label" "all=$all odd=$odd even=$even"
# pca:K past the largest K taken (2^20) was refused as if it were not positive
expect_fail "pca:K too large: the range in the error" "--stats: 'pca:100000000' needs a number of components in 1..1048576" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.1.mlp.hook_post --stats mean,pca:100000000 --out "$TMP/x.h5"
expect_fail "pca:0 refused" "--stats: 'pca:0' needs a number of components in 1..1048576" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.1.mlp.hook_post --stats mean,pca:0 --out "$TMP/x.h5"
expect_fail "--group-by without labels" "has no \"label\"" "$SUBSCOPE" collect --model $M --input $P --sites blocks.1.mlp.hook_post --group-by label --out "$TMP/x.h5"
# Labels that cannot name a group are refused before any forward pass, naming the line: '.' is
# HDF5's name for the group itself, and a label past 512 bytes would be cut in the group paths.
# Up to 512 bytes, spaces, '..' and non-ASCII, each label is a group of that very name.
printf '{"tokens": [1, 2], "label": "a"}\n{"tokens": [3, 4], "label": "."}\n' >"$TMP/dot.jsonl"
expect_fail "--group-by: label '.' refused, naming the line" "dot.jsonl:2: label '.' cannot name an HDF5 group" \
    "$SUBSCOPE" collect --model $M --input "$TMP/dot.jsonl" --sites hook_embed --group-by label --out "$TMP/x.h5"
l587=$(printf 'L%.0s' $(seq 1 587)) l512=$(printf 'L%.0s' $(seq 1 512))
printf '{"tokens": [1, 2], "label": "a"}\n{"tokens": [3, 4], "label": "%s"}\n' "$l587" >"$TMP/long.jsonl"
expect_fail "--group-by: a label past 512 bytes refused, naming the line" "long.jsonl:2: label of 587 bytes, longer than the 512" \
    "$SUBSCOPE" collect --model $M --input "$TMP/long.jsonl" --sites hook_embed --group-by label --out "$TMP/x.h5"
printf '{"tokens": [1, 2], "label": "%s"}\n{"tokens": [3, 4], "label": ".."}\n{"tokens": [5, 6], "label": "a b \u00fc"}\n' "$l512" >"$TMP/odd.jsonl"
if "$SUBSCOPE" collect --model $M --input "$TMP/odd.jsonl" --sites hook_embed --group-by label --out "$TMP/odd.h5" 2>"$TMP/err"; then
    g=$(h5ls "$TMP/odd.h5/groups" 2>/dev/null | awk '{print length($1)}' | sort -n | tr '\n' ' ')
    [ "$(cnt "/groups/$l512/stats/hook_embed/count" "$TMP/odd.h5")" = 2 ] && [ "$(cnt "/groups/../stats/hook_embed/count" "$TMP/odd.h5")" = 2 ] &&
        [ "$(cnt "/groups/a b ü/stats/hook_embed/count" "$TMP/odd.h5")" = 2 ] &&
        pass "--group-by: labels of 512 bytes, '..', spaces and non-ASCII name their groups" || fail "--group-by odd labels" "groups' name lengths: $g"
else fail "--group-by odd labels" "$(cat "$TMP/err")"; fi

# Checkpoints and resume after kill -9: the resumed result equals an uninterrupted one.
for i in $(seq 1 40); do cat $P; done >"$TMP/big.jsonl"
"$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/full.h5" --checkpoint-every 64 --batch 8 2>/dev/null
"$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/res.h5" --checkpoint-every 64 --batch 8 2>/dev/null &
pid=$!
for _ in $(seq 1 200); do [ -e "$TMP/res.h5.ckpt" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
if [ -e "$TMP/res.h5.ckpt" ] && [ ! -e "$TMP/res.h5" ]; then pass "killed run left a checkpoint and no output"
else fail "killed run left a checkpoint and no output" "$(ls "$TMP" | grep res)"; fi
# --resume with no checkpoint yet (the first start of a job that always passes it) runs from the start.
expect_ok "--resume without a checkpoint starts from the first prompt (as --help and FORMAT.md say)" sh -c '
    "$1" collect --model "$2" --input "$3" --sites "$4" --stats mean,cov --out "$5" --checkpoint-every 64 --batch 8 --resume 2>/dev/null &&
    "$6" --quiet --atol 0 --rtol 0 --only /stats "$7" "$5"' sh "$SUBSCOPE" $M "$TMP/big.jsonl" "$SITES" "$TMP/fresh.h5" "$H5CMP" "$TMP/full.h5"
# A checkpoint carries a checksum of its state: one whose data were altered (a NaN put in a mean by
# hand, one bit of a co-moment flipped) is refused, naming it; HDF5 checksums its metadata only.
cp "$TMP/res.h5.ckpt" "$TMP/good.ckpt"
ckpt_edit() { # HOW: nan (a mean's first value) | flip (the last bit of a co-moment) | legacy (no checksum)
    python3 - "$TMP/res.h5.ckpt" "$1" <<'PY'
import sys, struct, h5py, numpy as np
f = h5py.File(sys.argv[1], "r+")
if sys.argv[2] == "legacy":
    del f.attrs["state_checksum"]
else:
    name = [k for k in f["stats"]][0]
    d = f["stats"][name]["mean" if sys.argv[2] == "nan" else "m2"]
    v = d[()]
    flat = v.reshape(-1)
    if sys.argv[2] == "nan": flat[0] = np.nan
    else: flat[1] = struct.unpack("<d", struct.pack("<Q", struct.unpack("<Q", struct.pack("<d", flat[1]))[0] ^ 1))[0]
    d[...] = v
PY
}
if python3 -c "import h5py" 2>/dev/null; then
    for how in nan flip; do
        cp "$TMP/good.ckpt" "$TMP/res.h5.ckpt" && ckpt_edit $how
        expect_fail "a checkpoint with an altered value ($how) is refused, naming it" \
            "$TMP/res.h5.ckpt: its statistics do not match the checksum written with them" \
            "$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/res.h5" --checkpoint-every 64 --batch 8 --resume
        [ ! -e "$TMP/res.h5" ] || fail "no output from a refused checkpoint ($how)"
    done
    # A checkpoint from before the checksum resumes as before, with a note saying it was not checked.
    cp "$TMP/good.ckpt" "$TMP/res.h5.ckpt" && ckpt_edit legacy && mv "$TMP/res.h5.ckpt" "$TMP/legacy.h5.ckpt"
    if "$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/legacy.h5" \
        --checkpoint-every 64 --batch 8 --resume >/dev/null 2>"$TMP/err" && grep -q "no state_checksum" "$TMP/err"; then
        expect_ok "a checkpoint without a checksum resumes, noted, to the uninterrupted result" "$H5CMP" --quiet --atol 0 \
            --rtol 1e-12 --only /stats "$TMP/full.h5" "$TMP/legacy.h5"
    else fail "a checkpoint without a checksum resumes with a note" "$(cat "$TMP/err")"; fi
    cp "$TMP/good.ckpt" "$TMP/res.h5.ckpt"
else pass "checkpoint checksum not tested: needs python3 with h5py"; fi
expect_fail "resume refused for other options" "refusing to resume" \
    "$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --positions last --out "$TMP/res.h5" --checkpoint-every 64 --batch 8 --resume
# The model is its files' contents, not its path: one changed byte of the weights is refused; an
# identical copy elsewhere resumes.
cp -r $M "$TMP/mbad"
sz=$(stat -c %s "$TMP/mbad/model.safetensors")
printf '\001' | dd of="$TMP/mbad/model.safetensors" bs=1 seek=$((sz - 5)) conv=notrunc 2>/dev/null
expect_fail "resume refused for other weights under the same config" "refusing to resume" \
    "$SUBSCOPE" collect --model "$TMP/mbad" --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/res.h5" --checkpoint-every 64 --batch 8 --resume
cp -r $M "$TMP/mcopy"
# What a run killed between writing a checkpoint's (or the output's) temporary and renaming it
# leaves, from this host and a process that is gone, the resumed run removes.
H=$(hostname | sed 's/[^A-Za-z0-9-]/_/g' | cut -c1-64)
touch "$TMP/res.h5.ckpt.tmp.$H.$pid" "$TMP/res.h5.tmp.$H.$pid"
# (an attribute's value: a string's, or a number's)
rattr() { h5dump -a "/$1" "$2" 2>/dev/null | sed -n 's/.*(0): "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p'; }
held=$(rattr prompts_done "$TMP/res.h5.ckpt")
expect_ok "resume after kill -9 (the model copied elsewhere)" "$SUBSCOPE" collect --model "$TMP/mcopy" --input "$TMP/big.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/res.h5" --checkpoint-every 64 --batch 8 --resume
expect_ok "resumed statistics equal the uninterrupted run (rel 1e-12)" "$H5CMP" --quiet --atol 0 --rtol 1e-12 --only /stats "$TMP/full.h5" "$TMP/res.h5"
# The output says it was resumed, from which checkpoint, and how many prompts that held; runs that
# started from the first prompt (--resume with no checkpoint, or none) say nothing of it.
got="$(rattr resumed "$TMP/res.h5") $(rattr checkpoint_path "$TMP/res.h5") $(rattr resumed_prompts "$TMP/res.h5")"
[ -n "$held" ] && [ "$held" -gt 0 ] && [ "$got" = "1 $TMP/res.h5.ckpt $held" ] &&
    pass "a resumed output records resumed, checkpoint_path and resumed_prompts" || fail "resume provenance" "got '$got', checkpoint held '$held'"
for f in fresh full; do
    h5dump -A "$TMP/$f.h5" 2>/dev/null | grep -Eq 'ATTRIBUTE "(resumed|checkpoint_path|resumed_prompts)"' &&
        fail "$f.h5 (not resumed) records no resume" || pass "$f.h5 (not resumed) records no resume"
done
sh=$("$SUBSCOPE" show "$TMP/res.h5" 2>&1)
printf '%s\n' "$sh" | grep -q "^  checkpoint_path  *$TMP/res.h5.ckpt$" && printf '%s\n' "$sh" | grep -q "^  resumed_prompts  *$held$" &&
    pass "show: the checkpoint resumed and the prompts it held" || fail "show's provenance lacks the resume" "$(printf '%s' "$sh" | head -14)"
[ ! -e "$TMP/res.h5.ckpt" ] && pass "checkpoint removed once the result is whole" || fail "checkpoint removed once the result is whole"
left=$(ls "$TMP" | grep '^res\.h5\..*tmp')
[ -z "$left" ] && pass "the resumed run removed the killed run's OUT.ckpt.tmp.* and OUT.tmp.*" || fail "stale temporaries removed" "$left"
# Stopped by SIGTERM just after the result is renamed into place (tests/shim/rename_signal.c sends
# it to the process): it takes effect once the checkpoint is removed too, not with it left beside
# the whole result.
(SS_SHIM_RENAME_SIGNAL=TERM SS_SHIM_RENAME_MATCH=/sig.h5 LD_PRELOAD="${TOOLBIN}rename_signal.so" \
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" "$SUBSCOPE" collect --model $M --input "$TMP/big.jsonl" \
    --sites "$SITES" --stats mean,cov --out "$TMP/sig.h5" --checkpoint-every 64 --batch 8 2>"$TMP/logsig") 2>/dev/null
rc=$?
left=$(ls -A "$TMP" | grep '^sig\.h5\.')
if ! grep -q "^rename_signal: SIGTERM after renaming .*/sig.h5$" "$TMP/logsig"; then
    fail "SIGTERM between collect's result and its checkpoint's removal" "the shim sent no signal: $(tail -2 "$TMP/logsig")"
elif [ $rc = 143 ] && [ -z "$left" ] && "$H5CMP" --quiet --atol 0 --rtol 0 --only /stats "$TMP/full.h5" "$TMP/sig.h5"; then
    pass "SIGTERM between collect's result and its checkpoint's removal: exit 143, the result whole, no checkpoint"
else fail "SIGTERM between collect's result and its checkpoint's removal" "exit $rc (want 143), left: $left"; fi

# Stopped by SIGTERM or SIGINT in the middle of a long run (after its first checkpoint): it ends at
# once with the signal's status, leaving the checkpoint and neither the output nor a temporary.
for i in $(seq 1 10); do cat "$TMP/big.jsonl"; done >"$TMP/long.jsonl"
set -m # background jobs keep SIGINT's default action
sigs=TERM
if [ -n "$(trap -p INT)" ]; then echo "  skip: SIGINT is ignored in this test's environment (started in the background)"
else sigs="TERM INT"; fi
for sig in $sigs; do
    rm -f "$TMP"/long.h5*
    "$SUBSCOPE" collect --model $M --input "$TMP/long.jsonl" --sites "$SITES" --stats mean,cov --out "$TMP/long.h5" \
        --checkpoint-every 64 --batch 8 2>/dev/null &
    pid=$!
    for _ in $(seq 1 400); do [ -e "$TMP/long.h5.ckpt" ] && break; sleep 0.05; done
    t0=$(date +%s%N)
    kill -$sig $pid 2>/dev/null; wait $pid 2>/dev/null; rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    left=$(ls -A "$TMP" | grep '^long\.h5\.' | grep -v '^long\.h5\.ckpt$')
    if [ $rc = $((128 + $(kill -l $sig))) ] && [ $ms -lt 5000 ] && [ -e "$TMP/long.h5.ckpt" ] && [ ! -e "$TMP/long.h5" ] && [ -z "$left" ]; then
        pass "SIG$sig during a long collect: exit $rc after $ms ms, the checkpoint kept, no output or temporary"
    else fail "SIG$sig during a long collect" "exit $rc after $ms ms, left: $(ls -A "$TMP" | grep '^long\.h5' | tr '\n' ' ')"; fi
done
set +m
rm -f "$TMP"/long.*

# Refusals.
expect_fail "hook_pattern named outright is refused" "has no per-token vector" "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.attn.hook_pattern --out "$TMP/x.h5"
"$SUBSCOPE" collect --model $M --input $P --sites 'blocks.0.*' --out "$TMP/glob.h5" 2>/dev/null
if h5ls -r "$TMP/glob.h5" 2>/dev/null | grep -q "blocks.0.mlp.hook_post/cov" && ! h5ls -r "$TMP/glob.h5" | grep -q hook_pattern; then
    pass "a glob sweeping up hook_pattern collects the other sites"
else fail "a glob sweeping up hook_pattern collects the other sites"; fi
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" collect --model $M --input $P --sites 'blocks.*.mlp.hook_post' --out "$TMP/t.h5" 2>&1 >/dev/null | grep "timing:")
printf '%s' "$tl" | grep -Eq '^subscope collect: timing: batches \(forward and statistics\) [0-9.]+ s, device totals to the host [0-9.]+ s, results and file [0-9.]+ s$' &&
    pass "SUBSCOPE_TIMING=1: where collect's time went" || fail "SUBSCOPE_TIMING=1 collect" "got: $tl"
# A site that sees no rows (every prompt shorter than --positions' start) has count 0 and a NaN
# mean with a note, not zeros that look like data; ablate's mean modes refuse such a file.
"$SUBSCOPE" collect --model $M --input $P --sites blocks.1.mlp.hook_post --positions 500: --out "$TMP/none.h5" 2>/dev/null
nm=$(h5dump -d /stats/blocks.1.mlp.hook_post/mean "$TMP/none.h5" 2>/dev/null | grep -c -i nan)
note=$(h5dump -a /stats/blocks.1.mlp.hook_post/note "$TMP/none.h5" 2>/dev/null | grep -c "no rows")
[ "$nm" -ge 1 ] && [ "$note" = 1 ] && [ "$(cnt /stats/blocks.1.mlp.hook_post/count "$TMP/none.h5")" = 0 ] &&
    pass "a site with no rows: count 0, mean NaN and a note" || fail "a site with no rows" "nan lines $nm, note $note"
# Rows that are all the same (position 0's position embedding, in every prompt): the covariance
# is 0, so the explained-variance ratios are 0/0 = NaN and the vectors arbitrary; the pca group
# says so in a note (before, NaN ratios and unit vectors with nothing to say why). A site with
# spread (the residual there) gets no such note.
"$SUBSCOPE" collect --model $M --input $P --sites hook_pos_embed,blocks.0.hook_resid_pre --positions 0:1 --stats mean,pca:2 \
    --out "$TMP/flat.h5" >/dev/null 2>&1
fr=$(h5dump -d /stats/hook_pos_embed/pca/explained_variance_ratio "$TMP/flat.h5" 2>/dev/null | grep -c -i nan)
fnote=$(h5dump -a /stats/hook_pos_embed/pca/note "$TMP/flat.h5" 2>/dev/null | grep -c "every unit's variance is 0")
rnote=$(h5dump -a /stats/blocks.0.hook_resid_pre/pca/note "$TMP/flat.h5" 2>/dev/null | grep -c "variance")
[ "$fr" -ge 1 ] && [ "$fnote" = 1 ] && [ "$rnote" = 0 ] && pass "identical rows: NaN explained-variance ratios with a note saying why" ||
    fail "identical rows' PCA" "NaN lines $fr, note $fnote, note on a site with spread $rnote"
echo '{"name": "m", "site": "blocks.1.mlp.hook_post", "units": [1, 2], "mode": "mean"}' >"$TMP/mean_mask.jsonl"
expect_fail "ablate refuses the means of a site with no rows" "count is 0: the site saw no rows" \
    "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/mean_mask.jsonl" --stats "$TMP/none.h5" --out "$TMP/x.h5"
expect_fail "unknown statistic" "unknown statistic 'median'" "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --stats mean,median --out "$TMP/x.h5"
expect_fail "empty --stats refused (it would record \"\" as asked)" "--stats is empty" "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --stats= --out "$TMP/x.h5"
# Two pca:K of different K: the last one was used without a word.
expect_fail "--stats with pca:8 and pca:4 refused" "--stats 'mean,pca:8,pca:4' asks for pca twice, with 8 and 4 components" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --stats mean,pca:8,pca:4 --out "$TMP/x.h5"
expect_fail "bad positions" "--positions" "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --positions 5:2 --out "$TMP/x.h5"
# A number past int64 came back from strtoll as INT64_MAX: FROM selected nothing (a NaN mean), TO all.
expect_fail "--positions FROM past int64 refused" "--positions: FROM in '99999999999999999999:' is out of range" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --positions 99999999999999999999: --out "$TMP/x.h5"
expect_fail "--positions TO past int64 refused" "--positions: TO in '1:99999999999999999999' is out of range" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --positions 1:99999999999999999999 --out "$TMP/x.h5"
# Whole numbers are digits only (ss_parse_int): strtoll took a leading space or '+' (' 1:+5' was 1:5).
for v in ' 1:5' '+1:5' '1:+5' '1: 5' '1:5 ' '1x:5' '0x1:5'; do
    expect_fail "--positions '$v' refused" "must be a whole number of at least 0 (digits only)" \
        "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --positions "$v" --out "$TMP/x.h5"
done
for o in "--batch= 4" "--batch=+4" "--max-len=+8" "--batch=4 "; do
    expect_fail "'$o' refused" "must be an integer in" \
        "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post "$o" --out "$TMP/x.h5"
done
expect_fail "--stats pca:+2 refused" "'pca:+2' needs a number of components" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --stats mean,pca:+2 --out "$TMP/x.h5"
for v in ' 2G' '+2G'; do
    expect_fail "--max-memory '$v' refused" "--max-memory must be a positive size" \
        "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --max-memory "$v" --out "$TMP/x.h5"
done
expect_fail "--device 'cuda:+0' refused" "expected cuda:N" \
    "$SUBSCOPE" collect --model $M --input $P --sites blocks.0.mlp.hook_post --device cuda:+0 --out "$TMP/x.h5"
expect_fail "--sites required" "--sites is required" "$SUBSCOPE" collect --model $M --input $P --out "$TMP/x.h5"
# Progress goes to a terminal only (cli_progress): the prompts, then the results site by site (a
# wide site's covariance, PCA and correlation take long: 35 s without a line for 12 MLP sites at
# d 3072); nothing of it where stderr is a file. `script` gives the run a terminal.
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' collect --model $M --input $P --sites '$SITES' --stats mean,cov,pca:2 --out '$TMP/tty.h5'" \
        /dev/null 2>&1 | tr '\r' '\n')
    printf '%s\n' "$out" | grep -q "^  0/6 sites' results" && printf '%s\n' "$out" | grep -q "^  6/6 sites' results" &&
        printf '%s\n' "$out" | grep -q "prompts" && pass "on a terminal: progress of the prompts, then of the 6 sites' results" ||
        fail "progress of the results on a terminal" "$(printf '%s' "$out" | tail -n 4)"
    "$SUBSCOPE" collect --model $M --input $P --sites "$SITES" --stats mean,cov,pca:2 --out "$TMP/notty.h5" 2>"$TMP/err"
    ! grep -q "sites' results\|prompts" "$TMP/err" && pass "stderr a file: no progress lines" ||
        fail "stderr a file: no progress lines" "$(cat "$TMP/err")"
else
    pass "progress on a terminal not checked: no 'script' command here"
fi

# A note printed while a progress line is open (the results' "0/1 sites' results" line, then the
# note of a site that saw no rows) ends that line first and starts its own; the next update draws
# on the line after it (before, the note ran on after "... elapsed\033[K").
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' collect --model $M --input $P --sites blocks.1.mlp.hook_post --positions 500: --out '$TMP/ttynote.h5' >/dev/null" \
        /dev/null 2>&1 | tr '\r' '\n')
    if printf '%s\n' "$out" | grep -qE "^collect: note: blocks.1.mlp.hook_post saw no rows" &&
        ! printf '%s\n' "$out" | grep -qE "elapsed.*note:" &&
        printf '%s\n' "$out" | grep -qE "^  0/1 sites' results .* elapsed" &&
        printf '%s\n' "$out" | grep -qE "^  1/1 sites' results .* elapsed"; then
        pass "a note during progress on a terminal starts its own line"
    else fail "a note during progress" "$(printf '%s\n' "$out" | grep -E 'note|results' | cat -A)"; fi
else
    pass "a note during progress not checked: no 'script' command here"
fi

finish
