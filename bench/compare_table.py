"""The table of bench/compare_reference.sh from the logs of one run: our
times and tokens/s beside the reference's, the ratios (above 1: ours is
faster) and the memory, headed by the GPU, the date and the commit.

    python3 bench/compare_table.py LOGDIR "config:batch:seq ..."
"""
import datetime
import json
import os
import re
import statistics
import sys


def read_jsonl(path):
    try:
        return [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    except FileNotFoundError:
        return []


def ours_kernels(path):
    """bench_mamba2's lines: name -> (fwd ms, fwd+bwd ms)."""
    times = {}
    try:
        for line in open(path):
            m = re.match(r"bench (\S+)\s+fwd\s+([\d.]+) ms.*fwd\+bwd\s+([\d.]+) ms", line)
            if m:
                times[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    except FileNotFoundError:
        pass
    return times


def ours_train(logdir, name, batch, seq):
    """Median tokens/s of steps 11-30, and state + step memory in GiB."""
    stem = os.path.join(logdir, f"ours-train-{name}-{batch}-{seq}")
    rates = [r["tokens_per_s"] for r in read_jsonl(stem + ".jsonl") if r.get("step", 0) > 10 and "tokens_per_s" in r]
    memory = None
    try:
        for line in open(stem + ".log"):
            m = re.match(r"memory on the GPU: .* moments ([\d.]+) MiB; step memory ([\d.]+) MiB", line)
            if m:
                memory = (float(m.group(1)) + float(m.group(2))) / 1024
    except FileNotFoundError:
        pass
    return (statistics.median(rates) if rates else None), memory


def cell(v, fmt):
    return format(v, fmt) if v is not None else "-"


def main():
    logdir, rows = sys.argv[1], sys.argv[2].split()
    gpu = open(os.path.join(logdir, "gpu.txt")).read().strip() if os.path.exists(os.path.join(logdir, "gpu.txt")) \
        else "unknown GPU"
    commit = " ".join(open(os.path.join(logdir, "commit.txt")).read().split()) \
        if os.path.exists(os.path.join(logdir, "commit.txt")) else "unknown"
    print(f"Same-run comparison on {gpu}, {datetime.date.today().isoformat()}, mamba-train at {commit}; "
          "ratio = reference time / ours (above 1: ours is faster). Kernels: the reference's kernels' GPU time "
          "(torch.profiler), ours with CUDA events around the op.\n")
    print("| kernel (batch 8, seq 2048, 32 x 64 heads, d_state 128, bf16) | reference fwd ms | ours fwd ms | ratio "
          "| reference fwd+bwd ms | ours fwd+bwd ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    ref = {r["what"]: r for r in read_jsonl(os.path.join(logdir, "reference-kernels.jsonl"))}
    ours = ours_kernels(os.path.join(logdir, "ours-kernels.log"))
    for name in ("ssd", "ssd_z", "mamba2_layer", None, "selective_scan", "mamba1_layer"):
        if name is None:
            print("| *Mamba-1 (batch 8, seq 2048, d_inner 1536, d_state 16, bf16)* | | | | | | |")
            continue
        r, o = ref.get(name), ours.get(name)
        rf, rb = (r["fwd_ms"], r["fwdbwd_ms"]) if r else (None, None)
        of, ob = o if o else (None, None)
        print(f"| {name} | {cell(rf, '.3f')} | {cell(of, '.3f')} | {cell(rf / of if rf and of else None, '.2f')} "
              f"| {cell(rb, '.3f')} | {cell(ob, '.3f')} | {cell(rb / ob if rb and ob else None, '.2f')} |")
    print("\nTraining: the reference's tokens/s as timed, and as its kernels alone allow (one step's kernel time: "
          "the rate where its Python launches keep up with the GPU).\n")
    print("| model | batch x seq | reference tokens/s | its kernels alone | ours tokens/s | ours / reference "
          "| ours / its kernels | reference peak GiB | ours GiB (state + step) |")
    print("|---|---|---|---|---|---|---|---|---|")
    trains = {(r["model"], r["batch"], r["seq"]): r for r in read_jsonl(os.path.join(logdir, "reference-train.jsonl"))}
    for row in rows:
        name, batch, seq = row.split(":")
        r = trains.get((name, int(batch), int(seq)))
        rate, memory = ours_train(logdir, name, batch, seq)
        rr = r["tokens_per_s"] if r else None
        rk = r.get("kernel_tokens_per_s") if r else None
        print(f"| {name} | {batch} x {seq} | {cell(rr, ',.0f')} | {cell(rk, ',.0f')} | {cell(rate, ',.0f')} "
              f"| {cell(rate / rr if rate and rr else None, '.2f')} | {cell(rate / rk if rate and rk else None, '.2f')} "
              f"| {cell(r['peak_gib'] if r else None, '.1f')} | {cell(memory, '.1f')} |")


if __name__ == "__main__":
    main()
