#!/usr/bin/env bash
# discover: collect (grouped by label) -> discover with both methods (and with attributions) ->
# ablate --masks on the exported file; determinism; refusals that leave no output.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
M=models/tiny-gpt2
P=$D/ablate/prompts.jsonl
S='blocks.*.mlp.hook_post'

"$SUBSCOPE" collect --model $M --input $P --sites "$S" --stats mean,cov,corr --group-by label --out "$TMP/st.h5" 2>/dev/null
"$SUBSCOPE" collect --model $M --input $P --sites "$S,blocks.0.hook_resid_post" --out "$TMP/flat.h5" 2>/dev/null
[ -f "$TMP/st.h5" ] && [ -f "$TMP/flat.h5" ] && pass "collect --group-by label" || fail "collect --group-by label"

# A root string attribute's value.
attr() { h5dump -a "/$1" "$2" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"$/\1/p'; }

# cluster: 512 units per site, --fraction 0.02 -> clusters of at most 10; --top 3 per site of 4.
if "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 3 --out "$TMP/cl.h5" >"$TMP/cl.txt" 2>"$TMP/err"; then
    pass "discover --method cluster"
else fail "discover --method cluster" "$(cat "$TMP/err")"; fi
n=$(wc -l <"$TMP/cl.masks.jsonl" 2>/dev/null)
names=$(attr submodels "$TMP/cl.h5")
[ "$n" = 12 ] && [ "$(printf '%s' "$names" | awk -F, '{print NF}')" = 12 ] && pass "cluster: 3 sub-models per site, one mask each (default masks path)" || fail "cluster: 12 sub-models" "masks $n, names '$names'"
[ "$(head -n 1 "$TMP/cl.masks.jsonl" | sed 's/^{"name": "\([^"]*\)".*/\1/')" = "${names%%,*}" ] && pass "masks in score order" || fail "masks in score order"
big=$(grep -o '"units": \[[^]]*\]' "$TMP/cl.masks.jsonl" | awk -F, '{print NF}' | sort -n | tail -n 1)
[ -n "$big" ] && [ "$big" -le 10 ] && [ "$big" -ge 2 ] && pass "clusters hold 2..10 units (2% of 512)" || fail "cluster sizes" "largest $big"
grep -q "^1 *cluster1@blocks" "$TMP/cl.txt" && pass "table of sub-models printed" || fail "table" "$(head -3 "$TMP/cl.txt")"
# (with what a killed run of the same outputs left, from this host and a process that is gone: removed)
hn=$(hostname | sed 's/[^A-Za-z0-9-]/_/g' | cut -c1-64)
true & dead=$!; wait $dead
touch "$TMP/cl2.masks.jsonl.tmp.$hn.$dead" "$TMP/cl2.h5.tmp.$hn.$dead"
"$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 3 --out "$TMP/cl2.h5" >/dev/null 2>&1
cmp -s "$TMP/cl.masks.jsonl" "$TMP/cl2.masks.jsonl" && [ "$(attr submodels "$TMP/cl2.h5")" = "$names" ] && pass "deterministic: same masks and order again" || fail "deterministic"
left=$(ls "$TMP" | grep '^cl2\..*tmp')
[ -z "$left" ] && pass "a killed run's OUT.tmp.* and MASKS.tmp.* are removed by the next" || fail "discover's stale temporaries" "$left"
# Without corr in the file, the correlation comes from cov: the same clusters.
"$SUBSCOPE" discover --stats "$TMP/flat.h5" --sites "$S" --method cluster --top 3 --out "$TMP/cl3.h5" >/dev/null 2>&1
cmp -s "$TMP/cl.masks.jsonl" "$TMP/cl3.masks.jsonl" && pass "corr computed from cov gives the same clusters" || fail "corr from cov" "$(diff "$TMP/cl.masks.jsonl" "$TMP/cl3.masks.jsonl" | head -4)"

# Stopped by a signal between its two renames (tests/shim/rename_signal.c sends it to the process
# right after --out's), over the files of an earlier run: it takes effect once the masks file is
# in place too, so the pair is the new run's (an uninterrupted run's with the same options: two
# sub-models per site where the earlier had three), never a new --out beside the earlier masks.
"$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 2 --out "$TMP/ref2.h5" >/dev/null 2>&1
sigs=TERM
if [ -n "$(trap -p INT)" ]; then echo "  skip: SIGINT is ignored in this test's environment (started in the background)"
else sigs="TERM INT"; fi
for sig in $sigs; do
    cp "$TMP/cl.h5" "$TMP/sig.h5" && cp "$TMP/cl.masks.jsonl" "$TMP/sig.masks.jsonl"
    (SS_SHIM_RENAME_SIGNAL=$sig SS_SHIM_RENAME_MATCH=/sig.h5 LD_PRELOAD="${TOOLBIN}rename_signal.so" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" \
        --method cluster --top 2 --out "$TMP/sig.h5" >/dev/null 2>"$TMP/logsig") 2>/dev/null # (bash's "Terminated")
    rc=$? want=$((128 + $(kill -l $sig)))
    left=$(ls "$TMP" | grep '^sig\..*tmp')
    if ! grep -q "^rename_signal: SIG$sig after renaming .*/sig.h5$" "$TMP/logsig"; then
        fail "SIG$sig between discover's renames" "the shim sent no signal: $(tail -2 "$TMP/logsig")"
    elif [ $rc = $want ] && [ "$(attr submodels "$TMP/sig.h5")" = "$(attr submodels "$TMP/ref2.h5")" ] &&
        cmp -s "$TMP/ref2.masks.jsonl" "$TMP/sig.masks.jsonl" && [ -z "$left" ]; then
        pass "SIG$sig between discover's renames: exit $rc with the new --out and masks file both in place"
    else fail "SIG$sig between discover's renames" "exit $rc (want $want); --out's sub-models: $(attr submodels "$TMP/sig.h5")" \
        "masks: $(wc -l <"$TMP/sig.masks.jsonl") lines (new: $(wc -l <"$TMP/ref2.masks.jsonl")); left: $left"; fi
done

# The masks rename failing (tests/shim/rename_signal.c fails it: another file system, a full
# directory) after --out went into place, over the files of an earlier run: exit 1 naming the masks
# file, and both files the earlier run's again, nothing left beside them. Before, the new --out was
# removed and the earlier one was lost. Where link fails (no hard links), --out was kept aside.
for c in "EXDEV" "ENOSPC EPERM"; do
    set -- $c
    cp "$TMP/cl.h5" "$TMP/fail.h5" && cp "$TMP/cl.masks.jsonl" "$TMP/fail.masks.jsonl"
    before=$(ls -A "$TMP" | grep '^\.\?fail\.')
    ([ $# = 2 ] && export SS_SHIM_LINK_FAIL=$2
    SS_SHIM_RENAME_FAIL=$1 SS_SHIM_RENAME_MATCH=/fail.masks.jsonl LD_PRELOAD="${TOOLBIN}rename_signal.so" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" \
        --method cluster --top 2 --out "$TMP/fail.h5" >/dev/null 2>"$TMP/logfail")
    rc=$? after=$(ls -A "$TMP" | grep '^\.\?fail\.')
    what="discover: the masks rename failing ($1${2:+, no hard links})"
    if ! grep -q "^rename_signal: $1 for the rename onto .*/fail.masks.jsonl$" "$TMP/logfail"; then
        fail "$what" "the shim failed no rename: $(tail -2 "$TMP/logfail")"
    elif [ $rc = 1 ] && grep -q "error: $TMP/fail.masks.jsonl: cannot rename .* into place: " "$TMP/logfail" &&
        cmp -s "$TMP/cl.h5" "$TMP/fail.h5" && cmp -s "$TMP/cl.masks.jsonl" "$TMP/fail.masks.jsonl" && [ "$before" = "$after" ]; then
        pass "$what: exit 1 naming it, and the earlier --out and masks file as they were"
    else fail "$what" "exit $rc (want 1): $(grep error "$TMP/logfail")" "sub-models: $(attr submodels "$TMP/fail.h5")" \
        "files: $(echo $after)"; fi
done
# ... and without a failure, over the same files: the new pair, no kept copy left.
"$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 2 --out "$TMP/fail.h5" >/dev/null 2>&1
[ "$(attr submodels "$TMP/fail.h5")" = "$(attr submodels "$TMP/ref2.h5")" ] && cmp -s "$TMP/ref2.masks.jsonl" "$TMP/fail.masks.jsonl" &&
    [ "$(ls -A "$TMP" | grep '^\.\?fail\.' | tr '\n' ' ')" = "fail.h5 fail.masks.jsonl " ] &&
    pass "discover over an earlier run: the new files in place, nothing kept beside them" ||
    fail "discover over an earlier run" "$(ls -A "$TMP" | grep '^\.\?fail\.' | tr '\n' ' ')"
# ... and where a kept copy cannot be removed (the shim fails the unlink of every ".old." name): the
# new pair in place, exit 0, and a warning naming each file left, the earlier one (it was left in
# silence).
cp "$TMP/cl.h5" "$TMP/keep.h5" && cp "$TMP/cl.masks.jsonl" "$TMP/keep.masks.jsonl"
SS_SHIM_UNLINK_FAIL=EACCES LD_PRELOAD="${TOOLBIN}rename_signal.so" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 2 --out "$TMP/keep.h5" >/dev/null 2>"$TMP/logkeep"
rc=$? ok=1
for f in keep.h5 keep.masks.jsonl; do
    old=$(ls "$TMP" | grep "^$f\.old\.$hn\.[0-9]*\$")
    [ -n "$old" ] && cmp -s "$TMP/${f/keep/cl}" "$TMP/$old" &&
        grep -qF "subscope: warning: could not remove $TMP/$old, the earlier $TMP/$f kept while the new one went into place: Permission denied (remove it)" "$TMP/logkeep" || ok=0
done
[ $rc = 0 ] && [ $ok = 1 ] && [ "$(attr submodels "$TMP/keep.h5")" = "$(attr submodels "$TMP/ref2.h5")" ] &&
    cmp -s "$TMP/ref2.masks.jsonl" "$TMP/keep.masks.jsonl" &&
    pass "discover: a kept earlier file that cannot be removed is named in a warning" ||
    fail "discover: kept copies left" "exit $rc: $(cat "$TMP/logkeep")" "files: $(ls "$TMP" | grep '^keep\.' | tr '\n' ' ')"

# contrast: one sub-model per site and one over all four sites.
if "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --contrast animals:colours --out "$TMP/ct.h5" --masks-out "$TMP/ct.jsonl" >"$TMP/ct.txt" 2>"$TMP/err"; then
    pass "discover --method contrast"
else fail "discover --method contrast" "$(cat "$TMP/err")"; fi
[ "$(wc -l <"$TMP/ct.jsonl")" = 5 ] && grep -q '^{"name": "animals_vs_colours", "sites": \[{"site": "blocks.0.mlp.hook_post", "units": \[' "$TMP/ct.jsonl" && pass "contrast: 4 per-site masks + animals_vs_colours over all sites" || fail "contrast masks" "$(head -c 300 "$TMP/ct.jsonl")"
h5dump -d "/submodels/animals_vs_colours@blocks.1.mlp.hook_post/blocks.1.mlp.hook_post/effect_size" "$TMP/ct.h5" >/dev/null 2>&1 && pass "effect sizes written" || fail "effect sizes written"
# Each unit's overall std comes from /stats/<site>/cov, which st.h5 has: no NaN (it was NaN for contrast).
sd=$(h5dump -d "/submodels/animals_vs_colours@blocks.1.mlp.hook_post/blocks.1.mlp.hook_post/std" "$TMP/ct.h5" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f')
[ -n "$sd" ] && ! printf '%s' "$sd" | grep -qi nan && pass "contrast: std of each unit from the overall cov" || fail "contrast std" "$sd"
grep -q "animals_vs_colours *4 sites *40" "$TMP/ct.txt" && pass "contrast table: 40 units over 4 sites" || fail "contrast table" "$(cat "$TMP/ct.txt")"

# A file from before --seed went (root attribute seed) still shows.
if python3 -c "import h5py" 2>/dev/null; then
    cp "$TMP/cl.h5" "$TMP/old.h5" && python3 -c 'import sys, h5py, numpy; h5py.File(sys.argv[1], "r+").attrs["seed"] = numpy.int64(5)' "$TMP/old.h5"
    expect_ok "show reads a discover file with the old seed attribute" "$SUBSCOPE" show "$TMP/old.h5"
else pass "old seed attribute not tested: needs python3 with h5py"; fi

# A statistics file of a few KB can declare covariances of [2^17, 2^17] doubles whose chunks were
# never written (fill values): contrast read their diagonals through 128 GiB of them (hours), and
# cluster allocated one whole. Refused, naming the dataset, before any is read.
if python3 -c "import h5py" 2>/dev/null; then
    python3 -c 'import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    for pre in ["stats", "groups/a/stats", "groups/b/stats"]:
        g = f.create_group(pre + "/blocks.0.mlp.hook_post")
        g["count"] = np.array([10])
        g.create_dataset("mean", data=np.zeros(1 << 17), compression="gzip", chunks=(1 << 14,))
        g.create_dataset("cov", shape=(1 << 17, 1 << 17), dtype="f8", chunks=(64, 1024))' "$TMP/never.h5"
    for how in "contrast --contrast a:b" cluster; do
        expect_fail "discover --method ${how%% *}: a covariance never written is refused" \
            "/stats/blocks.0.mlp.hook_post/cov declares 137438953472 bytes but stores 0" \
            timeout 60 "$SUBSCOPE" discover --stats "$TMP/never.h5" --sites blocks.0.mlp.hook_post --method $how --out "$TMP/never.out.h5"
        [ ! -e "$TMP/never.out.h5" ] || fail "no output after a refused covariance (${how%% *})"
    done
    # so is a mean of 2^27 values never written (it was read whole, 1 GiB of fill values)
    python3 -c 'import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    g = f["stats/blocks.0.mlp.hook_post"]
    del g["mean"]
    g.create_dataset("mean", shape=(1 << 27,), dtype="f8", chunks=(1 << 16,))' "$TMP/never.h5"
    expect_fail "discover: a mean never written is refused" \
        "/stats/blocks.0.mlp.hook_post/mean declares 1073741824 bytes but stores 0" \
        "$SUBSCOPE" discover --stats "$TMP/never.h5" --sites blocks.0.mlp.hook_post --method cluster --out "$TMP/never.out.h5"
else pass "covariances never written not tested: needs python3 with h5py"; fi

# The exported masks are what ablate reads, as they are.
expect_ok "ablate --masks <cluster masks>" "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/cl.masks.jsonl" --out "$TMP/a1.h5"
expect_ok "ablate --masks <contrast masks>" "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/ct.jsonl" --out "$TMP/a2.h5"
h5ls -r "$TMP/a2.h5" 2>/dev/null | grep -q "/ablate/animals_vs_colours/loss" && pass "ablate names the results after the sub-models" || fail "ablate result names"

# With attributions (summed over positions) and another mask mode.
"$SUBSCOPE" attribute --model $M --input $P --sites "$S" --reduce positions --out "$TMP/at.h5" >/dev/null 2>&1
expect_ok "contrast with --attr" "$SUBSCOPE" discover --stats "$TMP/st.h5" --attr "$TMP/at.h5" --sites "$S" --method contrast --contrast colours:days --mode scale --factor 0.25 --out "$TMP/ca.h5"
grep -q '"mode": "scale", "factor": 0.25}' "$TMP/ca.masks.jsonl" && pass "--mode scale --factor in the masks" || fail "mask mode" "$(head -c 300 "$TMP/ca.masks.jsonl")"
expect_ok "cluster with --attr" "$SUBSCOPE" discover --stats "$TMP/st.h5" --attr "$TMP/at.h5" --sites 'blocks.1.*' --method cluster --out "$TMP/cla.h5"
expect_ok "ablate --masks <scale masks>" "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/ca.masks.jsonl" --out "$TMP/a3.h5"
# Attributions of another model (models/topics-all: the same widths, another config) weighed the
# units without a word; the same run on the stats' own model says nothing.
"$SUBSCOPE" attribute --model models/topics-all --input $P --sites "$S" --reduce positions --out "$TMP/at-other.h5" >/dev/null 2>&1
"$SUBSCOPE" discover --stats "$TMP/st.h5" --attr "$TMP/at-other.h5" --sites "$S" --method contrast --contrast colours:days \
    --out "$TMP/co.h5" >/dev/null 2>"$TMP/co.err"
grep -q "warning: $TMP/at-other.h5 was computed on models/topics-all and $TMP/st.h5 on $M, whose configs differ" "$TMP/co.err" &&
    pass "--attr of another model is warned of" || fail "--attr of another model warned of" "$(cat "$TMP/co.err")"
"$SUBSCOPE" discover --stats "$TMP/st.h5" --attr "$TMP/at.h5" --sites "$S" --method contrast --contrast colours:days \
    --out "$TMP/co2.h5" >/dev/null 2>"$TMP/co.err"
! grep -q warning "$TMP/co.err" && pass "... and --attr of the same model is not" || fail "--attr of the same model warned of" "$(cat "$TMP/co.err")"

# The sub-models hold what FORMAT.md defines, recomputed from the files they came from: every
# unit's mean and std (the stats' mean and cov diagonal) and summed |attribution| (of the
# per-prompt sums this --reduce positions file holds); cluster: cohesion (mean pairwise corr),
# within_corr, attr_share (of the site's units with variance), score = cohesion x attr_share,
# at most 10 units, cohesion above --min-corr; contrast: Cohen's d with the pooled std, the
# round(0.02 d) = 10 best units by |d| x attr / the site's mean attr, score their mean score;
# both: the masks file in score order with the same units, rank 1.. by score.
if python3 -c "import h5py, numpy" 2>/dev/null; then
    r=$(python3 - "$TMP" <<'PY' 2>&1
import json, sys, h5py, numpy as np
T = sys.argv[1]; st = h5py.File(T + "/st.h5"); at = h5py.File(T + "/at.h5"); worst = 0.0
def A(s): return np.nansum(np.abs(at["attr/" + s][:].astype(np.float64)).reshape(-1, st[f"stats/{s}/mean"].shape[0]), 0)
for out, masks in (("cla.h5", "cla.masks.jsonl"), ("ca.h5", "ca.masks.jsonl")):
    d = h5py.File(f"{T}/{out}"); ms = [json.loads(l) for l in open(f"{T}/{masks}")]
    names = d.attrs["submodels"].decode().split(","); assert [m["name"] for m in ms] == names, out
    prev = np.inf
    for i, (nm, m) in enumerate(zip(names, ms)):
        g = d["submodels/" + nm]; a = g.attrs
        assert a["rank"] == i + 1 and a["score"] <= prev, (nm, "rank"); prev = a["score"]
        parts = m.get("sites") or [m]; assert a["n_units"] == sum(len(p["units"]) for p in parts), nm
        for p in parts:
            s = p["site"]; u = g[s + "/units"][:]; assert list(u) == p["units"], (nm, "units")
            cov = st[f"stats/{s}/cov"][:]; at_s = A(s)
            worst = max(worst, np.abs(g[s + "/mean"][:] - st[f"stats/{s}/mean"][:][u]).max(),
                        np.abs(g[s + "/std"][:] - np.sqrt(np.diag(cov))[u]).max(), np.abs(g[s + "/attr"][:] / at_s[u] - 1).max())
            if a["method"] == b"cluster":
                C = np.nan_to_num(st[f"stats/{s}/corr"][:]); sub = C[np.ix_(u, u)]; k = len(u)
                coh = (sub.sum() - k) / (k * (k - 1)); share = at_s[u].sum() / at_s[np.diag(cov) > 0].sum()
                assert 2 <= k <= 10 and coh > d.attrs["min_corr"], (nm, k, coh)
                worst = max(worst, abs(coh - a["cohesion"]), np.abs((sub.sum(1) - 1) / (k - 1) - g[s + "/within_corr"][:]).max(),
                            abs(share / a["attr_share"] - 1), abs(coh * share / a["score"] - 1))
            else:
                la, lb = a["label_a"].decode(), a["label_b"].decode()
                sg = lambda l, k: st[f"groups/{l}/stats/{s}/{k}"][()]
                na, nb = sg(la, "count"), sg(lb, "count"); va, vb = np.diag(sg(la, "cov")), np.diag(sg(lb, "cov"))
                eff = (sg(la, "mean") - sg(lb, "mean")) / np.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
                sc = np.abs(eff) * at_s / at_s.mean(); worst = max(worst, np.abs(g[s + "/effect_size"][:] / eff[u] - 1).max())
                if "@" in nm:
                    assert list(u) == sorted(np.argsort(-np.nan_to_num(sc, nan=-1), kind="stable")[:10]), (nm, "top units")
                    worst = max(worst, abs(sc[u].mean() / a["score"] - 1))
print("ok %.2g" % worst if worst < 1e-9 else "bad %.3g" % worst)
PY
)
    [ "${r%% *}" = ok ] && pass "cluster and contrast sub-models with --attr hold the documented values (max diff ${r#* })" ||
        fail "discover's values against their definitions" "$(printf '%s' "$r" | tail -n 3)"
else pass "discover's values not recomputed: needs python3 with h5py"; fi

# Refusals: clear messages and no output files.
X="$TMP/x.h5"
expect_fail "missing group label" "label 'cars' is not in" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --contrast animals:cars --out "$X"
expect_fail "no per-label statistics" "no per-label statistics (collect with --group-by label)" "$SUBSCOPE" discover --stats "$TMP/flat.h5" --sites "$S" --method contrast --contrast animals:colours --out "$X"
expect_fail "site not in the stats file" "'blocks.0.hook_resid_pre' matches no site" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites blocks.0.hook_resid_pre --method cluster --out "$X"
expect_fail "fraction 0" "--fraction 0 is outside (0, 1]" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --fraction 0 --out "$X"
expect_fail "fraction 2" "--fraction 2 is outside (0, 1]" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --fraction 2 --out "$X"
expect_fail "--factor without --mode scale" "--factor is for --mode scale, not zero" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --factor 0.5 --out "$X"
expect_fail "--sigma with --mode mean" "--sigma is for --mode noise or negnoise, not mean" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --mode mean --sigma 1 --out "$X"
expect_fail "fraction not a number" "--fraction must be a number" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --fraction abc --out "$X"
expect_fail "unknown method" "want cluster or contrast" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method kmeans --out "$X"
expect_fail "--top with contrast (cluster's option)" "--top goes with --method cluster" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --contrast animals:colours --top 3 --out "$X"
expect_fail "--min-corr with contrast (cluster's option)" "--min-corr goes with --method cluster" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --contrast animals:colours --min-corr 0.5 --out "$X"
# A label with ':' cannot be named in --contrast A:B: the error, --help and FORMAT.md say so (they
# named only '/' and ',').
expect_fail "contrast: a label with ':'" "want LABEL_A:LABEL_B (one ':'; a label with ':' cannot be contrasted)" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --contrast 'a:b:c' --out "$X"
"$SUBSCOPE" discover --help | grep -qF "neither may contain ':', '/' or ','" &&
    tr '\n' ' ' <"$(dirname "$0")/../../docs/FORMAT.md" | grep -qF "labels may not contain \`:\` (it separates the two), \`/\` or \`,\`" &&
    pass "--help and FORMAT.md: --contrast's labels cannot contain ':'" || fail "':' in --contrast's labels undocumented"
expect_fail "contrast without --contrast" "needs --contrast" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method contrast --out "$X"
expect_fail "attr file without the site" "no /attr/blocks.0.hook_resid_post" "$SUBSCOPE" discover --stats "$TMP/flat.h5" --attr "$TMP/at.h5" --sites 'blocks.0.hook_resid_post' --method cluster --out "$X"
# An --attr whose /attr dataset declares far more than it stores (never written) is refused, naming
# file and dataset; before, its fill values weighed the units without a word.
"${TOOLBIN}h5fixture" "$TMP/at-unwritten.h5" attrunwritten
expect_fail "--attr of an /attr dataset never written" \
    "$TMP/at-unwritten.h5: /attr/blocks.0.mlp.hook_post declares 409600000 bytes but stores" \
    "$SUBSCOPE" discover --stats "$TMP/flat.h5" --attr "$TMP/at-unwritten.h5" --sites blocks.0.mlp.hook_post --method cluster --out "$X"
[ ! -e "$X" ] && pass "... and nothing written" || fail "discover wrote $X after refusing --attr"
# Neither method draws random numbers: --seed did nothing but write an attribute, and is no option.
expect_fail "--seed is not an option (nothing in discover is random)" "unknown option '--seed'" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --seed 5 --out "$X"
! h5dump -a /seed "$TMP/cl.h5" >/dev/null 2>&1 && pass "no seed attribute written" || fail "discover wrote a seed attribute"
expect_fail "stats file missing" "nope.h5" "$SUBSCOPE" discover --stats "$TMP/nope.h5" --sites "$S" --method cluster --out "$X"
# A --masks-out that is a folder is refused before anything is written: the masks are renamed
# last, so the failed rename came after --out was in place, and the run removed it, losing the
# previous run's file there.
cp "$TMP/cl.h5" "$TMP/prev.h5" && mkdir "$TMP/mdir"
expect_fail "--masks-out naming a folder" "mdir is a folder; give a file name" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --out "$TMP/prev.h5" --masks-out "$TMP/mdir"
cmp -s "$TMP/cl.h5" "$TMP/prev.h5" && [ -z "$(ls -A "$TMP/mdir")" ] && ! ls "$TMP"/prev.h5.tmp.* "$TMP"/mdir.tmp.* >/dev/null 2>&1 &&
    pass "... and the previous --out is left as it was" || fail "... and the previous --out is left as it was" "$(ls "$TMP")"
# --out and --masks-out naming one file however spelt (./x, a full path, a link) are refused
# before the run: spelt differently, both were written under one temporary and the run failed
# at its end.
case $SUBSCOPE in /*) ASUB=$SUBSCOPE ;; *) ASUB=$PWD/$SUBSCOPE ;; esac
expect_fail "--masks-out ./xo.h5 beside --out xo.h5" "--out xo.h5 and --masks-out ./xo.h5 are one file: give two names" \
    sh -c 'cd "$1" && "$2" discover --stats st.h5 --sites "$3" --method cluster --out xo.h5 --masks-out ./xo.h5' \
    sh "$TMP" "$ASUB" "$S"
expect_fail "--masks-out a link to --out" "--out $TMP/xl.h5 and --masks-out $TMP/xlink.jsonl are one file" \
    sh -c 'ln -s xl.h5 "$1/xlink.jsonl" && "$2" discover --stats "$1/st.h5" --sites "$3" --method cluster --out "$1/xl.h5" --masks-out "$1/xlink.jsonl"' \
    sh "$TMP" "$SUBSCOPE" "$S"
rm -f "$TMP/xlink.jsonl"
# ... named: neither existing, the message said only "--out / --masks-out would overwrite an input
# or each other"; an output that is a --stats not made yet likewise.
expect_fail "--out and --masks-out one new file: both named" "--out $TMP/nx.h5 and --masks-out $TMP/nx.h5 are one file: give two names" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --out "$TMP/nx.h5" --masks-out "$TMP/nx.h5"
expect_fail "--masks-out naming a missing --stats: both named" "--masks-out $TMP/ns.h5 is the same file as --stats $TMP/ns.h5: it would be overwritten" \
    "$SUBSCOPE" discover --stats "$TMP/ns.h5" --sites "$S" --method cluster --out "$TMP/nx.h5" --masks-out "$TMP/ns.h5"
[ ! -e "$TMP/nx.h5" ] && [ ! -e "$TMP/ns.h5" ] && pass "... nothing written" || fail "a refused discover wrote" "$(ls "$TMP")"
# The masks file is synced before its rename, as the HDF5 output is: otherwise a crash soon after
# could leave an empty file under its name (strace -y shows the file each fsync is for).
if command -v strace >/dev/null && strace -o /dev/null true 2>/dev/null; then
    strace -f -y -e trace=fsync -o "$TMP/sync.trace" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster \
        --out "$TMP/sy.h5" >/dev/null 2>&1
    grep -q 'fsync([0-9]*<[^>]*sy\.masks\.jsonl\.tmp\.[^>]*>) *= 0' "$TMP/sync.trace" && pass "the masks file is synced before its rename" ||
        fail "the masks file is synced before its rename" "$(grep fsync "$TMP/sync.trace")"
fi
ls "$TMP"/x* >/dev/null 2>&1 && fail "refusals leave no output" "$(ls "$TMP"/x*)" || pass "refusals leave no output"
# Progress, site by site, on a terminal only (cluster at d 16384 takes 45 s a site); `script`
# gives the run a terminal; where stderr is a file, no progress.
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' discover --stats '$TMP/st.h5' --sites '$S' --method cluster --top 3 --out '$TMP/tty.h5'" \
        /dev/null 2>&1 | tr '\r' '\n')
    printf '%s\n' "$out" | grep -q "^  0/4 sites" && printf '%s\n' "$out" | grep -q "^  4/4 sites" &&
        pass "on a terminal: progress of the 4 sites" || fail "discover's progress on a terminal" "$(printf '%s' "$out" | tail -n 4)"
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites "$S" --method cluster --top 3 --out "$TMP/notty.h5" >/dev/null 2>"$TMP/err"
    [ -s "$TMP/notty.h5" ] && ! grep -q "/4 sites" "$TMP/err" && pass "stderr a file: no progress lines" || fail "discover: stderr a file: no progress lines" "$(cat "$TMP/err")"
else
    pass "progress on a terminal not checked: no 'script' command here"
fi

# The table pads sub-model names by display columns: a name holds the labels ("動物_vs_colours"),
# which need not be ASCII; padded by bytes (%-44s) its row ran four columns short.
sed 's/"label": "animals"/"label": "動物"/' "$P" >"$TMP/cjk.jsonl"
"$SUBSCOPE" collect --model $M --input "$TMP/cjk.jsonl" --sites "$S" --stats mean,cov --group-by label --out "$TMP/cjkst.h5" 2>/dev/null
"$SUBSCOPE" discover --stats "$TMP/cjkst.h5" --sites "$S" --method contrast --contrast 動物:colours --out "$TMP/cjkct.h5" \
    >"$TMP/cjkct.txt" 2>"$TMP/err"
# 動物_vs_colours: 15 columns (19 bytes), padded to 44
row=$(grep '動物_vs_colours ' "$TMP/cjkct.txt" | grep '4 sites')
pad=$(printf '%44s' '' | cut -c16-)
case "$row" in *" 動物_vs_colours${pad} 4 sites "*) pass "discover's table pads a CJK sub-model name by columns" ;;
*) fail "discover's table with a CJK label" "$(cat "$TMP/cjkct.txt" "$TMP/err" | tail -n 4)" ;; esac
finish
