#!/usr/bin/env bash
# Where a GPT-2 training step's GPU time goes: every kernel of a few steps under Nsight Compute
# (one metric, the kernel's duration; clocks left as they are), summed by kernel name, next to the
# wall time of the same steps run without the profiler. Kernel time well under wall time means the
# GPU waits on the host (launch overhead, synchronisations); the table says which kernels to speed up.
# Usage: bench/gpt2_profile.sh [BUILD_DIR] [PRESET] [BATCH]   (defaults: build-gpu 124M 16)
# Environment: SKIP (kernels before the profiled range, default 3000: past initialisation and the
# first step), COUNT (kernels profiled, default 3000), ZT_BENCH_SET, BENCH_DIR. Needs ncu on PATH
# or under /opt/nvidia/nsight-compute.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}; preset=${2:-124M}; batch=${3:-16}
out=${BENCH_DIR:-/tmp/zt-bench}/profile-$preset; rm -rf "$out"; mkdir -p "$out"
source bench/lib.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
[ -n "$NCU" ] || { echo "gpt2_profile: ncu not found" >&2; exit 2; }
python3 bench/peers/synth_tokens.py "$out/synth.bin" 5000000 >/dev/null
run() {  # name steps [prefix...]
  local name=$1 steps=$2; shift 2
  "$@" "$build/bin/zerotrain" train examples/gpt2_124m.pbtxt $(zt_bench_args "$out" "$name" "$preset" "$batch" "$steps") \
    --set parallel.dp=1 --set parallel.zero_stage=0 ${ZT_BENCH_SET:-} > "$out/$name.log" 2>&1
}
run wall 12 || { echo "zerotrain failed: $(tail -3 "$out/wall.log")"; exit 1; }
run ncu 4 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --launch-skip "${SKIP:-3000}" --launch-count "${COUNT:-3000}" --log-file "$out/kernels.csv" ||
  echo "ncu run failed: $(tail -3 "$out/ncu.log")"
python3 - "$out" <<'PY'
import csv, json, statistics, sys, collections, re
out = sys.argv[1]
steps = [json.loads(l) for l in open(f"{out}/wall.jsonl")]
steps = [s for s in steps if "tokens_per_second" in s][4:]
wall_ms = statistics.median(s["step_seconds"] * 1e3 for s in steps) if steps and "step_seconds" in steps[0] else None
tps = statistics.median(s["tokens_per_second"] for s in steps) if steps else 0
rows = []
with open(f"{out}/kernels.csv") as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum": continue
    scale = {"second": 1e3, "msecond": 1.0, "usecond": 1e-3, "nsecond": 1e-6}.get(r.get("Metric Unit", "nsecond"), 1e-6)
    rows.append((r["Kernel Name"], float(r["Metric Value"].replace(",", "")) * scale))
by = collections.defaultdict(lambda: [0, 0.0])
for name, ms in rows:
    short = re.sub(r"\(.*", "", name)[:70]
    by[short][0] += 1; by[short][1] += ms
total = sum(ms for _, ms in rows)
# Steps in the profiled range: the embedding forward runs once per step.
marks = sum(c for n, (c, _) in by.items() if "embedding" in n.lower() and "backward" not in n.lower() and "bwd" not in n.lower())
nsteps = max(1, marks // 2)  # token and position embeddings
print(f"zerotrain: {tps:.0f} tokens/s, wall {wall_ms if wall_ms else float('nan'):.2f} ms per step (no profiler)")
print(f"profiled: {len(rows)} kernels, {total:.2f} ms of kernel time, ~{nsteps} steps -> "
      f"{len(rows) / nsteps:.0f} kernels and {total / nsteps:.2f} ms of kernel time per step")
print(f"{'kernel':70} {'count':>6} {'ms':>8} {'share':>6}")
for n, (c, ms) in sorted(by.items(), key=lambda kv: -kv[1][1])[:30]:
    print(f"{n:70} {c:>6} {ms:>8.3f} {ms / total:>6.1%}")
PY
