# Helpers for CLI tests: each check prints "ok NAME" or "FAIL NAME ..." and the
# script ends with `finish`, which prints "N passed, M failed".
set -u
: "${SUBSCOPE:=bin/subscope}" "${TOOLBIN:=bin/}"
SS_PASS=0; SS_FAIL=0
TMP=$(mktemp -d /tmp/ss_cli_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass() { SS_PASS=$((SS_PASS + 1)); printf '  ok   %s\n' "$1"; }
fail() { SS_FAIL=$((SS_FAIL + 1)); printf '  FAIL %s\n' "$1"; shift; [ $# -gt 0 ] && printf '       %s\n' "$@"; }
# expect_ok NAME CMD...: command exits 0
expect_ok() { local n=$1; shift; local out; if out=$("$@" 2>&1); then pass "$n"; else fail "$n" "exit $?: $(printf '%s' "$out" | tail -n 3)"; fi; }
# expect_fail NAME SUBSTRING CMD...: command exits 1 with SUBSTRING in stderr, no crash
expect_fail() {
    local n=$1 sub=$2; shift 2; local out rc
    out=$("$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -eq 1 ] && printf '%s' "$out" | grep -qF -- "$sub"; then pass "$n"
    else fail "$n" "exit $rc (want 1), stderr: $(printf '%s' "$out" | tail -n 3)" "wanted: $sub"; fi
}
# capped CMD...: CMD under a 2 GB address-space limit (none under SAN, whose shadow memory needs
# more), so that a command allocating gigabytes for a file's declared size fails at once
capped() { if [ "${SAN:-0}" = 1 ]; then "$@"; else (ulimit -v 2000000; exec "$@"); fi; }
finish() { echo "$SS_PASS passed, $SS_FAIL failed"; [ $SS_FAIL -eq 0 ]; }
# rank_pid ANCESTOR R: the pid of MPI rank R started under pid ANCESTOR (timeout -> mpirun ->
# rank, or mpirun -> rank), found by its environment; empty if none.
ppid_of() { cut -d' ' -f4 "/proc/$1/stat" 2>/dev/null; }
rank_pid() {
    local d p
    for d in /proc/[0-9]*; do
        p=$(ppid_of "${d#/proc/}")
        if [ "$p" != "$1" ] && { [ -z "$p" ] || [ "$(ppid_of "$p")" != "$1" ]; }; then continue; fi
        tr '\0' '\n' <"$d/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "${d#/proc/}"; return; }
    done
}
