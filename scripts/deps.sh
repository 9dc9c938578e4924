#!/usr/bin/env bash
# Installs the Debian packages subscope needs, only those missing.
# Each one and why:
#   libhdf5-dev   HDF5 C library: every result is written as HDF5
#   hdf5-tools    h5dump/h5ls: the demo and tests inspect output with them
#   libpcre2-dev  PCRE2: GPT-2's pre-tokenizer regex needs Unicode classes (\p{L}, \p{N})
#   libopenblas-dev  multithreaded SGEMM for the CPU backend (optional; a built-in GEMM is the fallback)
#   openmpi-bin, libopenmpi-dev  MPI: data-parallel CPU ranks (mpirun -np N); tests/cli/test_dist.sh runs them
#   pkg-config    locate the above
#   python3-numpy, python3-h5py  only for the tests: independent numeric references (tests/cli/numeric_ref.py,
#                 discover's recomputation, old-file attributes) that read subscope's HDF5 output; without them
#                 those checks pass saying what they skipped
#   clang, libclang-rt-14-dev  libFuzzer targets and LeakSanitizer (only for `make fuzz`)
set -eu
pkgs="pkg-config libhdf5-dev hdf5-tools libpcre2-dev libopenblas-dev openmpi-bin libopenmpi-dev python3-numpy python3-h5py"
missing=""
for p in $pkgs; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "error: missing Debian packages:$missing; run as root: apt-get install$missing" >&2; exit 1; fi
else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
rm -f build/config.mk build/*/config.mk
