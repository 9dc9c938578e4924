#!/usr/bin/env python3
"""The peer of `subscope forward`: the same prompts through Hugging Face GPT2LMHeadModel or
LlamaForCausalLM (whatever config.json names; AutoModelForCausalLM).

fp32 (or --dtype tf32 / bf16), eval(), torch.no_grad(), use_cache=False,
torch.set_num_threads(--threads), the same batches as subscope's --batch, on --device cpu
(default) or cuda (the model and ids on the GPU; each timed pass ends with
torch.cuda.synchronize(), and the JSON adds the GPU's name and peak allocated memory). One warm-up batch first, then --reps passes over all
prompts; each pass is timed (model compute only, plus the copy-out / HDF5 writes the
mode asks for) and the JSON reports every pass, their median and best. With --serve
it instead runs one pass per 'pass' line on stdin (bench_forward.py interleaves these
with subscope runs) and prints the summary after 'done'.

Modes (each matches one `subscope forward` run):
  hidden   the base model only (GPT2Model / LlamaModel: final norm output, no lm_head)
                                                          ~ forward --no-logits
  logits   the whole model, logits at every position      ~ forward (default, logits stored)
  capture  hidden + hooks copying every block's MLP activations out of the graph into a
           [N, T, d_mlp] buffer per layer: GPT-2's mlp.act output (post-GELU), Llama's
           down_proj input (silu(gate) * up)      ~ forward --no-logits --sites 'blocks.*.mlp.hook_post'
--attn eager|sdpa picks transformers' attention implementation (default: its own default,
sdpa).
--h5 FILE additionally writes what the mode produced (logits, or the captured
activations) with h5py using subscope's layout: chunks of ~1 MiB along the last axes,
NaN fill, and with --compress L > 0 shuffle + gzip at level L (default 0: raw, as
`subscope forward` writes by default) -- the end-to-end equivalent of subscope's job.
Prompts must all have the same length (make_model.py writes them so): no padding.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time


def read_prompts(path):
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            obj = json.loads(line)
            if "tokens" not in obj:
                sys.exit(f"peer_hf.py: {path}:{i}: needs a 'tokens' array (no tokenizer is used)")
            rows.append(obj["tokens"])
    if not rows:
        sys.exit(f"peer_hf.py: {path}: no prompts")
    if len({len(r) for r in rows}) != 1:
        sys.exit(f"peer_hf.py: {path}: prompts must all have the same length")
    return rows


def chunk_like_subscope(dims):
    """subscope's ss_h5_choose_chunk for float32: ~1 MiB chunks, whole last axis."""
    target, es = 1 << 20, 4
    chunk = [1] * len(dims)
    chunk[-1] = dims[-1]
    nbytes = dims[-1] * es
    for i in range(len(dims) - 2, -1, -1):
        if dims[i] <= target // nbytes:
            chunk[i] = dims[i]
            nbytes *= dims[i]
            continue
        chunk[i] = max(target // nbytes, 1)
        break
    return tuple(chunk)


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True, help="prompts JSONL of {\"tokens\": [...]}")
    ap.add_argument("--mode", choices=["hidden", "logits", "capture"], required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--serve", action="store_true",
                    help="after the warm-up, run one pass per 'pass' line on stdin; 'done' ends with the summary")
    ap.add_argument("--h5", default=None, help="also write the results to this HDF5 file (timed)")
    ap.add_argument("--compress", type=int, default=0, choices=range(10), metavar="0-9",
                    help="with --h5: shuffle + gzip at this level (default 0: none, as subscope forward)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default=None,
                    help="attention implementation (default: transformers' default)")
    ap.add_argument("--dtype", choices=["fp32", "tf32", "bf16"], default="fp32",
                    help="fp32 (TF32 off, torch's default), tf32 (fp32 weights, TF32 matmuls allowed), bf16 weights "
                         "and activations")
    a = ap.parse_args()

    t_import = time.perf_counter()
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("peer_hf.py: --device cuda but torch sees no GPU (torch.cuda.is_available() is False)")
    if a.dtype == "tf32" and a.device == "cpu":
        sys.exit("peer_hf.py: --dtype tf32 is for --device cuda (the CPU has no TF32)")
    # Set explicitly: fp32 means IEEE fp32 matmuls, as subscope's default.
    torch.backends.cuda.matmul.allow_tf32 = a.dtype == "tf32"
    torch.backends.cudnn.allow_tf32 = a.dtype == "tf32"
    tdtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    dev = torch.device(a.device)
    rss_after_import = rss_mib()
    import_s = time.perf_counter() - t_import

    t0 = time.perf_counter()
    kw = {"attn_implementation": a.attn} if a.attn else {}
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=tdtype, **kw).eval().to(dev)
    if a.device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    cfg = model.config
    prompts = read_prompts(a.input)
    ids = torch.tensor(prompts, dtype=torch.long).to(dev)
    N, T = ids.shape
    gpt2 = cfg.model_type == "gpt2"
    base = model.base_model  # GPT2Model (.transformer) or LlamaModel (.model)
    blocks = base.h if gpt2 else base.layers
    d_mlp = (cfg.n_inner or 4 * cfg.n_embd) if gpt2 else cfg.intermediate_size
    L = len(blocks)

    captured = None
    hooks = []
    if a.mode == "capture":
        # One buffer per layer for the whole data set, filled batch by batch, as
        # an activation-collecting user would hold them before saving.
        captured = [np.empty((N, T, d_mlp), dtype=np.float32) for _ in range(L)]
        where = {"b0": 0}

        def make_hook(layer):
            def hook(_mod, inp, out=None):
                x = out if gpt2 else inp[0]
                b0 = where["b0"]
                captured[layer][b0:b0 + x.shape[0]] = x.detach().float().cpu().numpy()
            return hook

        for l, block in enumerate(blocks):
            if gpt2:
                hooks.append(block.mlp.act.register_forward_hook(make_hook(l)))
            else:  # subscope's mlp.hook_post is down_proj's input; no module outputs it
                hooks.append(block.mlp.down_proj.register_forward_pre_hook(make_hook(l)))
        where_ref = where
    else:
        where_ref = {"b0": 0}

    logits_out = None
    if a.mode == "logits" and a.h5:
        logits_out = np.empty((N, T, cfg.vocab_size), dtype=np.float32)

    def run_batch(b0):
        x = ids[b0:b0 + a.batch]
        where_ref["b0"] = b0
        if a.mode == "logits":
            out = model(input_ids=x, use_cache=False).logits
            if logits_out is not None:
                logits_out[b0:b0 + x.shape[0]] = out.float().cpu().numpy()
            return out
        return base(input_ids=x, use_cache=False).last_hidden_state

    deflate = dict(shuffle=True, compression="gzip", compression_opts=a.compress) if a.compress else {}

    def write_h5(path):
        import h5py
        tmp = path + ".tmp"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("tokens", data=ids.cpu().numpy().astype(np.int32))
            if logits_out is not None:
                f.create_dataset("logits", data=logits_out, chunks=chunk_like_subscope(logits_out.shape),
                                 fillvalue=np.nan, **deflate)
            if captured is not None:
                for l, buf in enumerate(captured):
                    f.create_dataset(f"acts/blocks.{l}.mlp.hook_post", data=buf, chunks=chunk_like_subscope(buf.shape),
                                     fillvalue=np.nan, **deflate)
        os.replace(tmp, path)

    passes, compute, cpu = [], [], []

    def one_pass():
        c0 = time.process_time()
        t0 = time.perf_counter()
        for b0 in range(0, N, a.batch):
            run_batch(b0)
        if a.device == "cuda":
            torch.cuda.synchronize()  # kernels are asynchronous: the pass ends when the GPU is done
        t1 = time.perf_counter()
        if a.h5:
            write_h5(a.h5)
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        compute.append(t1 - t0)
        passes.append(t2 - t0)
        return {"pass_s": passes[-1], "compute_s": compute[-1], "cpu_s": cpu[-1]}

    with torch.no_grad():
        run_batch(0)  # warm-up: first-call allocations and kernel selection
        if a.device == "cuda":
            torch.cuda.synchronize()
        if a.serve:
            # Driven by bench_forward.py, which alternates our passes with subscope
            # runs so that both see the same load on a shared machine.
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                cmd = line.strip()
                if cmd == "pass":
                    print(json.dumps(one_pass()), flush=True)
                elif cmd == "done":
                    break
                elif cmd:
                    sys.exit(f"peer_hf.py: unknown command '{cmd}' (pass, done)")
            if not passes:
                sys.exit("peer_hf.py: no pass was asked for")
        else:
            for _ in range(a.reps):
                one_pass()
    for h in hooks:
        h.remove()

    med = statistics.median(passes)
    res = {
        "peer": "transformers." + type(model).__name__,
        "mode": a.mode,
        "h5": bool(a.h5),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "n_prompts": int(N),
        "tokens_per_prompt": int(T),
        "tokens": int(N * T),
        "reps": len(passes),
        "import_s": import_s,
        "load_s": load_s,
        "compute_s": compute,
        "pass_s": passes,
        "pass_cpu_s": cpu,
        "median_s": med,
        "best_s": min(passes),
        "tokens_per_s": N * T / med,
        "rss_after_import_mib": rss_after_import,
        "peak_rss_mib": rss_mib(),
        "device": a.device,
        "dtype": a.dtype,
    }
    if a.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
        res["cuda"] = torch.version.cuda
        res["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(res))


if __name__ == "__main__":
    main()
