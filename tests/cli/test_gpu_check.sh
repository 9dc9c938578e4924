#!/usr/bin/env bash
# tests/gpu/gpu_check.sh (make gpu-check) on a machine without a usable GPU
# must stop at once with "no GPU visible" and exit 2, whatever the reason:
# no nvidia-smi, an nvidia-smi that finds no device, or CUDA_VISIBLE_DEVICES
# hiding every device. nvidia-smi is replaced by fakes here (NVIDIA_SMI), so
# this runs the same on GPU machines.
source "$(dirname "$0")/lib.sh"
GC=tests/gpu/gpu_check.sh

no_gpu() { # no_gpu NAME SUBSTRING [ENV=...]...
    local n=$1 sub=$2; shift 2; local out rc
    out=$(env "$@" bash "$GC" 2>&1); rc=$?
    if [ $rc -eq 2 ] && printf '%s' "$out" | grep -qF "gpu_check: no GPU visible: $sub" &&
        ! printf '%s' "$out" | grep -q "summary"; then pass "$n"
    else fail "$n" "exit $rc (want 2): $(printf '%s' "$out" | tail -n 3)"; fi
}
no_gpu "no nvidia-smi" "nvidia-smi not found" NVIDIA_SMI="$TMP/nonexistent"
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' >"$TMP/smi-none"
printf '#!/bin/sh\nexit 0\n' >"$TMP/smi-empty"
printf '#!/bin/sh\necho "[N/A], [N/A], 81559 MiB, 580.65, 0"\n' >"$TMP/smi-nocc"
printf '#!/bin/sh\necho "NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.65, 0"\n' >"$TMP/smi-ok"
chmod +x "$TMP"/smi-*
no_gpu "nvidia-smi finds no device" "nvidia-smi failed: No devices were found" NVIDIA_SMI="$TMP/smi-none"
no_gpu "nvidia-smi lists nothing" "nvidia-smi lists no GPU" NVIDIA_SMI="$TMP/smi-empty"
no_gpu "no compute capability" "nvidia-smi gave no usable compute capability" NVIDIA_SMI="$TMP/smi-nocc"
no_gpu "CUDA_VISIBLE_DEVICES empty" "CUDA_VISIBLE_DEVICES is set to the empty string" NVIDIA_SMI="$TMP/smi-ok" CUDA_VISIBLE_DEVICES=
out=$(bash "$GC" --bogus 2>&1); rc=$?
[ $rc -eq 2 ] && printf '%s' "$out" | grep -q "unknown option --bogus" && pass "unknown option refused" || fail "unknown option" "exit $rc: $out"
out=$(bash "$GC" --help)
printf '%s' "$out" | grep -q "compute-sanitizer" && printf '%s' "$out" | grep -q -- "--only STEPS" &&
    printf '%s' "$out" | grep -q "^Exit status" && ! printf '%s' "$out" | grep -q "^set -u" &&
    pass "--help describes the checks, options and exit status" || fail "--help" "$(printf '%s' "$out" | tail -n 3)"
# gen_cmp (the generation comparisons) on traces made here: equal runs and logits within the bound
# pass, logits beyond it fail, and so does a run whose logits are NaN from its second step (a
# broken key/value cache; greedy decoding then takes token 0), whether or not the other run chose
# token 0 too. Before, both NaN cases passed: mawk finds a NaN margin within any bound.
source <(sed -n '/^gen_cmp() {/,/^}/p' "$GC")
trace() { # trace FILE LOGIT1 ID1 [ID2]: three steps, the first the same in every trace
    printf 'predict: step 0 id 5 logit 3.5 runner-up 7 logit 3\n' >"$1"
    for s in 1 2; do printf 'predict: step %d id %s logit %s runner-up 7 logit 1.5\n' $s "$3" "$2" >>"$1"; done
}
trace "$TMP/g-ref" 4.0 9 && trace "$TMP/g-near" 4.05 9 && trace "$TMP/g-far" 4.5 9 && trace "$TMP/g-nan" nan 0 &&
    trace "$TMP/g-nan0" -nan 0 && trace "$TMP/g-ref0" 4.0 0
gc() { gen_cmp "$TMP/g-$1" "$TMP/g-$2" 3e-2 >"$TMP/g-out"; echo "$? $(cat "$TMP/g-out")"; }
r1=$(gc ref near) r2=$(gc ref far) r3=$(gc nan ref) r4=$(gc ref0 nan0) r5=$(gc nan nan0)
if [[ $r1 == "0 PASS 3 equal"* && $r2 == "1 FAIL step 1, token 9"* && $r3 == "1 FAIL step 1 of $TMP/g-nan: logit nan,"* &&
    $r4 == "1 FAIL step 1 of $TMP/g-nan0: logit -nan,"* && $r5 == "1 FAIL step 1 of $TMP/g-nan:"* ]]; then
    pass "gpu_check's gen_cmp: logits within the bound pass, beyond it or not finite fail"
else fail "gpu_check's gen_cmp" "$r1" "$r2" "$r3" "$r4" "$r5"; fi
# tiny-gpt2's continuations keep to the time budget like every other step: with it spent at the
# start (GPU_CHECK_BUDGET=1), both are skipped and nothing runs. Before, they ran whatever was
# left (each under a plain 120 s limit) and passed. GPU_CHECK_DEVICE=cpu: no GPU needed
if [ "${SAN:-0}" != 1 ] && grep -q '^HAVE_CUBLAS := 1' build/config.mk 2>/dev/null && [ -x bin/kernel_check ]; then
    out=$(NVIDIA_SMI="$TMP/smi-ok" GPU_CHECK_DEVICE=cpu GPU_CHECK_BUDGET=1 GPU_CHECK_MATCH='^predict --generate' \
        bash "$GC" --no-build --only forward 2>&1)
    if [ "$(printf '%s\n' "$out" | grep -cE '^predict --generate 24.* +SKIP +[0-9.]+ +time budget spent')" = 2 ] &&
        ! ls build/gpu-check/out/predict-*.txt >/dev/null 2>&1 && grep -q "budget .* is spent" build/gpu-check/logs/predict-cpu.log; then
        pass "gpu_check: tiny-gpt2's continuations are skipped once the time budget is spent"
    else fail "gpu_check's continuations with the budget spent" "$(printf '%s\n' "$out" | grep -E '^predict' | cut -c 1-120)"; fi
    rm -f "$(printf '%s\n' "$out" | sed -n 's/^gpu_check: results in //p')"
else
    pass "gpu_check's budget for the continuations not checked: needs a build with CUDA (not under SAN)"
fi
# --emulated (or a SUBSCOPE_PLUGIN_DIR holding the emulated plugin): the forward step's
# comparisons through bin/emu's plugin, no nvidia-smi, the record kept out of bench/results
if [ "${SAN:-0}" = 1 ]; then
    pass "gpu_check --emulated not run under the sanitizers (it runs bin/'s programs)"
elif [ -f bin/emu/libsubscope-cuda.so ] && [ -x bin/kernel_check_emu ] && grep -q '^HAVE_CUBLAS := 1' build/config.mk 2>/dev/null; then
    before=$(ls bench/results | wc -l)
    out=$(SUBSCOPE_PLUGIN_DIR=$PWD/bin/emu NVIDIA_SMI="$TMP/nonexistent" \
        GPU_CHECK_MATCH='^(forward tiny-gpt2 demo prompts, all sites$|predict --generate 24, cpu = cuda$|generate gen-g64, )' \
        bash "$GC" --only forward 2>&1); rc=$?
    res=$(printf '%s\n' "$out" | sed -n 's/^gpu_check: results in //p')
    # GPU_CHECK_MATCH decides what is made and run: gen-g64 the only model, no prompt file (the
    # tiny-gpt2 case reads data/), the recomputed continuation not run. Before, every random
    # model and prompt file was made (gpt2-small's shape, wide-bf16, the Llama ones: ~15 s of a
    # lease) and both tiny-gpt2 continuations ran whatever the filter
    made=$(cd build/gpu-check/logs && ls mkmodel-* prompts-* predict-* 2>/dev/null | tr '\n' ' ')
    if [ "$made" = "mkmodel-gen-g64.log predict-cpu.log predict-cuda.log " ] &&
        printf '%s\n' "$out" | grep -qE '^predict --generate 24 on cuda, cached = recomputed +SKIP +0 +not selected'; then
        pass "gpu_check: GPU_CHECK_MATCH makes only the models, prompts and continuations of the selected cases"
    else fail "gpu_check with GPU_CHECK_MATCH made or ran more than it selects" "made: $made" \
        "$(printf '%s\n' "$out" | grep -E '^predict' | cut -c 1-120)"; fi
    if [ $rc = 0 ] && printf '%s' "$out" | grep -q "holds the emulated plugin: running as --emulated" &&
        printf '%s\n' "$out" | grep -qE '^forward tiny-gpt2 demo prompts, all sites +PASS' &&
        printf '%s\n' "$out" | grep -qE '^predict --generate 24, cpu = cuda +PASS' &&
        printf '%s\n' "$out" | grep -qE '^generate gen-g64, bf16, heads of 64, .* PASS .*cached vs cpu PASS 24 equal .*cached vs recomputed PASS' &&
        [ "${res#"$PWD"/build/gpu-check/}" != "$res" ] && grep -q '"emulated": 1' "$res" &&
        [ "$(ls bench/results | wc -l)" = "$before" ]; then
        pass "gpu_check on the emulated plugin: forward and predict against the CPU (bf16 generation's cache too), recorded in build/gpu-check"
    else fail "gpu_check on the emulated plugin" "exit $rc: $(printf '%s\n' "$out" | grep -vE 'SKIP|^  ' | tail -n 6)"; fi
    rm -f "$res"
    # the generation comparison fails where the continuations' logits are further apart than its
    # bound (1e-7 of the largest: bf16 products and caches are not that close)
    out=$(SUBSCOPE_PLUGIN_DIR=$PWD/bin/emu GPU_CHECK_GEN_BF16=1e-7 GPU_CHECK_MATCH='^generate gen-g64, ' \
        bash "$GC" --emulated --quick --only forward 2>&1); rc=$?
    if [ $rc = 1 ] && printf '%s\n' "$out" | grep -qE '^generate gen-g64, bf16, heads of 64, .*\(rtol 1e-7\) +FAIL .*cached vs cpu FAIL step [0-9]+, token'; then
        pass "gpu_check's generation comparison fails on logits beyond its bound"
    else fail "gpu_check's generation comparison with a bound of 1e-7" "exit $rc: $(printf '%s\n' "$out" | grep -E '^generate' | cut -c 1-300)"; fi
    rm -f "$(printf '%s\n' "$out" | sed -n 's/^gpu_check: results in //p')"
else
    pass "gpu_check --emulated not run: needs a build with CUDA and make test's bin/emu and kernel_check_emu"
fi
# tests/gpu/bundle.sh: the build packed with its libraries; unpacked elsewhere, the
# wrapped programs run with none of this machine's library paths.
if grep -q '^HAVE_CUBLAS := 1' build/config.mk 2>/dev/null; then
    if out=$(bash tests/gpu/bundle.sh --bin "$TOOLBIN" "$TMP/b.tar.gz" 2>&1) && mkdir "$TMP/x" && tar -C "$TMP/x" -xzf "$TMP/b.tar.gz"; then
        pass "bundle.sh packs the build"
        [ -x "$TMP/x/bin/subscope" ] && [ -x "$TMP/x/bin/.real/subscope" ] && [ -e "$TMP/x/bin/.real/libsubscope-cuda.so" ] &&
            ls "$TMP/x/.bundle/lib" | grep -q '^libhdf5' && ! ls "$TMP/x/.bundle/lib" | grep -qE '^(libc|libm|libstdc\+\+)\.so' &&
            pass "bundle holds wrappers, plugins and libraries (no glibc)" || fail "bundle contents" "$(ls -R "$TMP/x" | head -n 20)"
        v=$(cd / && env -u LD_LIBRARY_PATH "$TMP/x/bin/subscope" --version 2>&1)
        [ "$v" = "$("$SUBSCOPE" --version 2>&1)" ] && pass "bundled subscope runs elsewhere" || fail "bundled subscope --version" "$v"
        d=$(cd / && SUBSCOPE_CUDA_LIBS=$(sed -n 's/^CUDA_HOME := //p' "$OLDPWD/build/config.mk")/lib64 "$TMP/x/bin/subscope" info --dist 2>&1)
        printf '%s' "$d" | grep -q "cuda plugin loaded" && pass "bundled subscope loads its CUDA plugin" ||
            fail "bundled plugin" "$(printf '%s' "$d" | tail -n 2)"
        "$TMP/x/bin/h5cmp" tests/data/h5/h5py_base.h5 tests/data/h5/h5py_base.h5 >/dev/null 2>&1 && pass "bundled h5cmp runs" || fail "bundled h5cmp"
    else
        fail "bundle.sh" "$out"
    fi
else
    out=$(bash tests/gpu/bundle.sh "$TMP/b.tar.gz" 2>&1); rc=$?
    [ $rc = 1 ] && printf '%s' "$out" | grep -q "no CUDA backend" && pass "bundle.sh refuses a build without CUDA" || fail "bundle.sh without CUDA" "exit $rc: $out"
fi
# tests/gpu/run_bundle.sh: what it needs before it touches anything
RB=tests/gpu/run_bundle.sh
bash "$RB" --help | grep -q "gpu_check.sh --no-build" && pass "run_bundle.sh --help" || fail "run_bundle.sh --help"
out=$(bash "$RB" 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "need BUNDLE.tar.xz and --out DIR" && pass "run_bundle.sh without arguments" ||
    fail "run_bundle.sh without arguments" "exit $rc: $out"
out=$(bash "$RB" x.tar.xz --out "$TMP/o" --check-budget soon 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "take whole seconds" && pass "run_bundle.sh refuses a bad budget" ||
    fail "run_bundle.sh bad budget" "exit $rc: $out"
out=$(bash "$RB" x.tar.xz --out "$TMP/o" --profile-seconds 1m 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "take whole seconds" && pass "run_bundle.sh refuses a bad profile time" ||
    fail "run_bundle.sh bad profile time" "exit $rc: $out"
out=$(bash "$RB" "$TMP/nonexistent.tar.xz" --out "$TMP/o" 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "cannot unpack" && pass "run_bundle.sh names a missing bundle" ||
    fail "run_bundle.sh missing bundle" "exit $rc: $out"
# run_bundle.sh --kernel-filters: kernel_check once per filter before anything else, into
# kernel-check-filters.txt. In a copy of the scripts (run_bundle unpacks its bundle at the
# root it runs from), with a bundle whose kernel_check is the emulated one.
if [ -x "${TOOLBIN}kernel_check_emu" ]; then
    R=$TMP/rb && mkdir -p "$R/tests/gpu" "$R/bin" "$R/pack/bin" && cp "$RB" "$R/tests/gpu/" &&
        cp "${TOOLBIN}kernel_check_emu" "$R/pack/bin/kernel_check" && cp "$SUBSCOPE" "$R/pack/bin/subscope" &&
        tar -C "$R/pack" -cf "$R/b.tar" bin
    out=$(bash "$R/tests/gpu/run_bundle.sh" "$R/b.tar" --out "$R/o" --kernel-filters "cov_center f32->bf16 n=13; add " \
        --check-budget 0 --bench none 2>&1); rc=$?
    k="$R/o/kernel-check-filters.txt"
    if [ $rc = 0 ] && [ "$(grep -c '^== bin/kernel_check --filter' "$k" 2>/dev/null)" = 2 ] &&
        grep -q '^CASE cov_center f32->bf16 n=13 d=37 aligned .* ok' "$k" && ! grep -q '^CASE cov_center f32->f32' "$k" &&
        printf '%s' "$out" | grep -qE "kernel_check filters done after [0-9]+ s: [1-9][0-9]* ok, 0 failed"; then
        pass "run_bundle.sh --kernel-filters runs kernel_check per filter"
    else fail "run_bundle.sh --kernel-filters" "exit $rc: $(printf '%s' "$out" | tail -n 5) / $(head -n 5 "$k" 2>/dev/null)"; fi
else
    pass "run_bundle.sh --kernel-filters not checked: no kernel_check_emu"
fi
# run_bundle.sh --pipeline-cpus: the pipeline bench from the start on those cores, the checks on
# the others, its summary after theirs; a tiny pipeline (2 stages, 2 micro-batches) in a copy
out=$(bash "$RB" x.tar.xz --out "$TMP/o" --pipeline-cpus 3-1 --pipeline-seconds 9 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "pipeline-cpus wants A-B" && pass "run_bundle.sh refuses a bad --pipeline-cpus" ||
    fail "run_bundle.sh bad --pipeline-cpus" "exit $rc: $out"
out=$(bash "$RB" x.tar.xz --out "$TMP/o" --pipeline-cpus 0-0 2>&1); rc=$?
[ $rc = 1 ] && printf '%s' "$out" | grep -q "needs --pipeline-seconds" && pass "run_bundle.sh: --pipeline-cpus needs a time" ||
    fail "run_bundle.sh --pipeline-cpus without a time" "exit $rc: $out"
if command -v mpirun >/dev/null && command -v taskset >/dev/null && [ -x "${TOOLBIN}mkmodel" ] &&
    [ "$(nproc)" -ge 2 ]; then
    R=$TMP/rbp && mkdir -p "$R/tests/gpu" "$R/bench/results" "$R/pack/bin" && cp "$RB" "$R/tests/gpu/" &&
        cp bench/pipeline_bubble.sh "$R/bench/" && cp "${TOOLBIN}mkmodel" "$SUBSCOPE" "$R/pack/bin/" &&
        tar -C "$R/pack" -cf "$R/b.tar" bin
    # (Open MPI's own allocations at exit are not ours to report: as tests/cli/test_pipeline.sh)
    out=$(ASAN_OPTIONS=detect_leaks=0 bash "$R/tests/gpu/run_bundle.sh" "$R/b.tar" --out "$R/o" --check-budget 0 --bench none --pipeline-cpus 1-1 \
        --pipeline-seconds 120 --pipeline-args "--stages 2 --batches 2 --collect-only" 2>&1); rc=$?
    if [ $rc = 0 ] && printf '%s' "$out" | grep -q "pipeline bench runs alongside on cores 1-1, the rest on 0" &&
        printf '%s' "$out" | grep -q "pipeline_bubble exit 0" && grep -qE '^2 +[0-9.]+ +[0-9.]+ +[0-9.]+%' "$R/o/pipeline.txt" &&
        ls "$R"/o/pipeline-*-collect.json >/dev/null 2>&1; then
        pass "run_bundle.sh --pipeline-cpus runs the pipeline bench alongside"
    else fail "run_bundle.sh --pipeline-cpus" "exit $rc: $(printf '%s' "$out" | tail -n 8) / $(tail -n 5 "$R/o/pipeline.txt" 2>/dev/null)"; fi
else
    pass "run_bundle.sh --pipeline-cpus not run: needs mpirun, taskset, mkmodel and 2 cores"
fi
# tests/gpu/ncu_batch.py (the profile's steady batch): two runs' ncu CSVs, the second less the
# first per kernel, units converted, the job's own lines before the header skipped
if command -v python3 >/dev/null 2>&1; then
    hdr='"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"'
    row() { printf '"%s","1","subscope","h","%s","1","7","(256, 1, 1)","(64, 1, 1)","0","9.0","Command line profiler metrics","gpu__time_duration.sum","%s","%s"\n' "$@"; }
    { echo "==PROF== Connected to process 1"; echo "$hdr"; row 0 "ss_k_convert(unsigned short *, int)" usecond 40; row 1 "ss_k_layernorm(float *)" usecond 30; } >"$TMP/one.csv"
    { echo "$hdr"; row 0 "ss_k_convert(unsigned short *, int)" usecond 40; row 1 "ss_k_layernorm(float *)" usecond 30
      row 2 "ss_k_layernorm(float *)" nsecond "31,000"; row 3 "void gemm_kernel<(int)1>(Params)" msecond 1.5; } >"$TMP/two.csv"
    out=$(python3 tests/gpu/ncu_batch.py "$TMP/one.csv" "$TMP/two.csv" 2>&1)
    if printf '%s\n' "$out" | grep -q "one steady batch: 2 launches, 1.531 ms" &&
        printf '%s\n' "$out" | grep -qE "^ss_k_layernorm +1 +0.031" && printf '%s\n' "$out" | grep -qF "void gemm_kernel<(int)1> " &&
        ! printf '%s\n' "$out" | grep -q ss_k_convert; then
        pass "ncu_batch.py: one steady batch from two runs"
    else fail "ncu_batch.py" "$out"; fi
    out=$(python3 tests/gpu/ncu_batch.py "$TMP/one.csv" /dev/null 2>&1); rc=$?
    [ $rc != 0 ] && printf '%s' "$out" | grep -q "no ncu CSV header" && pass "ncu_batch.py names a file that is not ncu's CSV" ||
        fail "ncu_batch.py on a non-CSV" "exit $rc: $out"
else
    pass "ncu_batch.py not checked: no python3 here"
fi
finish
