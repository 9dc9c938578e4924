#!/usr/bin/env bash
# collect, ablate, patch and attribute against an independent float64 numpy reference
# (tests/cli/numeric_ref.py: a GPT-2 and a Llama forward with a hook at every site, written from
# the weight files and the documented definitions): the bundled model and a random
# grouped-query Llama, prompts of different lengths in one batch (padding), every mask mode,
# every patch unit both ways, every attribution method against central finite differences.
# Then the same on the small Llama through the commands' GPU path on the emulated CUDA plugin
# (bin/emu, which make test builds; skipped for a build without CUDA).
# Needs numpy and h5py; without them it passes, saying so, as the other Python cross-checks do.
source "$(dirname "$0")/lib.sh"
export SS_TEST_DATA=${SS_TEST_DATA:-tests/data}
EMU=${TOOLBIN}emu
checks() { # checks DEVICE PART: numeric_ref.py's lines as passes and failures
    local out rc n=0
    out=$(SS_REF_DEVICE=$1 SUBSCOPE_PLUGIN_DIR="$EMU" python3 "$(dirname "$0")/numeric_ref.py" "$SUBSCOPE" "${TOOLBIN}mkmodel" "$TMP" $2 2>&1); rc=$?
    while IFS= read -r line; do
        case "$line" in
        "ok "*) pass "${line#ok }"; n=$((n + 1)) ;;
        "FAIL "*) fail "${line#FAIL }"; n=$((n + 1)) ;;
        esac
    done <<<"$out"
    # a crash or a refused run prints no check lines: that is a failure too
    if [ $rc -ne 0 ] && ! grep -q "^FAIL " <<<"$out"; then fail "numeric reference: $2 on $1 did not run" "$(tail -n 3 <<<"$out")"; fi
    [ $n -gt 0 ] || fail "numeric reference: $2 on $1 checked nothing" "$(tail -n 3 <<<"$out")"
}
if python3 -c "import h5py, numpy" 2>/dev/null; then
    for part in collect ablate patch attribute; do checks cpu $part; done
    if [ ! -f "$EMU/libsubscope-cuda.so" ]; then
        fail "emulated plugin built" "$EMU/libsubscope-cuda.so is missing (make test builds it)"
    elif ! SUBSCOPE_PLUGIN_DIR="$EMU" "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt 'a' --top 1 --device cuda 2>&1 |
        grep -q "not in this build"; then
        for part in collect ablate patch attribute; do checks cuda $part; done
    else pass "the GPU path not recomputed: this subscope was built without CUDA"; fi
else pass "collect/ablate/patch/attribute not recomputed: needs python3 with numpy and h5py"; fi
finish
