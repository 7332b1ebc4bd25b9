"""Times the reference implementation (state-spaces/mamba, imported as the
package mamba_ssm that bench/compare_reference.sh builds) on the same shapes
as our benchmarks, and prints one JSON object a line:

  {"what": "ssd", "fwd_ms": .., "fwdbwd_ms": .., "fwd_wall_ms": .., "fwdbwd_wall_ms": ..}
      the SSD scan (ssd, ssd_z); the same for one Mamba-2 layer (mamba2_layer),
      the selective scan and one Mamba-1 layer (selective_scan, mamba1_layer)
  {"what": "train", "model": .., "batch": .., "seq": .., "tokens_per_s": ..,
   "kernel_tokens_per_s": .., "peak_gib": ..}

Kernels: batch 8, seq 2048, 32 heads of 64, ngroups 1, d_state 128, chunk
256, bf16 (bench_mamba2's shape), and bench_mamba1's. fwd_ms and fwdbwd_ms
are the GPU time of the kernels (torch.profiler, summed, per call over 10
calls); the wall times (median of triton's do_bench) also count Python's
launch cost, which leaves the GPU idle between small kernels.
Training: the model of configs/NAME.ini, bf16 autocast, fp32 parameters,
fused AdamW, the reference's default fast path, random tokens; tokens_per_s
from the median of 10 steps after 3 warm-up steps, kernel_tokens_per_s from
the GPU time of one more step's kernels (the rate a host that launches
faster than the GPU runs would see); peak_gib is
torch.cuda.max_memory_allocated.

    python3 bench/reference_bench.py kernels
    python3 bench/reference_bench.py train NAME BATCH SEQ [NAME BATCH SEQ ...]
    python3 bench/reference_bench.py profile NAME BATCH SEQ
    python3 bench/reference_bench.py warm

profile prints where one training step's GPU time goes (torch.profiler,
kernels summed by name, after the warm-up steps). warm runs the SSD scan's
forward and backward once, untimed, so that its Triton kernels compile; it
needs only the reference's Python sources, not its built extensions.
"""
import configparser
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DEV = "cuda"
HERE = os.path.dirname(os.path.abspath(__file__))


def emit(**row):
    print(json.dumps(row), flush=True)


def ssd_inputs():
    """The SSD scan's inputs at bench_mamba2's shape, and its chunk size."""
    b, l, h, p, g, n, q = 8, 2048, 32, 64, 1, 128, 256
    bf = dict(device=DEV, dtype=torch.bfloat16)
    x = torch.randn(b, l, h, p, **bf).requires_grad_()
    dt = (torch.rand(b, l, h, **bf) * 5 - 4).requires_grad_()
    bm = torch.randn(b, l, g, n, **bf).requires_grad_()
    cm = torch.randn(b, l, g, n, **bf).requires_grad_()
    z = torch.randn(b, l, h, p, **bf).requires_grad_()
    a = -torch.rand(h, device=DEV).add(1).requires_grad_()
    d = torch.ones(h, device=DEV).requires_grad_()
    dt_bias = torch.rand(h, device=DEV).requires_grad_()
    dy = torch.randn(b, l, h, p, **bf)
    return x, dt, a, bm, cm, z, d, dt_bias, dy, q


def warm():
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    x, dt, a, bm, cm, z, d, dt_bias, dy, q = ssd_inputs()
    for gate in (None, z):
        mamba_chunk_scan_combined(x, dt, a, bm, cm, q, D=d, z=gate, dt_bias=dt_bias, dt_softplus=True).backward(dy)
    torch.cuda.synchronize()
    emit(what="warm")


def kernel_ms(fn, calls=1):
    """The GPU time of fn's kernels per call: their durations summed by
    torch.profiler over `calls` calls. Python's launch cost (tens of
    microseconds a Triton kernel) is left out: in a step of large kernels it
    overlaps the GPU's work, and where it does not, the wall time shows it."""
    from torch.profiler import ProfilerActivity

    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            n, us = totals.get(event.name, (0, 0.0))
            totals[event.name] = (n + 1, us + event.time_range.elapsed_us())
    return sum(us for _, us in totals.values()) / 1e3 / calls, totals


def timed(fn, no_grad=False):
    """(kernel ms, wall ms) of one call: the kernels' GPU time, and the
    median of triton's do_bench, which counts Python's launch cost too."""
    from triton.testing import do_bench

    def run():
        if no_grad:
            with torch.no_grad():
                return fn()
        return fn()

    wall = do_bench(run, return_mode="median")
    return kernel_ms(run, calls=10)[0], wall


def emit_kernel(what, fwd, fwd_bwd):
    (fk, fw), (bk, bw) = timed(fwd, no_grad=True), timed(fwd_bwd)
    emit(what=what, fwd_ms=fk, fwdbwd_ms=bk, fwd_wall_ms=fw, fwdbwd_wall_ms=bw)


def kernels():
    from mamba_ssm.modules.mamba2 import Mamba2
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    torch.manual_seed(0)
    x, dt, a, bm, cm, z, d, dt_bias, dy, q = ssd_inputs()
    b, l, n, p = x.shape[0], x.shape[1], bm.shape[3], x.shape[3]
    bf = dict(device=DEV, dtype=torch.bfloat16)
    for name, gate in (("ssd", None), ("ssd_z", z)):
        def fwd():
            return mamba_chunk_scan_combined(x, dt, a, bm, cm, q, D=d, z=gate, dt_bias=dt_bias, dt_softplus=True)

        def fwd_bwd():
            fwd().backward(dy)

        emit_kernel(name, fwd, fwd_bwd)

    layer = Mamba2(d_model=1024, d_state=n, headdim=p, chunk_size=q, device=DEV)
    u = torch.randn(b, l, 1024, **bf).requires_grad_()
    du = torch.randn(b, l, 1024, **bf)

    def layer_fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return layer(u)

    def layer_fwd_bwd():
        layer_fwd().backward(du)

    emit_kernel("mamba2_layer", layer_fwd, layer_fwd_bwd)
    mamba1_kernels()


def mamba1_kernels():
    """bench_mamba1's shapes: the selective scan (batch 8, d_inner 1536, seq
    2048, d_state 16, bf16, with D, z, delta_bias and softplus) in the
    reference's own layout (batch, channels, time), and one Mamba-1 layer
    (d_model 768) on its fused path."""
    from mamba_ssm.modules.mamba_simple import Mamba
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    torch.manual_seed(0)
    b, d, l, n = 8, 1536, 2048, 16
    bf = dict(device=DEV, dtype=torch.bfloat16)
    u = torch.randn(b, d, l, **bf).requires_grad_()
    delta = (torch.rand(b, d, l, **bf) * 5 - 4).requires_grad_()
    bm = torch.randn(b, n, l, **bf).requires_grad_()
    cm = torch.randn(b, n, l, **bf).requires_grad_()
    z = torch.randn(b, d, l, **bf).requires_grad_()
    a = (-torch.rand(d, n, device=DEV) - 0.5).requires_grad_()
    dd = torch.ones(d, device=DEV).requires_grad_()
    bias = torch.rand(d, device=DEV).requires_grad_()
    dy = torch.randn(b, d, l, **bf)

    def fwd():
        return selective_scan_fn(u, delta, a, bm, cm, D=dd, z=z, delta_bias=bias, delta_softplus=True)

    def fwd_bwd():
        fwd().backward(dy)

    emit_kernel("selective_scan", fwd, fwd_bwd)

    layer = Mamba(d_model=768, d_state=n, d_conv=4, expand=2, device=DEV)
    x = torch.randn(b, l, 768, **bf).requires_grad_()
    dx = torch.randn(b, l, 768, **bf)

    def layer_fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return layer(x)

    def layer_fwd_bwd():
        layer_fwd().backward(dx)

    emit_kernel("mamba1_layer", layer_fwd, layer_fwd_bwd)


def model_of(name):
    """The reference's MambaLMHeadModel with the sizes of configs/NAME.ini."""
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    ini = configparser.ConfigParser()
    ini.read(os.path.join(HERE, "..", "configs", f"{name}.ini"))
    m = ini["model"]
    mamba2 = m.get("layer", "mamba2") == "mamba2"
    ssm = {"layer": "Mamba2" if mamba2 else "Mamba1", "d_state": m.getint("d_state"), "expand": m.getint("expand"),
           "d_conv": m.getint("d_conv")}
    if mamba2:
        ssm.update(headdim=m.getint("headdim"), ngroups=m.getint("ngroups"), chunk_size=m.getint("chunk_size"))
    cfg = MambaConfig(d_model=m.getint("d_model"), n_layer=m.getint("n_layer"), vocab_size=m.getint("vocab_size"),
                      ssm_cfg=ssm, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                      pad_vocab_size_multiple=m.getint("pad_vocab_size_multiple"))
    return MambaLMHeadModel(cfg, device=DEV, dtype=torch.float32), cfg.vocab_size


def training_step(model, opt, ids):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def setup_training(name, batch, seq):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, vocab = model_of(name)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    return model, opt, torch.randint(0, vocab, (batch, seq + 1), device=DEV)


def train(name, batch, seq, warmup=3, steps=10):
    model, opt, ids = setup_training(name, batch, seq)
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        training_step(model, opt, ids)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_kernels_ms = kernel_ms(lambda: training_step(model, opt, ids))[0]
    emit(what="train", model=name, batch=batch, seq=seq, tokens_per_s=batch * seq / statistics.median(times),
         kernel_tokens_per_s=batch * seq / (step_kernels_ms / 1e3), peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    del model, opt


def profile(name, batch, seq, warmup=3, top=40):
    """GPU time of one training step by kernel name, largest first."""
    model, opt, ids = setup_training(name, batch, seq)
    for _ in range(warmup):
        training_step(model, opt, ids)
    whole, totals = kernel_ms(lambda: training_step(model, opt, ids))
    print(f"reference {name} {batch} x {seq}: one step's kernels sum to {whole:.2f} ms")
    for kernel, (calls, us) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {calls:5d} {us / 1e3:9.3f} ms {100 * us / 1e3 / whole:5.1f}%  {kernel[:110]}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "kernels":
        kernels()
    elif len(sys.argv) >= 2 and sys.argv[1] == "warm":
        warm()
    elif len(sys.argv) == 5 and sys.argv[1] == "profile":
        profile(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) >= 5 and sys.argv[1] == "train" and (len(sys.argv) - 2) % 3 == 0:
        for i in range(2, len(sys.argv), 3):
            train(sys.argv[i], int(sys.argv[i + 1]), int(sys.argv[i + 2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
