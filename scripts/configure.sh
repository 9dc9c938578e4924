#!/usr/bin/env bash
# Probes the toolchain and libraries by compiling tiny programs, then writes
# build/config.mk (read by the Makefile) and build/features.txt (the ✓/✗ table).
# Run by make whenever build/config.mk is missing or older than this script.
set -u
CC=${CC:-cc}
out=${1:-build}
mkdir -p "$out/probe"
cfg=$out/config.mk.tmp
feat=$out/features.txt.tmp
: >"$cfg"
: >"$feat"

try_c() { # try_c NAME 'CFLAGS' 'LIBS' 'C source'
    printf '%s\n' "$4" >"$out/probe/$1.c"
    $CC -std=c11 $2 "$out/probe/$1.c" -o "$out/probe/$1" $3 >/dev/null 2>&1
}
mark() { # mark OK LABEL DETAIL
    if [ "$1" = 1 ]; then printf '  \xe2\x9c\x93 %-9s %s\n' "$2" "$3" >>"$feat"
    else printf '  \xe2\x9c\x97 %-9s %s\n' "$2" "$3" >>"$feat"; fi
}

# HDF5 (required): Debian's serial flavour ships pkg-config file hdf5.pc.
H5_CFLAGS=$(pkg-config --cflags hdf5 2>/dev/null || true)
H5_LIBS=$(pkg-config --libs hdf5 2>/dev/null || echo -lhdf5)
if try_c hdf5 "$H5_CFLAGS" "$H5_LIBS -lhdf5_hl" '#include <hdf5.h>
#include <hdf5_hl.h>
int main(void){ unsigned a,b,c; H5get_libversion(&a,&b,&c); return H5DSis_scale(-1) > 1; }'; then
    echo "HAVE_HDF5 := 1" >>"$cfg"
    echo "H5_CFLAGS := $H5_CFLAGS" >>"$cfg"
    echo "H5_LIBS := $H5_LIBS -lhdf5_hl" >>"$cfg"
    mark 1 HDF5 "output files ($(pkg-config --modversion hdf5 2>/dev/null || echo found))"
else
    echo "HAVE_HDF5 := 0" >>"$cfg"; mark 0 HDF5 "required: run 'make deps' (libhdf5-dev)"
fi

# PCRE2 (required): GPT-2's pre-tokenizer pattern needs Unicode classes.
P2_CFLAGS=$(pkg-config --cflags libpcre2-8 2>/dev/null || true)
P2_LIBS=$(pkg-config --libs libpcre2-8 2>/dev/null || echo -lpcre2-8)
if try_c pcre2 "$P2_CFLAGS" "$P2_LIBS" '#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
int main(void){ int e; PCRE2_SIZE o; pcre2_code *c = pcre2_compile((PCRE2_SPTR)"\\p{L}+", PCRE2_ZERO_TERMINATED, PCRE2_UTF|PCRE2_UCP, &e, &o, 0); return c == 0; }'; then
    echo "HAVE_PCRE2 := 1" >>"$cfg"; echo "P2_CFLAGS := $P2_CFLAGS" >>"$cfg"; echo "P2_LIBS := $P2_LIBS" >>"$cfg"
    mark 1 PCRE2 "tokenizer pre-split ($(pkg-config --modversion libpcre2-8 2>/dev/null || echo found))"
else
    echo "HAVE_PCRE2 := 0" >>"$cfg"; mark 0 PCRE2 "required: run 'make deps' (libpcre2-dev)"
fi

# BLAS (optional: without it the CPU backend uses its own blocked GEMM).
blas=0
for cand in "openblas|$(pkg-config --cflags openblas 2>/dev/null)|$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)" "cblas||-lcblas" "blas||-lblas"; do
    name=${cand%%|*}; rest=${cand#*|}; bc=${rest%%|*}; bl=${rest#*|}
    if try_c blas "$bc" "$bl" '#include <cblas.h>
int main(void){ float a=1,b=2,c=0; cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1.f,&a,1,&b,1,0.f,&c,1); return c != 2.f; }' && "$out/probe/blas"; then
        echo "HAVE_BLAS := 1" >>"$cfg"; echo "BLAS_CFLAGS := $bc" >>"$cfg"; echo "BLAS_LIBS := $bl" >>"$cfg"
        mark 1 BLAS "matrix products ($name)"; blas=1; break
    fi
done
[ $blas = 1 ] || { echo "HAVE_BLAS := 0" >>"$cfg"; mark 0 BLAS "built-in GEMM (slower); 'make deps' installs OpenBLAS"; }

# LAPACK (optional: dsyevr for principal components; without it a built-in
# Jacobi solver is used, fine up to d = 2048). Debian's OpenBLAS
# exports the LAPACK symbols itself; otherwise try the reference -llapack.
lapack=0
blas_libs=$(sed -n 's/^BLAS_LIBS := //p' "$cfg")
for ll in "$blas_libs" "-llapack $blas_libs"; do
    [ -n "$ll" ] || continue
    if try_c lapack "" "$ll" 'extern void dsyevr_(const char*,const char*,const char*,const int*,double*,const int*,const double*,const double*,const int*,const int*,const double*,int*,double*,double*,const int*,int*,double*,const int*,int*,const int*,int*,unsigned long,unsigned long,unsigned long);
int main(void){ double a=2,vl=0,vu=0,tol=0,w=0,z=0,wk[64]; int n=1,one=1,m=0,sup[2],iw[64],lw=64,liw=64,info=0;
dsyevr_("V","I","U",&n,&a,&n,&vl,&vu,&one,&one,&tol,&m,&w,&z,&n,sup,wk,&lw,iw,&liw,&info,1,1,1); return !(info==0 && m==1 && w==2); }' && "$out/probe/lapack"; then
        echo "HAVE_LAPACK := 1" >>"$cfg"
        # Carried in the BLAS variables, which the Makefile already passes on.
        [ "$ll" = "$blas_libs" ] || echo "BLAS_LIBS := $ll" >>"$cfg"
        mark 1 LAPACK "eigenpairs for PCA (dsyevr from $( [ "$ll" = "$blas_libs" ] && echo "the BLAS library" || echo "-llapack"))"; lapack=1; break
    fi
done
[ $lapack = 1 ] || { echo "HAVE_LAPACK := 0" >>"$cfg"; mark 0 LAPACK "PCA uses the built-in Jacobi solver (d <= 2048); 'make deps' installs OpenBLAS"; }

# CUDA toolkit pieces: probed and reported; the CUDA backend uses them.
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
CUDA_HOME=${CUDA_HOME:-$( [ -n "$NVCC" ] && dirname "$(dirname "$NVCC")" )}
if [ -n "$NVCC" ]; then
    mark 1 nvcc "$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at $NVCC"
    echo "NVCC := $NVCC" >>"$cfg"; echo "CUDA_HOME := $CUDA_HOME" >>"$cfg"
else
    mark 0 nvcc "no CUDA toolkit found"
fi
CU_INC="-I$CUDA_HOME/include"; CU_LIB="-L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64"
probe_cuda_lib() { # NAME header lib symbol-call
    if [ -n "$NVCC" ] && try_c "$1" "$CU_INC" "$CU_LIB $3" "#include <$2>
int main(void){ $4; return 0; }"; then mark 1 "$1" "$2, $3"; echo "HAVE_$(echo "$1" | tr a-z A-Z) := 1" >>"$cfg"
    else mark 0 "$1" "not found"; echo "HAVE_$(echo "$1" | tr a-z A-Z) := 0" >>"$cfg"; fi
}
probe_cuda_lib cuBLAS cublas_v2.h -lcublas 'cublasHandle_t h; (void)cublasCreate(&h)'
probe_cuda_lib cuSOLVER cusolverDn.h -lcusolver 'cusolverDnHandle_t h; (void)cusolverDnCreate(&h)'
probe_cuda_lib cuDNN cudnn.h -lcudnn 'size_t v = cudnnGetVersion(); (void)v'
probe_cuda_lib NCCL nccl.h -lnccl 'int v; (void)ncclGetVersion(&v)'

# MPI (CPU ranks, src/dist/comm_mpi.c): the flags come from the wrapper
# (OpenMPI's --showme, MPICH's -compile_info/-link_info) or pkg-config, and
# must build and link a program with the project's own compiler.
MPI_CF=""; MPI_LF=""; mpi=0
if command -v mpicc >/dev/null 2>&1; then
    if MPI_CF=$(mpicc --showme:compile 2>/dev/null) && MPI_LF=$(mpicc --showme:link 2>/dev/null); then :
    else MPI_CF=$(mpicc -compile_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep -E '^-[ID]' | tr '\n' ' ')
         MPI_LF=$(mpicc -link_info 2>/dev/null | cut -d' ' -f2- | tr ' ' '\n' | grep -E '^-[lLW]' | tr '\n' ' '); fi
fi
for cand in "$MPI_CF|$MPI_LF" "$(pkg-config --cflags ompi-c 2>/dev/null)|$(pkg-config --libs ompi-c 2>/dev/null)" "$(pkg-config --cflags mpich 2>/dev/null)|$(pkg-config --libs mpich 2>/dev/null)"; do
    mc=${cand%%|*}; ml=${cand#*|}
    [ -n "$ml" ] || continue
    if try_c mpi "$mc" "$ml" '#include <mpi.h>
int main(void){ char v[MPI_MAX_LIBRARY_VERSION_STRING]; int n; MPI_Request r; (void)MPI_Test; (void)MPI_Isend; MPI_Get_library_version(v, &n); (void)r; return 0; }'; then
        echo "HAVE_MPI := 1" >>"$cfg"; echo "MPI_CFLAGS := -DSS_HAVE_MPI=1 $mc" >>"$cfg"; echo "MPI_LIBS := $ml" >>"$cfg"
        mark 1 MPI "CPU ranks under mpirun/srun ($(mpirun --version 2>/dev/null | head -n 1 || echo found))"; mpi=1; break
    fi
done
[ $mpi = 1 ] || { echo "HAVE_MPI := 0" >>"$cfg"; mark 0 MPI "single process only; 'make deps' installs OpenMPI (openmpi-bin libopenmpi-dev)"; }

mv "$cfg" "$out/config.mk"
mv "$feat" "$out/features.txt"
