#!/usr/bin/env bash
# The two-GPU layouts with and without the memory savers, in one run on a node with 2 GPUs: data parallel
# (ZeRO-2), tensor parallel (with and without sequence parallelism) and pipeline parallel (1F1B), each as is and
# with full activation checkpointing of the first N blocks (the chunked loss comes with it by default), so each
# saver row has its baseline from the same run.
# Usage: bench/gpt2_two_gpu.sh [BUILD_DIR] [PRESET] [BATCH] [CHECKPOINT_BLOCKS]   (defaults: build-gpu 124M 16 7)
# Environment: STEPS (default 20), LAYOUTS (default "dp tp tp_sp pp"; tp needs the preset's head count even),
# BENCH_DIR, ZT_BENCH_SET (more --set flags for every run).
# Prints per run: tokens/s per GPU, rank 0's peak GPU memory, its activation memory (the step's peak less what
# stays allocated between steps) and both against the layout's baseline.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}; preset=${2:-124M}; batch=${3:-16}; blocks=${4:-7}; steps=${STEPS:-20}
out=${BENCH_DIR:-/tmp/zt-bench}/two-gpu-$preset; rm -rf "$out"; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
source bench/lib.sh
preset_dims "$preset" > /dev/null || exit 2
python3 bench/peers/synth_tokens.py "$out/synth.bin" 40000000 >/dev/null
savers="--set parallel.activation_checkpointing=full --set parallel.checkpoint_num_blocks=$blocks"
run_zt() {  # name, then --set flags
  local name=$1; shift
  scripts/zt-mpirun -np 2 "$build/bin/zerotrain" train examples/gpt2_124m.pbtxt \
    $(zt_bench_args "$out" "$name" "$preset" "$batch" "$steps") "$@" ${ZT_BENCH_SET:-} > "$out/$name.log" 2>&1 ||
    echo "zerotrain $name failed: $(tail -2 "$out/$name.log")"
}
for layout in ${LAYOUTS:-dp tp tp_sp pp}; do
  case $layout in
    dp) flags="--set parallel.dp=2 --set parallel.zero_stage=2" ;;
    tp) flags="--set parallel.dp=1 --set parallel.tp=2 --set parallel.zero_stage=0" ;;
    tp_sp) flags="--set parallel.dp=1 --set parallel.tp=2 --set parallel.sequence_parallel=true --set parallel.zero_stage=0" ;;
    # The same 16 sequences a step as one GPU's B=16, as 4 micro-batches of 4 through 2 stages.
    pp) flags="--set parallel.dp=1 --set parallel.pp=2 --set parallel.zero_stage=0 --set train.micro_batch_size=$((batch / 4)) --set train.grad_accumulation=4" ;;
    *) echo "unknown layout $layout (accepted: dp tp tp_sp pp)" >&2; exit 2 ;;
  esac
  run_zt "$layout" $flags
  run_zt "${layout}_savers" $flags $savers
done
python3 - "$out" "$preset" "$batch" "$blocks" ${LAYOUTS:-dp tp tp_sp pp} <<'PY'
import json, sys, statistics, os
out, preset, batch, blocks, layouts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
def zt(name):
    p = f"{out}/{name}.jsonl"
    if not os.path.exists(p): return None
    s = [json.loads(l) for l in open(p)]
    s = [x for x in s if "tokens_per_second" in x][5:]
    if not s: return None
    peak = max(x["memory_peak"] for x in s)
    kept = statistics.median(x["memory_allocated"] for x in s)  # model states and what else outlives a step
    return statistics.median(x["tokens_per_second"] for x in s) / 2, peak / 2**30, (peak - kept) / 2**30
print(f"\nGPT-2 {preset}, B={batch}, T=1024, bf16, 2 GPUs; savers: full checkpointing of the first {blocks} blocks")
print(f"{'run':14} {'tok/s/GPU':>10} {'peak GiB':>9} {'act GiB':>8} {'tok/s ratio':>12} {'act ratio':>10}")
for layout in layouts:
    base = zt(layout)
    for name in (layout, f"{layout}_savers"):
        r = zt(name)
        if not r:
            print(f"{name:14} failed: see {out}/{name}.log"); continue
        ratio = f"{r[0] / base[0]:.2f}" if base else "-"
        act = f"{r[2] / base[2]:.2f}" if base and base[2] > 0 else "-"
        print(f"{name:14} {r[0]:>10.0f} {r[1]:>9.2f} {r[2]:>8.2f} {ratio:>12} {act:>10}")
PY
