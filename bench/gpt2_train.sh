#!/usr/bin/env bash
# GPT-2 training throughput on one GPU: zerotrain next to PyTorch eager and torch.compile in the same run.
# Usage: bench/gpt2_train.sh [BUILD_DIR] [PRESET] [BATCH]   (defaults: build-gpu 124M 16)
# Environment: STEPS (default 30), PEERS (default "eager compile"; empty for zerotrain alone),
# ZT_BENCH_SET (more --set flags for zerotrain), BENCH_DIR.
# Prints one table: tokens/s, TFLOP/s (6N + 12LTC per token), peak GPU memory, and ratios to the peers.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}; preset=${2:-124M}; batch=${3:-16}; steps=${STEPS:-30}
out=${BENCH_DIR:-/tmp/zt-bench}/train-$preset; mkdir -p "$out"
source bench/lib.sh
dims=$(preset_dims "$preset") || exit 2
python3 bench/peers/synth_tokens.py "$out/synth.bin" 20000000 >/dev/null
rm -rf "$out/ckpt-zerotrain" "$out/zerotrain.jsonl"
"$build/bin/zerotrain" train examples/gpt2_124m.pbtxt $(zt_bench_args "$out" zerotrain "$preset" "$batch" "$steps") \
  --set parallel.dp=1 --set parallel.zero_stage=0 ${ZT_BENCH_SET:-} > "$out/zerotrain.log" 2>&1
zt_rc=$?
tail -3 "$out/zerotrain.log"
for mode in ${PEERS-eager compile}; do
  flag=""; [ $mode = compile ] && flag=--compile
  python3 bench/peers/torch_gpt2.py $dims --batch "$batch" --seq 1024 --steps 20 $flag --tag $mode > "$out/torch_$mode.log" 2>&1
done
python3 - "$out" "$preset" "$batch" "$zt_rc" <<'PY'
import json, sys, statistics, glob
out, preset, batch, rc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = {}
for mode in ("eager", "compile"):
    try:
        for line in open(f"{out}/torch_{mode}.log"):
            if line.startswith("RESULT"):
                r = json.loads(line[7:]); rows[f"PyTorch {mode}"] = (r["tok_per_s"], r["tflops"], r["peak_mem_gib"])
    except OSError:
        pass
steps = [json.loads(l) for l in open(f"{out}/zerotrain.jsonl")] if rc == 0 else []
steps = [s for s in steps if "tokens_per_second" in s][5:]
if steps:
    tps = statistics.median(s["tokens_per_second"] for s in steps)
    mfu = statistics.median(s.get("mfu", 0) for s in steps)
    peak = max(s["memory_peak"] for s in steps) / 2**30
    rows["zerotrain"] = (round(tps), round(mfu * 989, 1), round(peak, 2))
print(f"\nGPT-2 {preset}, B={batch}, T=1024, bf16, one GPU")
print(f"{'system':18} {'tokens/s':>10} {'TFLOP/s':>8} {'peak GiB':>9} {'vs eager':>9} {'vs compile':>10}")
for k, (t, f, m) in rows.items():
    e = rows.get("PyTorch eager", (0,))[0]; c = rows.get("PyTorch compile", (0,))[0]
    print(f"{k:18} {t:>10} {f:>8} {m:>9} {t / e if e else 0:>9.2f} {t / c if c else 0:>10.2f}")
if rc: print(f"zerotrain failed (exit {rc}); see {out}/zerotrain.log")
PY
