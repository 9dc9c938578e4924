#!/usr/bin/env bash
# Packs this tree's build so that `make gpu-check` and the GPU benchmarks run on a GPU
# node that has the NVIDIA driver and the CUDA libraries but no compiler, no HDF5,
# PCRE2, OpenBLAS or MPI packages (a cluster's compute node, a container with only the
# CUDA runtime):
#
#   make && make -f bench/gpu/Makefile     # here, where the toolchain is
#   tests/gpu/bundle.sh                    # writes build/subscope-gpu-bundle.tar.xz
#   # there, at the root of a checkout of the same commit:
#   tar xf subscope-gpu-bundle.tar.xz
#   SUBSCOPE_CUDA_LIBS=/path/to/cuda/lib64:/path/to/nccl/lib tests/gpu/gpu_check.sh --no-build
#   bench/run_all.sh --gpu-only --no-build --no-install
#
# The tarball holds bin/ (subscope, its two CUDA plugins, kernel_check, h5cmp,
# mkmodel, and h5dump for the benchmarks), build/config.mk and features.txt, the
# attention kernel's object (gpu-check lists the machine code in it),
# build/bench/kernel_bench when it was built, and .bundle/lib: every shared library
# those programs load except glibc's, libstdc++/libgcc_s (the node's are newer or
# the same) and the CUDA toolkit's (the node's driver needs its own). Each program
# becomes a two-line wrapper that runs the real one from .real/ beside it with
# .bundle/lib and SUBSCOPE_CUDA_LIBS (default /usr/local/cuda/lib64) on
# LD_LIBRARY_PATH, for that program alone: Python and PyTorch on the node never see
# these libraries. The node's glibc must be at least this machine's.
#
# usage: tests/gpu/bundle.sh [--bin DIR] [OUT.tar.xz|OUT.tar.gz]
#   --bin DIR   where the programs are (default bin/; the tests give build/san/)
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")/../.."
BIN=bin OUT=""
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=${2:?--bin needs a directory}; shift; case $BIN in /*) ;; *) BIN=$CALLER/$BIN ;; esac ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bundle.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT=$1; case $OUT in /*) ;; *) OUT=$CALLER/$OUT ;; esac ;;
    esac
    shift
done
OUT=${OUT:-build/subscope-gpu-bundle.tar.xz}
BIN=${BIN%/}

[ -f build/config.mk ] && grep -q '^HAVE_CUBLAS := 1' build/config.mk ||
    { echo "bundle.sh: build/config.mk has no CUDA backend; run make on a machine with nvcc and cuBLAS" >&2; exit 1; }
progs=()
for p in subscope libsubscope-cuda.so h5cmp mkmodel kernel_check libsubscope-nccl.so; do
    if [ -e "$BIN/$p" ]; then progs+=("$BIN/$p")
    else
        case $p in
        subscope | libsubscope-cuda.so) echo "bundle.sh: $BIN/$p is missing; run make" >&2; exit 1 ;;
        kernel_check) echo "bundle.sh: warning: no $BIN/kernel_check ('make' builds it): gpu-check's kernel step will fail" >&2 ;;
        esac
    fi
done
extra=()
[ -x build/bench/kernel_bench ] && extra+=(build/bench/kernel_bench)
H5DUMP=$(command -v h5dump || true)

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin/.real" "$STAGE/build/rel/kernels" "$STAGE/.bundle/lib"
cp build/config.mk build/features.txt "$STAGE/build/"
[ -f build/rel/kernels/attention.o ] && cp build/rel/kernels/attention.o "$STAGE/build/rel/kernels/"

# wrap DIR NAME UP: DIR/NAME runs DIR/.real/NAME; UP leads from DIR to the root
wrap() {
    cat >"$STAGE/$1/$2" <<EOF
#!/bin/sh
# made by tests/gpu/bundle.sh: .real/$2 with the bundle's libraries
d=\$(cd "\$(dirname "\$0")" && pwd)
LD_LIBRARY_PATH="\$d/$3/.bundle/lib:\${SUBSCOPE_CUDA_LIBS:-/usr/local/cuda/lib64}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$d/.real/$2" "\$@"
EOF
    chmod +x "$STAGE/$1/$2"
}
reals=()
for p in "${progs[@]}"; do
    cp "$p" "$STAGE/bin/.real/"
    reals+=("$p")
    # the plugins are loaded from beside the running program (bin/.real/)
    case $p in *.so) ;; *) wrap bin "$(basename "$p")" .. ;; esac
done
if [ -n "$H5DUMP" ]; then cp "$H5DUMP" "$STAGE/bin/.real/h5dump"; wrap bin h5dump ..; reals+=("$H5DUMP"); fi
for p in "${extra[@]}"; do
    mkdir -p "$STAGE/$(dirname "$p")/.real"
    cp "$p" "$STAGE/$(dirname "$p")/.real/"
    wrap "$(dirname "$p")" "$(basename "$p")" ../..
    reals+=("$p")
done

# the libraries: ldd's resolved paths, minus glibc, the C++ runtime and CUDA's
n=0
while read -r name path; do
    case $name in
    linux-vdso* | ld-linux* | libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | libresolv.so* | \
        libutil.so* | libstdc++.so* | libgcc_s.so* | libcu* | libnccl* | libnvJitLink* | libnvrtc* | libcudnn*) continue ;;
    esac
    [ -n "$path" ] && [ -e "$path" ] || { echo "bundle.sh: ldd cannot find $name" >&2; exit 1; }
    cp -L "$path" "$STAGE/.bundle/lib/$name"
    n=$((n + 1))
done < <(for r in "${reals[@]}"; do ldd "$r"; done | awk '$2 == "=>" { print $1, $3 }' | sort -u)

# the commit the programs were built from: the device's copy of the tree may not say (the
# benchmarks and gpu_check record SUBSCOPE_GIT_COMMIT, which run_bundle.sh sets from this)
c=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src include kernels Makefile 2>/dev/null || c="$c-dirty"
echo "$c" >"$STAGE/.bundle/commit"
mkdir -p "$(dirname "$OUT")"
tar -C "$STAGE" -caf "$OUT" .
echo "bundle.sh: $OUT ($(du -h "$OUT" | cut -f1); ${#reals[@]} programs, $n libraries); unpack it at the root of a checkout of $(git rev-parse --short HEAD 2>/dev/null || echo this commit)"
