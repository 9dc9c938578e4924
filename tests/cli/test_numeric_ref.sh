#!/usr/bin/env bash
# collect, ablate, patch and attribute against an independent float64 numpy reference
# (tests/cli/numeric_ref.py: a GPT-2 and a Llama forward with a hook at every site, written from
# the weight files and the documented definitions): the bundled model and a random
# grouped-query Llama, prompts of different lengths in one batch (padding), every mask mode,
# every patch unit both ways, every attribution method against central finite differences.
# Needs numpy and h5py; without them it passes, saying so, as the other Python cross-checks do.
source "$(dirname "$0")/lib.sh"
export SS_TEST_DATA=${SS_TEST_DATA:-tests/data}
if python3 -c "import h5py, numpy" 2>/dev/null; then
    for part in collect ablate patch attribute; do
        out=$(python3 "$(dirname "$0")/numeric_ref.py" "$SUBSCOPE" "${TOOLBIN}mkmodel" "$TMP" $part 2>&1); rc=$?
        n=0
        while IFS= read -r line; do
            case "$line" in
            "ok "*) pass "${line#ok }"; n=$((n + 1)) ;;
            "FAIL "*) fail "${line#FAIL }"; n=$((n + 1)) ;;
            esac
        done <<<"$out"
        # a crash or a refused run prints no check lines: that is a failure too
        if [ $rc -ne 0 ] && ! grep -q "^FAIL " <<<"$out"; then fail "numeric reference: $part did not run" "$(tail -n 3 <<<"$out")"; fi
        [ $n -gt 0 ] || fail "numeric reference: $part checked nothing" "$(tail -n 3 <<<"$out")"
    done
else pass "collect/ablate/patch/attribute not recomputed: needs python3 with numpy and h5py"; fi
finish
