#!/usr/bin/env python3
"""Merges one run's GPU results into bench/results/<device>-<date>.json and prints the
issue's targets with pass/fail. Standard library only.

    gpu_report.py --kernels K.json --forward F.json [--llama L.json] [--cpu C.json] --results bench/results
    gpu_report.py --cpu C.json                      # no GPU: the targets table alone
    gpu_report.py --merge EARLIER.json --collect C.json --out M.json   # add one call's step to another's

Inputs: kernel_bench's JSON, bench_gpu_forward.py's JSON, and optionally the CPU
benchmark's JSON of the same run (for the CPU target). Any may be missing (a step that
failed or was skipped); its targets then read "not run". The merged file adds the commit,
date, host, and the device as nvidia-smi and the CUDA runtime describe it.

Targets (issue 3):
  T1  forward, GPT-2-small shapes, bf16, >= 16k tokens per batch: >= 40% model FLOP
      utilisation (of the bf16 dense peak) on an H100/H200 (subscope --dtype bfloat16)
  T2  ... and faster than Hugging Face eager (bf16) in the same run
  T3  memory-bound kernels (layernorm, GELU, residual add, capture) >= 80% of the
      device-to-device copy bandwidth measured in the same run
  T4  CPU forward within 1.5x of PyTorch CPU (speedup >= 0.667)
Targets (issue 9), from --llama (bench_gpu_forward.py on Llama-family shapes):
  L1  forward of a 7B-shaped Llama (llama-7b) in bf16, >= 16k tokens per batch: >= 60% model
      FLOP utilisation of the bf16 dense peak on one H100/H200
  L2  ... faster than Hugging Face eager attention (bf16) in the same run
  L3  ... faster than Hugging Face sdpa attention (bf16) in the same run
Targets of issues 4, 5 and 6, from their GPU steps when given (--collect, --ablate,
--ablate-large, --attribute) and the kernel JSON's covariance cases:
  C1  collect's batches <= 1.15 x the forward's + the d^2 products at cublasSsyrk's rate
  C2  the triangular covariance kernel >= 1.4x faster than the full bf16 cublasGemmEx (best
      of cov_lower.bf16, cov_lower_tc.bf16, cov_lower_wg.bf16 and the blocked triangle's two
      plans cov_lower_blk*.bf16 and cov_lower_rec*.bf16 at each block width tried, and where
      the benchmark tried cuBLASLt's algorithms (d <= 1024) the same blocks and cuBLASLt's
      fill-mode triangle through each, cov_lower_*.lt*.bf16, per width; the full product is
      then the faster of GemmEx and cuBLASLt's algorithms for it, gemmex_full.lt*.bf16; the
      note names both; the blocked plans multiply rows that collect's gather has
      centred, as GemmEx multiplies the same rows, where the kernels include a centring pass)
  C3  cov_lower.f32 >= 90% of cublasSsyrk's useful-FLOP rate (per width)
  A1  a 256-mask sweep over short prompts >= 20x the PyTorch hook loop on the same GPU (both
      timed without start-up: with several batches of prompts, each side's batch past its first,
      as the peer's loop follows a warm-up forward; else subscope's passes alone where
      SUBSCOPE_TIMING gave them); in float32 and, from --ablate-bf16, with bf16 on both sides
  A2  masked forwards of large batches >= 80% of the clean forward's throughput
  G1  attribute gradxact per batch <= 2.2x the forward (steady, in the process; judged against
      the forward that computes the logits the loss needs, the --no-logits ratio in the note)
  G2  attribution patching over a site's units >= 50x patch --per neuron
"""
import argparse
import datetime
import json
import os
import re
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
from bench_forward import git_commit  # noqa: E402
from bench_collect import add_targets, nearest_syrk_rate  # noqa: E402


def load(path):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"gpu_report.py: cannot read {path}: {e}", file=sys.stderr)
        return None


def nvidia_smi():
    """The first GPU as nvidia-smi describes it, or {} without one."""
    fields = ["name", "driver_version", "memory.total", "power.limit", "clocks.max.sm", "clocks.max.memory",
              "pci.bus_id", "compute_cap"]
    try:
        p = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=" + ",".join(fields), "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            return {}
        vals = [v.strip() for v in p.stdout.strip().splitlines()[0].split(",")]
        info = dict(zip(fields, vals))
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        m = re.search(r"CUDA Version:\s*([0-9.]+)", head)
        if m:
            info["driver_cuda_version"] = m.group(1)
        return info
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return {}


def nvcc_version():
    for exe in ("nvcc", "/usr/local/cuda/bin/nvcc"):
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
            m = re.search(r"release ([0-9.]+), V([0-9.]+)", out)
            if m:
                return m.group(2)
        except OSError:
            continue
    return None


def slug(name):
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"^nvidia-", "", s) or "gpu"


def last_line(msg):
    lines = [x for x in msg.strip().splitlines() if x.strip()]
    return lines[-1][:90] if lines else ""


def fmt(x, spec=".1f", unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def variant_notes(subscope, key):
    """The opt-in variants of the bf16 mode (bf16+...) that ran, with their MFU (key), for the
    note of a target that the default mode decides: what flipping a default would give."""
    out = []
    for mode, r in sorted((subscope or {}).items()):
        if mode.startswith("bf16+") and isinstance(r, dict) and r.get(key) is not None:
            out.append(f"{mode} {r[key]:.1f}%")
    return ["variants: " + ", ".join(out)] if out else []


def llama_targets(llama, kern):
    """Issue 9: a 7B-shaped Llama forward in bf16 on one H100/H200, >= 16k tokens per batch:
    >= 60% MFU (of the bf16 dense peak) and faster than Hugging Face eager and sdpa (bf16)."""
    rows = []
    what1, what2, what3 = ("forward llama-7b bf16 MFU", "forward llama-7b bf16 vs HF eager bf16",
                           "forward llama-7b bf16 vs HF sdpa bf16")
    big = None
    if llama:
        big = next((r for r in llama["results"] if r.get("family") == "llama"
                    and r["config"].get("hidden_size") == 4096 and r["config"].get("num_hidden_layers") == 32), None)
    if not big:
        why = "no Llama GPU results" if not llama else "no llama-7b-shaped model in the Llama GPU results"
        return [("L1", what1, None, ">= 60%", "not run", why), ("L2", what2, None, "> 1x", "not run", ""),
                ("L3", what3, None, "> 1x", "not run", "")]
    name = llama.get("gpu_name") or ((kern or {}).get("device") or {}).get("name") or ""
    sb = big["subscope"].get("bf16")
    batch_ok = big["tokens_per_batch"] >= 16384
    note = []
    if not sb:
        note.append("subscope bf16 was not run")
    elif "error" in sb:
        note.append("subscope bf16 failed: " + last_line(sb["error"]))
    else:
        note.append(f"{sb['tflops']:.1f} TFLOP/s, {sb['tokens_per_s']:,.0f} tok/s")
        if sb.get("mfu_vs_bf16_peak_pct") is None:
            note.append("bf16 peak unknown for this GPU")
    if not batch_ok:
        note.append(f"batch is {big['tokens_per_batch']} tokens (< 16k)")
    if not re.search(r"H100|H200", name):
        note.append(f"not an H100/H200 ({name or 'unknown GPU'})")
    note += variant_notes(big["subscope"], "mfu_vs_bf16_peak_pct")
    val = sb.get("mfu_vs_bf16_peak_pct") if sb else None
    rows.append(("L1", what1, fmt(val, ".1f", "%"), ">= 60%",
                 "PASS" if val is not None and val >= 60 and batch_ok else "FAIL", "; ".join(note)))
    peer = big["peer"]
    for rid, what, attn in (("L2", what2, "eager"), ("L3", what3, "sdpa")):
        if "skipped" in peer:
            rows.append((rid, what, None, "> 1x", "not run", peer["skipped"]))
            continue
        key = f"bf16-{attn}" if f"bf16-{attn}" in peer else ("bf16" if attn == "sdpa" and "bf16" in peer else None)
        p = peer.get(key) if key else None
        if not p or "tokens_per_s" not in p:
            rows.append((rid, what, None, "> 1x", "not run", last_line((p or {}).get("error", f"no HF bf16 {attn} result"))))
            continue
        ratio = big["speedup"].get(f"subscope_bf16_over_peer_{key}")
        rows.append((rid, what, fmt(ratio, ".2f", "x"), "> 1x", "PASS" if ratio and ratio > 1 else "FAIL",
                     f"HF {key} {p['tokens_per_s']:,.0f} tok/s, {p['tflops']:.1f} TFLOP/s"))
    return rows


def issue_targets(kern, collect, ablate, ablate_large, attribute, ablate_bf16=None):
    """Rows C1-C3 (issue 4), A1-A2 (issue 5), G1-G2 (issue 6); "not run" where a step is missing."""
    rows = []
    if collect and not collect.get("batches_target_s") and collect.get("cov_flops"):
        # gpu_collect ran before this run's gpu_kernels (or in another call): judge it by the
        # Ssyrk rate of the kernel JSON given here, and say so in the note
        rate = nearest_syrk_rate(kern, collect["width"])
        if rate:
            collect = dict(collect, syrk_from="the report's kernel JSON")
            add_targets(collect, rate)
    if collect and collect.get("batches_target_s"):
        b = collect["collect_phases"]["batches_s"]
        rows.append(("C1", "collect batches vs 1.15 fwd + Ssyrk products", f"{b:.3f}s", f"<= {collect['batches_target_s']:.3f}s",
                     "PASS" if collect.get("batches_target_met") else "FAIL",
                     f"{collect['n_sites']} sites of {collect['width']}, {collect['rows']} rows; whole job "
                     f"{collect['collect_net_s']:.2f}s net (totals {collect['collect_phases']['totals_s']:.2f}s, "
                     f"write {collect['collect_phases']['write_s']:.2f}s)"
                     + (f"; Ssyrk's rate from {collect['syrk_from']}" if collect.get("syrk_from") else "")))
    else:
        rows.append(("C1", "collect batches vs 1.15 fwd + Ssyrk products", None, "<= 1x", "not run", "no gpu_collect result"))
    ms = {r["name"]: r["median_ms"] for r in (kern or {}).get("results", []) if "error" not in r and "median_ms" in r}
    widths = sorted({int(m.group(1)) for n in ms for m in [re.match(r"cov\.d(\d+)\.", n)] if m})
    if not widths:
        rows.append(("C2", "triangular cov kernel vs full bf16 GemmEx", None, ">= 1.4x", "not run", "no covariance cases"))
        rows.append(("C3", "cov_lower.f32 vs Ssyrk useful-FLOP rate", None, ">= 90%", "not run", ""))
    for d in widths:
        syrk, f32 = ms.get(f"cov.d{d}.ssyrk.fp32"), ms.get(f"cov.d{d}.cov_lower.f32")
        # the full product: GemmEx, or cuBLASLt's fastest algorithm for it where the benchmark
        # tried them (gemmex_full.lt*): C2 is judged against the faster
        fulls = {n[len(f"cov.d{d}."):]: t for n, t in ms.items()
                 if re.fullmatch(rf"cov\.d{d}\.gemmex_full(\.lt\w+)?\.bf16", n) and t}
        gx_name, gx = min(((k, t) for k, t in fulls.items()), key=lambda kt: kt[1], default=(None, None))
        kern16 = {k: ms.get(f"cov.d{d}.{k}") for k in ("cov_lower.bf16", "cov_lower_tc.bf16", "cov_lower_wg.bf16")}
        # the blocked triangle through cuBLAS, both plans, at each block width the benchmark tried
        kern16.update({n[len(f"cov.d{d}."):]: t for n, t in ms.items()
                       if re.match(rf"cov\.d{d}\.cov_lower_(blk|rec|lt)", n) and n.endswith(".bf16")})
        best = min(((t, k) for k, t in kern16.items() if t), default=None)
        r = gx / best[0] if gx and best else None
        cgx = ms.get(f"cov.d{d}.center_gemmex_full.bf16")
        note2 = f"{best[1]} {best[0]:.3f} ms vs {gx_name} {gx:.3f} ms" if r is not None else ""
        pre = r is not None and re.match(r"cov_lower_(blk|rec|lt)", best[1])
        crow = ms.get(f"cov.d{d}.center_rows.bf16")
        if pre and crow:  # the blocked plans multiply rows collect's gather centred
            note2 += f" (its operand from collect's gather, center_rows.bf16: {crow:.3f} ms)"
        if r is not None and cgx:  # what the whole cuBLAS path (centring included) costs: not the target's measure
            mine = best[0] + (crow or 0) if pre else best[0]
            note2 += f"; with a centring pass each, GemmEx takes {cgx:.3f} ms ({cgx / mine:.2f}x)"
        rows.append(("C2", f"cov d {d}: triangle vs full bf16 product", fmt(r, ".2f", "x"), ">= 1.4x",
                     "not run" if r is None else "PASS" if r >= 1.4 else "FAIL", note2))
        r3 = syrk / f32 if syrk and f32 else None
        rows.append(("C3", f"cov d {d}: cov_lower.f32 vs Ssyrk rate", fmt(None if r3 is None else 100 * r3, ".0f", "%"),
                     ">= 90%", "not run" if r3 is None else "PASS" if r3 >= 0.9 else "FAIL",
                     f"{f32:.3f} ms vs Ssyrk {syrk:.3f} ms" if r3 is not None else ""))

    def first(doc):
        return next(iter((doc or {}).get("results", {}).values()), None)

    # the sweep in float32 (gpu_ablate) and, where it ran, in bf16 on both sides (gpu_ablate_bf16)
    for doc, what, missing in ((ablate, "256-mask sweep vs PyTorch hook loop", "no gpu_ablate result"),
                               (ablate_bf16, "the same, both sides bf16", None)):
        a = first(doc)
        if a and "speedup_vs_peer" in a:
            # the peer's loop is timed after a warm-up forward, without its import and model load:
            # where the sweep had several batches of prompts, each side's steady batch (subscope's
            # past its first batch, which paid the process's first-use costs); else subscope's
            # passes alone (SUBSCOPE_TIMING); the passes and the whole process in the note
            steady = a.get("speedup_vs_peer_steady")
            v = steady or a.get("speedup_vs_peer_passes_only", a["speedup_vs_peer"])
            note = f"{a['masks']} masks, {a['prompts']} x {a['tokens']} tokens"
            if steady:
                note += (f" a batch, past the first of {a['prompt_batches']}; all passes "
                         f"{a['speedup_vs_peer_passes_only']:.1f}x")
            note += (f"; whole process {a['speedup_vs_peer']:.1f}x" if "speedup_vs_peer_passes_only" in a
                     else "; whole process (no pass timing in this run)")
            b, e = a["subscope"]["batched"], a["subscope"].get("eager", {})
            sp = min(b.get("passes_split") or [None], key=lambda x: abs(
                x["clean_s"] + x["masked_s"] + x["rest_s"] - b.get("median_passes_s", 0)) if x else 0)
            if sp and sp.get("first_masked_s") is not None:  # what the passes spend where (bench_ablate.py)
                note += (f"; passes {b['median_passes_s']:.3f} s: clean {sp['clean_s']:.3f}, "
                         f"{sp['masked_forwards']} masked {sp['masked_s']:.3f} (first {sp['first_masked_s']:.3f})")
            if "median_passes_s" in e:
                note += f"; eager loading {e['median_passes_s']:.3f} s"
            rows.append(("A1", what, fmt(v, ".1f", "x"), ">= 20x", "PASS" if v >= 20 else "FAIL", note))
        elif missing:
            rows.append(("A1", what, None, ">= 20x", "not run", missing))
    a = first(ablate_large)
    if a and "masked_over_clean_throughput" in a:
        v = a["masked_over_clean_throughput"]
        rows.append(("A2", "masked vs clean forward throughput", fmt(100 * v, ".0f", "%"), ">= 80%",
                     "PASS" if v >= 0.8 else "FAIL", f"{a['masks']} masks, {a['prompts']} x {a['tokens']} tokens"))
    else:
        rows.append(("A2", "masked vs clean forward throughput", None, ">= 80%", "not run", "no gpu_ablate_large result"))
    c = (attribute or {}).get("cost", {})
    # the reference: a forward that computes the logits and scores the same loss where they are
    # (forward --no-logits --loss); results from before that option compared against a forward
    # storing every logit, which on a GPU times their download and write
    key = next((k for k in ("steady_ratio_vs_forward_loss", "steady_ratio_vs_forward_with_logits") if k in c), None)
    if key:
        v = c[key]
        note = (f"against forward --loss, at {c['site']}; {c['steady_ratio_vs_forward_no_logits']:.2f}x the --no-logits "
                f"forward" + (f"; the whole backward pass (hook_embed) {c['steady_ratio_full_depth_vs_forward_loss']:.2f}x"
                              if "steady_ratio_full_depth_vs_forward_loss" in c else "")
                if key.endswith("loss") else
                f"against a forward storing its logits; {c['steady_ratio_vs_forward_no_logits']:.2f}x the --no-logits one")
        for name, var in (attribute.get("variants") or {}).items():
            if key in var:
                note += f"; {name}: {var[key]:.2f}x"
        rows.append(("G1", "attribute gradxact vs forward, per batch", fmt(v, ".2f", "x"), "<= 2.2x",
                     "PASS" if v <= 2.2 else "FAIL", note))
    else:
        rows.append(("G1", "attribute gradxact vs forward, per batch", None, "<= 2.2x", "not run",
                     "no gpu_attribute result with later batches"))
    t = (attribute or {}).get("atp")
    # per pair in the process where measured (both commands' start-up, the CUDA context's
    # included, is the same fixed cost); whole processes in older results and in the note
    v = t and t.get("steady_speedup", t["speedup"])
    note = (f"{t['pairs']} pairs at {t['site']}" + (f", per pair in the process; whole processes {t['speedup']:.0f}x"
                                                    if "steady_speedup" in t else ", whole processes")) if t else None
    if t and "steady_speedup_vs_batched" in t:  # patch's default, many units a pass, beside the target's one by one
        note += f"; {t['steady_speedup_vs_batched']:.0f}x patch's default batches of units"
    rows.append(("G2", "atp over a site vs patch --per neuron", fmt(v, ".0f", "x") if t else None, ">= 50x",
                 ("PASS" if v >= 50 else "FAIL") if t else "not run", note or "no gpu_attribute result"))
    return rows


def targets(kern, fwd, cpu, llama=None, issues=None):
    rows = []  # (id, what, value, threshold, status, note)
    gpu = ((kern or {}).get("device") or {}).get("name") or (fwd or {}).get("gpu_name") or ""
    is_hopper = re.search(r"H100|H200", gpu)
    # T1 / T2: GPT-2 small forward.
    small = None
    if fwd:
        small = next((r for r in fwd["results"] if r["config"]["n_embd"] == 768 and r["config"]["n_layer"] == 12), None)
    if not fwd:
        rows.append(("T1", "forward gpt2-small bf16 MFU", None, ">= 40%", "not run", "no GPU forward results"))
        rows.append(("T2", "forward gpt2-small bf16 vs HF eager bf16", None, "> 1x", "not run", ""))
    elif not small:
        rows.append(("T1", "forward gpt2-small bf16 MFU", None, ">= 40%", "not run", "no gpt2-small-shaped model"))
        rows.append(("T2", "forward gpt2-small bf16 vs HF eager bf16", None, "> 1x", "not run", ""))
    else:
        sb = small["subscope"].get("bf16")
        batch_ok = small["tokens_per_batch"] >= 16384
        note = []
        if not sb:
            note.append("subscope bf16 was not run")
        elif "error" in sb:
            note.append("subscope bf16 failed: " + last_line(sb["error"]))
        else:
            note.append(f"{sb['tflops']:.1f} TFLOP/s, {sb['tokens_per_s']:,.0f} tok/s")
            if sb.get("mfu_pct") is None:
                note.append("bf16 peak unknown for this GPU")
        if not batch_ok:
            note.append(f"batch is {small['tokens_per_batch']} tokens (< 16k)")
        if not is_hopper:
            note.append("not an H100/H200")
        note += variant_notes(small["subscope"], "mfu_pct")
        val = sb.get("mfu_pct") if sb else None
        status = "PASS" if val is not None and val >= 40 and batch_ok else "FAIL"
        rows.append(("T1", "forward gpt2-small bf16 MFU", fmt(val, ".1f", "%"), ">= 40%", status, "; ".join(note)))
        peer = small["peer"]
        pb = peer.get("bf16") if isinstance(peer, dict) else None
        if "skipped" in peer:
            rows.append(("T2", "forward gpt2-small bf16 vs HF eager bf16", None, "> 1x", "not run", peer["skipped"]))
        elif not pb or "tokens_per_s" not in pb:
            rows.append(("T2", "forward gpt2-small bf16 vs HF eager bf16", None, "> 1x", "not run",
                         last_line((pb or {}).get("error", "no HF bf16 result"))))
        else:
            ratio = small["speedup"].get("subscope_bf16_over_peer_bf16")
            like = [f"{m} {small['speedup'][f'subscope_{m}_over_peer_{m}']:.2f}x" for m in ("fp32", "tf32")
                    if f"subscope_{m}_over_peer_{m}" in small["speedup"]]
            note = f"HF bf16 {pb['tokens_per_s']:,.0f} tok/s"
            if like:
                note += "; same precision on both sides: " + ", ".join(like)
            rows.append(("T2", "forward gpt2-small bf16 vs HF eager bf16", fmt(ratio, ".2f", "x"), "> 1x",
                         "PASS" if ratio and ratio > 1 else "FAIL", note))
    # T3: memory-bound kernels against the copy bandwidth.
    if not kern:
        rows.append(("T3", "memory-bound kernels vs copy bw", None, ">= 80%", "not run", "no kernel results"))
    else:
        for r in kern["results"]:
            if not r.get("target_mem80"):
                continue
            if "error" in r:
                rows.append(("T3", r["name"], None, ">= 80%", "FAIL", r["error"][:80]))
                continue
            p = r.get("pct_of_copy")
            rows.append(("T3", r["name"], fmt(p, ".0f", "%"), ">= 80%", "PASS" if p is not None and p >= 80 else "FAIL",
                         f"{r['gbs']:.0f} GB/s of {kern['copy_gbs']:.0f} (copy)"))
    # T4: CPU forward.
    if not cpu:
        rows.append(("T4", "CPU forward vs PyTorch CPU", None, ">= 0.67x", "not run", "no CPU results in this run"))
    else:
        for case, r in cpu["results"].items():
            for variant, q in r["ratios"].items():
                s = q["speedup_net"]
                rows.append(("T4", f"CPU forward {case} vs PyTorch {variant}", fmt(s, ".2f", "x"), ">= 0.67x",
                             "PASS" if s >= 1 / 1.5 else "FAIL",
                             f"{cpu['settings']['threads']} threads, {cpu['settings']['tokens']} tokens"))
    rows += llama_targets(llama, kern)
    rows += issue_targets(kern, *(issues or (None,) * 5))
    return [dict(zip(("id", "what", "value", "threshold", "status", "note"), row)) for row in rows]


def print_forward(doc, title):
    st = doc["settings"]
    print(f"\n{title}, {st['prompts']} prompts x {st['tokens']} tokens, batch {st['batch']}, "
          f"median of {st['reps']} (net of the 1-token fixed cost)")
    print(f"{'model':16} {'who':14} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'%bf16pk':>8} {'fixed s':>8} {'GPU MiB':>8}")
    print("(GPU MiB: subscope's peak device allocations; HF: torch.cuda.max_memory_allocated)")
    for r in doc["results"]:
        for mode, s in r["subscope"].items():
            if "error" in s:
                print(f"{r['model']:16} {'subscope ' + mode:14} FAILED: {last_line(s['error'])}")
                continue
            print(f"{r['model']:16} {'subscope ' + mode:14} {s['tokens_per_s']:10.0f} {s['tflops']:8.1f} "
                  f"{fmt(s['mfu_pct'], '.0f', '%'):>6} {fmt(s['mfu_vs_bf16_peak_pct'], '.0f', '%'):>8} "
                  f"{s['fixed_wall_s']:8.2f} {fmt(s.get('device_memory_peak_mib'), '.0f'):>8}")
        if "skipped" in r["peer"]:
            print(f"{r['model']:16} {'HF':14} {r['peer']['skipped']}")
            continue
        for dt, p in r["peer"].items():
            if "error" in p:
                print(f"{r['model']:16} {'HF ' + dt:14} FAILED: {last_line(p['error'])}")
                continue
            print(f"{r['model']:16} {'HF ' + dt:14} {p['tokens_per_s']:10.0f} {p['tflops']:8.1f} "
                  f"{fmt(p['mfu_pct'], '.0f', '%'):>6} {fmt(p['mfu_vs_bf16_peak_pct'], '.0f', '%'):>8} "
                  f"{'-':>8} {fmt(p.get('gpu_peak_allocated_mib'), '.0f'):>8}")


def cut_notes(kern, fwd, llama):
    """A line for each step's file that a signal or a fault stopped early: kernel_bench's
    "cut" (SIGTERM/SIGINT, e.g. a time limit) or "stopped", bench_gpu_forward.py's
    "complete": false. Their results are the cases finished before it."""
    notes = []
    if kern and kern.get("cut"):
        c = kern["cut"]
        notes.append(f"gpu_kernels cut by {c.get('signal')} before {c.get('before')}: "
                     f"{c.get('cases_done')} cases timed, the later ones not run")
    elif kern and kern.get("stopped"):
        notes.append(f"gpu_kernels stopped after {len(kern['results'])} cases: {kern['stopped']}")
    for key, doc in (("gpu_forward", fwd), ("gpu_llama", llama)):
        if doc and doc.get("complete") is False:
            notes.append(f"{key} incomplete (cut or failed): {len(doc['results'])} models finished")
    return notes


def print_tables(kern, fwd, tg, llama=None):
    if kern:
        d = kern["device"]
        print(f"\nkernels on {d['name']} ({kern['settings']['tokens']} tokens, median of {kern['settings']['reps']}, "
              f"L2 flushed): copy {fmt(kern.get('copy_gbs'), '.0f')} GB/s measured, "
              f"{fmt(d.get('theoretical_gbs'), '.0f')} GB/s theoretical; peaks {d['peaks']['source']}")
        print(f"{'name':34} {'ms':>8} {'GB/s':>7} {'%copy':>6} {'TFLOP/s':>8} {'%peak':>6}")
        for r in kern["results"]:
            if "error" in r:
                print(f"{r['name']:34} FAILED: {r['error'][:60]}")
                continue
            print(f"{r['name']:34} {r['median_ms']:8.3f} {fmt(r.get('gbs'), '.0f'):>7} {fmt(r.get('pct_of_copy'), '.0f'):>6} "
                  f"{fmt(r.get('tflops'), '.1f'):>8} {fmt(r.get('pct_of_peak_flops'), '.0f'):>6}")
    if fwd:
        print_forward(fwd, "forward --no-logits on the GPU")
    if llama:
        print_forward(llama, "Llama-family forward --no-logits on the GPU (issue 9)")
    print("\ntargets (issue 3: T1-T4; issue 9: L1-L3; issue 4: C1-C3; issue 5: A1-A2; issue 6: G1-G2)")
    print(f"{'':3} {'what':44} {'value':>8} {'target':>9} {'status':>8}  note")
    for t in tg:
        print(f"{t['id']:3} {t['what'][:44]:44} {t['value'] or '-':>8} {t['threshold']:>9} {t['status']:>8}  {t['note']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels")
    ap.add_argument("--forward")
    ap.add_argument("--cpu")
    ap.add_argument("--llama", help="bench_gpu_forward.py's JSON for the Llama-family shapes (run_all.sh's gpu_llama)")
    ap.add_argument("--collect", help="bench_collect.py's JSON on the GPU (run_all.sh's gpu_collect)")
    ap.add_argument("--ablate", help="bench_ablate.py's JSON of the 256-mask sweep on the GPU (gpu_ablate)")
    ap.add_argument("--ablate-large", help="bench_ablate.py's JSON of the large batches on the GPU (gpu_ablate)")
    ap.add_argument("--ablate-bf16", help="bench_ablate.py's JSON of the sweep with bf16 on both sides (gpu_ablate)")
    ap.add_argument("--attribute", help="bench_attribute.py's JSON on the GPU (gpu_attribute)")
    ap.add_argument("--results", default=None, help="directory for <device>-<date>.json (omit: print only)")
    ap.add_argument("--out", default=None, help="exact output path (overrides --results)")
    ap.add_argument("--note", action="append", default=[], help="a line to record (e.g. why a step was skipped)")
    ap.add_argument("--merge", help="an earlier merged file of the same device and commit (another call of one "
                    "lease): each step not given here is taken from it, with its device, commit and notes")
    a = ap.parse_args()
    prev = load(a.merge) or {}
    if a.merge and not prev:
        sys.exit(f"gpu_report.py: --merge {a.merge}: " +
                 ("not a JSON document (see above)" if os.path.exists(a.merge) else "no such file"))

    def step(path, key):
        return load(path) if path else prev.get(key)
    kern, fwd, cpu, llama = step(a.kernels, "kernels"), step(a.forward, "forward"), load(a.cpu), step(a.llama, "llama")
    issues = (step(a.collect, "collect"), step(a.ablate, "ablate"), step(a.ablate_large, "ablate_large"),
              step(a.attribute, "attribute"), step(a.ablate_bf16, "ablate_bf16"))
    tg = targets(kern, fwd, cpu, llama, issues)
    print_tables(kern, fwd, tg, llama)
    cuts = cut_notes(kern, fwd, llama)
    for n in cuts:
        print(f"note: {n}")
    if not (a.results or a.out):
        return
    smi = nvidia_smi() or prev.get("device", {}).get("nvidia_smi") or {}
    name = (kern or {}).get("device", {}).get("name") or smi.get("name") or "unknown-gpu"
    date = datetime.datetime.now(datetime.timezone.utc)
    doc = {
        "benchmark": "gpu",
        "date": date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": prev.get("git_commit") or git_commit(),
        "host": prev.get("host") or socket.gethostname().split(".")[0],
        "device": {"name": name, "nvidia_smi": smi, "cuda": (kern or {}).get("device")},
        "versions": {"driver": smi.get("driver_version"), "driver_cuda": smi.get("driver_cuda_version"),
                     "cuda_runtime": (kern or {}).get("versions", {}).get("runtime"),
                     "cublas": (kern or {}).get("versions", {}).get("cublas"),
                     "nvcc": prev.get("versions", {}).get("nvcc") or nvcc_version()},
        "notes": list(dict.fromkeys(prev.get("notes", []) + a.note + cuts)),
        "targets": tg,
        "kernels": kern,
        "forward": fwd,
        "llama": llama,
        "collect": issues[0], "ablate": issues[1], "ablate_large": issues[2], "attribute": issues[3],
        "ablate_bf16": issues[4],
        "cpu": {"file": os.path.relpath(a.cpu, os.path.dirname(BENCH)) if a.cpu else None} if cpu else None,
    }
    path = a.out or os.path.join(a.results, f"{slug(name)}-{date.strftime('%Y%m%d')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # through a temporary file: a report cut mid-write (its time limit) must not truncate
    # the earlier merged file of the same name (another call of the lease)
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
