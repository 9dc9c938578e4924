#!/usr/bin/env bash
# Runs the unit-test binary and every CLI test script, then prints one total
# line "N passed, M failed" and exits non-zero on any failure.
set -u
: "${SUBSCOPE:=bin/subscope}" "${TEST_BIN:=bin/test_unit}" "${TOOLBIN:=bin/}"
export SUBSCOPE TOOLBIN
export SS_TEST_DATA=${SS_TEST_DATA:-tests/data}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The tests' numeric references read HDF5 with numpy and h5py (Debian's python3-numpy and
# python3-h5py, which `make deps` installs). Where the python3 first on PATH (a pyenv, a venv)
# lacks them and the system's has them, the tests use the system's.
pydir=""
if ! python3 -c 'import numpy, h5py' 2>/dev/null && [ -x /usr/bin/python3 ] &&
    /usr/bin/python3 -c 'import numpy, h5py' 2>/dev/null; then
    pydir=$(mktemp -d) && ln -s /usr/bin/python3 "$pydir/python3" && export PATH="$pydir:$PATH" &&
        echo "(tests use /usr/bin/python3: the first python3 on PATH has no numpy/h5py)"
fi
total_p=0; total_f=0
tally() { # tally LOGFILE: add the last "N passed, M failed" line
    local line p f
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [ -z "$line" ]; then total_f=$((total_f + 1)); echo "  FAIL: $2 printed no summary (crashed?)"; return; fi
    p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    total_p=$((total_p + p)); total_f=$((total_f + f))
}
log=$(mktemp)
echo "== unit tests ($TEST_BIN)"
"$TEST_BIN" >"$log" 2>&1; rc=$?
cat "$log"; tally "$log" unit
[ $rc -ne 0 ] && ! grep -qE '^[0-9]+ passed, [1-9]' "$log" && { echo "  FAIL: unit binary exited $rc"; total_f=$((total_f + 1)); }
for t in tests/cli/test_*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    bash "$t" >"$log" 2>&1
    cat "$log"; tally "$log" "$t"
done
rm -f "$log"
[ -n "$pydir" ] && rm -rf "$pydir"
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
