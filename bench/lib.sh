# Shared by the training benchmarks: the PyTorch peers' model flags for a GPT-2 preset.
preset_dims() {
  case $1 in
    124M) echo "--layers 12 --heads 12 --dim 768";;
    350M) echo "--layers 24 --heads 16 --dim 1024";;
    774M) echo "--layers 36 --heads 20 --dim 1280";;
    1.5B) echo "--layers 48 --heads 25 --dim 1600";;
    *) echo "unknown preset $1 (accepted: 124M, 350M, 774M, 1.5B)" >&2; return 2;;
  esac
}
