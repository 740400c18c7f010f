#!/usr/bin/env bash
# The largest GPT that trains on one GPU of a given size, with and without optimizer offload: a few
# steps of a custom GPT-2-shaped model (T=1024, bf16, full activation checkpointing, ZeRO-2 on one
# rank) with zerotrain's allocations capped at CAP GiB (train.device_memory_limit_gib), so a larger
# card stands in for the one being planned for.
# Usage: bench/largest_model.sh BUILD_DIR LAYERS D_MODEL HEADS BATCH [--set ...]
#        e.g. bench/largest_model.sh build-gpu 32 4096 32 4 --set parallel.offload_optimizer=true
#             bench/largest_model.sh build-gpu 50 4096 32 4 --set parallel.offload_optimizer=true \
#               --set parallel.offload_optimizer_fraction=0.65 --set train.grad_accumulation=8
# Environment: CAP (GiB, default 80), STEPS (default 4), BENCH_DIR.
# Prints `zerotrain estimate` for the same settings, then the trainer's last step line and the
# process's peak resident host memory.
set -uo pipefail
cd "$(dirname "$0")/.."
build=$1 layers=$2 dim=$3 heads=$4 batch=$5; shift 5
steps=${STEPS:-4} cap=${CAP:-80}
out=${BENCH_DIR:-/tmp/zt-bench}/largest-${layers}x${dim}; mkdir -p "$out"
source bench/lib.sh
[ -f "$out/synth.bin" ] || python3 bench/peers/synth_tokens.py "$out/synth.bin" 2000000 >/dev/null
rm -rf "$out/ckpt-zerotrain" "$out/zerotrain.jsonl"
model=(--set model.preset=custom --set model.n_layer="$layers" --set model.d_model="$dim" --set model.n_head="$heads"
       --set model.vocab_size=50257 --set model.seq_len=1024)
common=(--set parallel.dp=1 --set parallel.zero_stage=2 --set parallel.activation_checkpointing=full
        --set train.device_memory_limit_gib="$cap")
"$build/bin/zerotrain" estimate examples/gpt2_124m.pbtxt "${model[@]}" "${common[@]}" \
  --set train.micro_batch_size="$batch" "$@" 2>&1 | tail -12
"$build/bin/zerotrain" train examples/gpt2_124m.pbtxt \
  $(zt_bench_args "$out" zerotrain custom "$batch" "$steps") "${model[@]}" "${common[@]}" "$@" \
  > "$out/zerotrain.log" 2>&1 &
pid=$!
hwm=0  # peak resident host memory (kB); page-locked buffers count
while kill -0 $pid 2>/dev/null; do
  v=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || true)
  [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm=$v
  sleep 1
done
wait $pid
rc=$?
grep -E "capped|out of memory|rror" "$out/zerotrain.log" | head -5
tail -2 "$out/zerotrain.log"
echo "peak host memory (VmHWM): $(awk -v k="$hwm" 'BEGIN {printf "%.1f GiB", k / 1048576}')"
echo "exit $rc"
