# Shared by the training benchmarks: the PyTorch peers' model flags for a GPT-2 preset, and the
# zerotrain flags for a synthetic-data benchmark run.
preset_dims() {
  case $1 in
    124M) echo "--layers 12 --heads 12 --dim 768";;
    350M) echo "--layers 24 --heads 16 --dim 1024";;
    774M) echo "--layers 36 --heads 20 --dim 1280";;
    1.5B) echo "--layers 48 --heads 25 --dim 1600";;
    *) echo "unknown preset $1 (accepted: 124M, 350M, 774M, 1.5B)" >&2; return 2;;
  esac
}

# zt_bench_args DIR NAME PRESET BATCH STEPS: `zerotrain train` overrides for a benchmark run on
# DIR/synth.bin (bf16, no validation, samples or checkpoints, a line and a JSONL record per step
# in DIR/NAME.jsonl). Callers add their own --set flags after these.
zt_bench_args() {
  local dir=$1 name=$2 preset=$3 batch=$4 steps=$5
  echo --set model.preset="$preset" --set train.device=cuda --set train.micro_batch_size="$batch" \
    --set train.grad_accumulation=1 --set train.steps="$steps" --set schedule.warmup_steps=2 \
    --set precision.dtype=bf16 --set data.train="$dir/synth.bin" --set data.tokenizer=byte --set data.val= \
    --set data.val_every=0 --set logging.every=1 --set logging.sample_every=0 \
    --set logging.metrics_jsonl="$dir/$name.jsonl" --set checkpoint.dir="$dir/ckpt-$name" --set checkpoint.every=0 \
    --set checkpoint.save_at_end=false --set checkpoint.resume=none
}
