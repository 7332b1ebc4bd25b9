#!/usr/bin/env bash
# The one GPU entry point: on a machine with an NVIDIA GPU and no network,
# configure an sm_90 build, build, run the gpu-labelled tests, the
# benchmarks (ours and the PyTorch reference side by side) and short bf16
# training runs of mamba2-130m, mamba2-370m and mamba-130m (with a per-op
# profile of one step), export the transformers fixtures and check that
# transformers and torch.load read them back; on a host with several GPUs,
# the multi-GPU runs of bench/multi_gpu.sh; write logs to LOGDIR and print a
# summary last. --tests-only builds and runs the gpu tests, and the
# multi-GPU runs where several GPUs are present, without the benchmarks and
# the single-GPU training runs.
#
#   scripts/gpu-check.sh [--tests-only] LOGDIR [BUILDDIR]
#
# Libraries the GPU host lacks come as Debian packages in .gpu-debs/
# (scripts/gpu-env.sh). Speed against the reference is measured in the same
# run by bench/compare_reference.sh, not here.
set -uo pipefail
cd "$(dirname "$0")/.."
tests_only=0
[ "${1:-}" = "--tests-only" ] && { tests_only=1; shift; }
logdir=${1:?usage: scripts/gpu-check.sh [--tests-only] LOGDIR [BUILDDIR]}
build=${2:-/tmp/mt-gpu-build}
mkdir -p "$logdir"
logdir=$(cd "$logdir" && pwd)

source scripts/gpu-env.sh

nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader | tee "$logdir/gpu.txt"
status=0
if ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j "$(nproc)"; } \
  >"$logdir/build.log" 2>&1; then
  tail -40 "$logdir/build.log"
  echo "gpu-check: BUILD FAILED (log: $logdir/build.log)"
  exit 1
fi

(cd "$build" && ctest -L gpu --output-on-failure) >"$logdir/gpu-tests.log" 2>&1 || status=1
grep -h -E '^(equiv|tiny LM)' "$build"/Testing/Temporary/LastTest*.log >"$logdir/equiv.txt"
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  echo "== multi-GPU ($gpus GPUs; mamba2-370m, same global batch as 1 GPU)"
  bench/multi_gpu.sh "$build" "$logdir" "$gpus" || status=1
  grep -h -E "^(rank|a rank|gpu_nccl)" "$build"/Testing/Temporary/LastTest*.log
fi
if [ $tests_only -eq 1 ]; then
  echo "== CUDA vs CPU, and the parallel trainer on one GPU against one rank"
  cat "$logdir/equiv.txt"
  grep -E "tests passed|tests failed|Skipped|Failed|Passed" "$logdir/gpu-tests.log" | tail -8
  [ $status -eq 0 ] && echo "gpu-check: PASS" || echo "gpu-check: FAIL (logs in $logdir)"
  exit $status
fi
"$build/bench/bench_ops" >"$logdir/bench.log" 2>&1 || status=1
"$build/bench/bench_mamba2" >"$logdir/bench-mamba2.log" 2>&1 || status=1
"$build/bench/bench_mamba1" >"$logdir/bench-mamba1.log" 2>&1 || status=1
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  python3 bench/torch_ops.py >"$logdir/reference.log" 2>&1 || echo "reference bench failed" >>"$logdir/reference.log"
fi

# Exports of the transformers fixtures, loaded back by transformers and torch.load.
if python3 -c 'import transformers, torch' 2>/dev/null; then
  checks=()
  for kind in mamba mamba2 mamba2-limit; do
    for format in hf reference; do
      "$build/train/mamba-train" export --checkpoint "tests/fixtures/$kind-tiny-hf" --format $format \
        --out "/tmp/mt-export-$kind-$format" >>"$logdir/export.log" 2>&1 || status=1
      checks+=("$kind:$format:/tmp/mt-export-$kind-$format")
    done
  done
  CUDA_VISIBLE_DEVICES= python3 tests/fixtures/check_export.py tests/fixtures "${checks[@]}" >>"$logdir/export.log" 2>&1 \
    || { status=1; echo "export check failed" >>"$logdir/export.log"; }
fi

echo "== CUDA vs CPU (max relative error, written, deterministic)"
cat "$logdir/equiv.txt"
echo "== benchmarks (speedup = reference ms / ours ms, forward+backward)"
python3 - "$logdir/bench.log" "$logdir/reference.log" <<'PY'
import sys
ref = {}
try:
    for line in open(sys.argv[2]):
        f = line.split()
        if f and f[0] == "ref":
            ref[(f[1], f[2])] = (float(f[4]), float(f[6]))
except FileNotFoundError:
    pass
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 9 or f[0] != "bench":
        print(line.rstrip()); continue
    key, fwd, both = (f[1], f[2]), float(f[4]), float(f[6])
    r = ref.get(key)
    extra = f"  ref fwd {r[0]:.3f} fwdbwd {r[1]:.3f} ms  speedup fwd {r[0]/fwd:.2f}x fwdbwd {r[1]/both:.2f}x" if r else "  (no reference)"
    print(f"{key[0]:16s} {key[1]:4s} fwd {fwd:.3f} fwdbwd {both:.3f} ms {f[7]} {f[8]}{extra}")
PY
echo "== exports reloaded by transformers / torch.load (logits against the fixtures)"
grep -E "export|worst|failed|Error" "$logdir/export.log" 2>/dev/null | grep -v "^exported" || echo "(transformers absent: not checked)"
echo "== Mamba-2 (the reference's in the same run: bench/compare_reference.sh)"
cat "$logdir/bench-mamba2.log"
echo "== Mamba-1"
cat "$logdir/bench-mamba1.log"
echo "== training step (bf16, generated data, seq 2048)"
for run in "mamba2-130m 16" "mamba2-370m 8" "mamba-130m 8"; do
  set -- $run
  out=/tmp/mt-gpu-run-$1
  rm -rf "$out"
  "$build/train/mamba-train" --config "configs/$1.ini" --out "$out" --set data.synthetic=selective-copy \
    --set data.synthetic_examples=$((60 * $2)) --set train.steps=50 --set train.micro_batches=1 \
    --set data.batch_size="$2" --set train.warmup_steps=5 --set log.log_every=10 --set log.eval_every=0 --set log.profile_step=20 \
    >"$logdir/train-$1.log" 2>&1 || { status=1; tail -5 "$logdir/train-$1.log"; }
  python3 - "$out/metrics.jsonl" "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
steady = [r for r in rows if r["step"] > 5 and r["step"] != 20]  # step 20 is profiled
if steady:
    tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
    mfu = sum(r["mfu"] or 0 for r in steady) / len(steady)
    print(f"{sys.argv[2]:12s} batch {sys.argv[3]:>2s}: loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}, "
          f"{tps:,.0f} tokens/s, MFU {100 * mfu:.1f}%")
PY
  grep -h "^memory" "$logdir/train-$1.log"
  grep -A 9 "^profile of one step" "$logdir/train-$1.log"
  rm -rf "$out"
done
grep -E "tests passed|tests failed|Skipped|Failed|Passed" "$logdir/gpu-tests.log" | tail -8
[ $status -eq 0 ] && echo "gpu-check: PASS" || echo "gpu-check: FAIL (logs in $logdir)"
exit $status
