#!/usr/bin/env bash
# tests/gpu/kernel_check.c, the first tool a GPU lease runs, built against the emulated
# runtime and kernels (kernel_check_emu): its --quick cases must all pass here, so that a
# broken case (a wrong buffer size, a reference computed from the wrong input) is found
# without a GPU. The emulation computes in the CPU's arithmetic, so bounds that only a GPU's
# own rounding tests (fused multiply-adds, its cosf) still need the GPU.
source "$(dirname "$0")/lib.sh"
KC=${TOOLBIN}kernel_check_emu
if [ ! -x "$KC" ]; then
    fail "kernel_check_emu built" "$KC is missing (make test builds it)"
    finish; exit
fi
out=$("$KC" --help 2>/dev/null); rc=$?
[ $rc = 0 ] && case $out in "usage: kernel_check"*) true ;; *) false ;; esac &&
    pass "--help: usage on stdout, exit 0" || fail "--help: usage on stdout, exit 0" "rc=$rc: $out"
out=$("$KC" --quick 2>&1); rc=$?
sum=$(printf '%s\n' "$out" | grep -E '^kernel_check: [0-9]+ cases, [0-9]+ failed' | tail -n 1)
n=$(printf '%s' "$sum" | sed -E 's/^kernel_check: ([0-9]+) cases.*/\1/')
if [ $rc = 0 ] && printf '%s' "$sum" | grep -q ", 0 failed" && [ "${n:-0}" -ge 400 ]; then
    pass "kernel_check --quick on the emulation ($n cases)"
else
    fail "kernel_check --quick on the emulation" "exit $rc: ${sum:-no summary}; $(printf '%s\n' "$out" | grep -m 3 FAIL)"
fi
# --filter: only the cases whose name holds the string, with the ones they lead to (SwiGLU of
# one shape: fp32, bf16 out, bf16 in and out)
out=$("$KC" --quick --filter "swiglu 5x300" 2>&1); rc=$?
cases=$(printf '%s\n' "$out" | grep -c '^CASE swiglu')
[ $rc = 0 ] && [ "$cases" = 3 ] && printf '%s' "$out" | grep -q "^kernel_check: 3 cases, 0 failed" &&
    pass "kernel_check --filter picks cases" || fail "kernel_check --filter" "exit $rc, $cases cases: $(printf '%s' "$out" | tail -n 2)"
out=$("$KC" --bogus 2>&1); rc=$?
[ $rc != 0 ] && printf '%s' "$out" | grep -q "usage: kernel_check" && pass "kernel_check refuses an unknown option" ||
    fail "kernel_check unknown option" "exit $rc: $out"
# --device takes a device number, digits only (atoi read 'x' as device 0 and '1x' as 1)
for v in x 1x +1 ''; do
    out=$("$KC" --device "$v" 2>&1); rc=$?
    [ $rc = 2 ] && printf '%s' "$out" | grep -qF -- "--device needs a device number, got '$v'" &&
        pass "kernel_check --device '$v' refused" || fail "kernel_check --device '$v'" "exit $rc: $out"
done
finish
