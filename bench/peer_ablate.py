#!/usr/bin/env python3
"""The peer of `subscope ablate` for the cpu_ablate benchmark: a mask sweep done the usual
way with PyTorch hooks (as TransformerLens users do) on a Hugging Face GPT-2 — for each
mask, register its hooks, run the prompts (batches of --batch), take each prompt's mean
next-token loss, remove the hooks.

Masks are the subset of subscope's JSONL that bench_ablate.py writes: one site each,
`blocks.L.mlp.hook_post` (hooked at the output of `h[L].mlp.act`) or
`blocks.L.attn.hook_z` (the input of `h[L].attn.c_proj`, heads merged), with "units"
or "heads", mode zero or scale. Prints one JSON object: pass_s (each timed sweep),
load_s, import_s, versions, and losses[mask][prompt] of the last sweep.

    peer_ablate.py --model DIR --prompts P.jsonl --masks M.jsonl --threads 2 --batch 8 --reps 1 [--device cuda]
                   [--dtype bfloat16]

With --dtype bfloat16 the model's weights and activations are bf16 (losses from float32
log-softmax either way).

(.tolist() of each mask's losses waits for the device, so the timing is the sweep's.)
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help='{"tokens": [...]} JSONL, all the same length')
    ap.add_argument("--masks", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU step)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args()

    t0 = time.perf_counter()
    import torch
    import transformers
    from transformers import GPT2LMHeadModel
    import_s = time.perf_counter() - t0
    torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=getattr(torch, a.dtype)).eval().to(a.device)
    load_s = time.perf_counter() - t0
    cfg = model.config
    dh = cfg.n_embd // cfg.n_head
    ids = torch.tensor([json.loads(l)["tokens"] for l in open(a.prompts) if l.strip()], dtype=torch.long).to(a.device)
    masks = [json.loads(l) for l in open(a.masks) if l.strip()]

    def hooks_for(m):
        """(module, kind, fn) for one mask."""
        site = m["site"]
        parts = site.split(".")
        layer = int(parts[1])
        block = model.transformer.h[layer]
        factor = 0.0 if m.get("mode", "zero") == "zero" else float(m["factor"])
        if site.endswith("mlp.hook_post"):
            idx = torch.tensor(m["units"], dtype=torch.long, device=a.device)

            def post(mod, inp, out):
                out = out.clone()
                out[..., idx] *= factor
                return out
            return block.mlp.act, "fwd", post
        if site.endswith("attn.hook_z"):
            idx = torch.tensor([h * dh + i for h in m["heads"] for i in range(dh)], dtype=torch.long, device=a.device)

            def pre(mod, args):
                z = args[0].clone()
                z[..., idx] *= factor
                return (z,) + tuple(args[1:])
            return block.attn.c_proj, "pre", pre
        sys.exit(f"peer_ablate.py: site {site} is not one the benchmark uses")

    def losses_of(logits, x):
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None])[..., 0]
        return nll.mean(dim=1)

    def sweep():
        out = []
        for m in masks:
            mod, kind, fn = hooks_for(m)
            h = mod.register_forward_hook(fn) if kind == "fwd" else mod.register_forward_pre_hook(fn)
            try:
                vals = []
                for b0 in range(0, len(ids), a.batch):
                    x = ids[b0:b0 + a.batch]
                    vals.append(losses_of(model(x, use_cache=False).logits, x))
                out.append(torch.cat(vals).tolist())
            finally:
                h.remove()
        return out

    with torch.no_grad():
        model(ids[:a.batch], use_cache=False)  # warm-up
        passes, cpu, losses = [], [], None
        for _ in range(a.reps):
            c0, t0 = time.process_time(), time.perf_counter()
            losses = sweep()
            passes.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    json.dump({"pass_s": passes, "pass_cpu_s": cpu, "import_s": import_s, "load_s": load_s,
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                            "python": sys.version.split()[0]},
               "threads": torch.get_num_threads(), "masks": [m["name"] for m in masks], "losses": losses},
              sys.stdout)


if __name__ == "__main__":
    main()
