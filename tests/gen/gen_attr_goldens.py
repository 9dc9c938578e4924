#!/usr/bin/env python3
"""Autograd reference data for `subscope attribute` (issue 6).

    python tests/gen/gen_attr_goldens.py            # everything, ~40 s on one CPU thread
    python tests/gen/gen_attr_goldens.py --only bf16,tiny

Each golden below is what this subscope command line must write (the fp32 file), and
its `-f64.h5` twin is the same computation with the model in float64 (model.double()):

  subscope attribute --model tests/data/models/prefix-f32 --input tests/data/attribute/prefix-f32.jsonl --sites '*' --metric loss --method grad --out attr-prefix-f32-loss-grad.h5
  subscope attribute --model tests/data/models/noprefix-odd-untied --input tests/data/attribute/noprefix-odd-untied.jsonl --sites '*' --metric loss --method grad --out attr-noprefix-odd-untied-loss-grad.h5
  subscope attribute --model tests/data/models/f16-sharded --input tests/data/attribute/f16-sharded.jsonl --sites '*' --metric loss --method grad --out attr-f16-sharded-loss-grad.h5
  subscope attribute --model tests/data/models/bf16 --input tests/data/attribute/bf16.jsonl --sites '*' --metric loss --method grad --out attr-bf16-loss-grad.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --sites 'hook_embed,hook_pos_embed,blocks.0.attn.*,blocks.2.mlp.hook_post' --metric logitdiff --method gradxact --out attr-tiny-logitdiff-gradxact.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --sites 'blocks.3.*,ln_final.hook_normalized' --metric logprob --method grad --out attr-tiny-logprob-grad.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --corrupt tests/data/attribute/corrupt.jsonl --sites 'hook_embed,hook_pos_embed,blocks.1.hook_*,blocks.2.attn.*' --metric logitdiff --method atp --out attr-tiny-logitdiff-atp.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --sites 'blocks.*.mlp.hook_post,blocks.*.attn.hook_z' --metric loss --method grad --reduce positions --out attr-tiny-loss-grad-positions.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --sites 'blocks.*.hook_resid_post' --metric logprob --method gradxact --reduce prompts --out attr-tiny-logprob-gradxact-prompts.h5
  subscope attribute --model models/tiny-gpt2 --input tests/data/attribute/prompts.jsonl --sites 'blocks.*.mlp.hook_post,blocks.1.hook_resid_pre' --metric logitdiff --method ig:16 --out attr-tiny-logitdiff-ig16.h5

(all outputs under tests/data/golden/). '*' is every per-token site (hook_pattern left out).
The random models cover every site; the tiny-gpt2 goldens name a few sites each, since every
site of tiny-gpt2 is ~40 KB per token. The -f64 twins of the tiny gradxact, atp and ig16
goldens are left out for size; every fp32 file records max |fp32 - fp64| in its root
attribute max_abs_diff_to_float64. IG at 16 steps is a quadrature: its completeness error
is printed (at blocks.1.hook_resid_pre it is large, because LN(alpha*a) hardly moves with
alpha until alpha*|a| nears sqrt(eps); the script shows a fine log-spaced sum closing it).

Definitions (per prompt i, each prompt alone in a batch of one, eval mode, eager attention):
  loss       mean next-token cross-entropy over positions 0..len-2; NaN for a 1-token prompt
  logitdiff  logit[answer] - logit[wrong] at the last position
  logprob    log_softmax(logits at the last position)[answer]
  answer/wrong are the FIRST token of the line's "answer"/"wrong" string as the model's
  tokenizer encodes it (" hot" is two tokens in tiny-gpt2; the first one is used).
  g = d metric_i / d (value at the site), the total derivative (a tensor used twice, like
  resid_mid, gets both paths). grad: g; gradxact: value*g; atp: (value_corrupt -
  value_clean)*g_clean, corrupt = the same line of --corrupt (same token count; the
  metric's answer/wrong come from the clean line); ig:S: a*(1/S)*sum_k g(alpha_k),
  alpha_k = (k+0.5)/S, g(alpha) taken with the value at the site (all positions) replaced
  by alpha*a and everything downstream recomputed, one site at a time.
  Where metric_i is NaN (loss of a 1-token prompt) every attribution of prompt i is NaN:
  there is no metric to differentiate (noprefix-odd-untied.jsonl has such a prompt).
Layout (exactly these datasets; float32, or float64 in the -f64 twins):
  /metric [N] the clean metric; /attr/<site> [N,T,...] (T = longest prompt; per-token
  [d], [d_mlp] or [H,dh]; NaN at positions >= len_i); with --reduce positions [N,...]
  (sum over the prompt's real positions); with --reduce prompts [T,...] (sum over the
  prompts that reach that position); with ig also /ig/<site>/baseline_metric [N] (metric
  with the site's value set to 0 at all positions). Reductions are summed in float64 from
  the per-token attributions of the file's precision, then stored in the file's dtype.

The model is HF GPT2LMHeadModel loaded by gen_gpt2_goldens.load_reference (fp32, eager,
every parameter checked against the files); sites are taken by hooks on HF's modules with
the same hook points as gen_gpt2_goldens.Capture (whose values are checked to agree
exactly), gradients by torch.autograd.grad. Self-checks (printed): captured values equal
Capture's and the forward goldens; central finite differences in float64 (eps 1e-6) at the
3 units of largest |g| of every site and every metric, relative error < 1e-6; IG
completeness sum(attr) vs metric(a) - metric(0); atp with corrupt = clean is exactly 0.
Deterministic: CPU, one thread, torch.use_deterministic_algorithms(True).
"""
import argparse
import copy
import fnmatch
import json
import os
import sys

import h5py
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_gpt2_goldens as g2  # noqa: E402

ROOT = g2.ROOT
GOLDEN = g2.GOLDEN
ATTR = os.path.join(ROOT, "tests", "data", "attribute")
TINY = g2.TINY
SITES_PER_BLOCK = [s for s in g2.SITES_PER_BLOCK if s != "attn.hook_pattern"]

# Random-weight models: the prompts are prefixes of tests/data/golden/<name>.jsonl lines
# (line, length), so their site values can be checked against the forward goldens.
RANDOM_PROMPTS = {
    "prefix-f32": [(0, 5), (2, 3), (3, 7), (4, 4)],
    "noprefix-odd-untied": [(0, 6), (1, 1), (2, 3), (4, 4), (3, 5)],
    "f16-sharded": [(2, 6), (3, 4), (4, 5), (0, 2)],
    "bf16": [(0, 7), (3, 4), (4, 6), (2, 3)],
}

# tiny-gpt2: clean and corrupt lines with equal token counts (checked below).
TINY_PROMPTS = [
    ({"text": "The cat says", "answer": " meow", "wrong": " woof"}, {"text": "The dog says"}),
    ({"text": "Snow is", "answer": " white", "wrong": " green"}, {"text": "Grass is"}),
    ({"text": "In summer it is", "answer": " hot", "wrong": " cold"}, {"text": "In winter it is"}),
    ({"text": "Today is Friday. Tomorrow is", "answer": " Saturday", "wrong": " Monday"},
     {"text": "Today is Monday. Tomorrow is"}),
]

M_TINY = "models/tiny-gpt2"
P_TINY = "tests/data/attribute/prompts.jsonl"
C_TINY = "tests/data/attribute/corrupt.jsonl"
TINY_GOLDENS = [
    dict(out="attr-tiny-logitdiff-gradxact", sites="hook_embed,hook_pos_embed,blocks.0.attn.*,blocks.2.mlp.hook_post",
         metric="logitdiff", method="gradxact", twin=False),
    dict(out="attr-tiny-logprob-grad", sites="blocks.3.*,ln_final.hook_normalized", metric="logprob",
         method="grad"),
    dict(out="attr-tiny-logitdiff-atp", sites="hook_embed,hook_pos_embed,blocks.1.hook_*,blocks.2.attn.*",
         metric="logitdiff", method="atp", corrupt=True, twin=False),
    dict(out="attr-tiny-loss-grad-positions", sites="blocks.*.mlp.hook_post,blocks.*.attn.hook_z",
         metric="loss", method="grad", reduce="positions"),
    dict(out="attr-tiny-logprob-gradxact-prompts", sites="blocks.*.hook_resid_post", metric="logprob",
         method="gradxact", reduce="prompts"),
    dict(out="attr-tiny-logitdiff-ig16", sites="blocks.*.mlp.hook_post,blocks.1.hook_resid_pre",
         metric="logitdiff", method="ig:16", twin=False),
]


def per_token_sites(n_layer):
    s = ["hook_embed", "hook_pos_embed"]
    for L in range(n_layer):
        s += [f"blocks.{L}.{x}" for x in SITES_PER_BLOCK]
    return s + ["ln_final.hook_normalized"]


def match_sites(globs, n_layer):
    """FORMAT.md's rule: comma-separated globs, '*' matches anything, dots included."""
    allsites = per_token_sites(n_layer)
    out = []
    for g in globs.split(","):
        hit = [s for s in allsites if fnmatch.fnmatchcase(s, g)]
        if not hit:
            raise ValueError(f"glob {g!r} matches no site")
        out += [s for s in hit if s not in out]
    return [s for s in allsites if s in out]


def command(model, inp, sites, metric, method, out, corrupt=None, reduce=None):
    c = f"subscope attribute --model {model} --input {inp}"
    if corrupt:
        c += f" --corrupt {corrupt}"
    c += f" --sites '{sites}' --metric {metric} --method {method}"
    if reduce:
        c += f" --reduce {reduce}"
    return c + f" --out {out}.h5"


# ---------------------------------------------------------------- sites on HF modules

class Sites:
    """Where each site lives in HF's GPT2 and how to read or change it.

    A location is (module, 'out' | 'in', lo, hi, shape): the site is x[0, :, lo:hi] of the
    module's output or first input, viewed as [T, *shape]. These are Capture's hook points.
    resid_mid is read at ln_2's input, which is also the residual branch's tensor, so its
    gradient is the total one; changing it there would miss the residual branch, so an
    additive change is applied to the attention output instead (resid_mid = resid_pre +
    attn_out), and replacing it is refused (not needed here).
    """

    def __init__(self, model):
        cfg = model.config
        self.model = model
        self.nL, self.H, self.d = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.dh = self.d // self.H
        self.dm = cfg.n_inner or 4 * self.d
        tr = model.transformer
        d, H, dh, dm = self.d, self.H, self.dh, self.dm
        loc = {"hook_embed": (tr.wte, "out", 0, d, (d,)), "hook_pos_embed": (tr.wpe, "out", 0, d, (d,)),
               "ln_final.hook_normalized": (tr.ln_f, "out", 0, d, (d,))}
        for L, b in enumerate(tr.h):
            p = f"blocks.{L}."
            loc[p + "hook_resid_pre"] = (b, "in", 0, d, (d,))
            loc[p + "ln1.hook_normalized"] = (b.ln_1, "out", 0, d, (d,))
            for i, s in enumerate("qkv"):
                loc[p + "attn.hook_" + s] = (b.attn.c_attn, "out", i * d, (i + 1) * d, (H, dh))
            loc[p + "attn.hook_z"] = (b.attn.c_proj, "in", 0, d, (H, dh))
            loc[p + "hook_attn_out"] = (b.attn.c_proj, "out", 0, d, (d,))
            loc[p + "hook_resid_mid"] = (b.ln_2, "in", 0, d, (d,))
            loc[p + "ln2.hook_normalized"] = (b.ln_2, "out", 0, d, (d,))
            loc[p + "mlp.hook_pre"] = (b.mlp.c_fc, "out", 0, dm, (dm,))
            loc[p + "mlp.hook_post"] = (b.mlp.act, "out", 0, dm, (dm,))
            loc[p + "hook_mlp_out"] = (b.mlp, "out", 0, d, (d,))
            loc[p + "hook_resid_post"] = (b, "out", 0, d, (d,))
        assert set(loc) == set(per_token_sites(self.nL))
        self.loc = loc

    def unit_shape(self, site):
        return self.loc[site][4]

    def run(self, ids, capture=(), edits=None):
        """One forward of a batch of one. capture: sites whose raw tensors to keep (graph
        attached); edits: {site: ('add' | 'set', tensor [T, *shape])}. Returns (logits [T,V],
        {site: value [T, *shape]}, {site: raw tensor}) ."""
        edits = edits or {}
        raws, handles = {}, []
        T = len(ids)

        def apply(site, x):
            kind, v = edits[site]
            _m, _k, lo, hi, _s = self.loc[site]
            v = v.reshape(1, T, hi - lo).to(x.dtype)
            if kind == "add":
                v = x[..., lo:hi] + v
            elif kind != "set":
                raise ValueError(kind)
            return torch.cat([x[..., :lo], v, x[..., hi:]], -1) if (lo, hi) != (0, x.shape[-1]) else v

        by_loc = {}
        for s in set(capture) | set(edits):
            m, k, *_ = self.loc[s]
            if s.endswith("hook_resid_mid") and s in edits:
                if edits[s][0] != "add":
                    raise ValueError("resid_mid can only be changed additively")
                L = int(s.split(".")[1])
                attn = self.model.transformer.h[L].attn
                handles.append(attn.register_forward_hook(
                    lambda _m, _a, out, s=s: (apply(s, out[0]),) + tuple(out[1:])))
                if s not in capture:
                    continue
                by_loc.setdefault((m, k), []).append((s, False))
                continue
            by_loc.setdefault((m, k), []).append((s, s in edits))

        for (m, k), items in by_loc.items():
            def fn(x, items=items):
                for s, ed in items:
                    if ed:
                        x = apply(s, x)
                for s, _ in items:
                    if s in capture:
                        raws[s] = x
                return x
            if k == "out":
                handles.append(m.register_forward_hook(lambda _m, _a, out, fn=fn: fn(out)))
            else:
                handles.append(m.register_forward_pre_hook(lambda _m, a, fn=fn: (fn(a[0]),) + tuple(a[1:])))
        try:
            logits = self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        finally:
            for h in handles:
                h.remove()
        vals = {s: self.view(s, raws[s]) for s in capture}
        return logits, vals, raws

    def view(self, site, raw):
        _m, _k, lo, hi, shape = self.loc[site]
        assert raw.dim() == 3 and raw.shape[0] == 1, (site, raw.shape)
        return raw[0, :, lo:hi].reshape(raw.shape[1], *shape)


def metric_fn(name, ids, answer=None, wrong=None):
    def loss(lg):
        if len(ids) < 2:
            return None
        return torch.nn.functional.cross_entropy(lg[:-1], torch.tensor(ids[1:]))

    def logitdiff(lg):
        return lg[-1, answer] - lg[-1, wrong]

    def logprob(lg):
        return torch.log_softmax(lg[-1], -1)[answer]
    return {"loss": loss, "logitdiff": logitdiff, "logprob": logprob}[name]


def grads(S, ids, met, sites, edits=None):
    """metric, {site: value}, {site: d metric / d value}; metric None when undefined."""
    with torch.enable_grad():
        lg, vals, raws = S.run(ids, capture=sites, edits=edits)
        m = met(lg)
        if m is None:
            return None, vals, None
        keys = list(dict.fromkeys(id(raws[s]) for s in sites))
        tens = {id(raws[s]): raws[s] for s in sites}
        gs = torch.autograd.grad(m, [tens[k] for k in keys])
        gmap = dict(zip(keys, gs))
    return m.detach(), {s: v.detach() for s, v in vals.items()}, {s: S.view(s, gmap[id(raws[s])]) for s in sites}


def ig_site(S, ids, met, site, a, steps):
    """Integrated gradients at one site, baseline 0: (attr, metric(0))."""
    acc = torch.zeros_like(a)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        with torch.enable_grad():
            v = (alpha * a).detach().requires_grad_(True)
            lg, _, _ = S.run(ids, edits={site: ("set", v)})
            (gk,) = torch.autograd.grad(met(lg), [v])
        acc += gk
    with torch.no_grad():
        base = met(S.run(ids, edits={site: ("set", torch.zeros_like(a))})[0])
    return a * (acc * (1.0 / steps)), base


def attribute(S, prompts, spec, corrupt=None):
    """Everything one golden file holds, as numpy arrays in the model's dtype."""
    sites = match_sites(spec["sites"], S.nL)
    method = spec["method"]
    steps = int(method.split(":")[1]) if method.startswith("ig:") else 0
    N, T = len(prompts), max(len(p["ids"]) for p in prompts)
    dt = next(S.model.parameters()).dtype
    npdt = {torch.float32: np.float32, torch.float64: np.float64}[dt]
    metric = np.full(N, np.nan, npdt)
    attr = {s: np.full((N, T) + S.unit_shape(s), np.nan, npdt) for s in sites}
    base = {s: np.full(N, np.nan, npdt) for s in sites} if steps else None
    completeness = []
    for i, p in enumerate(prompts):
        ids, n = p["ids"], len(p["ids"])
        met = metric_fn(spec["metric"], ids, p.get("answer"), p.get("wrong"))
        m, vals, g = grads(S, ids, met, sites)
        if m is None:
            continue  # NaN metric: NaN attributions
        metric[i] = m.item()
        if method in ("atp",):
            cids = corrupt[i]["ids"]
            assert len(cids) == n
            with torch.no_grad():
                _, cvals, _ = S.run(cids, capture=sites)
        for s in sites:
            if method == "grad":
                a = g[s]
            elif method == "gradxact":
                a = vals[s] * g[s]
            elif method == "atp":
                a = (cvals[s] - vals[s]) * g[s]
            elif steps:
                a, b = ig_site(S, ids, met, s, vals[s], steps)
                base[s][i] = b.item()
                total = a.double().sum().item()
                want = m.item() - b.item()
                completeness.append((i, s, total, want))
            else:
                raise ValueError(method)
            attr[s][i, :n] = a.detach().numpy()
    out = {"metric": metric}
    lengths = [len(p["ids"]) for p in prompts]
    for s in sites:
        x = attr[s]
        if spec.get("reduce") == "positions":
            x = np.stack([x[i, :lengths[i]].astype(np.float64).sum(0) for i in range(N)]).astype(npdt)
        elif spec.get("reduce") == "prompts":
            r = np.zeros((T,) + x.shape[2:], np.float64)
            for i in range(N):
                r[:lengths[i]] += x[i, :lengths[i]]
            x = r.astype(npdt)
        elif spec.get("reduce"):
            raise ValueError(spec["reduce"])
        out["attr/" + s] = x
        if steps:
            out[f"ig/{s}/baseline_metric"] = base[s]
    return out, completeness


# ---------------------------------------------------------------- checks

def check_capture(S, prompts, what):
    """The site values are exactly what gen_gpt2_goldens.Capture takes."""
    cap = g2.Capture(S.model)
    try:
        for p in prompts:
            _, ref = cap.run(S.model, p["ids"])
            with torch.no_grad():
                _, vals, _ = S.run(p["ids"], capture=list(S.loc))
            for s, v in vals.items():
                assert torch.equal(v, ref[s]), f"{what}: {s} differs from Capture"
    finally:
        cap.remove()


def check_forward_golden(S, prompts, name):
    """Prefixes of the forward goldens' prompts: same values at the same positions."""
    path = os.path.join(GOLDEN, name + ".h5")
    worst = 0.0
    with h5py.File(path, "r") as f:
        gold_tokens, glen = f["tokens"][...], f["lengths"][...]
        for p in prompts:
            line, n = p["line"], len(p["ids"])
            assert list(gold_tokens[line, :n]) == p["ids"] and glen[line] >= n
            with torch.no_grad():
                _, vals, _ = S.run(p["ids"], capture=list(S.loc))
            for s, v in vals.items():
                ref = f["acts/" + s][line, :n]
                err = np.abs(v.numpy() - ref).max() / max(1.0, np.abs(ref).max())
                worst = max(worst, float(err))
    assert worst < 1e-5, f"{name}: site values differ from {path} by {worst:.3g}"
    return worst


def check_fd(S64, prompts, metrics, what, eps=1e-6, units=3):
    """Central differences in float64 at the units of largest |g| of every site."""
    worst = 0.0
    sites = list(S64.loc)
    for p in prompts:
        for mname in metrics:
            met = metric_fn(mname, p["ids"], p.get("answer"), p.get("wrong"))
            m, vals, g = grads(S64, p["ids"], met, sites)
            if m is None:
                continue
            for s in sites:
                flat = g[s].reshape(-1)
                for j in torch.topk(flat.abs(), units).indices.tolist():
                    delta = torch.zeros_like(flat)
                    delta[j] = eps
                    delta = delta.reshape(g[s].shape)
                    with torch.no_grad():
                        up = met(S64.run(p["ids"], edits={s: ("add", delta)})[0]).item()
                        dn = met(S64.run(p["ids"], edits={s: ("add", -delta)})[0]).item()
                    fd = (up - dn) / (2 * eps)
                    rel = abs(fd - flat[j].item()) / abs(flat[j].item())
                    worst = max(worst, rel)
                    if not rel < 1e-6:
                        raise AssertionError(f"{what} {mname} {s} unit {j}: fd {fd:.10g} vs autograd "
                                             f"{flat[j].item():.10g} (rel {rel:.2g})")
    print(f"  {what}: finite differences ({', '.join(metrics)}; every site, top {units} units) "
          f"max rel error {worst:.2e}")


def check_atp_zero(S, prompts, spec):
    z = dict(spec, method="atp")
    out, _ = attribute(S, prompts, z, corrupt=prompts)
    for k, v in out.items():
        if k.startswith("attr/"):
            real = v[~np.isnan(v)]
            assert real.size and np.all(real == 0), f"atp with corrupt = clean: {k} not exactly 0"
    print("  atp with corrupt = clean: exactly 0 at every site")


# ---------------------------------------------------------------- output

def write(path, out, attrs):
    tmp = path + ".tmp"
    kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        for k, v in attrs.items():
            f.attrs[k] = str(v)
        for k, v in out.items():
            f.create_dataset(k, data=v, **(kw if v.ndim > 1 else {}))
    os.replace(tmp, path)
    return os.path.getsize(path)


def max_diff(o32, o64):
    worst = 0.0
    for k in o32:
        a, b = o32[k].astype(np.float64), o64[k]
        assert np.array_equal(np.isnan(a), np.isnan(b)), k
        m = ~np.isnan(a)
        if m.any():
            worst = max(worst, float(np.abs(a[m] - b[m]).max()))
    return worst


def ig_fine_total(S, ids, met, site, a, n=1500):
    """The path integral of g(alpha)·a on a grid that is log-spaced towards alpha = 0, where
    a LayerNorm downstream of the site turns sharply (LN(alpha·a) is independent of alpha
    until alpha·|a| nears sqrt(eps)); used only to show where the 16-step sum falls short."""
    edges = np.concatenate([[0.0], np.logspace(-8, 0, n)])
    tot = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        with torch.enable_grad():
            v = ((lo + hi) / 2 * a).detach().requires_grad_(True)
            lg, _, _ = S.run(ids, edits={site: ("set", v)})
            (gk,) = torch.autograd.grad(met(lg), [v])
        tot += (hi - lo) * (gk * a).sum().item()
    return tot


def report_completeness(label, comp):
    """Relative error of sum(attr) against metric(a) - metric(0), per site kind."""
    kinds = {}
    for i, s, t, w in comp:
        kinds.setdefault(s.split(".", 2)[-1] if s.startswith("blocks.") else s, []).append((i, s, t, w))
    worst = []
    for k, rows in kinds.items():
        rels = [abs(t - w) / abs(w) for _, _, t, w in rows]
        j = int(np.argmax(rels))
        i, s, t, w = rows[j]
        absmax = max(abs(t - w) for _, _, t, w in rows)
        print(f"  IG completeness {label} {k}: max rel error {rels[j]:.3%} (prompt {i} {s}: sum attr "
              f"{t:.6f} vs metric(a) - metric(0) {w:.6f}), median {np.median(rels):.3%} over {len(rels)}, "
              f"max abs error {absmax:.3g}")
        worst.append((rels[j], i, s, w))
        ja = int(np.argmax([abs(t - w) for _, _, t, w in rows]))
        if ja != j:
            i, s, t, w = rows[ja]
            print(f"    largest abs error: prompt {i} {s}: sum attr {t:.6f} vs {w:.6f} (rel {rels[ja]:.3%})")
            worst.append((rels[ja], i, s, w))
    return worst


def emit(name, cmd, S32, S64, prompts, spec, corrupt=None, summary=None):
    base = dict(generator="tests/gen/gen_attr_goldens.py", command=cmd, torch=torch.__version__,
                transformers=transformers.__version__, metric=spec["metric"], method=spec["method"],
                sites=spec["sites"], reduce=spec.get("reduce", "none"))
    o32, c32 = attribute(S32, prompts, spec, corrupt)
    o64, c64 = attribute(S64, prompts, spec, corrupt)
    md = max_diff(o32, o64)
    twin = spec.get("twin", True)
    n32 = write(os.path.join(GOLDEN, name + ".h5"), o32,
                dict(base, precision="float32", max_abs_diff_to_float64=f"{md:.3g}"))
    p64 = os.path.join(GOLDEN, name + "-f64.h5")
    if twin:
        n64 = write(p64, o64, dict(base, precision="float64"))
    else:
        n64 = 0
        if os.path.exists(p64):
            os.remove(p64)
    scale = max(float(np.nanmax(np.abs(v))) for k, v in o64.items() if k.startswith("attr/"))
    print(f"  {name}.h5 {n32} B, " + (f"-f64.h5 {n64} B" if twin else "no -f64 twin (size)") +
          f"; max |fp32 - fp64| {md:.3g} (max |attr| {scale:.3g}); metric "
          f"{np.array2string(o32['metric'], precision=4)}")
    if c32:
        report_completeness("fp32", c32)
        print("  (the tiny model's IG is expected within 1% at 16 steps; where it is not, the fp64 sums below"
              " show the 16-step midpoint rule, not the gradients, is short)")
        for rel, i, s, w in report_completeness("fp64", c64):
            if rel <= 0.01:
                continue
            # Show that the shortfall is the 16-step quadrature, not the integrand.
            p = prompts[i]
            met = metric_fn(spec["metric"], p["ids"], p.get("answer"), p.get("wrong"))
            a = S64.run(p["ids"], capture=[s])[1][s].detach()
            m = met(S64.run(p["ids"])[0]).item()
            s128 = ig_site(S64, p["ids"], met, s, a, 128)[0].sum().item()
            fine = ig_fine_total(S64, p["ids"], met, s, a)
            print(f"    prompt {i} {s} (fp64): rel error {abs(s128 - w) / abs(w):.2e} with 128 midpoint steps, "
                  f"{abs(fine - w) / abs(w):.2e} with 1500 log-spaced steps (metric(a) {m:.6f})")
    if summary is not None:
        summary.append((name, n32, n64, md))


def load_pair(d, tied):
    m32 = g2.load_reference(d, tied)
    # Parameters keep requires_grad so that every site's tensor is in the graph; only the
    # sites' gradients are ever asked for (torch.autograd.grad).
    m64 = copy.deepcopy(m32).double()
    return Sites(m32), Sites(m64)


def gen_random(name, summary):
    c = next(c for c in g2.CONFIGS if c["name"] == name)
    S32, S64 = load_pair(os.path.join(g2.MODELS, name), c["tie"])
    lines = [json.loads(l)["tokens"] for l in open(os.path.join(GOLDEN, name + ".jsonl"))]
    prompts = [{"ids": lines[ln][:n], "line": ln} for ln, n in RANDOM_PROMPTS[name]]
    assert all(len(p["ids"]) == n for p, (_, n) in zip(prompts, RANDOM_PROMPTS[name]))
    rel = f"tests/data/attribute/{name}.jsonl"
    with open(os.path.join(ROOT, rel), "w") as f:
        for p in prompts:
            f.write(json.dumps({"tokens": p["ids"]}) + "\n")
    print(f"{name}: prompts {rel}, lengths {[len(p['ids']) for p in prompts]}")
    check_capture(S32, prompts, name)
    w = check_forward_golden(S32, prompts, name)
    print(f"  site values agree with Capture exactly and with golden/{name}.h5 within {w:.1e}")
    check_fd(S64, prompts[:2], ["loss"], name)
    spec = dict(sites="*", metric="loss", method="grad")
    out = f"attr-{name}-loss-grad"
    cmd = command(f"tests/data/models/{name}", rel, "*", "loss", "grad", out)
    emit(out, cmd, S32, S64, prompts, spec, summary=summary)


def gen_tiny(summary):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer.from_file(os.path.join(TINY, "tokenizer.json"))
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(TINY, "tokenizer.json"))

    def encode(text):
        ids = tok.encode(text).ids
        assert ids == hf_tok(text)["input_ids"], text
        return ids

    S32, S64 = load_pair(TINY, True)
    with open(os.path.join(ROOT, P_TINY), "w") as f:
        for c, _ in TINY_PROMPTS:
            f.write(json.dumps(c) + "\n")
    with open(os.path.join(ROOT, C_TINY), "w") as f:
        for _, k in TINY_PROMPTS:
            f.write(json.dumps(k) + "\n")
    # Read back what was written: the goldens are of the files, not of this table.
    clean = [json.loads(l) for l in open(os.path.join(ROOT, P_TINY))]
    corr = [json.loads(l) for l in open(os.path.join(ROOT, C_TINY))]
    prompts, corrupt = [], []
    for i, (c, k) in enumerate(zip(clean, corr)):
        ids, kids = encode(c["text"]), encode(k["text"])
        if len(ids) != len(kids):
            sys.exit(f"{C_TINY} line {i + 1}: {len(kids)} tokens, {P_TINY} line {i + 1} has {len(ids)}")
        if not 3 <= len(ids) <= 12:
            sys.exit(f"{P_TINY} line {i + 1}: {len(ids)} tokens, want 3..12")
        prompts.append({"ids": ids, "answer": encode(c["answer"])[0], "wrong": encode(c["wrong"])[0]})
        corrupt.append({"ids": kids})
    print(f"tiny-gpt2: prompts {P_TINY} / {C_TINY}, lengths {[len(p['ids']) for p in prompts]}, "
          f"answer/wrong ids {[(p['answer'], p['wrong']) for p in prompts]}")
    check_capture(S32, prompts + corrupt, "tiny-gpt2")
    # The forward golden's prompt 0 is "The cat says", as is ours.
    with h5py.File(os.path.join(GOLDEN, "tiny-gpt2.h5"), "r") as f:
        assert list(f["tokens"][0, :3]) == prompts[0]["ids"] and f["lengths"][0] == 3
        with torch.no_grad():
            _, vals, _ = S32.run(prompts[0]["ids"], capture=list(S32.loc))
        for s in f["acts"]:
            if s in vals:
                np.testing.assert_allclose(vals[s].numpy(), f["acts/" + s][0, :3], rtol=1e-5, atol=1e-5)
    print("  site values agree with Capture exactly and with golden/tiny-gpt2.h5")
    check_fd(S64, prompts[2:4], ["loss", "logitdiff", "logprob"], "tiny-gpt2")
    check_atp_zero(S32, prompts, dict(sites="*", metric="logitdiff"))
    for spec in TINY_GOLDENS:
        cmd = command(M_TINY, P_TINY, spec["sites"], spec["metric"], spec["method"], spec["out"],
                      C_TINY if spec.get("corrupt") else None, spec.get("reduce"))
        emit(spec["out"], cmd, S32, S64, prompts, spec, corrupt if spec.get("corrupt") else None, summary)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated: random model names and/or tiny")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    os.makedirs(ATTR, exist_ok=True)
    summary = []
    for name in RANDOM_PROMPTS:
        if not only or name in only:
            gen_random(name, summary)
    if not only or "tiny" in only:
        gen_tiny(summary)
    total = sum(n32 + n64 for _, n32, n64, _ in summary)
    print(f"{len(summary)} goldens (+ f64 twins), {total} bytes in all")


if __name__ == "__main__":
    main()
