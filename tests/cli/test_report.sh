#!/usr/bin/env bash
# ablate --controls (control masks and the per-mask attributes) and report (the HTML page,
# its verdicts, determinism, and refusals of bad inputs).
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
M=models/tiny-gpt2
P=$D/ablate/prompts.jsonl

# A sweep: two sub-models (one site, 8 MLP units; two sites), each at several intensities
# and modes, plus a whole-site mask, which cannot have controls.
U='"units": [0, 5, 9, 100, 300, 301, 302, 303]'
{
    for f in 0.75 0.5 0; do printf '{"name": "mlpA_scale%s", "site": "blocks.1.mlp.hook_post", %s, "mode": "scale", "factor": %s, "seed": 1}\n' "$f" "$U" "$f"; done
    for s in 0.5 2; do printf '{"name": "mlpA_noise%s", "site": "blocks.1.mlp.hook_post", %s, "mode": "noise", "sigma": %s, "seed": 1}\n' "$s" "$U" "$s"; done
    printf '{"name": "mlpA_zero", "site": "blocks.1.mlp.hook_post", %s, "mode": "zero", "seed": 1}\n' "$U"
    # the same units listed in another order, under an unrelated name: still sub-model A
    printf '{"name": "other_name", "site": "blocks.1.mlp.hook_post", "units": [303, 302, 301, 300, 100, 9, 5, 0], "mode": "mean", "seed": 1}\n'
    for f in 0.5 0; do printf '{"name": "pair_scale%s", "sites": [{"site": "blocks.0.mlp.hook_post", "units": [7, 8, 70]}, {"site": "blocks.2.hook_resid_pre", "units": [1, 2, 3, 4]}], "mode": "scale", "factor": %s, "seed": 4}\n' "$f" "$f"; done
    printf '{"name": "whole_site", "site": "blocks.0.hook_resid_pre", "mode": "zero"}\n'
} >"$TMP/sweep.jsonl"

"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/sweep.jsonl" --controls 3 --out "$TMP/sw.h5" >"$TMP/abl.txt" 2>&1 ||
    fail "ablate --controls runs" "$(tail -3 "$TMP/abl.txt")"
grep -q "note: mask 'whole_site' covers all units of blocks.0.hook_resid_pre: it has no controls" "$TMP/abl.txt" &&
    pass "a whole-site mask gets no controls, with a note" || fail "whole-site note" "$(head -3 "$TMP/abl.txt")"
n=$(h5ls "$TMP/sw.h5/ablate" 2>/dev/null | wc -l)
[ "$n" = $((9 * 4 + 1)) ] && pass "3 controls per mask: 37 masks" || fail "3 controls per mask" "$n groups"
attr() { h5dump -a "$1/$2" "$TMP/sw.h5" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | sed 's/^ *([0-9,]*): *//' | tr -d '\n '; }
[ "$(attr '/ablate/pair_scale0.5~ctrl2' control_of)" = '"pair_scale0.5"' ] &&
    [ "$(attr '/ablate/pair_scale0.5~ctrl2' n_units)" = "3,4" ] && [ "$(attr '/ablate/pair_scale0.5' n_units)" = "3,4" ] &&
    [ "$(attr '/ablate/pair_scale0.5~ctrl2' sites)" = '"blocks.0.mlp.hook_post,blocks.2.hook_resid_pre"' ] &&
    [ "$(attr '/ablate/pair_scale0.5~ctrl2' factor)" = "0.5" ] && [ "$(attr '/ablate/pair_scale0.5' n_controls)" = "3" ] &&
    pass "controls: control_of, the same sites, units per site and factor" ||
    fail "control attributes" "$(attr '/ablate/pair_scale0.5~ctrl2' control_of) $(attr '/ablate/pair_scale0.5~ctrl2' n_units)"
[ "$(attr /ablate/mlpA_zero units_sha256)" = "$(attr /ablate/other_name units_sha256)" ] &&
    [ "$(attr /ablate/mlpA_zero units_sha256)" != "$(attr '/ablate/mlpA_zero~ctrl0' units_sha256)" ] &&
    [ "$(attr /ablate/mlpA_noise2 sigma)" = "2" ] && [ "$(attr /ablate/mlpA_noise2 relative)" = "0" ] &&
    [ "$(attr /ablate/mlpA_zero mode)" = '"zero"' ] && [ "$(attr /ablate/whole_site n_units)" = "128" ] &&
    pass "mask attributes: units identity (order-free), sigma, relative, mode, units of a whole site" ||
    fail "mask attributes" "$(attr /ablate/mlpA_zero units_sha256) $(attr /ablate/other_name units_sha256)"
# Masks of one sub-model sharing a seed get the same control units at every setting, so
# their controls' curves are the same random sets; the draw is deterministic across runs.
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/sweep.jsonl" --controls 3 --out "$TMP/sw2.h5" >/dev/null 2>&1
[ "$(attr '/ablate/mlpA_scale0.5~ctrl1' units_sha256)" = "$(attr '/ablate/mlpA_zero~ctrl1' units_sha256)" ] &&
    [ "$(attr '/ablate/mlpA_zero~ctrl1' units_sha256)" != "$(attr '/ablate/mlpA_zero~ctrl2' units_sha256)" ] &&
    [ "$(h5dump -a '/ablate/mlpA_zero~ctrl1/units_sha256' "$TMP/sw2.h5" | grep -o '"[0-9a-f]*"')" = "$(attr '/ablate/mlpA_zero~ctrl1' units_sha256)" ] &&
    pass "control draw: seeded by the mask's seed and k, the same across runs" || fail "control draw determinism"

# The report.
"$SUBSCOPE" report --in "$TMP/sw.h5" --out "$TMP/r.html" --title "tiny sweep" >"$TMP/sum.txt" 2>"$TMP/err" ||
    fail "report runs" "$(cat "$TMP/err")"
H="$TMP/r.html"
[ -s "$H" ] && head -1 "$H" | grep -q '<!DOCTYPE html>' && tail -1 "$H" | grep -q '</html>' && pass "HTML page written" || fail "HTML page written"
o=$(grep -o '<svg' "$H" | wc -l); c=$(grep -o '</svg>' "$H" | wc -l)
# sub-model A: scale, noise (absolute), zero, mean; the pair: scale; whole_site: zero -> 6 plots
[ "$o" = 6 ] && [ "$c" = 6 ] && pass "6 plots, <svg> balanced" || fail "plots" "$o <svg>, $c </svg>"
for tag in html head body table; do
    [ "$(grep -o "<$tag[ >]" "$H" | wc -l)" = "$(grep -o "</$tag>" "$H" | wc -l)" ] || fail "balanced <$tag>"
done
grep -qi 'http' "$H" && fail "no http references" "$(grep -oi '.\{20\}http.\{20\}' "$H" | head -2)" || pass "no http references"
grep -qi '<script\|<link\|@import\|url(' "$H" && fail "self-contained" || pass "self-contained: no script, link, import or url()"
ok=1; for l in animals colours days; do grep -q ">$l<" "$H" || ok=0; done
[ $ok = 1 ] && pass "every label on the page" || fail "every label on the page"
[ "$(grep -c '^S[0-9] ' "$TMP/sum.txt")" = 3 ] && grep -q '^S1 mlpA (blocks.1.mlp.hook_post, 8 units): target ' "$TMP/sum.txt" &&
    grep -q '^S2 pair_scale (blocks.0.mlp.hook_post,blocks.2.hook_resid_pre, 7 units)' "$TMP/sum.txt" &&
    grep -q '^S3 whole_site .*controls none' "$TMP/sum.txt" &&
    pass "3 sub-models by units, not names (other_name joins mlpA); summary on stdout" || fail "sub-models" "$(cat "$TMP/sum.txt")"
ok=1; for s in 'S1 mlpA' 'S2 pair_scale' 'S3 whole_site' other_name; do grep -q "$s" "$H" || ok=0; done
[ $ok = 1 ] && pass "every sub-model and mask on the page" || fail "every sub-model on the page"
grep -q 'controls (' "$H" && grep -q 'intensity = 1 − factor' "$H" && grep -q 'σ (absolute)' "$H" &&
    grep -q '&epsilon; = max(0.001, 0.01' "$H" && grep -q 'index &ge; 3' "$H" &&
    pass "axes, controls' curve and the index's definition on the page" || fail "page contents"
grep -q 'ablate --model models/tiny-gpt2' "$H" && grep -q "$P" "$H" && pass "provenance: command line and input" || fail "provenance"
# verdict lines are one of the defined ones
bad=$(grep '^S[0-9]' "$TMP/sum.txt" | grep -v -e '-> topic-specific to ' -e '-> no topic-specific effect' -e '-> untested: ')
[ -z "$bad" ] && pass "every sub-model has a verdict" || fail "verdicts" "$bad"
# (with the temporary a killed report left beside r2.html, which this run removes: its writer is gone)
hn=$(hostname | sed 's/[^A-Za-z0-9-]/_/g' | cut -c1-64)
true & dead=$!; wait $dead
touch "$TMP/r2.html.tmp.$hn.$dead"
"$SUBSCOPE" report "$TMP/sw.h5" --out "$TMP/r2.html" --title "tiny sweep" >/dev/null 2>&1
cmp -s "$H" "$TMP/r2.html" && pass "deterministic, and inputs as bare arguments equal --in: the same bytes" || fail "deterministic / bare arguments"
[ ! -e "$TMP/r2.html.tmp.$hn.$dead" ] && pass "a killed report's REPORT.html.tmp.<host>.<pid> is removed" || fail "stale report temporary removed"

# Several files: a sweep split over two runs is grouped into the same sub-models.
head -3 "$TMP/sweep.jsonl" >"$TMP/s1.jsonl"; tail -n +4 "$TMP/sweep.jsonl" >"$TMP/s2.jsonl"
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/s1.jsonl" --controls 2 --out "$TMP/p1.h5" >/dev/null 2>&1
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/s2.jsonl" --controls 2 --out "$TMP/p2.h5" >/dev/null 2>&1
"$SUBSCOPE" report --in "$TMP/p1.h5" --in "$TMP/p2.h5" --out "$TMP/two.html" --metric acc >"$TMP/two.txt" 2>&1
[ "$(grep -c '^S[0-9] ' "$TMP/two.txt")" = 3 ] && grep -q 'index' "$TMP/two.txt" && grep -q 'p2.h5' "$TMP/two.html" &&
    pass "two files, --metric acc: the same 3 sub-models" || fail "two files" "$(cat "$TMP/two.txt")"

# The model's path spelled two ways (a shell's completion adds the '/') is one model: the same
# units are one sub-model, not two.
"$SUBSCOPE" ablate --model $M/ --input $P --mask 'blocks.1.mlp.hook_post[3]' --out "$TMP/sp1.h5" >/dev/null 2>&1
"$SUBSCOPE" ablate --model ./$M --input $P --mask 'blocks.1.mlp.hook_post[3]' --mask 'blocks.1.mlp.hook_post[4]' --out "$TMP/sp2.h5" >/dev/null 2>&1
"$SUBSCOPE" report "$TMP/sp1.h5" "$TMP/sp2.h5" --out "$TMP/sp.html" >"$TMP/sp.txt" 2>&1
[ "$(grep -c '^S[0-9] ' "$TMP/sp.txt")" = 2 ] && pass "models/x/ and ./models/x: one model, 2 sub-models" || fail "model path spellings" "$(cat "$TMP/sp.txt")"

# Two sub-models under one name (their numbers were right, but the page and stdout named both
# alike): the same mask run on two models says each one's model; other units under the same
# name in two files of one model, each one's file.
"$SUBSCOPE" ablate --model models/topics-all --input $P --mask 'blocks.1.mlp.hook_post[3]' --out "$TMP/sp3.h5" >/dev/null 2>&1
printf '{"name": "grp", "site": "blocks.1.mlp.hook_post", "units": [%s], "mode": "zero"}\n' 1 >"$TMP/g1.jsonl"
printf '{"name": "grp", "site": "blocks.1.mlp.hook_post", "units": [%s], "mode": "zero"}\n' 2 >"$TMP/g2.jsonl"
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/g1.jsonl" --out "$TMP/g1.h5" >/dev/null 2>&1
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/g2.jsonl" --out "$TMP/g2.h5" >/dev/null 2>&1
"$SUBSCOPE" report "$TMP/sp1.h5" "$TMP/sp3.h5" "$TMP/g1.h5" "$TMP/g2.h5" --out "$TMP/sp3.html" >"$TMP/sp3.txt" 2>&1
names=$(sed -n 's/^S[0-9]* \(.*\) (blocks\.1\.mlp\.hook_post, 1 units).*/\1/p' "$TMP/sp3.txt" | tr '\n' ';')
h2=$(grep -o '<h2>S[0-9]* [^<]*' "$TMP/sp3.html" | sed 's/<h2>S[0-9]* //' | tr '\n' ';')
[ "$names" = "blocks.1.mlp.hook_post[3] on models/tiny-gpt2;blocks.1.mlp.hook_post[3] on models/topics-all;grp in file 3;grp in file 4;" ] &&
    [ "$h2" = "$names" ] && pass "one name, two sub-models: told apart by model, else by file, on the page and stdout" ||
    fail "sub-models sharing a name" "stdout: $names" "page: $h2"

# A long topic name is cut for the controls' legend between UTF-8 characters: the page stays UTF-8.
L=$(printf 'a%.0s' $(seq 39))é
printf '{"text": "The cat says", "label": "b"}\n{"text": "The dog says", "label": "b"}\n{"text": "Grass is", "label": "%s"}\n{"text": "Snow is", "label": "%s"}\n' "$L" "$L" >"$TMP/long.jsonl"
"$SUBSCOPE" ablate --model $M --input "$TMP/long.jsonl" --mask 'blocks.0.mlp.hook_post[0-50]' --controls 2 --out "$TMP/long.h5" >/dev/null 2>&1
"$SUBSCOPE" report "$TMP/long.h5" --out "$TMP/long.html" >"$TMP/long.txt" 2>&1
grep -q "target $L" "$TMP/long.txt" && iconv -f UTF-8 -t UTF-8 "$TMP/long.html" >/dev/null 2>&1 &&
    pass "a long multi-byte topic name: the page is valid UTF-8" || fail "UTF-8 of a cut topic name" "$(head -1 "$TMP/long.txt")"

# No labels: one topic "all", no specificity verdict.
sed 's/, "label": "[a-z]*"//' $P >"$TMP/nolabel.jsonl"
"$SUBSCOPE" ablate --model $M --input "$TMP/nolabel.jsonl" --masks "$TMP/s1.jsonl" --controls 2 --out "$TMP/nl.h5" >/dev/null 2>&1
"$SUBSCOPE" report --in "$TMP/nl.h5" --out "$TMP/nl.html" >"$TMP/nl.txt" 2>&1
grep -q 'no topic-specific effect (one topic' "$TMP/nl.txt" && grep -q '>all<' "$TMP/nl.html" &&
    grep -q 'no topic-specific sub-model among 1' "$TMP/nl.txt" && grep -q 'controls 2, no index with one topic' "$TMP/nl.txt" &&
    pass "no labels: one topic 'all', no topic-specific sub-model (its 2 controls said, not 'none')" || fail "no labels" "$(cat "$TMP/nl.txt")"

# kl alone: the clean run has no kl, so the file has no /clean group; report reads it by kl.
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/s1.jsonl" --metrics kl --controls 2 --out "$TMP/kl.h5" >/dev/null 2>&1
"$SUBSCOPE" report "$TMP/kl.h5" --metric kl --out "$TMP/kl.html" >"$TMP/kl.txt" 2>&1 && [ "$(grep -c '^S[0-9] ' "$TMP/kl.txt")" = 1 ] &&
    pass "ablate --metrics kl alone: report --metric kl reads it" || fail "report of a kl-only run" "$(cat "$TMP/kl.txt")"
expect_fail "a kl-only run has no loss" "no metric 'loss'" "$SUBSCOPE" report "$TMP/kl.h5" --out "$TMP/x.html"

# Refusals: nothing written, no temporary left.
rm -f "$TMP"/x.html*
expect_fail "missing file" "nope.h5" "$SUBSCOPE" report --in "$TMP/nope.h5" --out "$TMP/x.html"
expect_fail "not HDF5" "prompts.jsonl" "$SUBSCOPE" report --in $P --out "$TMP/x.html"
expect_fail "HDF5 but not an ablate output" "is not a \`subscope ablate\` output" "$SUBSCOPE" report --in $D/golden/collect-tiny-gpt2.h5 --out "$TMP/x.html"
expect_fail "ablate output without mask attributes" "older than \`report\`" "$SUBSCOPE" report --in $D/golden/ablate-tiny-gpt2.h5 --out "$TMP/x.html"
# A label's clean value is one number: a file declaring 2^31 never-written values there is refused
# by its size before anything is read (it was allocated, 16 GiB, and filled first).
if python3 -c "import h5py" 2>/dev/null; then
    cp "$TMP/sw.h5" "$TMP/huge.h5" && python3 -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r+")
g = f["by_label"][sorted(f["by_label"])[0]]["clean"]
del g["loss"]
g.create_dataset("loss", shape=(1 << 31,), dtype="f8", chunks=(1 << 16,))' "$TMP/huge.h5"
    expect_fail "a label's clean loss declaring 2^31 values is refused by its size" \
        "/clean/loss holds 2147483648 values, not the 1 expected" "$SUBSCOPE" report --in "$TMP/huge.h5" --out "$TMP/huge.html"
    [ ! -e "$TMP/huge.html" ] || fail "no page after a refused clean value"
    # The per-prompt values, the clean ones and a mask's: written whole, n_prompts of them, both
    # checked before reading (each was allocated whole first: 16 GiB, "out of memory" under capped).
    np=$(h5dump -a /n_prompts "$TMP/sw.h5" | awk '/\(0\)/{print $2}')
    for d in clean/loss "ablate/$(h5ls "$TMP/sw.h5/ablate" | awk 'NR == 1 {print $1}')/loss"; do
        cp "$TMP/sw.h5" "$TMP/huge.h5" && python3 -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r+")
del f[sys.argv[2]]
f.create_dataset(sys.argv[2], shape=(1 << 31,), dtype="f4", chunks=(1 << 16,))' "$TMP/huge.h5" "$d"
        expect_fail "/$d declaring 2^31 values never written is refused by its size" \
            "/$d declares 8589934592 bytes but stores 0: most of it was never written" \
            capped "$SUBSCOPE" report --in "$TMP/huge.h5" --out "$TMP/huge.html"
        cp "$TMP/sw.h5" "$TMP/huge.h5" && python3 -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r+")
v = f[sys.argv[2]][:]
del f[sys.argv[2]]
f[sys.argv[2]] = v[:-1]' "$TMP/huge.h5" "$d"
        expect_fail "/$d with a value fewer than n_prompts is refused" "/$d holds $((np - 1)) values, not the $np expected" \
            "$SUBSCOPE" report --in "$TMP/huge.h5" --out "$TMP/huge.html"
    done
else pass "huge declared clean value not tested: needs python3 with h5py"; fi
expect_fail "metric not in the file" "no metric 'keyword'" "$SUBSCOPE" report --in "$TMP/sw.h5" --out "$TMP/x.html" --metric keyword
expect_fail "unknown metric" "unknown" "$SUBSCOPE" report --in "$TMP/sw.h5" --out "$TMP/x.html" --metric f1
expect_fail "labelled and unlabelled inputs mixed" "report them separately" "$SUBSCOPE" report --in "$TMP/sw.h5" --in "$TMP/nl.h5" --out "$TMP/x.html"
expect_fail "a good file then a missing one" "nope.h5" "$SUBSCOPE" report --in "$TMP/sw.h5" --in "$TMP/nope.h5" --out "$TMP/x.html"
expect_fail "no input" "no input" "$SUBSCOPE" report --out "$TMP/x.html"
expect_fail "unwritable output" "cannot write in $TMP/no/such/dir: No such file or directory" "$SUBSCOPE" report --in "$TMP/sw.h5" --out "$TMP/no/such/dir/x.html"
[ -z "$(ls "$TMP" | grep '^x\.html')" ] && pass "failed reports write no file and leave no temporary" || fail "no file on failure" "$(ls "$TMP")"

# A file damaged after it was written: its metadata carry checksums (the HDF5 1.10 format), so
# a changed byte there is refused, naming the file, rather than parsed. One byte at a time,
# every 61st of the first 6 KB (superblock, root group, the first objects' headers), then
# every 8191st to the end (B-tree nodes, heaps, data): each run ends with exit 0 (a byte
# nothing reads, or a value) or 1, never a crash, and some are checksum errors. Under
# AddressSanitizer leaks are not counted here: libhdf5 1.10 keeps ~400 bytes of a failed open
# until it exits (its own allocation, found by LeakSanitizer); our code's leaks are what every
# other test checks.
crashed="" refused=0 runs=0
size=$(stat -c %s "$TMP/sw.h5")
for off in $(seq 0 61 6144) $(seq 6205 8191 $((size - 1))); do
    cp "$TMP/sw.h5" "$TMP/dmg.h5"
    printf '\x5a' | dd of="$TMP/dmg.h5" bs=1 seek=$off conv=notrunc 2>/dev/null
    for c in "report --in $TMP/dmg.h5 --out $TMP/dmg.html" "show --file $TMP/dmg.h5"; do
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$SUBSCOPE" $c >/dev/null 2>"$TMP/dmg.err"
        rc=$? runs=$((runs + 1))
        { [ $rc -gt 1 ] || grep -q 'Sanitizer\|runtime error' "$TMP/dmg.err"; } && crashed="$crashed $off:${c%% *}:$rc"
        [ $rc -eq 1 ] && grep -q "dmg.h5.*checksum" "$TMP/dmg.err" && refused=$((refused + 1))
    done
done
[ -z "$crashed" ] && [ $refused -gt 0 ] && pass "a damaged file is refused by its checksums ($refused of $runs runs), never a crash" ||
    fail "damaged files" "crashed:${crashed:- none}, checksum refusals: $refused"
expect_fail "--controls too large" "at most 512 per run" "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/sweep.jsonl" --controls 100 --out "$TMP/x.h5"
# A topic named by a 512-byte label (the longest ablate takes) is read as any other: its
# values' paths were built in 512 bytes, cut, and the topic left without values ("one topic").
l512=$(printf 'L%.0s' $(seq 1 512))
printf '{"text": "The cat says", "label": "%s"}\n{"text": "The dog runs", "label": "b"}\n' "$l512" >"$TMP/l512.jsonl"
"$SUBSCOPE" ablate --model $M --input "$TMP/l512.jsonl" --mask 'blocks.1.mlp.hook_post[1-200]' --controls 2 --out "$TMP/l512.h5" >/dev/null 2>&1
out=$("$SUBSCOPE" report "$TMP/l512.h5" --out "$TMP/l512.html" 2>&1)
printf '%s' "$out" | grep -q "controls .* (n=2)" && ! printf '%s' "$out" | grep -q "one topic" &&
    pass "report: a 512-byte topic name has its values" || fail "report with a 512-byte label" "$(printf '%s' "$out" | head -n 2 | cut -c1-200)"
# --help states all three conditions of the verdict (FORMAT.md, README), the 1% floor included.
h=$("$SUBSCOPE" report --help 2>&1)
printf '%s' "$h" | grep -q "index >= 3" && printf '%s' "$h" | grep -q "mean + 2 sd" && printf '%s' "$h" | grep -q "at least 1% of its clean value" &&
    pass "report --help: the verdict's three conditions" || fail "report --help lacks a condition of the verdict"
finish
