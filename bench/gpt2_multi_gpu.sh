#!/usr/bin/env bash
# GPT-2 data parallel and ZeRO 1-3 on the GPUs of one node, next to PyTorch DDP and FSDP2 in the same run.
# Usage: bench/gpt2_multi_gpu.sh [BUILD_DIR] [PRESET] [BATCH] [GPUS]   (defaults: build-gpu 124M 16 2)
# Prints tokens/s per GPU, peak memory per GPU (rank 0), and data-parallel scaling against one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}; preset=${2:-124M}; batch=${3:-16}; gpus=${4:-2}; steps=${STEPS:-20}
out=${BENCH_DIR:-/tmp/zt-bench}/multi-$preset; rm -rf "$out"; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
source bench/lib.sh
dims=$(preset_dims "$preset") || exit 2
python3 bench/peers/synth_tokens.py "$out/synth.bin" 40000000 >/dev/null
run_zt() {  # name ranks stage
  local name=$1 ranks=$2 stage=$3
  scripts/zt-mpirun -np "$ranks" "$build/bin/zerotrain" train examples/gpt2_124m.pbtxt \
    $(zt_bench_args "$out" "$name" "$preset" "$batch" "$steps") --set parallel.dp="$ranks" \
    --set parallel.zero_stage="$stage" ${ZT_BENCH_SET:-} > "$out/$name.log" 2>&1 || echo "zerotrain $name failed: $(tail -2 "$out/$name.log")"
}
for s in ${STAGES:-dp1 0 1 2 3}; do
  if [ "$s" = dp1 ]; then run_zt dp1 1 0; else run_zt "zero$s" "$gpus" "$s"; fi
done
for mode in ddp fsdp; do
  torchrun --nproc_per_node "$gpus" bench/peers/torch_fsdp.py --mode $mode $dims --batch "$batch" --tag $mode \
    > "$out/torch_$mode.log" 2>&1 || echo "torch $mode failed: $(tail -2 "$out/torch_$mode.log")"
done
python3 - "$out" "$preset" "$batch" "$gpus" <<'PY'
import json, sys, statistics, os
out, preset, batch, gpus = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def zt(name, ranks):
    p = f"{out}/{name}.jsonl"
    if not os.path.exists(p): return None
    s = [json.loads(l) for l in open(p)]
    s = [x for x in s if "tokens_per_second" in x][5:]
    if not s: return None
    return (statistics.median(x["tokens_per_second"] for x in s) / ranks, max(x["memory_peak"] for x in s) / 2**30)
rows = {}
one = zt("dp1", 1)
if one: rows["zerotrain 1 GPU"] = one
for st in range(4):
    r = zt(f"zero{st}", gpus)
    if r: rows[f"zerotrain ZeRO-{st}" if st else "zerotrain DP (ZeRO-0)"] = r
for mode in ("ddp", "fsdp"):
    try:
        for line in open(f"{out}/torch_{mode}.log"):
            if line.startswith("RESULT"):
                r = json.loads(line[7:])
                tps = r.get("tok_per_s_per_gpu") or r.get("tok_per_s", 0) / max(1, r.get("gpus", gpus))
                rows[f"PyTorch {mode.upper()}"] = (tps, r.get("peak_mem_gib", 0))
    except OSError: pass
fsdp = rows.get("PyTorch FSDP", (0, 0))[0]
print(f"\nGPT-2 {preset}, B={batch} per GPU, T=1024, bf16, {gpus} GPUs")
print(f"{'system':24} {'tok/s/GPU':>10} {'peak GiB':>9} {'vs FSDP2':>9} {'scaling':>8}")
for k, (t, m) in rows.items():
    sc = f"{t / one[0]:.3f}" if one and "1 GPU" not in k and k.startswith("zerotrain") else "-"
    print(f"{k:24} {t:>10.0f} {m:>9.2f} {t / fsdp if fsdp else 0:>9.2f} {sc:>8}")
PY
