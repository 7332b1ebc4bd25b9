"""mamba-train as separate processes under mpirun, on the CPU (the MPI
communicator): 2 data-parallel ranks, 2 tensor-parallel ranks and 2 x 2
(ZeRO-1) train the tiny model to the losses and parameters of one process
on the same global batch (fp32 rounding of sums in another order).

usage: test_mpirun.py MPIRUN MAMBA_TRAIN CONFIG WORKDIR
Exits 77 (SKIPPED) when mpirun cannot start two processes here."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

MPIRUN, TRAIN, CONFIG, WORK = sys.argv[1:5]
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
STEPS = 4
COMMON = ["--set", f"train.steps={STEPS}", "--set", "log.eval_every=0", "--set", "train.eps=1",
          "--set", "train.grad_clip=0", "--set", "train.device=cpu"]


def train(name, ranks, sets):
    out = os.path.join(WORK, name)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [TRAIN, "--config", CONFIG, "--out", out] + COMMON + sum((["--set", s] for s in sets), [])
    if ranks > 1:
        cmd = [MPIRUN, "--oversubscribe", "-np", str(ranks)] + cmd
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:])
        sys.exit(f"{name}: exit {run.returncode}")
    return out


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "grad_norm" in r]


def params(out):
    """model.safetensors of the last checkpoint as {name: [floats]} (F32 only)."""
    with open(os.path.join(out, f"step_{STEPS:06d}", "model.safetensors"), "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", name
        b, e = t["data_offsets"]
        tensors[name] = struct.unpack(f"<{(e - b) // 4}f", data[base + b:base + e])
    return tensors


def rel_diff(a, b):
    assert a.keys() == b.keys()
    num = sum((x - y) ** 2 for k in a for x, y in zip(a[k], b[k]))
    den = sum(x * x for k in a for x in a[k])
    return math.sqrt(num / den)


def main():
    probe = subprocess.run([MPIRUN, "--oversubscribe", "-np", "2", "true"], env=ENV, capture_output=True, timeout=120)
    if probe.returncode != 0:
        print("SKIPPED: mpirun cannot start two processes here:", probe.stderr.decode()[-500:])
        sys.exit(77)
    os.makedirs(WORK, exist_ok=True)
    one = train("one", 1, ["data.batch_size=32"])
    ref_l, ref_p = losses(one), params(one)
    worst = 0.0
    for name, ranks, sets in (("dp2", 2, ["data.batch_size=16"]),
                              ("tp2", 2, ["data.batch_size=32", "dist.tp_size=2"]),
                              ("dp2-tp2-zero1", 4, ["data.batch_size=16", "dist.tp_size=2", "dist.zero=1"])):
        out = train(name, ranks, sets)
        l, p = losses(out), params(out)
        dl = max(abs(x - y) / abs(y) for x, y in zip(l, ref_l))
        dp = rel_diff(p, ref_p)
        print(f"mpirun {name} ({ranks} processes) vs 1: losses {dl:.2e}, parameters after {STEPS} steps {dp:.2e}")
        assert len(l) == STEPS, f"{name}: {len(l)} steps logged"
        worst = max(worst, dl, dp)
        assert dl < 1e-6 and dp < 1e-7, f"{name} is off"
    print(f"all within bounds (worst {worst:.2e})")


main()
