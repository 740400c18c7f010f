#!/usr/bin/env bash
# Where a GPT-2 training step's time goes on the GPU: a CUPTI trace (bench/cupti_trace.cpp) of a
# short run, summarised per step by bench/trace_summary.py: wall time against GPU busy time (the
# difference is the GPU waiting on the host: launch overhead, synchronisations), copies and syncs
# per step, and the kernels by total time.
# Usage: bench/gpt2_profile.sh [BUILD_DIR] [PRESET] [BATCH]   (defaults: build-gpu 124M 16)
# Environment: STEPS (default 10), ZT_BENCH_SET (more --set flags), BENCH_DIR. The raw trace is
# left in $BENCH_DIR/profile-PRESET/trace.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}; preset=${2:-124M}; batch=${3:-16}; steps=${STEPS:-10}
out=${BENCH_DIR:-/tmp/zt-bench}/profile-$preset; rm -rf "$out"; mkdir -p "$out"
source bench/lib.sh
lib="$build/lib/libzt_cupti_trace.so"
[ -f "$lib" ] || { echo "gpt2_profile: $lib was not built (needs CUDA with CUPTI)" >&2; exit 2; }
python3 bench/peers/synth_tokens.py "$out/synth.bin" 5000000 >/dev/null
ZT_TRACE_OUT="$out/trace.csv" LD_PRELOAD="$lib" "$build/bin/zerotrain" train examples/gpt2_124m.pbtxt \
  $(zt_bench_args "$out" run "$preset" "$batch" "$steps") --set parallel.dp=1 --set parallel.zero_stage=0 \
  ${ZT_BENCH_SET:-} > "$out/run.log" 2>&1 || { echo "zerotrain failed: $(tail -3 "$out/run.log")"; exit 1; }
tail -2 "$out/run.log"
python3 bench/trace_summary.py "$out/trace.csv"
