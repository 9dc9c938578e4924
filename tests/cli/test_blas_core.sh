#!/usr/bin/env bash
# OpenBLAS's kernels: on a CPU with AVX2 or AVX-512 (read from /proc/cpuinfo here), subscope runs
# OpenBLAS's kernels for it, not a generic/pre-AVX2 core OpenBLAS fell back to for a CPU model it
# did not know (Debian's 0.3.21 took an AVX-512 Xeon VM for a Prescott); the user's
# OPENBLAS_CORETYPE and SUBSCOPE_BLAS_CORE=keep are respected, a bad SUBSCOPE_BLAS_CORE refused.
# OPENBLAS_VERBOSE=2 has OpenBLAS print "Core: NAME" each time it loads: the process's own word
# for the kernels, and how many times it started (src/cli/main.c, restart_for_blas).
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
M=$D/models/prefix-f32
clean() { env -u OPENBLAS_CORETYPE -u SUBSCOPE_BLAS_CORE -u SUBSCOPE_BLAS_CORE_FROM -u OPENBLAS_VERBOSE "$@"; }
# blas_line [ENV=VALUE...]: subscope info's "cpu blas" line, run with those variables
blas_line() { clean "$@" "$SUBSCOPE" info --model "$M" 2>&1 | sed -n 's/^cpu blas *//p'; }
older='Unknown|Katmai|Coppermine|Northwood|Prescott|Banias|Atom|Core2|Penryn|Dunnington|Nehalem|Athlon|Opteron|Opteron_SSE3|Barcelona|Nano|Sandybridge|Bobcat|Bulldozer|Piledriver|Steamroller|Excavator'

line=$(blas_line)
# the kernels of the last load, as OpenBLAS (DYNAMIC_ARCH) prints them; else as info names them
core() { printf '%s' "$1" | sed -n 's/^OpenBLAS [^,]*, \([A-Za-z0-9_]*\) kernels.*/\1/p'; }
c=$(clean OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | sed -n 's/^Core: //p' | tail -n 1)
[ -n "$c" ] || c=$(core "$line")
[ -n "$line" ] && pass "info names the BLAS: $line" || fail "info names the BLAS" "$(clean "$SUBSCOPE" info --model "$M" 2>&1 | tail -n 3)"
if [ -z "$c" ]; then
    echo "  (not OpenBLAS: nothing more to check)"
    finish
    exit
fi

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { printf ' %s ' "$flags" | grep -q " $1 "; }
if has avx512f && has avx512vl && has avx512bw && has avx512dq; then want=avx512
elif has avx2 && has fma; then want=avx2
else want=; fi
if [ -z "$want" ]; then
    echo "  (no AVX2 or AVX-512 in /proc/cpuinfo: any core is right here)"
elif printf '%s' "$c" | grep -qxE "$older"; then
    fail "a CPU with $want runs OpenBLAS's kernels for it, not its generic $c" "$line"
else
    pass "a CPU with $want runs OpenBLAS's $c kernels"
fi
[ "$(core "$line")" = "$c" ] && pass "info names the kernels OpenBLAS runs ($c)" || fail "info names the kernels OpenBLAS runs ($c)" "$line"
# With bf16, where subscope chose, it chose Cooperlake; with AVX-512, never Haswell's kernels
case $line in
*"chosen by subscope"*)
    if has avx512_bf16 && [ "$want" = avx512 ]; then exp=Cooperlake
    elif [ "$want" = avx512 ]; then exp=SkylakeX
    else exp=Haswell; fi
    [ "$c" = "$exp" ] && pass "subscope chose $exp for this CPU" || fail "subscope chose $exp for this CPU" "$line"
    ;;
esac

# OpenBLAS's own word: at most two loads (its choice, then subscope's), the last one the core info names
v=$(clean OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | grep -c '^Core: ')
last=$(clean OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | sed -n 's/^Core: //p' | tail -n 1)
if [ "$v" -ge 1 ] && [ "$v" -le 2 ] && [ "$last" = "$c" ]; then pass "OpenBLAS loaded $v time(s), last with $last kernels"
else fail "OpenBLAS loaded once or twice, with the kernels info names" "loads $v, last '$last', info '$c'"; fi

# The user's OPENBLAS_CORETYPE is theirs: no restart, the core they named
line=$(blas_line OPENBLAS_CORETYPE=Prescott)
[ "$(core "$line")" = Prescott ] && printf '%s' "$line" | grep -qF "(OPENBLAS_CORETYPE=Prescott)" &&
    pass "OPENBLAS_CORETYPE=Prescott is respected" || fail "OPENBLAS_CORETYPE=Prescott is respected" "$line"
v=$(clean OPENBLAS_CORETYPE=Prescott OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | grep -c '^Core: ')
[ "$v" = 1 ] && pass "no restart under the user's OPENBLAS_CORETYPE" || fail "no restart under the user's OPENBLAS_CORETYPE" "loads: $v"

# SUBSCOPE_BLAS_CORE=keep: OpenBLAS's own choice, the one it prints as it loads, once
out=$(clean SUBSCOPE_BLAS_CORE=keep OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1)
own=$(printf '%s\n' "$out" | sed -n 's/^Core: //p')
line=$(printf '%s\n' "$out" | sed -n 's/^cpu blas *//p')
if [ "$(printf '%s\n' "$own" | wc -l)" = 1 ] && [ "$(core "$line")" = "$own" ] && printf '%s' "$line" | grep -qF "OpenBLAS's choice"; then
    pass "SUBSCOPE_BLAS_CORE=keep keeps OpenBLAS's $own"
else fail "SUBSCOPE_BLAS_CORE=keep keeps OpenBLAS's choice" "OpenBLAS: '$own'" "info: $line"; fi
line=$(blas_line SUBSCOPE_BLAS_CORE=auto)
[ "$(core "$line")" = "$c" ] && pass "SUBSCOPE_BLAS_CORE=auto is the default" || fail "SUBSCOPE_BLAS_CORE=auto is the default" "$line"

# A bad value is refused, naming it; no restart on it either
expect_fail "SUBSCOPE_BLAS_CORE=kep refused" "SUBSCOPE_BLAS_CORE='kep': must be auto" clean SUBSCOPE_BLAS_CORE=kep "$SUBSCOPE" info --model "$M"
v=$(clean SUBSCOPE_BLAS_CORE=kep OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | grep -c '^Core: ')
[ "$v" = 1 ] && pass "no restart under a refused SUBSCOPE_BLAS_CORE" || fail "no restart under a refused SUBSCOPE_BLAS_CORE" "loads: $v"

# The guard: a process that finds SUBSCOPE_BLAS_CORE_FROM set does not start again
v=$(clean SUBSCOPE_BLAS_CORE_FROM=Prescott OPENBLAS_VERBOSE=2 "$SUBSCOPE" info --model "$M" 2>&1 >/dev/null | grep -c '^Core: ')
[ "$v" = 1 ] && pass "SUBSCOPE_BLAS_CORE_FROM stops a restart" || fail "SUBSCOPE_BLAS_CORE_FROM stops a restart" "loads: $v"

# The restart keeps stdin, the arguments and the exit status: a pipe's ids reach tokenize's --decode,
# and a bad option still exits 1 with its message
out=$(printf 'unused' | clean "$SUBSCOPE" tokenize --model "$D/gpt2-tokenizer" --decode --text "[15496, 995]" 2>&1)
[ "$out" = "Hello world" ] && pass "a restarted command's output" || fail "a restarted command's output" "$out"
expect_fail "a restarted command's error" "--nope" clean "$SUBSCOPE" info --nope
finish
