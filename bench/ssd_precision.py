#!/usr/bin/env python3
"""The SSD scan's precision budget: our bf16 CUDA scan against the
reference's (mamba_chunk_scan_combined) on the same inputs, both measured
against a float64 oracle (the reference's ssd_minimal_discrete in float64,
with softplus, D and the z gate around it, differentiated by autograd).

    python3 bench/ssd_precision.py [--quick] SSD_PRECISION_BIN WORKDIR

SSD_PRECISION_BIN is our build's bench/ssd_precision; the reference
(state-spaces/mamba) must be importable. For every shape, with and without
z, it prints the relative error ||out - oracle|| / ||oracle|| of y and each
gradient, the reference's and ours, and fails (exit 1) where ours is more
than 1.5 times the reference's. --quick: the first shape only.
bench/compare_reference.sh runs it."""
import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

BUDGET = 1.5
# (batch, seqlen, heads, headdim, ngroups, d_state, chunk): the benchmark
# shape, then the second one (more groups, wider heads, smaller state).
SHAPES = [(8, 2048, 32, 64, 1, 128, 256), (2, 4096, 16, 128, 8, 64, 256)]
OUTPUTS = ["y", "dx", "dz", "ddt", "dA_log", "dBm", "dCm", "dD", "ddt_bias"]


def inputs(shape, seed):
    b, l, h, p, g, n, q = shape
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def bf(*size, lo=-1.0, hi=1.0):
        return (torch.rand(*size, device="cuda", generator=gen) * (hi - lo) + lo).to(torch.bfloat16)

    return dict(x=bf(b, l, h, p), dt=bf(b, l, h, lo=-4, hi=1), Bm=bf(b, l, g, n), Cm=bf(b, l, g, n),
                z=bf(b, l, h, p, lo=-2, hi=2), dy=bf(b, l, h, p),
                A_log=torch.rand(h, device="cuda", generator=gen) * 2.5,
                dt_bias=torch.rand(h, device="cuda", generator=gen) - 0.5,
                D=torch.rand(h, device="cuda", generator=gen) * 2)


def grads_of(fn, t, gated):
    """y and the gradients of fn's output under t["dy"], in float64."""
    leaves = {k: t[k].detach().clone().requires_grad_() for k in ("x", "dt", "Bm", "Cm", "A_log", "dt_bias", "D")}
    if gated:
        leaves["z"] = t["z"].detach().clone().requires_grad_()
    y = fn(leaves)
    y.backward(t["dy"].to(y.dtype))
    out = {"y": y.detach().double()}
    for k, v in leaves.items():
        out["d" + k] = v.grad.double()
    return out


def reference(t, shape, gated):
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    q = shape[6]

    def fn(v):
        return mamba_chunk_scan_combined(v["x"], v["dt"], -torch.exp(v["A_log"]), v["Bm"], v["Cm"], q, D=v["D"],
                                         z=v.get("z"), dt_bias=v["dt_bias"], dt_softplus=True)
    return grads_of(fn, t, gated)


def oracle(t, shape, gated):
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
    b, l, h, p, g, n, q = shape
    t64 = {k: v.double() for k, v in t.items()}

    def fn(v):
        delta = F.softplus(v["dt"] + v["dt_bias"])
        A = -torch.exp(v["A_log"])
        heads = lambda m: m.repeat_interleave(h // g, dim=2)
        y, _ = ssd_minimal_discrete(v["x"] * delta[..., None], A * delta, heads(v["Bm"]), heads(v["Cm"]), 64)
        y = y + v["D"][:, None] * v["x"]
        return y * F.silu(v["z"]) if "z" in v else y
    return grads_of(fn, t64, gated)


def ours(binary, workdir, t, shape, gated):
    b, l, h, p, g, n, q = shape
    flat = {k: v.reshape(b, l, -1).contiguous().cpu() for k, v in t.items() if v.dim() > 1 and (gated or k != "z")}
    flat.update({k: t[k].float().cpu() for k in ("A_log", "dt_bias", "D")})
    src, dst = os.path.join(workdir, "ssd-in.safetensors"), os.path.join(workdir, "ssd-out.safetensors")
    save_file(flat, src, metadata=dict(headdim=str(p), ngroups=str(g), chunk_size=str(q)))
    subprocess.run([binary, src, dst], check=True)
    got = load_file(dst)
    shapes = {"y": (b, l, h, p), "dx": (b, l, h, p), "dz": (b, l, h, p), "ddt": (b, l, h), "dBm": (b, l, g, n),
              "dCm": (b, l, g, n)}
    return {k: v.cuda().double().reshape(shapes.get(k, v.shape)) for k, v in got.items()}


def rel(a, ref):
    return ((a - ref).norm() / ref.norm()).item()


def main():
    args = sys.argv[1:]
    quick = args[:1] == ["--quick"]
    args = args[1:] if quick else args
    if len(args) != 2:
        sys.exit(__doc__)
    binary, workdir = args
    shapes = SHAPES[:1] if quick else SHAPES
    os.makedirs(workdir, exist_ok=True)
    failed = []
    print("| shape (b, l, h, p, g, n, chunk) | z | output | reference error | ours | ours / reference |")
    print("|---|---|---|---|---|---|")
    for si, shape in enumerate(shapes):
        for gated in (False, True):
            t = inputs(shape, 1000 + si)
            exact = oracle(t, shape, gated)
            theirs = reference(t, shape, gated)
            mine = ours(binary, workdir, t, shape, gated)
            for k in OUTPUTS:
                if k not in exact:
                    continue
                er, eo = rel(theirs[k], exact[k]), rel(mine[k], exact[k])
                ratio = eo / er if er > 0 else float("inf")
                verdict = "" if ratio <= BUDGET else " OVER"
                if verdict:
                    failed.append(f"{shape} z={gated} {k}")
                print(f"| {shape} | {'z' if gated else '-'} | {k} | {er:.3e} | {eo:.3e} | {ratio:.2f}{verdict} |",
                      flush=True)
            del exact, theirs, mine
            torch.cuda.empty_cache()
    if failed:
        print(f"ssd_precision: over the budget ({BUDGET}x the reference's error): " + ", ".join(failed))
        sys.exit(1)
    print(f"ssd_precision: every output within {BUDGET}x the reference's error")


if __name__ == "__main__":
    main()
