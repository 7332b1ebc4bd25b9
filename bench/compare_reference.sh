#!/usr/bin/env bash
# Our speed beside the reference's, measured in one run on one GPU: builds a
# user-supplied checkout of the reference (state-spaces/mamba with
# Dao-AILab/causal-conv1d, for sm_90 only, in a copy under /tmp) and ours,
# then times the SSD scan (with and without z), one Mamba-2 layer, the
# selective scan, one Mamba-1 layer and the training step of each model row,
# the reference's (bench/reference_bench.py) and ours (bench_mamba2,
# bench_mamba1, mamba-train), and prints one table of ratios and memory,
# naming the GPU, the date and the commit, and the SSD scan's error beside
# the reference's against a float64 oracle (bench/ssd_precision.py). None of
# the reference's code is in this repository: REF_DIR holds the checkouts.
#
#   bench/compare_reference.sh REF_DIR LOGDIR [BUILDDIR]
#
# REF_DIR/mamba and REF_DIR/causal-conv1d are the two source trees. ROWS
# overrides the training rows ("config:batch:seq ..."); SKIP_OURS_BUILD=1
# reuses BUILDDIR as it is; PARTS picks what runs of "kernels precision
# train" (all by default; a later run into the same LOGDIR adds to the
# table); PRECISION=quick measures the precision budget on the first shape
# only; MT_COMMIT names the commit
# where the tree is not a git checkout. The reference's build (4-6 minutes on
# 16 cores) is kept in MT_REF_WORK (default /tmp/mt-reference) and reused
# while its sources are unchanged; MT_REF_ONLY_BUILD=1 stops after building
# it.
set -uo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: bench/compare_reference.sh REF_DIR LOGDIR [BUILDDIR]}
logdir=${2:?usage: bench/compare_reference.sh REF_DIR LOGDIR [BUILDDIR]}
build=${3:-/tmp/mt-gpu-build}
work=${MT_REF_WORK:-/tmp/mt-reference}
rows=${ROWS:-"mamba2-130m:16:2048 mamba2-130m:8:2048 mamba2-370m:8:2048 mamba2-1.3b:8:2048 mamba2-2.7b:4:2048
mamba2-370m:1:65536 mamba-130m:8:2048 mamba-370m:8:2048"}
for tree in mamba causal-conv1d; do
  [ -f "$ref/$tree/setup.py" ] || { echo "compare_reference: $ref/$tree/setup.py: no such checkout" >&2; exit 2; }
done
mkdir -p "$logdir"
logdir=$(cd "$logdir" && pwd)
source scripts/gpu-env.sh

# The reference for sm_90 alone: every other -gencode pair of the copies'
# setup.py is left out, which takes its build from about 30 minutes to 5.
build_reference() {
  local stamp
  stamp=$(cat "$ref"/mamba/setup.py "$ref"/causal-conv1d/setup.py | md5sum | cut -c1-16)
  [ -f "$work/built-$stamp" ] && return 0
  rm -rf "$work" && mkdir -p "$work"
  cp -r "$ref/mamba" "$work/mamba" && cp -r "$ref/causal-conv1d" "$work/cc1d" || return 1
  python3 - "$work/mamba/setup.py" "$work/cc1d/setup.py" <<'PY' || return 1
import re, sys
pair = re.compile(r'^(\s*)cc_flag\.append\("-gencode"\)\n\s*cc_flag\.append\("arch=compute_(\d+)a?,code=sm_\d+a?"\)$', re.M)
for path in sys.argv[1:]:
    text = open(path).read()
    cut, n = pair.subn(lambda m: m.group(0) if m.group(2) == "90" else m.group(1) + "pass", text)
    if "compute_90,code=sm_90" not in cut:
        sys.exit(f"{path}: no sm_90 -gencode pair found to keep")
    open(path, "w").write(cut)
PY
  # Its Triton kernels need only the Python sources: they compile while the
  # extensions build.
  PYTHONPATH=$work/mamba${PYTHONPATH:+:$PYTHONPATH} python3 bench/reference_bench.py warm \
    >"$logdir/reference-warm.log" 2>&1 &
  local warm=$!
  local jobs=$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))
  (cd "$work/cc1d" && CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=$jobs python3 setup.py build_ext --inplace) \
    >"$logdir/reference-build-cc1d.log" 2>&1 &
  local cc1d=$!
  (cd "$work/mamba" && MAMBA_FORCE_BUILD=TRUE MAMBA_KEEP_CUDA_BUILD=TRUE MAX_JOBS=$jobs \
    python3 setup.py build_ext --inplace) >"$logdir/reference-build-mamba.log" 2>&1
  local mamba_rc=$?
  wait $cc1d
  local cc1d_rc=$?
  wait $warm || echo "compare_reference: the Triton warm-up failed (log: $logdir/reference-warm.log)" >&2
  [ $mamba_rc -eq 0 ] && [ $cc1d_rc -eq 0 ] && touch "$work/built-$stamp"
}

# The reference's Triton kernels compile and autotune on first use, which
# takes minutes: their cache is kept beside its build for the next run.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$work/triton-cache}
t0=$(date +%s)
if ! build_reference; then
  tail -20 "$logdir"/reference-build-*.log
  echo "compare_reference: the reference did not build (logs: $logdir/reference-build-*.log)"
  exit 1
fi
echo "compare_reference: reference built in $(( $(date +%s) - t0 )) s"
[ "${MT_REF_ONLY_BUILD:-0}" = 1 ] && exit 0
export PYTHONPATH=$work/mamba:$work/cc1d${PYTHONPATH:+:$PYTHONPATH}

if [ "${SKIP_OURS_BUILD:-0}" != 1 ] &&
   ! { cmake -S . -B "$build" "${cmake_args[@]}" && cmake --build "$build" -j "$(nproc)"; } >"$logdir/build.log" 2>&1; then
  tail -20 "$logdir/build.log"
  echo "compare_reference: our build failed (log: $logdir/build.log)"
  exit 1
fi

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$logdir/gpu.txt"
{ git log -1 --format=%h 2>/dev/null || echo "${MT_COMMIT:-unknown}"; } >"$logdir/commit.txt"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || echo "(with uncommitted changes)" >>"$logdir/commit.txt"
parts=" ${PARTS:-kernels precision train} "
status=0
if [[ $parts == *" kernels "* ]]; then
  python3 bench/reference_bench.py kernels >"$logdir/reference-kernels.jsonl" 2>"$logdir/reference-kernels.err" || status=1
  "$build/bench/bench_mamba2" >"$logdir/ours-kernels.log" 2>&1 || status=1
  "$build/bench/bench_mamba1" >>"$logdir/ours-kernels.log" 2>&1 || status=1
fi
if [[ $parts == *" precision "* ]]; then
  case ${PRECISION:-full} in
    quick) python3 bench/ssd_precision.py --quick "$build/bench/ssd_precision" /tmp/mt-ssd-precision ;;
    *) python3 bench/ssd_precision.py "$build/bench/ssd_precision" /tmp/mt-ssd-precision ;;
  esac >"$logdir/ssd-precision.md" 2>"$logdir/ssd-precision.err" || status=1
fi
table_rows=$rows
[[ $parts == *" train "* ]] || rows=""
[ -z "$rows" ] || : >"$logdir/reference-train.jsonl"
for row in $rows; do
  IFS=: read -r name batch seq <<<"$row"
  python3 bench/reference_bench.py train "$name" "$batch" "$seq" >>"$logdir/reference-train.jsonl" \
    2>>"$logdir/reference-train.err" || { status=1; echo "reference $row failed" >>"$logdir/reference-train.err"; }
  # Ours: 30 steps on generated data (its median counts steps 11-30), into
  # a directory removed after (a final checkpoint is always written).
  out=/tmp/mt-compare-$name-$batch-$seq
  rm -rf "$out"
  "$build/train/mamba-train" --config "configs/$name.ini" --out "$out" --set data.synthetic=selective-copy \
    --set data.synthetic_examples=$((40 * batch + 8)) --set data.seq_len="$seq" --set data.batch_size="$batch" \
    --set train.micro_batches=1 --set train.steps=30 --set train.warmup_steps=5 --set log.log_every=10 \
    --set log.eval_every=0 --set log.checkpoint_every=0 --set log.keep_last=1 \
    >"$logdir/ours-train-$name-$batch-$seq.log" 2>&1 || status=1
  cp "$out/metrics.jsonl" "$logdir/ours-train-$name-$batch-$seq.jsonl" 2>/dev/null
  rm -rf "$out"
  # The table so far, so that a run cut short still leaves its rows.
  python3 bench/compare_table.py "$logdir" "$table_rows" >"$logdir/table.md"
done
python3 bench/compare_table.py "$logdir" "$table_rows" | tee "$logdir/table.md"
echo
echo "SSD precision against a float64 oracle (bench/ssd_precision.py):"
cat "$logdir/ssd-precision.md" 2>/dev/null || echo "(not measured)"
[ $status -eq 0 ] || echo "compare_reference: some runs failed (logs in $logdir)"
exit $status
