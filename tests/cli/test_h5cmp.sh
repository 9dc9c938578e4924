#!/usr/bin/env bash
# h5cmp: identical files pass, perturbed ones fail, NaN padding is honoured,
# tolerances and --only work, usage/I/O errors exit 2 naming the file.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/lib.sh
H5CMP=${TOOLBIN}h5cmp
FIX=${TOOLBIN}h5fixture
REF=tests/data/h5/h5py_base.h5

# expect_rc NAME RC SUBSTRING CMD...: exit status RC and SUBSTRING in stdout+stderr
expect_rc() {
    local n=$1 want=$2 sub=$3; shift 3; local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq "$want" ] && printf '%s' "$out" | grep -qF -- "$sub"; then pass "$n"
    else fail "$n" "exit $rc (want $want), output: $(printf '%s' "$out" | tail -n 3)" "wanted: $sub"; fi
}

for v in base tiny perturb nanfill nanval token shape missing extra; do
    "$FIX" "$TMP/$v.h5" "$v" || fail "h5fixture $v" "could not write $TMP/$v.h5"
done

expect_rc identical 0 "4 datasets compared, 4 ok, 0 FAIL" "$H5CMP" "$TMP/base.h5" "$TMP/base.h5"
expect_rc within_tolerance 0 "4 ok, 0 FAIL" "$H5CMP" "$TMP/base.h5" "$TMP/tiny.h5"
expect_rc tiny_fails_at_zero_tol 1 "/acts/blocks.0.hook_resid_pre  [2,5,4]" "$H5CMP" --atol 0 --rtol 0 "$TMP/base.h5" "$TMP/tiny.h5"
expect_rc perturbed 1 "first at [0,1,1]: expected 0.5, actual 0.50999999" "$H5CMP" "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc perturbed_line_has_stats 1 "max_abs=1.000e-02  max_rel=2.000e-02  nmse=1.270e-05  FAIL" "$H5CMP" "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc perturbed_atol 0 "0 FAIL" "$H5CMP" --atol 0.011 "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc perturbed_rtol 0 "0 FAIL" "$H5CMP" --atol 0 --rtol 0.021 "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc perturbed_rtol_short 1 "1 FAIL" "$H5CMP" --atol 0 --rtol 0.019 "$TMP/base.h5" "$TMP/perturb.h5"
# --nmse: the float datasets judged as wholes (bf16 runs); NaN and integers stay exact
expect_rc nmse_passes_perturbed 0 "(floats: nmse <= 1.3e-05)" "$H5CMP" --nmse 1.3e-5 "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc nmse_fails_above 1 "nmse=1.270e-05  FAIL (nmse above 1.2e-05)" "$H5CMP" --nmse 1.2e-5 "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc nmse_keeps_nan_rule 1 "expected 0.75, actual nan" "$H5CMP" --nmse 1 "$TMP/base.h5" "$TMP/nanval.h5"
expect_rc nmse_keeps_integers_exact 1 "/tokens  [2,5]  max_abs=6.000e+00" "$H5CMP" --nmse 1 "$TMP/base.h5" "$TMP/token.h5"
expect_rc bad_nmse 2 "--nmse needs a non-negative number" "$H5CMP" --nmse x "$TMP/base.h5" "$TMP/base.h5"
expect_rc nan_padding_must_stay_nan 1 "expected nan, actual 0.5" "$H5CMP" "$TMP/base.h5" "$TMP/nanfill.h5"
expect_rc nan_where_value_expected 1 "expected 0.75, actual nan" "$H5CMP" "$TMP/base.h5" "$TMP/nanval.h5"
expect_rc nan_not_excused_by_tolerance 1 "FAIL" "$H5CMP" --atol 1e9 "$TMP/base.h5" "$TMP/nanval.h5"
expect_rc integers_exact 1 "/tokens  [2,5]  max_abs=6.000e+00" "$H5CMP" --atol 100 "$TMP/base.h5" "$TMP/token.h5"
expect_rc shape_mismatch 1 "FAIL (shape [2,6,4] in $TMP/shape.h5)" "$H5CMP" "$TMP/base.h5" "$TMP/shape.h5"
expect_rc missing_dataset 1 "/stats/mean  [4]  FAIL (missing in $TMP/missing.h5)" "$H5CMP" "$TMP/base.h5" "$TMP/missing.h5"
expect_rc extra_dataset_ignored 0 "4 ok, 0 FAIL" "$H5CMP" "$TMP/base.h5" "$TMP/extra.h5"
expect_rc missing_in_expected_direction 0 "3 datasets compared, 3 ok" "$H5CMP" "$TMP/missing.h5" "$TMP/base.h5"
expect_rc only_prefix_skips_perturbation 0 "2 datasets compared, 2 ok" "$H5CMP" --only /stats "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc only_prefix_without_slash 1 "1 datasets compared, 0 ok, 1 FAIL" "$H5CMP" --only acts "$TMP/base.h5" "$TMP/perturb.h5"
expect_rc only_matches_nothing 1 "no numeric dataset" "$H5CMP" --only /nothing "$TMP/base.h5" "$TMP/base.h5"

out=$("$H5CMP" --quiet "$TMP/base.h5" "$TMP/base.h5" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then pass quiet_success_silent; else fail quiet_success_silent "exit $rc, output: $out"; fi
out=$("$H5CMP" --quiet "$TMP/base.h5" "$TMP/perturb.h5" 2>&1); rc=$?
if [ $rc -eq 1 ] && [ "$(printf '%s\n' "$out" | grep -c ' ok$')" -eq 0 ] && printf '%s' "$out" | grep -q 'hook_resid_pre.*FAIL'; then
    pass quiet_failure_only; else fail quiet_failure_only "exit $rc, output: $out"; fi

# Files written by h5py (big-endian, contiguous, f64/i64, no scales) compare by value.
expect_rc h5py_vs_subscope 0 "4 ok, 0 FAIL, 1 skipped" "$H5CMP" "$REF" "$TMP/base.h5"
expect_rc subscope_vs_h5py 0 "4 ok, 0 FAIL" "$H5CMP" "$TMP/base.h5" "$REF"
expect_rc h5py_vs_nanfill 1 "expected nan, actual 0.5" "$H5CMP" "$REF" "$TMP/nanfill.h5"
expect_rc dimension_scales_skipped 0 "4 datasets compared" "$H5CMP" "$TMP/base.h5" "$REF"

# Usage and I/O errors: exit 2, the message names the file.
printf 'not hdf5\n' >"$TMP/plain.txt"
expect_rc missing_file 2 "$TMP/nope.h5: cannot open" "$H5CMP" "$TMP/base.h5" "$TMP/nope.h5"
expect_rc not_hdf5 2 "$TMP/plain.txt: not an HDF5 file" "$H5CMP" "$TMP/plain.txt" "$TMP/base.h5"
expect_rc no_args 2 "usage: h5cmp" "$H5CMP"
expect_rc one_file 2 "need EXPECTED.h5 and ACTUAL.h5" "$H5CMP" "$TMP/base.h5"
expect_rc bad_tol 2 "--atol needs a non-negative number" "$H5CMP" --atol -1 "$TMP/base.h5" "$TMP/base.h5"
expect_rc bad_tol_text 2 "--rtol needs a non-negative number" "$H5CMP" --rtol abc "$TMP/base.h5" "$TMP/base.h5"
expect_rc unknown_option 2 "unknown option --frobnicate" "$H5CMP" --frobnicate "$TMP/base.h5" "$TMP/base.h5"
expect_rc help 0 "usage: h5cmp" "$H5CMP" --help

# The other test tools: --help prints the usage on stdout and exits 0; no arguments is a usage error.
expect_rc statsref_help 0 "usage: statsref" "${TOOLBIN}statsref" --help
expect_rc statsref_no_args 2 "usage: statsref" "${TOOLBIN}statsref"
expect_rc tok_bench_help 0 "usage: " "${TOOLBIN}tok_bench" --help
expect_rc tok_bench_no_args 2 "TOKENIZER_DIR_OR_JSON" "${TOOLBIN}tok_bench"

# h5fixture takes no options: --help prints its usage, another option is refused, and neither
# writes a file named after it (both did, in the current folder).
case $FIX in /*) AFIX=$FIX ;; *) AFIX=$PWD/$FIX ;; esac
mkdir "$TMP/cwd"
expect_rc fixture_help 0 "usage: h5fixture" sh -c 'cd "$1" && "$2" --help' sh "$TMP/cwd" "$AFIX"
expect_rc fixture_unknown_option 1 "usage: h5fixture" sh -c 'cd "$1" && "$2" --bogus' sh "$TMP/cwd" "$AFIX"
[ -z "$(ls -A "$TMP/cwd")" ] && pass fixture_no_file_for_option || fail fixture_no_file_for_option "$(ls -A "$TMP/cwd")"

# The writer's temp-then-rename: a failed h5fixture leaves neither file.
expect_fail fixture_unwritable_dir "$TMP/plain.txt/x.h5" "$FIX" "$TMP/plain.txt/x.h5"
if ls "$TMP"/*.tmp.* >/dev/null 2>&1; then fail no_temp_files_left "$(ls "$TMP"/*.tmp.*)"; else pass no_temp_files_left; fi
finish
