#!/usr/bin/env python3
"""Attribution benchmark (issue 6's targets), subscope against itself and PyTorch.

  cost       `subscope attribute --method gradxact` (one forward + one backward, loss metric)
             against `subscope forward --no-logits --loss` on the same prompts and device,
             which computes every position's logits and scores the same loss where they
             are: the issue's target is <= 2.2x on a GPU. Also reported: against a forward
             without the head (--no-logits), and on the CPU against one that stores every
             logit (the measure of runs before forward had --loss). The backward pass
             stops below the deepest wanted site, so the site (the middle block's MLP)
             needs about half of it; the whole pass (gradxact at hook_embed) is
             reported beside it.
             Peer: PyTorch forward + backward to the same site (a retained-grad hook), the
             way a TransformerLens user computes gradient x activation.
  atp        `subscope attribute --method atp` over every unit of one MLP site against
             `subscope patch --per neuron` on the same pairs (one forward per unit):
             target >= 50x, judged per pair in the process (past the first pair or batch),
             since both processes pay the same start-up, which on a GPU outweighs the
             tiny model's work; whole processes reported beside. Uses the bundled model
             and tests/data/patch.

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


def timed(cmd, reps, per_prompt=None):
    """Median and best wall seconds of --reps runs of cmd. With a list as per_prompt, the runs
    also have SUBSCOPE_TIMING=1 and it receives the median steady seconds per prompt (as
    steady() measures it; None without later batches)."""
    times, per = [], []
    env = dict(os.environ, SUBSCOPE_TIMING="1") if per_prompt is not None else None
    for _ in range(reps):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if r.returncode:
            sys.exit(f"{os.path.basename(sys.argv[0])}: {' '.join(cmd)} failed:\n{r.stderr}")
        lb = later_batches(r.stderr)
        if lb:
            per.append(lb[0] / lb[1])
    if per_prompt is not None:
        per_prompt.append(statistics.median(per) if len(per) == reps else None)
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
    ap.add_argument("--no-peer", nargs="?", const="--no-peer", default=None, metavar="WHY",
                    help="skip the PyTorch peer; WHY is recorded as cost.peer_skipped and printed")
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
        # The references, each a forward on the same prompts: without the head; with the head and
        # the loss scored where the logits are (the target's measure: the same work as attribute's
        # forward half); on the CPU also with every logit stored (earlier runs' measure; on a GPU
        # it would time the download and the write of rows x vocab floats, not the model).
        refs = [("forward_no_logits", ["--no-logits"]), ("forward_loss", ["--no-logits", "--loss"])]
        if a.device == "cpu":
            refs.append(("forward_logits_stored", []))
        fwd_cmd = lambda extra: [SS, "forward", *common, *extra, "--compress", "0", "--out", f"{tmp}/f.h5"]
        att_cmd = [SS, "attribute", *common, "--sites", site, "--method", "gradxact", "--metric", "loss",
                   "--reduce", "positions", "--out", f"{tmp}/a.h5"]
        att, _ = timed(att_cmd, a.reps)
        out["cost"] = {"site": site, "attribute_gradxact_s": att}
        for name, extra in refs:
            t, _ = timed(fwd_cmd(extra), a.reps)
            out["cost"][f"{name}_s"] = t
            out["cost"]["ratio_vs_" + name] = att / t

        # the ratio is per batch: the steady cost per prompt, in the process (needs > 1 batch)
        def steady_set(env=None):
            per = {"attribute_gradxact": steady(att_cmd, a.reps, env)}
            for name, extra in refs:
                per[name] = steady(fwd_cmd(extra), a.reps, env)
            if not all(per.values()):
                return None
            return {"steady_s_per_prompt": per, **{"steady_ratio_vs_" + name: per["attribute_gradxact"] / per[name]
                                                   for name, _ in refs}}
        res = steady_set()
        if res:
            out["cost"].update(res)
            # the backward pass stops below the deepest wanted site; the embeddings' gradient is the
            # whole pass (what a site in the first block costs)
            deep = steady([SS, "attribute", *common, "--sites", "hook_embed", "--method", "gradxact", "--metric",
                           "loss", "--reduce", "positions", "--out", f"{tmp}/a0.h5"], a.reps)
            if deep:
                out["cost"]["steady_s_per_prompt"]["attribute_gradxact_full_depth"] = deep
                out["cost"]["steady_ratio_full_depth_vs_forward_loss"] = deep / res["steady_s_per_prompt"]["forward_loss"]
        # the same steady costs under each --variant's environment (forward and attribute both)
        for name, env in variants:
            res = steady_set(env)
            if res:
                out.setdefault("variants", {})[name] = {"env": env, **res}
        if a.no_peer:
            out["cost"]["peer_skipped"] = a.no_peer
        else:
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
        # The target's peer patches each unit one by one (--batch 1: a forward pass per unit, from
        # the site's block); patch's default, many units' copies a pass, is reported beside it.
        patch_cmd = [SS, "patch", *tiny, "--clean", clean, "--corrupt", corrupt, "--sites", tsite, "--per", "neuron",
                     "--batch", "1", "--out", f"{tmp}/p.h5"]
        batched_cmd = patch_cmd[:patch_cmd.index("--batch")] + ["--out", f"{tmp}/pb.h5"]
        atp_cmd = [SS, "attribute", *tiny, "--input", clean, "--corrupt", corrupt, "--sites", tsite, "--method", "atp",
                   "--metric", "logitdiff", "--out", f"{tmp}/t.h5"]
        # the same runs also give the cost per pair in the process, past the first pair or batch
        # (SUBSCOPE_TIMING): the methods' own cost, without the process start and model load both
        # pay once (on a GPU, creating the CUDA context outlasts the tiny model's whole attribution)
        ps, ats, pbs = [], [], []
        patch, _ = timed(patch_cmd, a.reps, ps)
        atp, _ = timed(atp_cmd, a.reps, ats)
        batched, _ = timed(batched_cmd, a.reps, pbs)
        ps, ats, pbs = ps[0], ats[0], pbs[0]
        out["atp"] = {"site": tsite, "pairs": a.atp_pairs, "patch_per_neuron_s": patch, "attribute_atp_s": atp,
                      "speedup": patch / atp, "patch_batched_s": batched, "speedup_vs_batched": batched / atp}
        if ps and ats:
            out["atp"].update({"steady_s_per_pair": {"patch_per_neuron": ps, "attribute_atp": ats},
                               "steady_speedup": ps / ats})
            if pbs:
                out["atp"]["steady_s_per_pair"]["patch_batched"] = pbs
                out["atp"]["steady_speedup_vs_batched"] = pbs / ats
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    c, t = out["cost"], out["atp"]
    ratios = lambda d, key: ", ".join(f"{d[key + name]:.2f}x {name.replace('_', ' ')}" for name in
                                      ("forward_loss", "forward_no_logits", "forward_logits_stored") if key + name in d)
    print(f"attribute ({a.device}): gradxact {c['attribute_gradxact_s']:.2f} s = {ratios(c, 'ratio_vs_')} (whole processes)")
    if "steady_ratio_vs_forward_loss" in c:
        print(f"  per batch, in the process (batches after the first): {ratios(c, 'steady_ratio_vs_')} "
              f"(target <= 2.2x forward loss)")
    if "steady_ratio_full_depth_vs_forward_loss" in c:
        print(f"  the whole backward pass (gradxact at hook_embed): {c['steady_ratio_full_depth_vs_forward_loss']:.2f}x "
              f"forward loss")
    for name, v in out.get("variants", {}).items():
        print(f"  variant {name} ({', '.join(f'{k}={x}' for k, x in v['env'].items())}): attribute "
              f"{v['steady_s_per_prompt']['attribute_gradxact'] * 1e3:.2f} ms/prompt = {ratios(v, 'steady_ratio_vs_')}")
    if "peer_pytorch_fwd_bwd_s" in c:
        print(f"  PyTorch forward+backward to the same site: {c['peer_pytorch_fwd_bwd_s']:.2f} s "
              f"(subscope {c['subscope_vs_peer']:.2f}x as fast)")
    if "peer_skipped" in c:
        print(f"  PyTorch peer skipped: {c['peer_skipped']}")
    print(f"  atp over {t['site']}, {t['pairs']} pairs: {t['attribute_atp_s']:.3f} s vs patch --per neuron {t['patch_per_neuron_s']:.2f} s "
          f"= {t['speedup']:.0f}x (whole processes)")
    if "steady_speedup" in t:
        sp = t["steady_s_per_pair"]
        print(f"  per pair, in the process: {sp['attribute_atp'] * 1e3:.2f} ms vs {sp['patch_per_neuron'] * 1e3:.1f} ms "
              f"= {t['steady_speedup']:.0f}x (target >= 50x: a pass per unit, --batch 1)")
        if "steady_speedup_vs_batched" in t:
            print(f"  against patch's default batches of units: {sp['patch_batched'] * 1e3:.1f} ms per pair "
                  f"= {t['steady_speedup_vs_batched']:.0f}x")


if __name__ == "__main__":
    main()
