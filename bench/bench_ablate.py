#!/usr/bin/env python3
"""cpu_ablate: a sweep of many masks over short prompts, `subscope ablate` against the
usual PyTorch hook loop (peer_ablate.py: one mask per forward), same machine, same run.

For each model: N random prompts of T tokens and M masks (bench_masks below: zero or
scale on ~2% of an MLP's neurons, or a zeroed attention head, spread over every layer).
Each repetition runs, alternating: subscope with its default masks-per-forward,
subscope with --mask-batch 1 (one mask per forward: the unbatched engine), and the peer.
subscope is timed as a whole process (wall, so its start, model load, clean pass and
HDF5 file count against it); the peer's time is its sweep loop only (torch import and
model load excluded). subscope's passes alone (clean and masked, SUBSCOPE_TIMING=1) are
reported beside, the like-for-like comparison on a GPU, where start-up is most of the wall. Losses are compared: subscope's /ablate/<mask>/loss against the
peer's, as a check that both ran the same masks.

    bench_ablate.py --model models/tiny-gpt2 --model bench/work/gpt2-small --python PY \\
        --prompts 8 --tokens 16 --masks 256 --threads 2 --reps 1 --json out.json
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_of(model):
    c = json.load(open(os.path.join(model, "config.json")))
    return dict(n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"],
                n_inner=c.get("n_inner") or 4 * c["n_embd"], vocab_size=c["vocab_size"])


def bench_masks(cfg, n, seed=7):
    rng = random.Random(seed)
    dm, L, H = cfg["n_inner"], cfg["n_layer"], cfg["n_head"]
    k = max(1, dm // 50)
    out = []
    for i in range(n):
        layer = i % L
        if i % 4 == 3:
            out.append({"name": f"m{i:03d}", "site": f"blocks.{layer}.attn.hook_z", "heads": [(i // 4) % H],
                        "mode": "zero"})
        else:
            m = {"name": f"m{i:03d}", "site": f"blocks.{layer}.mlp.hook_post",
                 "units": sorted(rng.sample(range(dm), k)), "mode": "zero"}
            if i % 4 == 2:
                m.update(mode="scale", factor=0.5)
            out.append(m)
    return out


PASSES_RE = re.compile(r"subscope ablate: timing: passes ([0-9.]+) s")
# ... and how they split (src/jobs/job_ablate.c): the forwards themselves, which end when the
# metrics' scores are back, and the rest (masks' copies, the host's scoring)
SPLIT_RE = re.compile(r"clean forwards ([0-9.]+) s, (\d+) masked forwards ([0-9.]+) s, the rest ([0-9.]+) s"
                      r"(?:; the first masked forward ([0-9.]+) s)?"
                      r"(?:; past the first batch of prompts ([0-9.]+) s \((\d+) batches\))?")


def timed(cmd, env):
    """Wall and CPU (user + system) seconds of a child process, its stdout, and (for subscope,
    run with SUBSCOPE_TIMING=1) the seconds of its clean and masked passes, or None, and their split, or None."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=dict(env, SUBSCOPE_TIMING="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"bench_ablate.py: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    m, sp = PASSES_RE.search(p.stderr), SPLIT_RE.search(p.stderr)
    split = {"clean_s": float(sp[1]), "masked_forwards": int(sp[2]), "masked_s": float(sp[3]),
             "rest_s": float(sp[4]), "first_masked_s": float(sp[5]) if sp[5] else None,
             "past_first_batch_s": float(sp[6]) if sp[6] else None, "batches": int(sp[7]) if sp[7] else None} if sp else None
    return (wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), p.stdout, float(m[1]) if m else None,
            split)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="model directory (repeatable)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch + transformers for the peer")
    ap.add_argument("--subscope", default=os.path.join(ROOT, "bin", "subscope"))
    ap.add_argument("--prompts", type=int, default=8, help="prompts in a batch (both sides' --batch)")
    ap.add_argument("--prompt-batches", type=int, default=1,
                    help="batches of prompts in the sweep; past 1, the steady cost per batch is compared too "
                         "(each side past its first batch: subscope's timing, the peer's loop less its share)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--masks", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-unbatched", action="store_true", help="skip the --mask-batch 1 runs")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU step (subscope and the peer)")
    ap.add_argument("--step", default="cpu_ablate", help="the step name recorded in the JSON")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="the products' type on both sides (subscope --dtype, the peer's weights)")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "bench", "work", "ablate"))
    ap.add_argument("--host", default=platform.node())
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    import h5py  # the driver runs under the peer's interpreter

    os.makedirs(a.workdir, exist_ok=True)
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "SUBSCOPE_THREADS"):
        env[v] = str(a.threads)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    t_start = time.time()
    results = {}
    for model in a.model:
        name = os.path.basename(os.path.normpath(model))
        cfg = config_of(model)
        rng = random.Random(1234)
        prompts = os.path.join(a.workdir, f"{name}-prompts.jsonl")
        masks_path = os.path.join(a.workdir, f"{name}-masks.jsonl")
        with open(prompts, "w") as f:
            for _ in range(a.prompts * a.prompt_batches):
                f.write(json.dumps({"tokens": [rng.randrange(cfg["vocab_size"]) for _ in range(a.tokens)]}) + "\n")
        masks = bench_masks(cfg, a.masks)
        with open(masks_path, "w") as f:
            for m in masks:
                f.write(json.dumps(m) + "\n")
        out = os.path.join(a.workdir, f"{name}-ablate.h5")
        base = [a.subscope, "ablate", "--model", model, "--input", prompts, "--masks", masks_path,
                "--metrics", "loss", "--batch", str(a.prompts), "--device", a.device, "--dtype", a.dtype, "--out", out]
        # The same masks as identities (scale by 1): every forward, copy of the rows and metric
        # as in the batched run, but nothing masked, so the batched run's time over this one's is
        # the cost of applying the masks (issue 5: masked forwards >= 80% of clean throughput).
        ident_path = os.path.join(a.workdir, f"{name}-identity-masks.jsonl")
        with open(ident_path, "w") as f:
            for m in masks:
                f.write(json.dumps(dict(m, mode="scale", factor=1.0)) + "\n")
        ident_out = os.path.join(a.workdir, f"{name}-identity.h5")
        variants = {"batched": base, "unbatched": base + ["--mask-batch", "1"],
                    "identity": base[:base.index("--masks") + 1] + [ident_path] +
                                base[base.index("--masks") + 2:base.index("--out") + 1] + [ident_out]}
        if a.no_unbatched:
            del variants["unbatched"]
        if a.device.startswith("cuda"):
            # the batched run with every kernel loaded when the process starts instead of at its
            # first launch (CUDA's default loads lazily): if the passes shrink by much, their time
            # was one-off loading, which the peer's warm-up forward keeps out of its loop
            eager_out = os.path.join(a.workdir, f"{name}-eager.h5")
            variants["eager"] = ["env", "CUDA_MODULE_LOADING=EAGER"] + base[:-1] + [eager_out]
        peer_cmd = [a.python, os.path.join(ROOT, "bench", "peer_ablate.py"), "--model", model, "--prompts", prompts,
                    "--masks", masks_path, "--threads", str(a.threads), "--batch", str(a.prompts), "--reps", "1",
                    "--device", a.device, "--dtype", a.dtype]
        runs = {k: [] for k in variants}
        cpus = {k: [] for k in variants}
        passes = {k: [] for k in variants}
        splits = {k: [] for k in variants}
        peer_cpu = []
        peer_runs, peer = [], None
        per_forward = None
        print(f"== {a.step} {name}: {a.masks} masks x {a.prompts} prompts x {a.tokens} tokens, "
              f"{a.threads} threads, {a.reps} reps", file=sys.stderr)
        for rep in range(a.reps):
            order = list(variants) + ["peer"]
            order = order[rep % len(order):] + order[:rep % len(order)]  # who goes first rotates
            for who in order:
                if who == "peer":
                    so = timed(peer_cmd, env)[2]
                    peer = json.loads(so)
                    peer_runs.append(peer["pass_s"][0])
                    peer_cpu.append(peer["pass_cpu_s"][0])
                    print(f"   peer hook loop   {peer_runs[-1]:8.2f} s (cpu {peer['pass_cpu_s'][0]:.2f} s)", file=sys.stderr)
                else:
                    wall, cpu, so, ps, split = timed(variants[who], env)
                    runs[who].append(wall)
                    cpus[who].append(cpu)
                    if ps is not None:
                        passes[who].append(ps)
                    if split:
                        splits[who].append(split)
                    for line in so.splitlines():
                        if "per forward" in line and who == "batched":
                            per_forward = line.strip()
                    print(f"   subscope {who:9s} {wall:8.2f} s (cpu {cpu:.2f} s)", file=sys.stderr)
                    if who == "batched":
                        with h5py.File(out, "r") as h:
                            ours = {m["name"]: h[f"/ablate/{m['name']}/loss"][...].tolist() for m in masks}
        diff = max(abs(x - y) for i, m in enumerate(masks) for x, y in zip(ours[m["name"]], peer["losses"][i]))
        r = {"model": model, "config": cfg, "prompts": a.prompts, "prompt_batches": a.prompt_batches,
             "tokens": a.tokens, "masks": a.masks,
             "subscope_per_forward": per_forward,
             "subscope": {k: {"wall_s": v, "cpu_s": cpus[k], "median_wall_s": statistics.median(v),
                              "median_cpu_s": statistics.median(cpus[k])} for k, v in runs.items()},
             "peer": {"pass_s": peer_runs, "pass_cpu_s": peer_cpu, "median_s": statistics.median(peer_runs),
                      "median_cpu_s": statistics.median(peer_cpu), "load_s": peer["load_s"],
                      "import_s": peer["import_s"], "versions": peer["versions"], "threads": peer["threads"]},
             "max_abs_loss_diff_vs_peer": diff}
        for k, v in passes.items():
            if v:  # the passes alone, as the peer's sweep loop is timed (SUBSCOPE_TIMING)
                r["subscope"][k]["median_passes_s"] = statistics.median(v)
                r["subscope"][k]["passes_split"] = splits[k]
        r["speedup_vs_peer"] = r["peer"]["median_s"] / r["subscope"]["batched"]["median_wall_s"]
        if "median_passes_s" in r["subscope"]["batched"]:
            r["speedup_vs_peer_passes_only"] = r["peer"]["median_s"] / r["subscope"]["batched"]["median_passes_s"]
        steady = [x["past_first_batch_s"] for x in splits["batched"] if x and x.get("past_first_batch_s")]
        if a.prompt_batches > 1 and steady:
            # Each side's steady cost of one batch of prompts (all its masks): subscope's passes
            # past its first batch, which paid the process's first-use costs (kernels loaded,
            # libraries' plans, allocations), per later batch, against the peer's loop per batch,
            # whose warm-up forward kept those costs out of it. Subscope's batches include the
            # clean forward, which the peer's loop does not run.
            k = a.prompt_batches
            r["subscope"]["batched"]["median_steady_batch_s"] = statistics.median(steady) / (k - 1)
            r["peer"]["per_batch_s"] = r["peer"]["median_s"] / k
            r["speedup_vs_peer_steady"] = r["peer"]["per_batch_s"] / r["subscope"]["batched"]["median_steady_batch_s"]
        r["cpu_time_ratio_peer_over_subscope"] = r["peer"]["median_cpu_s"] / r["subscope"]["batched"]["median_cpu_s"]
        r["masked_over_clean_throughput"] = (r["subscope"]["identity"]["median_wall_s"] /
                                             r["subscope"]["batched"]["median_wall_s"])
        if "unbatched" in runs:
            r["speedup_batched_over_unbatched"] = (r["subscope"]["unbatched"]["median_wall_s"] /
                                                   r["subscope"]["batched"]["median_wall_s"])
        results[name] = r
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    commit = os.environ.get("SUBSCOPE_GIT_COMMIT")  # run_bundle.sh: the bundle's commit
    try:
        commit = commit or subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True).stdout.strip()
    except OSError:
        commit = None
    doc = {"step": a.step, "device": a.device, "dtype": a.dtype, "host": a.host, "git_commit": commit,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None),
           "logical_cpus": os.cpu_count(), "threads": a.threads, "reps": a.reps,
           "load_avg_before": load_before, "load_avg_after": load_after, "elapsed_s": time.time() - t_start,
           "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\n{a.step} ({a.device}, {a.dtype}, {a.threads} threads; subscope: whole process; peer: its hook loop only)")
    print(f"{'model':14s} {'masks':>5s} {'prompts':>9s} {'subscope s':>10s} {'K=1 s':>8s} {'peer s':>8s} "
          f"{'vs peer':>8s} {'vs K=1':>7s} {'|dloss|':>8s}")
    for name, r in results.items():
        sb = r["subscope"]["batched"]["median_wall_s"]
        ub = r["subscope"].get("unbatched", {}).get("median_wall_s", float("nan"))
        print(f"{name:14s} {r['masks']:5d} {r['prompts'] * r['prompt_batches']:4d}x{r['tokens']:<4d} {sb:10.2f} {ub:8.2f} "
              f"{r['peer']['median_s']:8.2f} {r['speedup_vs_peer']:7.1f}x "
              f"{r.get('speedup_batched_over_unbatched', float('nan')):6.1f}x {r['max_abs_loss_diff_vs_peer']:8.1e}")
        if "speedup_vs_peer_passes_only" in r:
            print(f"   subscope's passes alone (in the process): {r['subscope']['batched']['median_passes_s']:.2f} s, "
                  f"{r['speedup_vs_peer_passes_only']:.1f}x the peer's loop")
            if "eager" in r["subscope"] and "median_passes_s" in r["subscope"]["eager"]:
                e = r["subscope"]["eager"]
                print(f"   with CUDA_MODULE_LOADING=EAGER: passes {e['median_passes_s']:.3f} s, whole process "
                      f"{e['median_wall_s']:.2f} s")
            sp = r["subscope"]["batched"].get("passes_split") or []
            if sp:  # the run whose passes were the median's (or the nearest)
                med = r["subscope"]["batched"]["median_passes_s"]
                m = min(sp, key=lambda x: abs(x["clean_s"] + x["masked_s"] + x["rest_s"] - med))
                first = f" (the first {m['first_masked_s']:.4f} s)" if m.get("first_masked_s") is not None else ""
                print(f"   passes split: clean forwards {m['clean_s']:.4f} s, {m['masked_forwards']} masked forwards "
                      f"{m['masked_s']:.4f} s{first}, the rest {m['rest_s']:.4f} s")
        if "speedup_vs_peer_steady" in r:
            print(f"   one batch of {r['prompts']} prompts, each side past its first of {r['prompt_batches']}: subscope "
                  f"{r['subscope']['batched']['median_steady_batch_s']:.4f} s, the peer "
                  f"{r['peer']['per_batch_s']:.4f} s: {r['speedup_vs_peer_steady']:.1f}x")
        print(f"   cpu seconds: subscope {r['subscope']['batched']['median_cpu_s']:.2f}, K=1 "
              f"{r['subscope'].get('unbatched', {}).get('median_cpu_s', float('nan')):.2f}, peer "
              f"{r['peer']['median_cpu_s']:.2f} (peer/subscope {r['cpu_time_ratio_peer_over_subscope']:.1f}x)")
        if r["subscope_per_forward"]:
            print(f"   {r['subscope_per_forward']}")
        print(f"   masked forwards at {100 * r['masked_over_clean_throughput']:.0f}% of the throughput of the same "
              f"forwards with identity masks (target >= 80%)")
    print(f"target (issue 5): >= 20x the hook loop for >= 256 masks; wrote {a.json}")


if __name__ == "__main__":
    main()
