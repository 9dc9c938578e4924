"""An independent float64 numpy reference for collect, ablate, patch and attribute
(tests/cli/test_numeric_ref.sh runs it; it needs numpy and h5py, nothing else).

A GPT-2 and a Llama-family forward written from the weight files and the documented
definitions (docs/FORMAT.md, each command's --help) with a hook at every site, then each
command's numbers recomputed from it: collect's count/mean/cov/corr/PCA at several site kinds
and position selections, per label; ablate's metrics under every mask mode; patch's metrics
and normalised effects per site/position/head/neuron both ways; attribute's grad, gradxact,
atp and ig against central finite differences of the float64 forward, with each --reduce.

usage: numeric_ref.py SUBSCOPE MKMODEL TMPDIR PART   (PART: collect, ablate, patch, attribute)
prints one line per check: "ok NAME (max ...)" or "FAIL NAME ...".
"""
import json, os, struct, subprocess, sys
import numpy as np
import h5py

SS, MKMODEL, TMP, PART = sys.argv[1:5]
TINY = 'models/tiny-gpt2'
D = os.environ.get('SS_TEST_DATA', 'tests/data')
M64 = (1 << 64) - 1
failed = 0


def report(name, ratio, detail):
    global failed
    if DEV != 'cpu':
        name += ' (--device %s)' % DEV
    if ratio <= 1:
        print('ok %s (%s)' % (name, detail))
    else:
        failed += 1
        print('FAIL %s (%s)' % (name, detail))


# SS_REF_DEVICE=cuda: the commands under test run their GPU path (with SUBSCOPE_PLUGIN_DIR at the
# emulated plugin, bin/emu, on a machine without a GPU), on the small Llama only (the emulation is slow)
DEV = os.environ.get('SS_REF_DEVICE', 'cpu')


def on_device(cases):
    return [c for c in cases if DEV == 'cpu' or c[0] != TINY]


def run(*args):
    if args[0] in ('collect', 'ablate', 'patch', 'attribute'):
        args = args + ('--device', DEV)
    r = subprocess.run([SS] + list(args), capture_output=True, text=True)
    if r.returncode:
        raise SystemExit('FAIL %s: %s' % (' '.join(args[:1]), r.stderr.strip()[-400:]))
    return r.stdout


# ---------------------------------------------------------------- the model
def load_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        assert v['dtype'] == 'F32', v['dtype']
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], '<f4').reshape(v['shape']).astype(np.float64)
    return out


class Model:
    def __init__(self, d):
        c = self.cfg = json.load(open(os.path.join(d, 'config.json')))
        w = load_st(os.path.join(d, 'model.safetensors'))
        for p in ('transformer.', 'model.'):
            w = {k[len(p):] if k.startswith(p) else k: v for k, v in w.items()}
        self.w = w
        self.llama = c.get('model_type', 'gpt2') != 'gpt2'
        if self.llama:
            self.L, self.d, self.H = c['num_hidden_layers'], c['hidden_size'], c['num_attention_heads']
            self.Hkv = c.get('num_key_value_heads', self.H)
            self.dh = c.get('head_dim') or self.d // self.H
            self.eps, self.theta = c.get('rms_norm_eps', 1e-6), c.get('rope_theta', 10000.0)
            self.wte = w['embed_tokens.weight']
        else:
            self.L, self.d, self.H = c['n_layer'], c['n_embd'], c['n_head']
            self.Hkv, self.dh, self.eps = self.H, self.d // self.H, c.get('layer_norm_epsilon', 1e-5)
            self.wte = w['wte.weight']
        self.lm = w.get('lm_head.weight', self.wte)
        self.sites = run('info', '--model', d, '--list-sites').split()

    def forward(self, toks, hook=lambda s, v: v):
        """logits [T, V] of one prompt; hook(site, value) may return a replacement."""
        T, w, H, dh = len(toks), self.w, self.H, self.dh
        x = hook('hook_embed', self.wte[toks].copy())
        if not self.llama:
            x = x + hook('hook_pos_embed', w['wpe.weight'][:T].copy())
        causal = np.tril(np.ones((T, T), bool))
        for l in range(self.L):
            p = 'blocks.%d.' % l
            x = hook(p + 'hook_resid_pre', x)
            if self.llama:
                g = 'layers.%d.' % l
                lin = lambda n, a: a @ w[g + n + '.weight'].T + w.get(g + n + '.bias', 0)
                rms = lambda a, n: a / np.sqrt((a * a).mean(-1, keepdims=True) + self.eps) * w[g + n + '.weight']
                n1 = hook(p + 'ln1.hook_normalized', rms(x, 'input_layernorm'))
                q = hook(p + 'attn.hook_q', lin('self_attn.q_proj', n1).reshape(T, H, dh))
                k = hook(p + 'attn.hook_k', lin('self_attn.k_proj', n1).reshape(T, self.Hkv, dh))
                v = hook(p + 'attn.hook_v', lin('self_attn.v_proj', n1).reshape(T, self.Hkv, dh))
                ang = np.arange(T)[:, None] / self.theta ** (np.arange(0, dh, 2) / dh)[None, :]
                ang = np.concatenate([ang, ang], -1)[:, None, :]
                rot = lambda t: t * np.cos(ang) + np.concatenate([-t[..., dh // 2:], t[..., :dh // 2]], -1) * np.sin(ang)
                q = hook(p + 'attn.hook_rot_q', rot(q))
                k = hook(p + 'attn.hook_rot_k', rot(k))
                k, v = np.repeat(k, H // self.Hkv, 1), np.repeat(v, H // self.Hkv, 1)
            else:
                g = 'h.%d.' % l
                ln = lambda a, n: ((a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + self.eps)
                                   * w[g + n + '.weight'] + w[g + n + '.bias'])
                n1 = hook(p + 'ln1.hook_normalized', ln(x, 'ln_1'))
                q, k, v = np.split(n1 @ w[g + 'attn.c_attn.weight'] + w[g + 'attn.c_attn.bias'], 3, -1)
                q = hook(p + 'attn.hook_q', q.reshape(T, H, dh))
                k = hook(p + 'attn.hook_k', k.reshape(T, H, dh))
                v = hook(p + 'attn.hook_v', v.reshape(T, H, dh))
            s = np.where(causal[None], np.einsum('qhd,khd->hqk', q, k) / np.sqrt(dh), -np.inf)
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            z = hook(p + 'attn.hook_z', np.einsum('hqk,khd->qhd', pr, v)).reshape(T, H * dh)
            if self.llama:
                ao = lin('self_attn.o_proj', z)
            else:
                ao = z @ w[g + 'attn.c_proj.weight'] + w[g + 'attn.c_proj.bias']
            x = hook(p + 'hook_resid_mid', x + hook(p + 'hook_attn_out', ao))
            if self.llama:
                n2 = hook(p + 'ln2.hook_normalized', rms(x, 'post_attention_layernorm'))
                pre = hook(p + 'mlp.hook_pre', lin('mlp.gate_proj', n2))
                up = hook(p + 'mlp.hook_pre_linear', lin('mlp.up_proj', n2))
                mo = lin('mlp.down_proj', hook(p + 'mlp.hook_post', pre / (1 + np.exp(-pre)) * up))
            else:
                n2 = hook(p + 'ln2.hook_normalized', ln(x, 'ln_2'))
                pre = hook(p + 'mlp.hook_pre', n2 @ w[g + 'mlp.c_fc.weight'] + w[g + 'mlp.c_fc.bias'])
                post = hook(p + 'mlp.hook_post', 0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre ** 3))))
                mo = post @ w[g + 'mlp.c_proj.weight'] + w[g + 'mlp.c_proj.bias']
            x = hook(p + 'hook_resid_post', x + hook(p + 'hook_mlp_out', mo))
        if self.llama:
            f = x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w['norm.weight']
        else:
            f = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + self.eps) * w['ln_f.weight'] + w['ln_f.bias']
        return hook('ln_final.hook_normalized', f) @ self.lm.T

    def acts(self, toks, sites):
        got = {}

        def hk(s, v):
            if s in sites:
                got[s] = v.reshape(len(toks), -1).copy()
            return v
        return self.forward(toks, hk), got


def logsoftmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def loss(lg, t):
    return -np.mean(logsoftmax(lg)[np.arange(len(t) - 1), t[1:]]) if len(t) > 1 else np.nan


def tokens_of(model, path):
    out = os.path.join(TMP, 'tok.h5')
    run('forward', '--model', model, '--input', path, '--no-logits', '--out', out)
    with h5py.File(out) as f:
        return [list(map(int, f['tokens'][i, :n])) for i, n in enumerate(f['lengths'][:])]


def first_token(model, text):
    return json.loads(run('tokenize', '--model', model, '--text', text))[0]


def ratio(got, exp, atol, rtol):
    got, exp = np.asarray(got, np.float64), np.asarray(exp, np.float64)
    if got.shape != exp.shape or (np.isnan(got) != np.isnan(exp)).any():
        return np.inf, 'shape %s vs %s or NaN where the reference has none' % (got.shape, exp.shape)
    d = np.nan_to_num(np.abs(got - exp))
    return float((d / (atol + rtol * np.abs(np.nan_to_num(exp)))).max(initial=0)), 'max abs diff %.3g' % d.max(initial=0)


class Worst:
    def __init__(self):
        self.r, self.d = 0.0, 'max abs diff 0'

    def add(self, rd):
        if rd[0] >= self.r:
            self.r, self.d = rd


def prompts_llama():
    """a random Llama with grouped-query attention and labelled random-token prompts (a one-token one too)."""
    d = os.path.join(TMP, 'llama')
    subprocess.run([MKMODEL, '--out', d, '--family', 'llama', '--layers', '2', '--d', '64', '--heads', '4', '--kv-heads', '2',
                    '--vocab', '300', '--seed', '3', '--std', '0.2', '--prompts', d + '.raw.jsonl', '--lengths', '5,1,9,3,12,2,7'],
                   check=True, capture_output=True)
    rows = [json.loads(l) for l in open(d + '.raw.jsonl')]
    rng = np.random.default_rng(4)
    with open(d + '.jsonl', 'w') as f, open(d + '.corrupt.jsonl', 'w') as g:
        for i, r in enumerate(rows):
            f.write(json.dumps({'tokens': r['tokens'], 'label': 'xy'[i % 2]}) + '\n')
            g.write(json.dumps({'tokens': [int(x) for x in rng.integers(0, 300, len(r['tokens']))]}) + '\n')
    return d, d + '.jsonl', d + '.corrupt.jsonl'


# ---------------------------------------------------------------- collect
def check_collect():
    P = D + '/ablate/prompts.jsonl'   # labelled, 2 to 11 tokens
    ld, lp, _ = prompts_llama()
    cases = [
        (TINY, P, ['blocks.0.hook_resid_pre', 'blocks.1.mlp.hook_pre', 'blocks.2.mlp.hook_post', 'blocks.1.attn.hook_q',
                   'blocks.0.attn.hook_k', 'blocks.3.attn.hook_v', 'blocks.0.attn.hook_z', 'blocks.1.hook_attn_out',
                   'blocks.2.hook_mlp_out', 'hook_pos_embed', 'ln_final.hook_normalized']),
        (ld, lp, ['blocks.0.hook_resid_pre', 'blocks.1.mlp.hook_pre_linear', 'blocks.0.mlp.hook_post', 'blocks.1.attn.hook_k',
                  'blocks.0.attn.hook_rot_q', 'blocks.1.attn.hook_z', 'blocks.0.hook_mlp_out']),
    ]
    for model, prompts, sites in on_device(cases):
        m = Model(model)
        toks = [np.array(t) for t in tokens_of(model, prompts)]
        labels = [json.loads(l).get('label') for l in open(prompts) if l.strip()]
        acts = [m.acts(list(t), set(sites))[1] for t in toks]
        for opts in (['--batch', '3'], ['--positions', 'last'], ['--positions', '1:4', '--skip-bos', '--batch', '1'],
                     ['--positions', ':3', '--group-by', 'label', '--batch', '2'], ['--skip-bos', '--group-by', 'label']):
            out = os.path.join(TMP, 'c.h5')
            run('collect', '--model', model, '--input', prompts, '--sites', ','.join(sites), '--stats', 'mean,cov,corr,pca:3',
                '--out', out, *opts)
            pos = opts[opts.index('--positions') + 1] if '--positions' in opts else 'all'
            rows = []
            for t in toks:
                T = len(t)
                idx = [T - 1] if pos == 'last' else list(range(T))
                if ':' in pos:
                    a, b = pos.split(':')
                    idx = [j for j in idx if (int(a) if a else 0) <= j < (int(b) if b else T)]
                rows.append([j for j in idx if not ('--skip-bos' in opts and j == 0)])
            groups = [('', range(len(toks)))]
            if '--group-by' in opts:
                groups += [('groups/%s/' % g, [i for i in range(len(toks)) if labels[i] == g]) for g in sorted(set(labels))]
            w = {k: Worst() for k in ('count', 'mean', 'cov', 'corr', 'pca')}
            with h5py.File(out) as f:
                for gp, members in groups:
                    for s in sites:
                        X = np.concatenate([acts[i][s][rows[i]] for i in members])
                        st = f[gp + 'stats/' + s]
                        w['count'].add((0.0 if st['count'][()] == len(X) else np.inf, 'count %d vs %d' % (st['count'][()], len(X))))
                        if len(X) == 0:
                            continue
                        scale = np.abs(X).max()
                        w['mean'].add(ratio(st['mean'][:], X.mean(0), 1e-5 * scale, 0))
                        if len(X) < 2:
                            continue
                        C = np.cov(X.T, ddof=1)
                        cs = np.abs(C).max()
                        w['cov'].add(ratio(st['cov'][:], C, 1e-5 * cs, 0))
                        sd = np.sqrt(np.diag(C))
                        # a unit whose variance is within rounding of 0 has no defined correlation
                        ok = sd > 1e-3 * np.sqrt(cs)
                        R = C / np.outer(np.where(ok, sd, 1), np.where(ok, sd, 1))
                        got = st['corr'][:][np.ix_(ok, ok)]
                        w['corr'].add(ratio(got, R[np.ix_(ok, ok)], 1e-4, 0))
                        ev, V = np.linalg.eigh(C)
                        ev, V = ev[::-1], V[:, ::-1].T
                        K = min(3, len(ev))
                        w['pca'].add(ratio(st['pca/values'][:], ev[:K], 1e-5 * cs, 0))
                        w['pca'].add(ratio(st['pca/explained_variance_ratio'][:], ev[:K] / np.trace(C), 1e-5, 0))
                        vec = st['pca/vectors'][:]
                        for k in range(K):
                            j = np.argmax(np.abs(vec[k]))
                            if vec[k, j] <= 0:
                                w['pca'].add((np.inf, 'vector %d of %s: largest-magnitude component not positive' % (k, s)))
                            if min(abs(ev[k] - ev[k - 1]) if k else np.inf, abs(ev[k] - ev[k + 1])) > 1e-3 * ev[0]:
                                v = V[k] * np.sign(V[k][np.argmax(np.abs(V[k]))])
                                w['pca'].add(ratio(vec[k], v, 1e-3, 0))
            for k, v in w.items():
                report('collect %s %s %s' % (os.path.basename(model), ' '.join(opts), k), v.r, v.d)


# ---------------------------------------------------------------- ablate
def mix(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def keyed_normal(seed, prompt, pos, site, unit):
    k = mix(seed & M64)
    for x in (prompt, pos, site, unit):
        k = mix(k ^ (x & M64))
    a, b = mix(k ^ 0x9E3779B97F4A7C15), mix(k ^ 0xBF58476D1CE4E5B9)
    return np.sqrt(-2 * np.log(((a >> 11) + 1) / 2.0 ** 53)) * np.cos(2 * np.pi * (b >> 11) / 2.0 ** 53)


def check_ablate():
    ld, lp, lc = prompts_llama()
    P = D + '/ablate/prompts.jsonl'
    tt = tokens_of(TINY, P)
    rng = np.random.default_rng(5)
    with open(os.path.join(TMP, 'tiny.corrupt.jsonl'), 'w') as f:
        for t in tt:
            f.write(json.dumps({'tokens': [int(x) for x in rng.integers(0, 1024, len(t))]}) + '\n')
    tiny_masks = [
        {'name': 'zero', 'site': 'blocks.1.mlp.hook_post', 'units': [0, 5, 77]},
        {'name': 'zero_head', 'site': 'blocks.0.attn.hook_z', 'heads': [2], 'mode': 'zero'},
        {'name': 'zero_pos', 'site': 'blocks.2.hook_resid_pre', 'positions': [0, 2, 9], 'mode': 'zero'},
        {'name': 'mean', 'site': 'blocks.2.mlp.hook_pre', 'units': [1, 2, 3, 400], 'mode': 'mean'},
        {'name': 'scale', 'site': 'blocks.1.hook_attn_out', 'mode': 'scale', 'factor': 0.3},
        {'name': 'resample', 'site': 'blocks.1.attn.hook_v', 'mode': 'resample', 'seed': 7},
        {'name': 'resample2', 'sites': [{'site': 'blocks.0.attn.hook_q', 'heads': [1, 3]},
                                        {'site': 'blocks.3.hook_mlp_out', 'units': [4, 5]}], 'mode': 'resample', 'seed': 3},
        {'name': 'noise', 'site': 'blocks.2.mlp.hook_post', 'units': [10, 11, 12], 'mode': 'noise', 'sigma': 0.7, 'seed': 5},
        {'name': 'noise_rel', 'site': 'blocks.1.hook_resid_mid', 'mode': 'noise', 'sigma': 0.5, 'relative': True, 'seed': 9},
        {'name': 'negnoise', 'site': 'blocks.3.mlp.hook_post', 'mode': 'negnoise', 'sigma': 0.2, 'seed': 2},
        {'name': 'negnoise_rel', 'site': 'blocks.0.attn.hook_k', 'heads': [0], 'positions': [1, 3], 'mode': 'negnoise',
         'sigma': 1.5, 'relative': True, 'seed': 11},
        {'name': 'patch', 'site': 'blocks.1.hook_resid_pre', 'positions': [1, 2], 'mode': 'patch'},
        {'name': 'patch_head', 'site': 'blocks.2.attn.hook_z', 'heads': [3], 'mode': 'patch'},
        {'name': 'embed', 'site': 'hook_embed', 'units': [3], 'mode': 'scale', 'factor': 0.0},
        {'name': 'lnf', 'site': 'ln_final.hook_normalized', 'units': [0, 1, 2, 3], 'mode': 'mean'},
    ]
    llama_masks = [
        {'name': 'zero_k', 'site': 'blocks.1.attn.hook_k', 'heads': [1], 'mode': 'zero'},
        {'name': 'mean_v', 'site': 'blocks.0.attn.hook_v', 'heads': [0], 'mode': 'mean'},
        {'name': 'rot_k', 'site': 'blocks.0.attn.hook_rot_k', 'heads': [0], 'mode': 'scale', 'factor': 0.5},
        {'name': 'pre_linear', 'site': 'blocks.1.mlp.hook_pre_linear', 'units': [3, 4], 'mode': 'mean'},
        {'name': 'resample', 'site': 'blocks.1.attn.hook_v', 'mode': 'resample', 'seed': 7},
        {'name': 'noise_rel', 'site': 'blocks.1.hook_resid_mid', 'mode': 'noise', 'sigma': 0.5, 'relative': True, 'seed': 9},
        {'name': 'negnoise', 'site': 'blocks.1.mlp.hook_pre', 'mode': 'negnoise', 'sigma': 0.2, 'seed': 2},
        {'name': 'patch_q', 'site': 'blocks.0.attn.hook_q', 'heads': [3], 'mode': 'patch'},
    ]
    for model, prompts, corrupt, masks, metrics, extra in on_device((
            (TINY, P, os.path.join(TMP, 'tiny.corrupt.jsonl'), tiny_masks, 'loss,acc,kl,logitdiff', ['--batch', '3']),
            (ld, lp, lc, llama_masks, 'loss,acc,kl', ['--batch', '2', '--mask-batch', '3']))):
        m = Model(model)
        mf = os.path.join(TMP, 'masks.jsonl')
        open(mf, 'w').write(''.join(json.dumps(x) + '\n' for x in masks))
        out = os.path.join(TMP, 'a.h5')
        run('ablate', '--model', model, '--input', prompts, '--masks', mf, '--patch-from', corrupt, '--metrics', metrics,
            '--out', out, *extra)
        toks, ptoks = tokens_of(model, prompts), tokens_of(model, corrupt)
        items = [json.loads(l) for l in open(prompts) if l.strip()]
        ans = [(first_token(model, p['answer']), first_token(model, p['wrong'])) for p in items] if 'logitdiff' in metrics else None
        msites = {t['site'] for x in masks for t in (x.get('sites') or [x])}
        clean = [m.acts(t, msites) for t in toks]
        donor = [m.acts(t, msites)[1] for t in ptoks]
        allrows = {s: np.concatenate([c[1][s] for c in clean]) for s in msites}
        mean = {s: v.mean(0) for s, v in allrows.items()}
        std = {s: v.std(0, ddof=1) for s, v in allrows.items()}
        N = len(toks)

        def metrics_of(lg, i, lc):
            t = toks[i]
            r = {'loss': loss(lg, t), 'acc': np.mean(lg[:-1].argmax(-1) == t[1:]) if len(t) > 1 else np.nan,
                 'kl': np.mean((np.exp(logsoftmax(lc)) * (logsoftmax(lc) - logsoftmax(lg))).sum(-1))}
            if ans:
                r['logitdiff'] = lg[-1, ans[i][0]] - lg[-1, ans[i][1]]
            return r
        w = {k: Worst() for k in metrics.split(',')}
        with h5py.File(out) as f:
            for i in range(N):
                e = metrics_of(clean[i][0], i, clean[i][0])
                for k in w:
                    if k != 'kl':
                        w[k].add(ratio(f['clean/' + k][i], e[k], 1e-4, 1e-4))
            for mk in masks:
                mode = mk.get('mode', 'zero')
                targets = {t['site']: t for t in (mk.get('sites') or [mk])}
                for i, t in enumerate(toks):
                    T = len(t)

                    def hook(s, v):
                        if s not in targets:
                            return v
                        tg, shape = targets[s], v.shape
                        v = v.reshape(T, -1).copy()
                        units = tg.get('units') or range(v.shape[1])
                        if tg.get('heads'):
                            units = [h * shape[2] + j for h in tg['heads'] for j in range(shape[2])]
                        for p in mk.get('positions') or range(T):
                            for u in (units if p < T else []):
                                x = v[p, u]
                                if mode == 'zero': x = 0
                                elif mode == 'mean': x = mean[s][u]
                                elif mode == 'scale': x *= mk['factor']
                                elif mode == 'patch': x = donor[i][s][p, u]
                                elif mode == 'resample':  # donor (i + 1 + r) mod N, its last position if shorter
                                    j = (i + 1 + mix(mix(mk['seed']) ^ i) % (N - 1)) % N
                                    x = clean[j][1][s][min(p, len(toks[j]) - 1), u]
                                else:
                                    n = mk['sigma'] * (std[s][u] if mk.get('relative') else 1) * \
                                        keyed_normal(mk['seed'], i, p, m.sites.index(s), u)
                                    x = x + n if mode == 'noise' else (max(x - abs(n), 0) if x > 0 else min(x + abs(n), 0))
                                v[p, u] = x
                        return v.reshape(shape)
                    e = metrics_of(m.forward(t, hook), i, clean[i][0])
                    for k in w:
                        w[k].add(ratio(f['ablate/%s/%s' % (mk['name'], k)][i], e[k], 1e-5 if k == 'kl' else 1e-4, 1e-4))
        for k, v in w.items():
            report('ablate %s %d masks (every mode) %s' % (os.path.basename(model), len(masks), k), v.r, v.d)


# ---------------------------------------------------------------- patch
def check_patch():
    ld, lp, lc = prompts_llama()
    C, K = D + '/patch/clean.jsonl', D + '/patch/corrupt.jsonl'
    for model, clean_f, corrupt_f, sites, opts in on_device((
            (TINY, C, K, 'blocks.0.hook_resid_pre,blocks.2.hook_mlp_out,blocks.1.attn.hook_z', ['--per', 'site']),
            (TINY, C, K, 'blocks.1.hook_resid_pre,blocks.3.attn.hook_v', ['--per', 'position', '--batch', '3']),
            (TINY, C, K, 'blocks.1.attn.hook_q,blocks.2.attn.hook_z', ['--per', 'head', '--denoise']),
            (TINY, C, K, 'blocks.3.mlp.hook_post', ['--per', 'neuron', '--metric', 'loss']),
            (ld, lp, lc, 'blocks.1.attn.hook_k,blocks.0.attn.hook_z,blocks.1.attn.hook_rot_q', ['--per', 'head', '--metric', 'loss']),
            (ld, lp, lc, 'blocks.1.hook_resid_pre,blocks.0.mlp.hook_pre_linear', ['--per', 'position', '--metric', 'loss', '--denoise']))):
        m = Model(model)
        out = os.path.join(TMP, 'p.h5')
        run('patch', '--model', model, '--clean', clean_f, '--corrupt', corrupt_f, '--sites', sites, '--out', out, *opts)
        per, sl = opts[1], sites.split(',')
        logitdiff = '--metric' not in opts
        ct, xt = tokens_of(model, clean_f), tokens_of(model, corrupt_f)
        items = [json.loads(l) for l in open(clean_f) if l.strip()]
        ans = [(first_token(model, p['answer']), first_token(model, p['wrong'])) for p in items] if logitdiff else None
        metric = (lambda lg, i: lg[-1, ans[i][0]] - lg[-1, ans[i][1]]) if logitdiff else (lambda lg, i: loss(lg, ct[i]))
        wm, we = Worst(), Worst()
        with h5py.File(out) as f:
            for i in range(len(ct)):
                T = len(ct[i])
                lgc, ac = m.acts(ct[i], set(sl))
                lgx, ax = m.acts(xt[i], set(sl))
                mc, mx = metric(lgc, i), metric(lgx, i)
                wm.add(ratio([f['clean_metric'][i], f['corrupt_metric'][i]], [mc, mx], 1e-4, 1e-4))
                base, src = (ct[i], ax) if '--denoise' in opts else (xt[i], ac)
                for s in sl:
                    n = f['effect/' + s].shape[1]
                    exp_m, exp_e = np.full(n, np.nan), np.full(n, np.nan)
                    for k in range(n):
                        if per == 'position' and k >= T:
                            continue
                        dh = m.dh

                        def hook(ss, v, k=k):
                            if ss != s:
                                return v
                            shape, v = v.shape, v.reshape(T, -1).copy()
                            cols = {'site': slice(None), 'position': slice(None), 'neuron': [k],
                                    'head': slice(k * dh, (k + 1) * dh)}[per]
                            rows = [k] if per == 'position' else slice(None)
                            v[rows, cols] = src[s][rows, cols]
                            return v.reshape(shape)
                        exp_m[k] = metric(m.forward(base, hook), i)
                        exp_e[k] = (exp_m[k] - mx) / (mc - mx) if mc != mx else np.nan
                    wm.add(ratio(f['patched_metric/' + s][i], exp_m, 1e-4, 1e-4))
                    # the ratio magnifies the runs' float32 rounding by 1 / |clean - corrupt| (FORMAT.md)
                    we.add(ratio(f['effect/' + s][i], exp_e, 1e-4 + 2e-5 / max(abs(mc - mx), 1e-9), 1e-4))
        tag = 'patch %s --per %s' % (os.path.basename(model), ' '.join(opts[1:]))
        report(tag + ' metrics', wm.r, wm.d)
        report(tag + ' effects', we.r, we.d)


# ---------------------------------------------------------------- attribute
def check_attribute():
    ld, lp, lc = prompts_llama()
    P, C, K = D + '/ablate/prompts.jsonl', D + '/patch/clean.jsonl', D + '/patch/corrupt.jsonl'
    stats = os.path.join(TMP, 'st.h5')
    if DEV == 'cpu':
        run('collect', '--model', TINY, '--input', P, '--sites', 'blocks.2.hook_resid_pre', '--out', stats)
    rng = np.random.default_rng(6)
    for model, prompts, sites, opts in on_device((
            (TINY, P, 'blocks.1.mlp.hook_post,blocks.0.attn.hook_z', ['--method', 'grad']),
            (TINY, P, 'blocks.1.mlp.hook_pre,blocks.3.attn.hook_v', ['--method', 'gradxact', '--metric', 'logitdiff']),
            (TINY, P, 'blocks.2.hook_attn_out,hook_embed', ['--method', 'grad', '--metric', 'logprob', '--reduce', 'positions']),
            (TINY, C, 'blocks.1.attn.hook_z,blocks.0.hook_resid_mid', ['--method', 'atp', '--corrupt', K, '--metric', 'logitdiff']),
            (TINY, C, 'blocks.1.attn.hook_k', ['--method', 'atp', '--corrupt', K, '--reduce', 'prompts']),
            (TINY, P, 'blocks.1.mlp.hook_post', ['--method', 'ig:4', '--metric', 'logitdiff']),
            (TINY, P, 'blocks.2.hook_resid_pre', ['--method', 'ig:3', '--stats', stats, '--reduce', 'positions']),
            (ld, lp, 'blocks.0.attn.hook_k,blocks.1.attn.hook_rot_q,blocks.1.mlp.hook_pre_linear', ['--method', 'gradxact']),
            (ld, lp, 'blocks.1.attn.hook_v', ['--method', 'ig:3', '--reduce', 'prompts']))):
        m = Model(model)
        out = os.path.join(TMP, 't.h5')
        run('attribute', '--model', model, '--input', prompts, '--sites', sites, '--out', out, *opts)
        o = dict(zip(opts[::2], opts[1::2]))
        method, metric_name, red = o['--method'], o.get('--metric', 'loss'), o.get('--reduce', 'none')
        toks = tokens_of(model, prompts)
        ctoks = tokens_of(model, o['--corrupt']) if '--corrupt' in o else None
        items = [json.loads(l) for l in open(prompts) if l.strip()]
        ans = [(first_token(model, p['answer']), first_token(model, p.get('wrong', p['answer']))) for p in items] \
            if metric_name != 'loss' else None

        def metric(lg, i):
            if metric_name == 'loss':
                return loss(lg, toks[i])
            if metric_name == 'logitdiff':
                return lg[-1, ans[i][0]] - lg[-1, ans[i][1]]
            return logsoftmax(lg[-1])[ans[i][0]]

        def with_site(i, s, value):
            def hook(ss, v):
                return value.reshape(v.shape) if ss == s else v
            return metric(m.forward(toks[i], hook), i)

        def grad_at(i, s, value, cells, h=1e-4):
            """central differences of the metric at the chosen (position, unit) cells of site s set to value"""
            g = []
            for (p, u) in cells:
                a, b = value.copy(), value.copy()
                a[p, u] += h
                b[p, u] -= h
                g.append((with_site(i, s, a) - with_site(i, s, b)) / (2 * h))
            return np.array(g)
        wa, wm, wc = Worst(), Worst(), Worst()
        with h5py.File(out) as f:
            got_metric = f['metric'][:]
            mets = []
            for s in sites.split(','):
                A = f['attr/' + s][:]
                width = int(np.prod(A.shape[2:] if red != 'prompts' and red != 'positions' else A.shape[1:]))
                width = m.acts(toks[0], {s})[1][s].shape[1]
                sums = {}
                for i, t in enumerate(toks):
                    T = len(t)
                    lg, a = m.acts(t, {s})
                    a = a[s]
                    if s == sites.split(',')[0]:
                        mets.append(metric(lg, i))
                    cells = [(int(rng.integers(T)), int(rng.integers(width))) for _ in range(4)]
                    if method in ('grad', 'gradxact', 'atp'):
                        g = grad_at(i, s, a, cells)
                        v = np.array([a[p, u] for p, u in cells])
                        if method == 'gradxact':
                            g = g * v
                        elif method == 'atp':
                            ax = m.acts(ctoks[i], {s})[1][s]
                            g = g * (np.array([ax[p, u] for p, u in cells]) - v)
                    else:
                        steps = int(method.split(':')[1])
                        b = np.zeros_like(a)
                        if '--stats' in o:
                            b[:] = h5py.File(o['--stats'])['stats/%s/mean' % s][:]
                        g = np.mean([grad_at(i, s, b + (k + 0.5) / steps * (a - b), cells) for k in range(steps)], 0)
                        g = g * np.array([a[p, u] - b[p, u] for p, u in cells])
                        bm = with_site(i, s, b)
                        wm.add(ratio(f['ig/%s/baseline_metric' % s][i], bm, 1e-4, 1e-4))
                        # completeness from the file's own sums: sum of attributions - (metric - baseline metric)
                        total = np.nansum(A[i]) if red != 'prompts' else None
                        if total is not None and not np.isnan(mets[i]):
                            wc.add(ratio(f['ig/%s/completeness_error' % s][i], total - (mets[i] - bm), 1e-4, 1e-3))
                    if np.isnan(mets[i]):
                        g = np.full(len(cells), np.nan)
                    if red == 'none':
                        wa.add(ratio([A[i, p].reshape(-1)[u] for p, u in cells], g, 1e-6, 1e-3))
                        if T < A.shape[1] and not np.isnan(A[i, T:]).all():
                            wa.add((np.inf, 'padding of prompt %d not NaN' % i))
                    for (p, u), gv in zip(cells, g):
                        sums.setdefault((i, p, u), gv)
                if red == 'positions':
                    # a prompt's sum over positions: every position's gradient at one unit
                    for i, t in enumerate(toks[:3]):
                        a = m.acts(t, {s})[1][s]
                        u = int(rng.integers(width))
                        cells = [(p, u) for p in range(len(t))]
                        if method.startswith('ig'):
                            steps = int(method.split(':')[1])
                            b = np.zeros_like(a)
                            if '--stats' in o:
                                b[:] = h5py.File(o['--stats'])['stats/%s/mean' % s][:]
                            g = np.mean([grad_at(i, s, b + (k + 0.5) / steps * (a - b), cells) for k in range(steps)], 0)
                            g = g * (a - b)[:, u]
                        else:
                            g = grad_at(i, s, a, cells)
                        wa.add(ratio(A[i].reshape(-1)[u], g.sum(), 1e-6, 1e-3))
                elif red == 'prompts':
                    # position 0's sum over the prompts with a metric, at one unit
                    u = int(rng.integers(width))
                    tot = 0.0
                    for i, t in enumerate(toks):
                        if np.isnan(mets[i]):
                            continue
                        a = m.acts(t, {s})[1][s]
                        if method.startswith('ig'):
                            steps = int(method.split(':')[1])
                            g = np.mean([grad_at(i, s, (k + 0.5) / steps * a, [(0, u)]) for k in range(steps)]) * a[0, u]
                        else:
                            g = grad_at(i, s, a, [(0, u)])[0]
                            if method == 'atp':
                                g *= m.acts(ctoks[i], {s})[1][s][0, u] - a[0, u]
                        tot += g
                    wa.add(ratio(A[0].reshape(-1)[u], tot, 1e-6, 1e-3))
            wm.add(ratio(got_metric, mets, 1e-4, 1e-4))
        tag = 'attribute %s %s' % (os.path.basename(model), ' '.join(x for x in opts if not x.startswith('/') and 'jsonl' not in x))
        report(tag + ' attributions (finite differences)', wa.r, wa.d)
        report(tag + ' metrics', wm.r, wm.d)
        if method.startswith('ig') and red != 'prompts':
            report(tag + ' completeness errors', wc.r, wc.d)


{'collect': check_collect, 'ablate': check_ablate, 'patch': check_patch, 'attribute': check_attribute}[PART]()
sys.exit(1 if failed else 0)
