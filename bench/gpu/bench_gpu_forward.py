#!/usr/bin/env python3
"""GPU benchmark: `subscope forward --device cuda --no-logits` against Hugging Face on the same GPU.

Standard library only (the GPU machine may have no torch and no network): the peer runs
only when --python names an interpreter where `import torch, transformers` works and
torch sees a GPU; otherwise the JSON says why it was skipped.

For each model directory (GPT-2- or Llama-shaped, made by bench/make_model.py) and each subscope
precision (--modes: fp32 = IEEE fp32 cuBLAS, the default; tf32 = --tf32, TF32 tensor-core
matmuls; bf16 = --dtype bfloat16, bf16 weights and bf16-rounded activations into each
matrix product, fp32 accumulation, fp32 activations elsewhere; any of them +attnk: with
SUBSCOPE_ATTN_GEMM_MIN_LEN=0, the attention kernels instead of the cuBLAS path; +tc / +notc:
SUBSCOPE_ATTN_TC=1 / 0, the tensor-core attention kernel with bf16 operands for every model /
for none (a bf16 model's default is on); +epi / +noepi: SUBSCOPE_BIAS_EPILOGUE=1 / 0, the bias
in cuBLASLt's epilogue for every product / for none (default: 16-bit weights'); +nofuse:
SUBSCOPE_FUSE=0, no fused product + bias + GELU or product + residual add; +mlp16:
SUBSCOPE_MLP16=1, the MLP's activation output (GELU or SwiGLU) kept in bf16 between its
products; +norm16: SUBSCOPE_NORM16=1, the norms write the rows of the products they feed in
bf16; +qkv16: SUBSCOPE_QKV16=1, GPT-2's QKV product writes q, k, v in bf16 for the
tensor-core attention; +z16: SUBSCOPE_Z16=1, the tensor-core attention hands z to its output
product in bf16; +gu16: SUBSCOPE_GU16=1, Llama's gate|up product written in bf16 for the
SwiGLU kernel (with +mlp16); these five are every 16-bit model's default (a Llama-family
model's since the fourth H100 run, GPT-2's since the twentieth session's), and +no16 sets all
five to 0; +qt1 / +qt2: SUBSCOPE_ATTN_QT=1 / 2,
the tensor-core attention with one / two 16-row query tiles per warp (default 2); +noplans: SUBSCOPE_LT_PLANS=0, cuBLASLt without cached plans or workspace
(its heuristic at every product, as before 2026-11-26); +bias16 / +bias32: SUBSCOPE_BIAS16=1 / 0,
a 16-bit output's bias always rounded to its type / never (default: where cuBLASLt declines the
fp32 one; each mode's cublaslt_notes in the JSON list the product shapes cuBLASLt declined, from
the runs' SUBSCOPE_LT_LOG=1, and the backend's counts); variants combine, bf16+notc+noepi),
subscope runs as a fresh process: one untimed warm run (--warm-once: for a model's first mode
only), --reps runs of a one-token prompt (--fixed-reps; the fixed cost: process start, CUDA context, cuBLAS, reading and
uploading the weights, HDF5 file), and --reps runs of the prompts. tokens/s and TFLOP/s are
the steady rate that subscope's own clock gives (SUBSCOPE_TIMING=1: the batches after the
first, the device synchronised at both ends, median over the runs), as the peer's are timed
after a warm-up; with a single batch, over net = median wall - median fixed (on an H100 the
fixed cost is ~0.85 s and varies by more than a 32k-token forward takes). Model FLOPs are bench_forward.py's:
2 x multiply-adds of the matmuls and of the causal attention (no logits, since
--no-logits): 2 * matmul_params * tokens + 2 * L * H * d_head * T * (T + 1) per sequence;
MFU = TFLOP/s / the dense peak of the precision used (and, for the issue's bf16 target, /
the bf16 dense peak too). Peaks come from kernel_bench's JSON (--peaks) or, without it,
from a table by nvidia-smi's GPU name (H100 SXM / H200: 989.4 bf16).

The peer (bench/peer_hf.py --device cuda --mode hidden) loads once, warms up on one
batch and times --reps passes, each ending with torch.cuda.synchronize(): fp32 (TF32
off), tf32 and bf16 by default (--peer-dtypes), each once per --peer-attn implementation
(eager, sdpa) when that is given.

GPU memory: subscope's own peak of device allocations (its "peak device memory" line),
and nvidia-smi sampled every 100 ms during the timed runs: the peak of memory.used minus
its value before (device-wide, so it includes the CUDA context and cuBLAS workspace). Writes one JSON document (--json) and prints a table.
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from bench_forward import config_summary, matmul_params, model_flops, shape_of  # noqa: E402  (standard library only)
from bench_attribute import later_batches  # noqa: E402


def log(msg):
    print(f"[gpu-bench] {msg}", file=sys.stderr, flush=True)


class GpuMemSampler:
    """Peak of nvidia-smi's memory.used (MiB) on one GPU while running; None if unavailable."""

    def __init__(self, index=0):
        self.index, self.peak, self.base, self.p, self.t = index, None, None, None, None

    def _query(self):
        try:
            out = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
            return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def __enter__(self):
        self.base = self._query()
        if self.base is None:
            return self
        try:
            self.p = subprocess.Popen(["nvidia-smi", "-i", str(self.index), "--query-gpu=memory.used",
                                       "--format=csv,noheader,nounits", "-lms", "100"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return self

        def reader():
            for line in self.p.stdout:
                try:
                    v = float(line.strip())
                except ValueError:
                    continue
                self.peak = v if self.peak is None else max(self.peak, v)

        self.t = threading.Thread(target=reader, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        if self.p:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
            self.t.join(timeout=5)
        return False

    def used_mib(self):
        if self.peak is None or self.base is None:
            return None
        return max(self.peak - self.base, 0.0)


MODE_FLAGS = {"fp32": [], "tf32": ["--tf32"], "bf16": ["--dtype", "bfloat16"]}
# A mode may carry a variant, MODE+VARIANT: the same flags with these environment settings
# (see the docstring).
# Variants combine: "bf16+notc+noepi".
VARIANT_ENV = {"attnk": {"SUBSCOPE_ATTN_GEMM_MIN_LEN": "0"}, "tc": {"SUBSCOPE_ATTN_TC": "1"},
               "epi": {"SUBSCOPE_BIAS_EPILOGUE": "1"}, "nofuse": {"SUBSCOPE_FUSE": "0"},
               "notc": {"SUBSCOPE_ATTN_TC": "0"}, "noepi": {"SUBSCOPE_BIAS_EPILOGUE": "0"},
               "mlp16": {"SUBSCOPE_MLP16": "1"}, "norm16": {"SUBSCOPE_NORM16": "1"},
               "qkv16": {"SUBSCOPE_QKV16": "1"}, "z16": {"SUBSCOPE_Z16": "1"}, "gu16": {"SUBSCOPE_GU16": "1"},
               "no16": {v: "0" for v in ("SUBSCOPE_MLP16", "SUBSCOPE_NORM16", "SUBSCOPE_QKV16", "SUBSCOPE_Z16",
                                         "SUBSCOPE_GU16")},
               "qt1": {"SUBSCOPE_ATTN_QT": "1"}, "qt2": {"SUBSCOPE_ATTN_QT": "2"},
               "noplans": {"SUBSCOPE_LT_PLANS": "0"},
               "bias16": {"SUBSCOPE_BIAS16": "1"}, "bias32": {"SUBSCOPE_BIAS16": "0"}}


def mode_parts(mode):
    """(base precision, extra environment) of a --modes entry."""
    base, *variants = mode.split("+")
    env = {}
    for v in variants:
        env.update(VARIANT_ENV.get(v, {}))
    return base, env
MODE_DTYPE = {"fp32": "fp32 weights, activations and matmuls (TF32 off)",
              "tf32": "fp32 weights and activations, TF32 tensor-core matmuls",
              "bf16": "bf16 weights, activations rounded to bf16 into each matmul, fp32 accumulation and activations"}
PEAK_RE = re.compile(r"peak device memory ([0-9.]+) MiB")


def host_peak_mib(path):
    """The host_memory_peak_bytes attribute of a forward output, in MiB (None if h5dump cannot say)."""
    try:
        p = subprocess.run(["h5dump", "-a", "/host_memory_peak_bytes", path], capture_output=True, text=True, timeout=60)
        m = re.search(r"\(0\): (\d+)", p.stdout)
        return int(m.group(1)) / 1048576.0 if m else None
    except (OSError, subprocess.TimeoutExpired):
        return None


SPLIT_RE = re.compile(r"later batches: ([0-9.]+) s in ss_forward before its closing device sync, ([0-9.]+) s waiting")
# what the CUDA backend says about products cuBLASLt declined: each declined shape under
# SUBSCOPE_LT_LOG=1 ("...: declined (...)"), and the counts at its close
LT_RE = re.compile(r"^cuda:\d+: cuBLASLt (?:declined|took no fp32 bias|.*: declined \().*$", re.M)
# SUBSCOPE_TIMING's setup line (src/jobs/run.c): where a run's fixed cost goes before the first batch
SETUP_RE = re.compile(r"timing: setup ([0-9.]+) s: backend ([0-9.]+) s, model files ([0-9.]+) s, prompts ([0-9.]+) s, "
                      r"placing the weights ([0-9.]+) s")


def run_subscope(exe, model, prompts, batch, mode, env, workdir, tag, timeout):
    """(wall seconds, subscope's reported peak device memory in MiB or None, its peak resident host memory in
    MiB or None, (later batches' seconds, their prompts) from SUBSCOPE_TIMING or None, how those batches'
    time split between ss_forward's host side and its closing device sync, or None, and the CUDA backend's
    lines on products cuBLASLt declined, and the setup's parts in seconds or None). A sync wait near zero
    means the device waited for the host."""
    out = os.path.join(workdir, f"{tag}.h5")
    cmd = [exe, "forward", "--model", model, "--input", prompts, "--out", out, "--batch", str(batch),
           "--no-logits", "--device", "cuda", "--compress", "0"] + MODE_FLAGS[mode_parts(mode)[0]]
    env = dict(env, SUBSCOPE_TIMING="1", SUBSCOPE_LT_LOG="1", **mode_parts(mode)[1])
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"subscope failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    host = None
    if os.path.exists(out):
        host = host_peak_mib(out)
        os.remove(out)
    m = PEAK_RE.search(p.stderr)
    sp = SPLIT_RE.search(p.stderr)
    split = {"host_s": float(sp.group(1)), "sync_wait_s": float(sp.group(2))} if sp else None
    su = SETUP_RE.search(p.stderr)
    setup = dict(zip(("setup_s", "backend_s", "model_files_s", "prompts_s", "place_s"),
                     (float(x) for x in su.groups()))) if su else None
    return (wall, float(m.group(1)) if m else None, host, later_batches(p.stderr), split, LT_RE.findall(p.stderr),
            setup)


def peer_status(python):
    """(ok, why): can `python` run the GPU peer?"""
    if not python:
        return False, "peer skipped: no interpreter given"
    code = ("import torch, transformers, sys\n"
            "sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 3)")
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"peer skipped: {python} did not run ({e})"
    if p.returncode == 3:
        return False, "peer skipped: torch is installed but sees no GPU (torch.cuda.is_available() is False)"
    if p.returncode != 0:
        return False, "peer skipped: not installed (import torch, transformers failed)"
    return True, ""


def run_peer(python, model, prompts, batch, reps, dtype, env, timeout, attn=None):
    cmd = [python, os.path.join(BENCH, "peer_hf.py"), "--model", model, "--input", prompts, "--mode", "hidden",
           "--batch", str(batch), "--reps", str(reps), "--device", "cuda", "--dtype", dtype]
    if attn:
        cmd += ["--attn", attn]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"peer failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_prompts(path, n, T, vocab, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"tokens": [rng.randrange(vocab) for _ in range(T)]}) + "\n")


# Dense peaks (TFLOP/s: fp32, tf32, bf16) by nvidia-smi's name, for runs without kernel_bench's
# JSON; the same table and order as kernel_bench.cu (bench/README.md gives the sources).
PEAK_TABLE = [("GH200", "GH200 (H100 SXM compute)", 66.9, 494.7, 989.4), ("H200 NVL", "H200 NVL", 60.0, 417.5, 835.5),
              ("H200", "H200 SXM", 66.9, 494.7, 989.4), ("H100 NVL", "H100 NVL", 60.0, 417.5, 835.5),
              ("H100 PCIe", "H100 PCIe", 51.2, 378.0, 756.0), ("H100", "H100 SXM5", 66.9, 494.7, 989.4)]


def gpu_name():
    try:
        p = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=30)
        return p.stdout.strip().splitlines()[0].strip() if p.returncode == 0 and p.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def peaks_by_name(name):
    """kernel_bench's peaks layout from the name alone (an "H100" that is not PCIe/NVL is
    taken as SXM; kernel_bench also checks the SM count)."""
    for key, label, fp32, tf32, bf16 in PEAK_TABLE:
        if name and key in name:
            return {"source": f"table by nvidia-smi name: {label}", "fp32_tflops": fp32, "tf32_tflops": tf32,
                    "bf16_tflops": bf16}
    return {"source": f"unknown GPU '{name}': no peak", "fp32_tflops": None, "tf32_tflops": None, "bf16_tflops": None}


def pct(x, peak):
    return 100.0 * x / peak if x and peak else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated model directories (bench/make_model.py)")
    ap.add_argument("--subscope", default=os.path.join(ROOT, "bin", "subscope"))
    ap.add_argument("--python", default=None, help="interpreter for the peer (needs torch, transformers, a GPU)")
    ap.add_argument("--prompts", type=int, default=128, help="prompts per run (default 128)")
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per prompt (default 1024)")
    ap.add_argument("--batch", type=int, default=16, help="prompts per forward pass (default 16: 16k tokens)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fixed-reps", type=int, default=None,
                    help="runs of the one-token prompt per mode, for the fixed cost (default: --reps; a 7B run's fixed "
                         "cost is ~20 s a run, so gpu_llama takes 1)")
    ap.add_argument("--warm-once", action="store_true",
                    help="the untimed warm run for a model's first mode only (its files are then in the page cache for "
                         "the others)")
    ap.add_argument("--modes", default="fp32,tf32,bf16", help="subscope precisions: fp32, tf32, bf16")
    ap.add_argument("--peer-dtypes", default="fp32,tf32,bf16")
    ap.add_argument("--peer-attn", default="",
                    help="comma-separated attention implementations for the peer (eager, sdpa); each dtype runs once "
                         "per implementation, named '<dtype>-<attn>' (default: transformers' default, named '<dtype>')")
    ap.add_argument("--peaks", default=None,
                    help="kernel_bench JSON: its device.peaks give the MFU denominators (without it, or if it is "
                         "missing: a table by nvidia-smi's GPU name)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds allowed per process (default 1200)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        base, *variants = m.split("+")
        if base not in MODE_FLAGS or any(v not in VARIANT_ENV for v in variants):
            sys.exit(f"bench_gpu_forward.py: unknown subscope mode '{m}' ({', '.join(MODE_FLAGS)}, "
                     f"each optionally +{', +'.join(VARIANT_ENV)})")
    peer_dtypes = [x for x in a.peer_dtypes.split(",") if x]
    if not os.access(a.subscope, os.X_OK):
        sys.exit(f"bench_gpu_forward.py: {a.subscope} is not executable; run make first")
    peaks = {}
    name_smi = gpu_name()
    if a.peaks and os.path.exists(a.peaks):
        try:
            with open(a.peaks) as f:
                peaks = json.load(f)["device"]["peaks"]
        except (OSError, ValueError, KeyError) as e:
            log(f"cannot read peaks from {a.peaks}: {e}")
    if not peaks or peaks.get("bf16_tflops") is None:
        peaks = peaks_by_name(name_smi)
        log(f"peaks: {peaks['source']}")
    peer_runs = [(dt, at) for dt in peer_dtypes for at in ([x for x in a.peer_attn.split(",") if x] or [None])]
    peak_of = {"fp32": peaks.get("fp32_tflops"), "tf32": peaks.get("tf32_tflops"), "bf16": peaks.get("bf16_tflops")}

    workdir = a.workdir or tempfile.mkdtemp(prefix="subscope-gpubench-")
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["HF_HUB_OFFLINE"] = "1"
    peer_ok, peer_why = peer_status(a.python)
    if not peer_ok:
        log(peer_why)

    results = []
    t_start = time.time()

    def write_doc(complete):
        """The JSON so far: after each model too (complete false), so that a run cut by a time
        limit keeps the models it finished."""
        doc = {"benchmark": "forward-gpu", "elapsed_s": time.time() - t_start, "complete": complete,
               "settings": {"prompts": a.prompts, "tokens": a.tokens, "batch": a.batch, "reps": a.reps, "modes": modes,
                            "peer_dtypes": peer_dtypes if peer_ok else [], "peer_attn": a.peer_attn or "default",
                            "subscope_flags": "--no-logits --device cuda "
                            "--compress 0"},
               "peaks_tflops": peak_of, "peaks_source": peaks.get("source"), "gpu_name": name_smi,
               "flop_formula": "2 * matmul_params * tokens + 2 * L * H * d_head * T * (T + 1) per sequence (QK^T and "
                               "PV over the causal triangle); matmul_params = per-layer q/k/v/o (+ gate/up/down or "
                               "c_fc/c_proj) weights x L, no embeddings, no logits (--no-logits)",
               "peer_available": peer_ok, "peer_note": peer_why or None,
               "notes": "subscope bf16 = bf16 matrix products (weights stored in bf16, activations rounded per "
                        "product), everything else fp32; HF bf16 = the whole model in bf16.",
               "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, a.json)
    for model in [m for m in a.models.split(",") if m]:
        with open(os.path.join(model, "config.json")) as f:
            cfg = json.load(f)
        T = min(a.tokens, cfg.get("n_positions") or cfg.get("max_position_embeddings") or a.tokens)
        prompts = os.path.join(workdir, f"prompts-{a.prompts}x{T}-v{cfg['vocab_size']}.jsonl")
        if not os.path.exists(prompts):
            write_prompts(prompts, a.prompts, T, cfg["vocab_size"], 4321)
        one = os.path.join(workdir, "one-token.jsonl")
        with open(one, "w") as f:
            f.write(json.dumps({"tokens": [1]}) + "\n")
        tokens = a.prompts * T
        flops = model_flops(cfg, a.prompts, T, False)
        name = os.path.basename(os.path.normpath(model))
        entry = {"model": name, "family": shape_of(cfg)[0], "config": config_summary(cfg),
                 "matmul_params": matmul_params(cfg),
                 "n_prompts": a.prompts, "tokens_per_prompt": T, "tokens": tokens,
                 "tokens_per_batch": min(a.batch, a.prompts) * T, "model_gflop": flops / 1e9,
                 "subscope": {}, "peer": {}}
        for mi, mode in enumerate(modes):
            base, venv = mode_parts(mode)
            r = {"dtype": MODE_DTYPE[base], "flags": MODE_FLAGS[base], "env": venv, "peak_kind": base}
            try:
                if mi == 0 or not a.warm_once:
                    run_subscope(a.subscope, model, one, a.batch, mode, env, workdir, "warm", a.timeout)
                fixed_full = [run_subscope(a.subscope, model, one, a.batch, mode, env, workdir, f"fixed{i}", a.timeout)
                              for i in range(max(1, a.fixed_reps if a.fixed_reps is not None else a.reps))]
                fixed = [x[0] for x in fixed_full]
                with GpuMemSampler() as mem:
                    full = [run_subscope(a.subscope, model, prompts, a.batch, mode, env, workdir, f"run{i}", a.timeout)
                            for i in range(a.reps)]
                runs = [x[0] for x in full]
                wall, fixed_wall = statistics.median(runs), statistics.median(fixed)
                net = max(wall - fixed_wall, 1e-9)
                # the steady rate: subscope's own clock over the batches after the first (device
                # synchronised at both ends, as the peer's passes are), where there are any; else
                # the wall time net of the fixed cost, which on a fast GPU is mostly noise
                later = [x[3] for x in full if x[3]]
                if later:
                    rate = statistics.median(n * T / sec for sec, n in later)
                    method = "in-process: batches after the first (SUBSCOPE_TIMING)"
                else:
                    rate, method = tokens / net, "wall minus the one-token run"
                tfl = flops / tokens * rate / 1e12
                r.update({"runs_s": runs, "fixed_runs_s": fixed, "median_wall_s": wall, "fixed_wall_s": fixed_wall,
                          "fixed_setup": [x[6] for x in fixed_full if x[6]],
                          "net_wall_s": net, "tokens_per_s": rate, "rate_method": method,
                          "later_batches": [{"seconds": sec, "prompts": n} for sec, n in later],
                          "later_batches_split": [x[4] for x in full if x[4]],
                          "cublaslt_notes": sorted({n for x in full for n in x[5]}),
                          "tokens_per_s_wall_net": tokens / net, "tokens_per_s_raw": tokens / wall,
                          "tflops": tfl, "mfu_pct": pct(tfl, peak_of[base]), "mfu_vs_bf16_peak_pct": pct(tfl, peak_of["bf16"]),
                          "gpu_mem_used_mib": mem.used_mib(), "device_memory_peak_mib": full[0][1],
                          "host_memory_peak_mib": full[0][2],
                          "fixed_share": fixed_wall / wall})
                log(f"{name} subscope {mode}: {rate:,.0f} tok/s ({'in-process, batches after the first' if later else 'wall net'}; "
                    f"{wall:.2f} s wall, {fixed_wall:.2f} s fixed), {tfl:.1f} TFLOP/s")
            except (RuntimeError, subprocess.TimeoutExpired) as ex:
                r["error"] = str(ex)
                log(f"{name} subscope {mode}: {ex}")
            entry["subscope"][mode] = r
        if not peer_ok:
            entry["peer"] = {"skipped": peer_why}
        else:
            for dt, at in peer_runs:
                key = dt + (f"-{at}" if at else "")
                try:
                    p = run_peer(a.python, model, prompts, a.batch, a.reps, dt, env, a.timeout, at)
                    tfl = flops / p["median_s"] / 1e12
                    p.update({"tflops": tfl, "mfu_pct": pct(tfl, peak_of.get(dt)),
                              "mfu_vs_bf16_peak_pct": pct(tfl, peak_of["bf16"])})
                    log(f"{name} peer {key}: {p['tokens_per_s']:,.0f} tok/s, {tfl:.1f} TFLOP/s")
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as ex:
                    p = {"error": str(ex)}
                    log(f"{name} peer {key}: {ex}")
                entry["peer"][key] = p
        # > 1: subscope faster. Like for like (same precision) where both exist.
        ratios = {}
        for mode, s in entry["subscope"].items():
            for dt, p in entry["peer"].items():
                if isinstance(p, dict) and "tokens_per_s" in s and "tokens_per_s" in p:
                    ratios[f"subscope_{mode}_over_peer_{dt}"] = s["tokens_per_s"] / p["tokens_per_s"]
        entry["speedup"] = ratios
        results.append(entry)
        write_doc(False)

    write_doc(True)
    if not a.workdir:
        for n in os.listdir(workdir):
            os.remove(os.path.join(workdir, n))
        os.rmdir(workdir)
    failed = sum("error" in s for r in results for s in r["subscope"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
