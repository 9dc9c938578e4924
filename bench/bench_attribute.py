#!/usr/bin/env python3
"""Attribution benchmark (issue 6's targets), subscope against itself and PyTorch.

  cost       `subscope attribute --method gradxact` (one forward + one backward, loss metric)
             against `subscope forward --no-logits` on the same prompts and device: the
             issue's target is <= 2.2x on a GPU. The loss metric needs every position's
             logits and their gradient, so the ratio also carries two [rows x vocab x d]
             products that a --no-logits forward skips; both ratios are reported (the
             second against `forward` that computes the logits and stores them).
             Peer: PyTorch forward + backward to the same site (a retained-grad hook), the
             way a TransformerLens user computes gradient x activation.
  atp        `subscope attribute --method atp` over every unit of one MLP site against
             `subscope patch --per neuron` on the same pairs (one forward per unit):
             target >= 50x. Uses the bundled model and tests/data/patch.

Each subscope command runs --reps times as a fresh process; medians are compared. The cost
case is also measured per batch in the process (SUBSCOPE_TIMING=1: the batches after the
first), which is what the target means; on a GPU the wall time is mostly start-up.
Writes one JSON object to --json (merged into run_all.sh's results) and prints a table.
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SS = os.path.join(ROOT, "bin", "subscope")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


TIMING_RE = re.compile(r"timing: first batch ([0-9.]+) s \(([0-9]+) prompts\), later batches ([0-9.]+) s "
                       r"\(([0-9]+) prompts\)")


def later_batches(stderr):
    """(seconds, prompts) of the batches after the first from a forward or attribute run's
    SUBSCOPE_TIMING=1 line (the device synchronised at both ends), or None without later batches."""
    t = TIMING_RE.search(stderr)
    return (float(t.group(3)), int(t.group(4))) if t and int(t.group(4)) > 0 else None


def steady(cmd, reps, env=None):
    """Median seconds per prompt over the batches after the first, from --reps runs of cmd with
    SUBSCOPE_TIMING=1 (and env's variables): the steady cost, without process start, model load
    or first-batch setup."""
    per = []
    for _ in range(reps):
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, SUBSCOPE_TIMING="1", **(env or {})))
        if r.returncode:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed:\n{r.stderr}")
        lb = later_batches(r.stderr)
        if not lb:
            return None
        per.append(lb[0] / lb[1])
    return statistics.median(per)


def timed(cmd, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed:\n{r.stderr}")
    return statistics.median(times), min(times)


def peer_gradxact(model_dir, prompts, batch, device, reps, layer):
    """PyTorch: forward + backward of the summed per-prompt mean loss, keeping the grad at mlp.act."""
    import torch
    from transformers import GPT2LMHeadModel
    dev = torch.device(device)
    m = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation="eager").to(dev).eval()
    rows = [json.loads(l)["tokens"] for l in open(prompts) if l.strip()]
    saved = {}

    def hook(mod, inp, out):
        out.retain_grad()
        saved["a"] = out

    m.transformer.h[layer].mlp.act.register_forward_hook(hook)

    def run():
        for b in range(0, len(rows), batch):
            ids = torch.tensor(rows[b:b + batch], device=dev)
            logits = m(ids).logits
            lp = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                   ids[:, 1:].reshape(-1), reduction="none")
            lp.view(ids.shape[0], -1).mean(1).sum().backward()
            (saved["a"].grad * saved["a"]).sum(1).cpu()
            m.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help='JSONL of {"tokens": [...]}, all the same length')
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--atp-pairs", type=int, default=32, help="pairs for the atp case (tests/data/patch repeated)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]",
                    help="also measure the steady per-batch cost with these environment variables "
                         "(e.g. attnk:SUBSCOPE_ATTN_GEMM_MIN_LEN=0, the attention kernels instead of cuBLAS)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    variants = []
    for v in a.variant:
        name, _, assigns = v.partition(":")
        env = dict(x.split("=", 1) for x in assigns.split(",") if "=" in x)
        if not name or not env:
            sys.exit(f"{os.path.basename(sys.argv[0])}: --variant wants NAME:VAR=VALUE (got {v!r})")
        variants.append((name, env))
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    layer = cfg["n_layer"] // 2
    site = f"blocks.{layer}.mlp.hook_post"
    common = ["--model", a.model, "--input", a.prompts, "--batch", str(a.batch), "--device", a.device]
    out = {"device": a.device, "model": a.model, "prompts": a.prompts, "batch": a.batch, "reps": a.reps}
    with tempfile.TemporaryDirectory() as tmp:
        log(f"cost: forward vs attribute gradxact at {site} ({a.device})")
        fwd, _ = timed([SS, "forward", *common, "--no-logits", "--compress", "0", "--out", f"{tmp}/f.h5"], a.reps)
        fwdl, _ = timed([SS, "forward", *common, "--compress", "0", "--out", f"{tmp}/fl.h5"], a.reps)
        att, _ = timed([SS, "attribute", *common, "--sites", site, "--method", "gradxact", "--metric", "loss",
                        "--reduce", "positions", "--out", f"{tmp}/a.h5"], a.reps)
        out["cost"] = {"site": site, "forward_no_logits_s": fwd, "forward_logits_stored_s": fwdl,
                       "attribute_gradxact_s": att, "ratio_vs_forward_no_logits": att / fwd,
                       "ratio_vs_forward_with_logits": att / fwdl}
        # the ratio is per batch: the steady cost per prompt, in the process (needs > 1 batch)
        fs = steady([SS, "forward", *common, "--no-logits", "--compress", "0", "--out", f"{tmp}/f.h5"], a.reps)
        fls = steady([SS, "forward", *common, "--compress", "0", "--out", f"{tmp}/fl.h5"], a.reps)
        ats = steady([SS, "attribute", *common, "--sites", site, "--method", "gradxact", "--metric", "loss",
                      "--reduce", "positions", "--out", f"{tmp}/a.h5"], a.reps)
        if fs and fls and ats:
            out["cost"].update({"steady_s_per_prompt": {"forward_no_logits": fs, "forward_logits_stored": fls,
                                                        "attribute_gradxact": ats},
                                "steady_ratio_vs_forward_no_logits": ats / fs,
                                "steady_ratio_vs_forward_with_logits": ats / fls})
        # the same steady costs under each --variant's environment (forward and attribute both)
        for name, env in variants:
            vf = steady([SS, "forward", *common, "--no-logits", "--compress", "0", "--out", f"{tmp}/f.h5"], a.reps, env)
            vfl = steady([SS, "forward", *common, "--compress", "0", "--out", f"{tmp}/fl.h5"], a.reps, env)
            va = steady([SS, "attribute", *common, "--sites", site, "--method", "gradxact", "--metric", "loss",
                         "--reduce", "positions", "--out", f"{tmp}/a.h5"], a.reps, env)
            if vf and vfl and va:
                out.setdefault("variants", {})[name] = {
                    "env": env, "steady_s_per_prompt": {"forward_no_logits": vf, "forward_logits_stored": vfl,
                                                        "attribute_gradxact": va},
                    "steady_ratio_vs_forward_no_logits": va / vf, "steady_ratio_vs_forward_with_logits": va / vfl}
        if not a.no_peer:
            try:
                peer = peer_gradxact(a.model, a.prompts, a.batch, a.device, a.reps, layer)
                out["cost"]["peer_pytorch_fwd_bwd_s"] = peer
                out["cost"]["subscope_vs_peer"] = peer / att
            except Exception as e:  # the peer is optional; say why it is missing
                out["cost"]["peer_skipped"] = str(e)[:200]
        log("atp vs patch --per neuron on models/tiny-gpt2")
        tiny = ["--model", os.path.join(ROOT, "models", "tiny-gpt2"), "--device", a.device]
        clean, corrupt = f"{tmp}/clean.jsonl", f"{tmp}/corrupt.jsonl"
        for name, dst in (("clean", clean), ("corrupt", corrupt)):
            lines = [l for l in open(os.path.join(ROOT, "tests", "data", "patch", name + ".jsonl")) if l.strip()]
            with open(dst, "w") as f:
                f.writelines((lines * a.atp_pairs)[:a.atp_pairs])
        tsite = "blocks.2.mlp.hook_post"
        patch, _ = timed([SS, "patch", *tiny, "--clean", clean, "--corrupt", corrupt, "--sites", tsite,
                          "--per", "neuron", "--out", f"{tmp}/p.h5"], a.reps)
        atp, _ = timed([SS, "attribute", *tiny, "--input", clean, "--corrupt", corrupt, "--sites", tsite,
                        "--method", "atp", "--metric", "logitdiff", "--out", f"{tmp}/t.h5"], a.reps)
        out["atp"] = {"site": tsite, "pairs": a.atp_pairs, "patch_per_neuron_s": patch, "attribute_atp_s": atp, "speedup": patch / atp}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    c, t = out["cost"], out["atp"]
    print(f"attribute ({a.device}): gradxact {c['attribute_gradxact_s']:.2f} s = {c['ratio_vs_forward_no_logits']:.2f}x "
          f"forward --no-logits ({c['forward_no_logits_s']:.2f} s), {c['ratio_vs_forward_with_logits']:.2f}x forward with "
          f"logits ({c['forward_logits_stored_s']:.2f} s)")
    if "steady_ratio_vs_forward_no_logits" in c:
        print(f"  per batch, in the process (batches after the first): {c['steady_ratio_vs_forward_no_logits']:.2f}x "
              f"forward --no-logits, {c['steady_ratio_vs_forward_with_logits']:.2f}x forward with logits "
              f"(target <= 2.2x)")
    for name, v in out.get("variants", {}).items():
        sp = v["steady_s_per_prompt"]
        print(f"  variant {name} ({', '.join(f'{k}={x}' for k, x in v['env'].items())}): attribute "
              f"{sp['attribute_gradxact'] * 1e3:.2f} ms/prompt = {v['steady_ratio_vs_forward_no_logits']:.2f}x forward "
              f"--no-logits, {v['steady_ratio_vs_forward_with_logits']:.2f}x forward with logits")
    if "peer_pytorch_fwd_bwd_s" in c:
        print(f"  PyTorch forward+backward to the same site: {c['peer_pytorch_fwd_bwd_s']:.2f} s "
              f"(subscope {c['subscope_vs_peer']:.2f}x as fast)")
    print(f"  atp over {t['site']}, {t['pairs']} pairs: {t['attribute_atp_s']:.3f} s vs patch --per neuron {t['patch_per_neuron_s']:.2f} s "
          f"= {t['speedup']:.0f}x (target >= 50x)")


if __name__ == "__main__":
    main()
