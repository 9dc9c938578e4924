#!/usr/bin/env python3
"""CPU benchmark: `subscope forward` against Hugging Face transformers on the same prompts.

For each case (below) subscope runs --reps times as a fresh process under /usr/bin/time -v
(wall time, CPU time, peak RSS); the peer (peer_hf.py --serve) loads once, warms up on
one batch and runs the same job --reps times, its passes alternating with subscope's
runs so both see the same load on a shared machine. Medians are compared (best-of-reps
ratios are recorded too).

subscope's wall time includes what the peer's timed region does not: process start,
reading config and mmap-ing the weights, reading the prompts, creating the HDF5 file and
writing provenance. That fixed cost is measured by running the same flags on a single
one-token prompt and is subtracted ("net"); the raw numbers are kept too. The HDF5
writing of logits / activations is real work of the job and stays in the net time; the
peer's "+h5" variants do the same writing with h5py (same chunks; raw, as subscope's default).

cases
  hidden   subscope --no-logits                                  peer: GPT2Model
  logits   subscope (logits stored)                              peer: GPT2LMHeadModel [+ h5py write]
  capture  subscope --no-logits --sites 'blocks.*.mlp.hook_post' peer: hooks on mlp.act [+ h5py write]

Writes one JSON file (see bench/README.md for its fields) and prints a short table.
"""
import argparse
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASES = {
    "hidden": {"flags": ["--no-logits"], "peer": "hidden"},
    "logits": {"flags": [], "peer": "logits"},
    "capture": {"flags": ["--no-logits", "--sites", "blocks.*.mlp.hook_post"], "peer": "capture"},
}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cpu_info():
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    fl = line.split(":", 1)[1].split()
                    flags = " ".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in fl)
                    break
    except OSError:
        pass
    try:
        mem_kb = int(open("/proc/meminfo").read().split("MemTotal:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        mem_kb = 0
    return {"cpu_model": model, "logical_cpus": cores, "simd": flags, "mem_total_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release()}


def git_commit():
    """The commit of the programs measured: SUBSCOPE_GIT_COMMIT where the run was given it
    (tests/gpu/run_bundle.sh, from the bundle), else the checkout's."""
    if os.environ.get("SUBSCOPE_GIT_COMMIT"):
        return os.environ["SUBSCOPE_GIT_COMMIT"]
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "include", "Makefile"]).returncode
        return c + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_time_v(path):
    """Fields of GNU time -v output that we use."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("Maximum resident set size"):
                out["peak_rss_mib"] = int(line.rsplit(":", 1)[1]) / 1024.0
            elif line.startswith("User time"):
                out["user_s"] = float(line.rsplit(":", 1)[1])
            elif line.startswith("System time"):
                out["sys_s"] = float(line.rsplit(":", 1)[1])
    if "peak_rss_mib" not in out:
        raise RuntimeError(f"{path}: no 'Maximum resident set size' line; is /usr/bin/time GNU time?")
    return out


def run_subscope(exe, model, prompts, flags, batch, env, workdir, tag):
    out = os.path.join(workdir, f"{tag}.h5")
    tv = os.path.join(workdir, f"{tag}.time")
    cmd = ["/usr/bin/time", "-v", "-o", tv, exe, "forward", "--model", model, "--input", prompts, "--out", out,
           "--batch", str(batch)] + flags
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"subscope failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    r = parse_time_v(tv)
    r["wall_s"] = wall
    r["cpu_s"] = r["user_s"] + r["sys_s"]
    r["out_bytes"] = os.path.getsize(out)
    os.remove(out)
    os.remove(tv)
    return r


class Peer:
    """A peer_hf.py --serve process: loads torch and the model once, then runs one timed
    pass per request, so its passes can alternate with subscope runs."""

    def __init__(self, python, model, prompts, mode, batch, threads, h5, env, workdir, attn=None):
        self.h5path = os.path.join(workdir, f"peer-{mode}-{attn}.h5") if h5 else None
        cmd = [python, os.path.join(HERE, "peer_hf.py"), "--model", model, "--input", prompts, "--mode", mode,
               "--batch", str(batch), "--threads", str(threads), "--serve"]
        if attn:
            cmd += ["--attn", attn]
        if self.h5path:
            cmd += ["--h5", self.h5path]
        self.cmd = " ".join(cmd)
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True)
        self._read()  # {"ready": true} once loaded and warmed up

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.err.seek(0)
            raise RuntimeError(f"peer failed ({self.p.returncode}): {self.cmd}\n{self.err.read()[-4000:]}")
        return json.loads(line)

    def run_pass(self):
        self.p.stdin.write("pass\n")
        self.p.stdin.flush()
        return self._read()

    def finish(self):
        self.p.stdin.write("done\n")
        self.p.stdin.flush()
        r = self._read()
        self.p.wait()
        if self.h5path:
            r["out_bytes"] = os.path.getsize(self.h5path)
            os.remove(self.h5path)
        return r


def shape_of(cfg):
    """(family, layers, d_model, heads, kv heads, head dim, d_mlp, vocab) of a GPT-2 or
    Llama-family config.json."""
    if cfg.get("model_type") == "gpt2" or "n_embd" in cfg:
        d, H = cfg["n_embd"], cfg["n_head"]
        return "gpt2", cfg["n_layer"], d, H, H, d // H, cfg.get("n_inner") or 4 * d, cfg["vocab_size"]
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    return ("llama", cfg["num_hidden_layers"], d, H, cfg.get("num_key_value_heads") or H,
            cfg.get("head_dim") or d // H, cfg["intermediate_size"], cfg["vocab_size"])


def config_summary(cfg):
    keys = ("n_layer", "n_head", "n_embd", "n_inner", "vocab_size", "n_positions", "activation_function") \
        if shape_of(cfg)[0] == "gpt2" else \
        ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
         "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_theta", "rope_scaling", "dtype")
    return {k: cfg.get(k) for k in keys}


def matmul_params(cfg):
    """Weights that take part in a matrix product per token, all layers, without the
    embeddings and the unembedding (biases and norms are not products)."""
    fam, L, d, H, Hkv, dh, dm, _ = shape_of(cfg)
    if fam == "gpt2":
        return L * (d * 3 * d + d * d + 2 * d * dm)
    return L * (d * H * dh + 2 * d * Hkv * dh + H * dh * d + 3 * d * dm)  # q, k, v, o; gate, up, down


def model_flops(cfg, n_prompts, T, logits):
    """2 x multiply-adds of the matmuls and attention; norms/activations/softmax/rotary ignored:
    2 * matmul_params * tokens + per sequence 2 * L * H * dh * T * (T + 1) (QK^T and PV, each
    2 * H * dh FLOPs per query-key pair, over the causal triangle's T(T+1)/2 pairs)
    [+ 2 * d * vocab per token for the logits]."""
    _, L, d, H, _, dh, _, V = shape_of(cfg)
    attn = 2 * 2 * L * H * dh * T * (T + 1) // 2
    total = n_prompts * (T * 2 * matmul_params(cfg) + attn)
    if logits:
        total += 2 * n_prompts * T * d * V
    return total


def run_solo(a, env, workdir):
    """subscope alone on --solo-model (--no-logits): what a shape too large to run next to
    the peer on this machine costs. Same method as the cases: net = full - one-token."""
    with open(os.path.join(a.solo_model, "config.json")) as f:
        cfg = json.load(f)
    with open(a.solo_prompts) as f:
        rows = [json.loads(line)["tokens"] for line in f if line.strip()]
    n, T = len(rows), len(rows[0])
    one = os.path.join(workdir, "solo-one-token.jsonl")
    with open(one, "w") as f:
        f.write(json.dumps({"tokens": [rows[0][0]]}) + "\n")
    flags = ["--no-logits"]
    run_subscope(a.subscope, a.solo_model, one, flags, a.batch, env, workdir, "solo-warm")
    fixed, runs = [], []
    for i in range(a.solo_reps):
        fixed.append(run_subscope(a.subscope, a.solo_model, one, flags, a.batch, env, workdir, f"solo-fixed{i}"))
        runs.append(run_subscope(a.subscope, a.solo_model, a.solo_prompts, flags, a.batch, env, workdir, f"solo-{i}"))
        log(f"solo {os.path.basename(os.path.normpath(a.solo_model))}: rep {i}: {runs[-1]['wall_s']:.2f} s wall "
            f"({fixed[-1]['wall_s']:.2f} s for one token), {runs[-1]['peak_rss_mib']:.0f} MiB")
    wall = statistics.median(x["wall_s"] for x in runs)
    fixed_wall = statistics.median(x["wall_s"] for x in fixed)
    net = max(wall - fixed_wall, 1e-9)
    flops = model_flops(cfg, n, T, False)
    return {"model": os.path.basename(os.path.normpath(a.solo_model)), "family": shape_of(cfg)[0],
            "config": config_summary(cfg), "matmul_params": matmul_params(cfg), "flags": flags,
            "n_prompts": n, "tokens_per_prompt": T, "tokens": n * T, "batch": a.batch, "threads": a.threads,
            "runs": runs, "fixed_runs": fixed, "median_wall_s": wall, "fixed_wall_s": fixed_wall,
            "net_wall_s": net, "tokens_per_s": n * T / net, "tokens_per_s_raw": n * T / wall,
            "peak_rss_mib": max(x["peak_rss_mib"] for x in runs),
            "fixed_peak_rss_mib": max(x["peak_rss_mib"] for x in fixed),
            "model_gflop": flops / 1e9, "gflop_per_s": flops / net / 1e9}


def load_avg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model directory (bench/make_model.py)")
    ap.add_argument("--prompts", required=True, help="prompts JSONL of {\"tokens\": [...]}, all the same length")
    ap.add_argument("--subscope", default=os.path.join(ROOT, "bin", "subscope"))
    ap.add_argument("--python", default=sys.executable, help="interpreter for the peer (needs torch, transformers)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for both (SUBSCOPE_THREADS, OPENBLAS_NUM_THREADS, torch.set_num_threads)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default="hidden,logits,capture")
    ap.add_argument("--no-peer-h5", action="store_true", help="skip the peer's +h5 (h5py writing) variants")
    ap.add_argument("--peer-attn", default="",
                    help="comma-separated attention implementations for the peer (eager, sdpa): one variant each, "
                         "named e.g. 'logits[eager]'; the +h5 variants use the last one. Default: transformers' "
                         "default, variants unsuffixed")
    ap.add_argument("--solo-model", default=None,
                    help="also run subscope alone (no peer) on this model: --solo-reps runs of --solo-prompts with "
                         "--no-logits, and as many one-token runs (a shape too large for a side-by-side run)")
    ap.add_argument("--solo-prompts", default=None)
    ap.add_argument("--solo-reps", type=int, default=1)
    ap.add_argument("--host", default=os.environ.get("BENCH_HOST") or socket.gethostname().split(".")[0],
                    help="label in the results file name (default $BENCH_HOST or the host name)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"), help="directory for the JSON")
    ap.add_argument("--json", default=None, help="exact JSON path (overrides --results/--host)")
    ap.add_argument("--workdir", default=None, help="where HDF5 outputs go while running (default: a temp dir)")
    a = ap.parse_args()

    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            sys.exit(f"bench_forward.py: unknown case '{c}' (have {', '.join(CASES)})")
    if not os.access(a.subscope, os.X_OK):
        sys.exit(f"bench_forward.py: {a.subscope} is not executable; run `make` first")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("bench_forward.py: /usr/bin/time is missing (Debian: apt-get install time)")
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    with open(a.prompts) as f:
        rows = [json.loads(line)["tokens"] for line in f if line.strip()]
    n_prompts, T = len(rows), len(rows[0])
    if any(len(r) != T for r in rows):
        sys.exit(f"bench_forward.py: {a.prompts}: prompts must all have the same length")
    tokens = n_prompts * T

    env = dict(os.environ)
    for k in ("SUBSCOPE_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(a.threads)
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["HF_HUB_OFFLINE"] = "1"

    workdir = a.workdir or tempfile.mkdtemp(prefix="subscope-bench-")
    os.makedirs(workdir, exist_ok=True)
    one = os.path.join(workdir, "one-token.jsonl")
    with open(one, "w") as f:
        f.write(json.dumps({"tokens": [rows[0][0]]}) + "\n")

    load_before = load_avg()
    t_start = time.time()
    results = {}
    for case in cases:
        spec = CASES[case]
        r = {"subscope_flags": spec["flags"]}
        # Page cache warm for both sides: one untimed subscope run on the one-token prompt.
        run_subscope(a.subscope, a.model, one, spec["flags"], a.batch, env, workdir, f"{case}-warm")
        fixed = [run_subscope(a.subscope, a.model, one, spec["flags"], a.batch, env, workdir, f"{case}-fixed{i}")
                 for i in range(a.reps)]
        log(f"{case}: subscope fixed cost (1 prompt x 1 token) {[round(x['wall_s'], 3) for x in fixed]} s")
        attns = [x for x in a.peer_attn.split(",") if x] or [None]
        variants = [(False, at) for at in attns]
        if case != "hidden" and not a.no_peer_h5:
            variants.append((True, attns[-1]))
        workers = {spec["peer"] + ("+h5" if h5 else "") + (f"[{at}]" if at else ""):
                   Peer(a.python, a.model, a.prompts, spec["peer"], a.batch, a.threads, h5, env, workdir, at)
                   for h5, at in variants}
        runs = []
        for i in range(a.reps):
            # Alternate who goes first: on a shared machine load drifts, and both
            # sides should sample the same drift.
            order = ["subscope"] + list(workers)
            order = order[i % len(order):] + order[:i % len(order)]
            for who in order:
                if who == "subscope":
                    runs.append(run_subscope(a.subscope, a.model, a.prompts, spec["flags"], a.batch, env, workdir,
                                             f"{case}-{i}"))
                    log(f"{case}: rep {i}: subscope {runs[-1]['wall_s']:.2f} s wall, {runs[-1]['cpu_s']:.2f} s cpu, "
                        f"{runs[-1]['peak_rss_mib']:.0f} MiB")
                else:
                    q = workers[who].run_pass()
                    log(f"{case}: rep {i}: peer {who} {q['pass_s']:.2f} s wall, {q['cpu_s']:.2f} s cpu")
        wall = statistics.median(x["wall_s"] for x in runs)
        fixed_wall = statistics.median(x["wall_s"] for x in fixed)
        cpu = statistics.median(x["cpu_s"] for x in runs)
        fixed_cpu = statistics.median(x["cpu_s"] for x in fixed)
        net = max(wall - fixed_wall, 1e-9)
        best_net = max(min(x["wall_s"] for x in runs) - min(x["wall_s"] for x in fixed), 1e-9)
        flops = model_flops(cfg, n_prompts, T, case == "logits")
        r["subscope"] = {
            "runs": runs,
            "fixed_runs": fixed,
            "median_wall_s": wall,
            "fixed_wall_s": fixed_wall,
            "net_wall_s": net,
            "best_net_wall_s": best_net,
            "median_cpu_s": cpu,
            "net_cpu_s": max(cpu - fixed_cpu, 1e-9),
            "tokens_per_s_raw": tokens / wall,
            "tokens_per_s": tokens / net,
            "peak_rss_mib": max(x["peak_rss_mib"] for x in runs),
            "fixed_peak_rss_mib": max(x["peak_rss_mib"] for x in fixed),
            "out_bytes": runs[0]["out_bytes"],
            "model_gflop": flops / 1e9,
            "gflop_per_s": flops / net / 1e9,
        }
        peers = {}
        for name, w in workers.items():
            p = w.finish()
            p["median_cpu_s"] = statistics.median(p["pass_cpu_s"])
            p["gflop_per_s"] = flops / p["median_s"] / 1e9
            peers[name] = p
            log(f"{case}: peer {name}: peak {p['peak_rss_mib']:.0f} MiB")
        r["peer"] = peers
        s = r["subscope"]
        r["ratios"] = {}
        for name, p in peers.items():
            r["ratios"][name] = {
                # > 1: subscope is faster / uses less.
                "speedup_net": p["median_s"] / s["net_wall_s"],
                "speedup_raw": p["median_s"] / s["median_wall_s"],
                "speedup_best": p["best_s"] / s["best_net_wall_s"],
                "cpu_time_ratio_peer_over_subscope": p["median_cpu_s"] / s["net_cpu_s"],
                "peak_rss_subscope_over_peer": s["peak_rss_mib"] / p["peak_rss_mib"],
                "peak_rss_subscope_over_peer_minus_torch_runtime":
                    s["peak_rss_mib"] / max(p["peak_rss_mib"] - p["rss_after_import_mib"], 1e-9),
            }
        results[case] = r

    solo = run_solo(a, env, workdir) if a.solo_model else None

    import torch
    import transformers
    date = datetime.datetime.now(datetime.timezone.utc)
    doc = {
        "benchmark": "forward-cpu",
        "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": git_commit(),
        "host": a.host,
        "device": cpu_info(),
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "elapsed_s": time.time() - t_start,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
            "subscope": subprocess.run([a.subscope, "--version"], capture_output=True, text=True).stdout.strip(),
        },
        "settings": {
            "model": os.path.basename(os.path.normpath(a.model)),
            "family": shape_of(cfg)[0],
            "config": config_summary(cfg),
            "matmul_params": matmul_params(cfg),
            "peer_attn": a.peer_attn or "default",
            "n_prompts": n_prompts,
            "tokens_per_prompt": T,
            "tokens": tokens,
            "batch": a.batch,
            "threads": a.threads,
            "reps": a.reps,
        },
        "results": results,
    }
    if solo:
        doc["solo"] = solo
    path = a.json or os.path.join(a.results, f"cpu-{a.host}-{date.strftime('%Y%m%d')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print_table(doc)
    print(f"results: {path}")
    if not a.workdir:
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)


def print_table(doc):
    st = doc["settings"]
    _, L, d = shape_of(dict(st["config"], model_type=st.get("family", "gpt2")))[:3]
    print(f"\nforward, {st['model']} ({L} layers, d={d}), "
          f"{st['n_prompts']} prompts x {st['tokens_per_prompt']} tokens, batch {st['batch']}, "
          f"{st['threads']} threads, median of {st['reps']}; {doc['device']['cpu_model']}")
    print(f"{'case':8} {'peer':16} {'subscope tok/s':>14} {'(raw)':>7} {'peer tok/s':>10} {'speedup':>8} "
          f"{'(best)':>7} {'cpu ratio':>9} {'RSS MiB s/p':>13}")
    for case, r in doc["results"].items():
        s = r["subscope"]
        for name, p in r["peer"].items():
            q = r["ratios"][name]
            print(f"{case:8} {name:16} {s['tokens_per_s']:14.0f} {s['tokens_per_s_raw']:7.0f} "
                  f"{p['tokens_per_s']:10.0f} {q['speedup_net']:7.2f}x {q['speedup_best']:6.2f}x "
                  f"{q['cpu_time_ratio_peer_over_subscope']:8.2f}x "
                  f"{s['peak_rss_mib']:6.0f}/{p['peak_rss_mib']:<6.0f}")
    so = doc.get("solo")
    if so:
        print(f"subscope alone, {so['model']} ({so['matmul_params'] / 1e9:.2f}B matmul parameters), --no-logits, "
              f"{so['n_prompts']} x {so['tokens_per_prompt']} tokens: {so['tokens_per_s']:.0f} tok/s net "
              f"({so['median_wall_s']:.1f} s wall, {so['fixed_wall_s']:.1f} s for one token), "
              f"{so['gflop_per_s']:.0f} GFLOP/s, peak RSS {so['peak_rss_mib']:.0f} MiB")
    print("speedup = peer median time / subscope median net time (minus its 1-token fixed cost); >1: subscope "
          "faster.\n(best) = the same with the fastest of the reps; cpu ratio = peer CPU s / subscope net CPU s; "
          "RSS = peak resident MiB, subscope/peer.")


if __name__ == "__main__":
    main()
