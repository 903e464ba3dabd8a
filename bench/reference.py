#!/usr/bin/env python3
"""The bench's miCSE training step in PyTorch, the baseline TF.js is measured against (bench/bench.ts runs it).

Same step as the trainer (src/train/trainer.ts), same sizes as bench.ts SIZES:
  inputs [2B, T], rows interleaved by view -> BERT forward with dropout (0.1 hidden and attention) returning
  every layer's attention -> InfoNCE over tanh(Linear([CLS])) with temperature 0.05 -> + lambda * AMI over
  layers [min_layer, max_layer) (the miCSE reference's regrouping, valid mask, 150 drawn samples per row,
  Gaussian MI of the log probabilities, clamped rho) -> backward -> clip_grad_norm_(1.0) -> AdamW(lr 1e-5).
Loss, its parts and the gradient norm are read back every step (.item()), as the trainer does.

Embedding throughput: eval-mode forward + [CLS] of 128 x seq_len under no_grad (no tokenisation).

SGEMM probe (first, on the CPU whatever --device is): torch.mm of [n, n] @ [n, n] float32 at each of --sgemm-threads
(set_threads), best of --sgemm-repeats, as GFLOP/s; the bench passes its own settings. Thread counts (the probe's and
--threads) are set in torch and, where torch's BLAS is OpenBLAS, in OpenBLAS too: torch.set_num_threads alone leaves
OpenBLAS's products on every core. cpuMsPerStep is the
process's CPU time over a step (every thread), beside the wall time.

--device cuda: msPerStep is fp32 with TF32 off (IEEE float32 matmuls, as WebGPU computes); then the same steps are
timed again with TF32 matmuls allowed (tf32MsPerStep), and the CUDA allocator's peaks are reported (gpuMemory).
Then, on cuda or with --amp, the same steps under automatic mixed precision, PyTorch's bf16 recipe: the forward and
the loss inside torch.autocast(dtype=torch.bfloat16) (bf16 products with f32 accumulation, f32 master weights and
AdamW moments; bf16 has f32's exponent range, so no GradScaler), TF32 off (ampMsPerStep). It is what
`train.precision: mixed` on webgpu is measured against. On the CPU it needs the bf16 autocast of torch >= 1.10.

Usage: python3 bench/reference.py [--size tiny|small|base] [--steps N] [--warmup N] [--threads N] [--device cpu|cuda]
       [--sgemm-n N] [--sgemm-repeats N] [--sgemm-threads 1,2] [--amp] [--json]
Exit status 3 (and the reason on stdout) when torch cannot be imported, so the bench can say why it skipped.
"""
import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time

SIZES = {
    "tiny": dict(layers=2, hidden=128, heads=2, batch=32, seqLen=32, minLayer=0, maxLayer=2),
    "small": dict(layers=4, hidden=256, heads=4, batch=64, seqLen=32, minLayer=2, maxLayer=4),
    "base": dict(layers=12, hidden=768, heads=12, batch=64, seqLen=32, minLayer=7, maxLayer=11),
}
DEFAULTS = dict(vocab=30522, max_positions=512, type_vocab=2, dropout=0.1, ln_eps=1e-12, init_range=0.02,
                lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, max_grad_norm=1.0, temperature=0.05,
                lam=1e-3, target_samples=150, nan_value=100.0, cos_eps=1e-6, rho_eps=1e-6, scale_eps=1e-6,
                seed=42, embed_batch=128, threads=2)

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as err:  # noqa: BLE001 - any import failure means "no reference here"
    print(f"PyTorch is not importable by {sys.executable} ({err}); on Debian: apt-get install python3-torch libopenblas0-pthread")
    sys.exit(3)


class Layer(nn.Module):
    def __init__(self, h, heads, p, eps):
        super().__init__()
        self.heads, self.dh, self.p = heads, h // heads, p
        self.q, self.k, self.v, self.o = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.ln1, self.ln2 = nn.LayerNorm(h, eps=eps), nn.LayerNorm(h, eps=eps)
        self.inter, self.out = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)

    def forward(self, x, mask_add):
        n, t, h = x.shape
        split = lambda y: y.view(n, t, self.heads, self.dh).transpose(1, 2)  # [N, heads, T, dh]
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + mask_add  # [N, heads, T, T]
        probs = F.dropout(scores.softmax(-1), self.p, self.training)
        ctx = (probs @ v).transpose(1, 2).reshape(n, t, h)
        x = self.ln1(x + F.dropout(self.o(ctx), self.p, self.training))
        x = self.ln2(x + F.dropout(self.out(F.gelu(self.inter(x))), self.p, self.training))
        return x, probs


class Bert(nn.Module):
    def __init__(self, s, d):
        super().__init__()
        h = s["hidden"]
        self.word = nn.Embedding(d["vocab"], h)
        self.pos = nn.Embedding(d["max_positions"], h)
        self.typ = nn.Embedding(d["type_vocab"], h)
        self.ln = nn.LayerNorm(h, eps=d["ln_eps"])
        self.layers = nn.ModuleList([Layer(h, s["heads"], d["dropout"], d["ln_eps"]) for _ in range(s["layers"])])
        self.mlp = nn.Linear(h, h)  # the training-only head over [CLS]
        self.p = d["dropout"]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, d["init_range"])
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids, mask):
        t = ids.shape[1]
        x = self.word(ids) + self.pos.weight[:t] + self.typ.weight[0]
        x = F.dropout(self.ln(x), self.p, self.training)
        mask_add = ((1.0 - mask.float()) * torch.finfo(torch.float32).min)[:, None, None, :]
        attentions = []
        for layer in self.layers:
            x, probs = layer(x, mask_add)
            attentions.append(probs)
        return x, attentions


def info_nce(z1, z2, temperature):
    sim = F.cosine_similarity(z1[:, None, :], z2[None, :, :], dim=-1) / temperature  # [B, B]
    return F.cross_entropy(sim, torch.arange(z1.shape[0], device=z1.device))


def ami(attentions, d):
    """The miCSE reference's attention MI (as src/losses/attentionMI.ts restates it)."""
    a = torch.stack(attentions, 1)  # [2B, L, H, T, T]
    twob, L, H, T, _ = a.shape
    B, J = twob // 2, L // 2
    g = a.reshape(twob, J, 2, H, T * T).permute(0, 3, 2, 1, 4).reshape(B, 2, H * 2 * J * T * T)
    x = g[:, 0].reshape(B * H * 2, J * T * T)  # [R, N] view 1
    y = g[:, 1].reshape(B * H * 2, J * T * T)  # [R, N] view 2
    valid = (x > 0) & (y > 0)
    counts = valid.sum(1)
    s = d["target_samples"]
    keep = counts >= s
    if keep.any():
        rows = keep.nonzero().squeeze(1)
        samples = s
        scale = (counts[rows].sum().item() / (rows.numel() * x.shape[1])) ** 2 + d["scale_eps"]
    else:
        rows = (counts > 0).nonzero().squeeze(1)
        samples = int(counts[rows].min().item()) if rows.numel() > 0 else 0
        scale = (counts.sum().item() / counts.numel() / x.shape[1]) ** 2 + d["scale_eps"]
    if samples == 0:
        return x.sum() * 0
    keys = torch.rand(valid[rows].shape, device=x.device).masked_fill(~valid[rows], -1.0)
    pos = keys.topk(samples, 1).indices.sort(1).values  # [rows, S]
    xs = x[rows].gather(1, pos).log()
    ys = y[rows].gather(1, pos).log()
    xc, yc = xs - xs.mean(1, keepdim=True), ys - ys.mean(1, keepdim=True)
    rho = (xc * yc).sum(1) / (xc.norm(dim=1).clamp_min(d["cos_eps"]) * yc.norm(dim=1).clamp_min(d["cos_eps"]))
    rho = rho.clamp(-(1 - d["rho_eps"]), 1 - d["rho_eps"])
    mi = -0.5 * torch.log((1 - rho) * (1 + rho))
    value = -mi.mean() * scale
    return torch.where(torch.isnan(value), torch.full_like(value, d["nan_value"]), value)


def blas_library():
    """The BLAS shared object this process loaded (Debian's torch links the generic libblas alternative)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1].rsplit("/", 1)[-1] for line in f if "blas" in line.lower()}
        return ", ".join(sorted(libs)) or "no BLAS library mapped"
    except OSError:
        return "BLAS unknown"


def set_threads(t):
    """torch's intra-op threads and, where the mapped BLAS is OpenBLAS (Debian's torch links the libblas alternative,
    which OpenBLAS provides), OpenBLAS's threads, which torch.set_num_threads does not set in that build; returns
    what was set, for the report."""
    import ctypes
    torch.set_num_threads(t)
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower() and ".so" in line})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            setter = lib.openblas_set_num_threads
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], None
        setter(t)
        return f"torch and OpenBLAS ({path.rsplit('/', 1)[-1]}) {t} threads"
    return f"torch {t} threads (no OpenBLAS mapped)"


def set_tf32(enabled):
    """TF32 for matmuls (and cuDNN) on or off; returns how the setting reads back. PyTorch >= 2.9 has the
    fp32_precision settings and refuses a mix of them with the legacy allow_tf32 flags, so use one kind only."""
    if hasattr(torch.backends, "fp32_precision"):
        mode = "tf32" if enabled else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.fp32_precision = mode
        return f"matmul fp32_precision={torch.backends.cuda.matmul.fp32_precision}"
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return f"matmul allow_tf32={torch.backends.cuda.matmul.allow_tf32}"


def sgemm_probe(n, repeats, thread_counts):
    """torch.mm's GFLOP/s on the CPU at each thread count (best of `repeats` after one untimed product)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=gen) - 0.5
    b = torch.rand(n, n, generator=gen) - 0.5
    rates = []
    for t in thread_counts:
        set_threads(t)
        torch.mm(a, b)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        rates.append(dict(threads=t, gflops=2 * n**3 / best / 1e9))
    return dict(what=f"torch.mm ({blas_library()}), [{n}, {n}] @ [{n}, {n}] float32, best of {repeats}", rates=rates)


def make_batch(B, T, vocab, seed, device):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (B, T), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102
    ids = ids.repeat_interleave(2, 0)  # [2B, T], rows interleaved by view
    ids = ids.to(device)
    return ids, torch.ones_like(ids)  # both on `device`


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=DEFAULTS["threads"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--embed-sentences", type=int, default=512)
    ap.add_argument("--sgemm-n", type=int, default=1024)
    ap.add_argument("--sgemm-repeats", type=int, default=5)
    ap.add_argument("--sgemm-threads", default="1,2")
    ap.add_argument("--amp", action="store_true", help="also time bf16 autocast steps (always on cuda)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    d, s = DEFAULTS, SIZES[args.size]
    sgemm = sgemm_probe(args.sgemm_n, args.sgemm_repeats, [int(t) for t in args.sgemm_threads.split(",")])
    threads_set = set_threads(args.threads)
    rates = " / ".join(f"{r['gflops']:.0f}" for r in sgemm["rates"])
    print(f"torch SGEMM probe: {rates} GFLOP/s at {args.sgemm_threads} threads", file=sys.stderr)
    torch.manual_seed(d["seed"])
    dev = torch.device(args.device)
    model = Bert(s, d).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=d["lr"], betas=d["betas"], eps=d["eps"], weight_decay=d["weight_decay"])
    ids, mask = make_batch(s["batch"], s["seqLen"], d["vocab"], d["seed"], dev)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    amp = [False]  # step() runs its forward and loss under bf16 autocast while amp[0] is set

    def forward_loss():
        hidden, attentions = model(ids, mask)
        z = torch.tanh(model.mlp(hidden[:, 0]))  # [2B, H]
        nce = info_nce(z[0::2], z[1::2], d["temperature"])
        mi = ami(attentions[s["minLayer"]:s["maxLayer"]], d)
        return nce, mi, nce + d["lam"] * mi

    def step():
        if amp[0]:
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                nce, mi, loss = forward_loss()
        else:
            nce, mi, loss = forward_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), d["max_grad_norm"])
        opt.step()
        nce.item(), mi.item(), norm.item()
        return loss.item()

    def timed(label):
        """args.warmup untimed steps, then args.steps timed ones; returns (times in ms, CPU times in ms, last loss)."""
        loss = float("nan")
        for _ in range(args.warmup):
            loss = step()
        times, cpu_times = [], []
        for i in range(args.steps):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            loss = step()
            sync()
            times.append((time.perf_counter() - t0) * 1000)
            cpu_times.append((time.process_time() - c0) * 1000)
            print(f"torch{label} step {i + 1}/{args.steps}: {times[-1]:.0f} ms, loss {loss:.4f}", file=sys.stderr)
        return times, cpu_times, loss

    notes = []
    if dev.type == "cuda":
        try:
            notes.append(f"fp32 steps: {set_tf32(False)}")
        except Exception as err:  # noqa: BLE001 - PyTorch's default since 1.12 is TF32 matmuls off anyway
            notes.append(f"could not set TF32 off ({type(err).__name__}: {err}); PyTorch's default applies (matmul TF32 off)")
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times, loss = timed("")
    gpu = None
    if dev.type == "cuda":
        gpu = dict(peakInUseMb=torch.cuda.max_memory_allocated() / 2**20, poolMb=torch.cuda.max_memory_reserved() / 2**20,
                   what="torch.cuda.max_memory_allocated / max_memory_reserved over the fp32 steps")

    model.eval()
    eb = d["embed_batch"]
    eids, emask = make_batch(eb // 2, s["seqLen"], d["vocab"], d["seed"], dev)
    batches = max(1, round(args.embed_sentences / eb))
    with torch.no_grad():
        model(eids, emask)
        sync()
        t0 = time.perf_counter()
        for _ in range(batches):
            h, _ = model(eids, emask)
            h[:, 0].cpu()
        sync()
        embed_sps = batches * eb / (time.perf_counter() - t0)

    tf32_times = None
    if dev.type == "cuda":
        # The TF32 figure comes after the fp32 embedding pass so that every fp32 number above is TF32-free. A failure
        # here costs the TF32 figure only, not the fp32 result.
        model.train()
        try:
            notes.append(f"TF32 steps: {set_tf32(True)}")
            tf32_times, _, _ = timed(" TF32")
            set_tf32(False)
        except Exception as err:  # noqa: BLE001 - reported in the notes
            notes.append(f"TF32 figure failed: {type(err).__name__}: {err}")

    amp_times = None
    if dev.type == "cuda" or args.amp:
        # Last, after the fp32 and TF32 figures; TF32 off so that only autocast's bf16 products differ from fp32.
        model.train()
        try:
            if dev.type == "cuda":
                set_tf32(False)
            amp[0] = True
            amp_times, _, amp_loss = timed(" AMP")
            amp[0] = False
            notes.append(f"AMP steps: torch.autocast({dev.type}, bfloat16) over forward + loss, last loss {amp_loss:.4f}")
        except Exception as err:  # noqa: BLE001 - reported in the notes
            notes.append(f"AMP figure failed: {type(err).__name__}: {err}")

    ms = statistics.median(times)
    if dev.type == "cuda":
        backend = f"cuda: {torch.cuda.get_device_name()}, fp32, TF32 off"
        notes.append(f"python {platform.python_version()}, CUDA {torch.version.cuda}, dense embedding gradient")
    else:
        backend = f"cpu, {torch.get_num_threads()} threads"
        notes.append(f"python {platform.python_version()}, dense embedding gradient, {blas_library()}, {threads_set}")
    res = dict(impl=f"PyTorch {torch.__version__}", backend=backend, msPerStep=ms,
               stepsMs=times, cpuMsPerStep=statistics.median(cpu_times), sgemm=sgemm, trainSentencesPerSecond=s["batch"] * 1000 / ms, embedSentencesPerSecond=embed_sps,
               embedWhat=f"eval forward + [CLS] of {eb} x {s['seqLen']} under no_grad (no tokenisation)",
               peakRssMb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, loss=loss, notes=notes)
    if gpu is not None:
        res["gpuMemory"] = gpu
    if tf32_times is not None:
        res["tf32MsPerStep"] = statistics.median(tf32_times)
    if amp_times is not None:
        res["ampMsPerStep"] = statistics.median(amp_times)
    tf32 = f", TF32 {res['tf32MsPerStep']:.1f} ms/step" if "tf32MsPerStep" in res else ""
    tf32 += f", AMP bf16 {res['ampMsPerStep']:.1f} ms/step" if "ampMsPerStep" in res else ""
    print(json.dumps(res) if args.json else f"{args.size}: {ms:.1f} ms/step{tf32}, embed {embed_sps:.0f} sentences/s")


if __name__ == "__main__":
    main()
