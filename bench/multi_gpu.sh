#!/usr/bin/env bash
# Multi-GPU training on one host: mamba2-370m (bf16, seq 2048, generated
# data, 20 steps) on one GPU and on N, with the same global batch so that the
# losses can be compared step by step:
#   1 GPU       batch 8, micro_batches N      (the baseline)
#   N GPUs, DP  batch 8 per rank              (dist.zero = 0, then 1)
#   N GPUs, TP  tp_size 2, batch 8, micro_batches 2 per group of 2
# and prints tokens/s, the DP scaling efficiency tok/s(N) / (N tok/s(1)),
# the TP efficiency on the same footing, and the largest relative loss
# difference against the baseline. Runs unchanged on 2, 4 or 8 GPUs.
#
#   bench/multi_gpu.sh BUILDDIR LOGDIR [N]      (N: all GPUs)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: bench/multi_gpu.sh BUILDDIR LOGDIR [N]}
logdir=${2:?usage: bench/multi_gpu.sh BUILDDIR LOGDIR [N]}
n=${3:-$(nvidia-smi -L | wc -l)}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} # NVLink multicast stays off on the lent hosts
mkdir -p "$logdir"
if [ "$n" -lt 2 ]; then
  echo "multi-gpu: $n GPU(s): nothing to compare"
  exit 0
fi
status=0
steps=20

# run NAME GPUS MICRO [--set ...]: trains into /tmp/mt-multi-NAME.
run() {
  local name=$1 gpus=$2 micro=$3
  shift 3
  local out=/tmp/mt-multi-$name
  rm -rf "$out"
  "$build/train/mamba-train" --config configs/mamba2-370m.ini --out "$out" --gpus "$gpus" \
    --set data.synthetic=selective-copy --set data.synthetic_examples=$((16 * n * steps + 64)) \
    --set data.batch_size=8 --set train.micro_batches="$micro" --set train.steps=$steps \
    --set train.warmup_steps=5 --set log.log_every=5 --set log.eval_every=0 --set log.checkpoint_every=0 "$@" \
    >"$logdir/multi-$name.log" 2>&1 || { status=1; echo "multi-gpu: $name failed:"; tail -5 "$logdir/multi-$name.log"; }
}

run base 1 "$n"
run dp "$n" 1 --set dist.zero=0
run dp-zero1 "$n" 1 --set dist.zero=1
[ $((n % 2)) -eq 0 ] && run tp2 "$n" 2 --set dist.tp_size=2

python3 - "$n" "$steps" <<'PY'
import json, os, sys
n, steps = int(sys.argv[1]), int(sys.argv[2])
def load(name):
    path = f"/tmp/mt-multi-{name}/metrics.jsonl"
    if not os.path.exists(path):
        return None
    return [json.loads(l) for l in open(path) if '"tokens_per_s"' in l]
def rate(rows):  # steps 1-5 warm up
    steady = [r["tokens_per_s"] for r in rows if r["step"] > 5]
    return sum(steady) / len(steady)
base = load("base")
if not base:
    print("multi-gpu: no baseline"); sys.exit(1)
b = rate(base)
print(f"1 GPU      : {b:10,.0f} tokens/s  loss {base[0]['loss']:.4f} -> {base[-1]['loss']:.4f}")
for name, label in (("dp", f"{n} GPUs DP"), ("dp-zero1", f"{n} GPUs ZeRO-1"), ("tp2", f"{n} GPUs TP 2")):
    rows = load(name)
    if not rows:
        continue
    r = rate(rows)
    worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(rows, base))
    print(f"{label:11s}: {r:10,.0f} tokens/s  efficiency {r / (n * b):.3f}  loss {rows[-1]['loss']:.4f}  "
          f"max |loss - 1 GPU| / loss over {len(rows)} steps {worst:.2e}")
PY
exit $status
