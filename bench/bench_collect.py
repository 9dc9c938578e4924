#!/usr/bin/env python3
"""Collection benchmark (issue 4's first target): what statistics cost on top of the forward pass.

  collect    `subscope collect --stats mean,cov` at every MLP site (--sites)
  forward    the same job with the statistics of one small site only
             (`blocks.0.hook_resid_pre`, mean): the forward pass and the job's own costs
  fixed      that small job on the first prompt alone: process start, model load, HDF5

all on the same prompts, device and batch, each --reps times as a fresh process, the three
interleaved (who goes first rotates, so a drift of the machine's speed reaches all three
alike) and each with SUBSCOPE_TIMING=1: medians of the wall and of each phase the job
reports (its batches, the totals' download, the file). net = median - fixed. The target:
collect_net <= 1.15 x forward_net + the covariance products' time at cuBLAS's rate, where
the products are one triangle of X^T X per site and batch, n d (d+1) FLOPs for n rows of
width d, and the rate is cublasSsyrk's from
kernel_bench's JSON (--kernels: the cov.d<D>.ssyrk.fp32 line nearest each width) or
--syrk-tflops. Without either (a CPU run) only the ratio collect_net / forward_net is given.

Writes one JSON object to --json and prints a line per measurement.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from bench_attribute import SS, log


def syrk_rates(kernels):
    """{d: TFLOP/s} of cublasSsyrk from kernel_bench's JSON, a path or the loaded document
    (useful FLOPs, as it reports them)."""
    doc = json.load(open(kernels)) if isinstance(kernels, str) else kernels or {}
    rates = {}
    for r in doc.get("results", []):
        n = r.get("name", "")
        if n.startswith("cov.d") and n.endswith(".ssyrk.fp32") and r.get("tflops"):
            rates[int(n[len("cov.d"):-len(".ssyrk.fp32")])] = r["tflops"]
    return rates


def nearest_syrk_rate(kernels, width):
    """cublasSsyrk's rate at the width nearest `width` in kernel_bench's JSON, or None."""
    rates = syrk_rates(kernels)
    return rates[min(rates, key=lambda d: abs(d - width))] if rates else None


def add_targets(out, rate):
    """Adds the target of issue 4 to a result (`out`, as main writes it) given Ssyrk's rate in
    TFLOP/s: the whole job against 1.15 x the forward + the d^2 products at that rate, and (C1)
    the batches alone. gpu_report.py calls it too, for a result whose run had no kernel JSON yet."""
    cov_s = out["cov_flops"] / (rate * 1e12)
    budget = 1.15 * out["forward_net_s"] + cov_s
    out.update({"syrk_tflops": rate, "cov_at_cublas_s": cov_s, "target_s": budget,
                "target_met": out["collect_net_s"] <= budget})
    phases, fwd_phases = out.get("collect_phases"), out.get("forward_phases")
    if phases and fwd_phases:
        # the streaming part alone: the batches, which grow with the data; the totals' download
        # and the file are paid once per job (d^2 float64 per site, whatever the data's size)
        sb = 1.15 * fwd_phases["batches_s"] + cov_s
        out.update({"batches_target_s": sb, "batches_target_met": phases["batches_s"] <= sb})


PHASES_RE = re.compile(r"timing: batches \(forward and statistics\) ([0-9.]+) s, device totals to the host "
                       r"([0-9.]+) s, results and file ([0-9.]+) s")


def run_once(cmd):
    """Wall seconds of one run of a collect command and its phases {batches_s, totals_s, write_s}
    from SUBSCOPE_TIMING=1 ({} if the job did not print them)."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=dict(os.environ, SUBSCOPE_TIMING="1"))
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"bench_collect: {' '.join(cmd)} failed:\n{r.stderr}")
    m = PHASES_RE.search(r.stderr)
    return wall, ({"batches_s": float(m[1]), "totals_s": float(m[2]), "write_s": float(m[3])} if m else {})


def interleaved(cmds, reps):
    """{name: (median wall, median phases, every run's batches_s)} of reps runs of each command,
    the commands taking turns and who goes first rotating from one repetition to the next."""
    names = list(cmds)
    walls = {k: [] for k in names}
    phases = {k: [] for k in names}
    for rep in range(reps):
        for k in names[rep % len(names):] + names[:rep % len(names)]:
            w, ph = run_once(cmds[k])
            walls[k].append(w)
            phases[k].append(ph)
    out = {}
    for k in names:
        ph = {}
        if all(phases[k]):
            ph = {f: statistics.median(p[f] for p in phases[k]) for f in phases[k][0]}
        out[k] = (statistics.median(walls[k]), ph, [p.get("batches_s") for p in phases[k]])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help='JSONL of {"tokens": [...]}')
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sites", default="blocks.*.mlp.hook_post", help="(only this value: the FLOP count assumes it)")
    ap.add_argument("--kernels", help="kernel_bench's JSON, for cublasSsyrk's rate")
    ap.add_argument("--syrk-tflops", type=float, help="cublasSsyrk's rate, if there is no --kernels")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    if a.sites != "blocks.*.mlp.hook_post":
        sys.exit("bench_collect: the FLOP count assumes --sites blocks.*.mlp.hook_post")
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    n_layer = cfg.get("n_layer", cfg.get("num_hidden_layers"))
    width = cfg.get("n_inner") or 4 * cfg.get("n_embd", 0) or cfg.get("intermediate_size")
    lines = [l for l in open(a.prompts) if l.strip()]
    rows = sum(len(json.loads(l)["tokens"]) for l in lines)
    common = ["--model", a.model, "--batch", str(a.batch), "--device", a.device, "--compress", "0"]
    small = ["--sites", "blocks.0.hook_resid_pre", "--stats", "mean"]
    with tempfile.TemporaryDirectory() as tmp:
        first = os.path.join(tmp, "first.jsonl")
        with open(first, "w") as f:
            f.write(lines[0])
        log(f"collect ({a.device}): fixed cost, forward, statistics at {a.sites}, {a.reps} runs each, interleaved")
        cmds = {"fixed": [SS, "collect", *common, *small, "--input", first, "--out", f"{tmp}/x.h5"],
                "forward": [SS, "collect", *common, *small, "--input", a.prompts, "--out", f"{tmp}/f.h5"],
                "collect": [SS, "collect", *common, "--sites", a.sites, "--stats", "mean,cov", "--input", a.prompts,
                            "--out", f"{tmp}/c.h5"]}
        runs = interleaved(cmds, a.reps)
        fixed, fwd, col = runs["fixed"][0], runs["forward"][0], runs["collect"][0]
        phases, fwd_phases = runs["collect"][1], runs["forward"][1]
    flops = float(n_layer) * rows * width * (width + 1)
    fwd_net, col_net = fwd - fixed, col - fixed
    out = {"device": a.device, "model": a.model, "prompts": a.prompts, "n_prompts": len(lines), "rows": rows,
           "batch": a.batch, "reps": a.reps, "sites": a.sites, "n_sites": n_layer, "width": width,
           "fixed_s": fixed, "forward_s": fwd, "collect_s": col, "forward_net_s": fwd_net, "collect_net_s": col_net,
           "ratio": col_net / fwd_net if fwd_net > 0 else None, "cov_flops": flops, "collect_phases": phases,
           "forward_phases": fwd_phases, "collect_batches_s_runs": runs["collect"][2],
           "forward_batches_s_runs": runs["forward"][2]}
    rate = a.syrk_tflops or (nearest_syrk_rate(a.kernels, width) if a.kernels else None)
    if rate:
        add_targets(out, rate)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(f"collect ({a.device}, {len(lines)} prompts, {rows} rows, {n_layer} sites of {width}): "
          f"{col_net:.2f} s net vs forward {fwd_net:.2f} s = {out['ratio']:.2f}x (fixed {fixed:.2f} s)")
    if phases:
        print(f"  collect's phases (medians): batches (forward and statistics) {phases['batches_s']:.3f} s, device "
              f"totals to the host {phases['totals_s']:.2f} s, results and file {phases['write_s']:.2f} s"
              + (f"; the forward-only job's batches {fwd_phases['batches_s']:.3f} s" if fwd_phases else ""))
        print("  batches per run: collect " + " ".join(f"{b:.3f}" for b in runs["collect"][2] if b is not None)
              + ", forward " + " ".join(f"{b:.3f}" for b in runs["forward"][2] if b is not None))
    if "batches_target_s" in out:
        print(f"  batches alone: {phases['batches_s']:.3f} s against <= 1.15 x {fwd_phases['batches_s']:.3f} s + "
              f"{out['cov_at_cublas_s']:.3f} s = {out['batches_target_s']:.3f} s: "
              f"{'PASS' if out['batches_target_met'] else 'FAIL'}")
    if rate:
        print(f"  target: <= 1.15 x forward + {out['cov_at_cublas_s']:.3f} s of products at {rate:.1f} TFLOP/s "
              f"(Ssyrk) = {out['target_s']:.2f} s: {'PASS' if out['target_met'] else 'FAIL'}")


if __name__ == "__main__":
    main()
