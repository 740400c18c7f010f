#!/usr/bin/env python3
"""The kernel benchmark table of a scripts/gpu-check run: ours against PyTorch eager, kernel by kernel,
medians over the rounds, with each side's spread over them. Reads LOGS/bench_kernels.R.log,
bench_kernels_tuned.R.log and peer_kernels.R.log (R = 1..ROUNDS), so a fetched run can be summarised again.

usage: python3 bench/kernel_summary.py LOGS ROUNDS
"""
import os
import statistics
import sys

# Our rows whose PyTorch equivalent carries another name: PyTorch's default attention backward (flash)
# accumulates dQ with atomics, so it is the peer of our opt-in non-deterministic backward.
LIKE_FOR_LIKE = {"attention_nondet_fwd_bwd": "attention_fwd_bwd"}


def results(logs, stem, rounds):
    """Per-kernel medians over the rounds' RESULT lines, and every round's figures."""
    runs = {}
    for r in range(1, rounds + 1):
        try:
            for line in open(f"{logs}/{stem}.{r}.log"):
                parts = line.split()
                if len(parts) == 3 and parts[0] == "RESULT":
                    runs.setdefault(parts[1], []).append(float(parts[2]))
        except OSError:
            pass
    return {name: statistics.median(v) for name, v in runs.items()}, runs


def main():
    if len(sys.argv) != 3 or not sys.argv[2].isdigit() or int(sys.argv[2]) < 1 or not os.path.isdir(sys.argv[1]):
        sys.exit("kernel_summary: usage: kernel_summary.py LOGS ROUNDS (LOGS a gpu-check log folder, ROUNDS >= 1)")
    logs, rounds = sys.argv[1], int(sys.argv[2])
    (ours, our_runs), (peer, peer_runs) = results(logs, "bench_kernels", rounds), results(logs, "peer_kernels", rounds)
    tuned, tuned_runs = results(logs, "bench_kernels_tuned", rounds)
    print()
    if rounds > 1:
        for label, runs in (("zerotrain", our_runs), ("zerotrain tuned", tuned_runs), ("PyTorch", peer_runs)):
            spread = [max(v) / min(v) - 1 for v in runs.values() if len(v) > 1 and min(v) > 0]
            if spread:
                print(f"{label}: {rounds} rounds, per-kernel spread (max/min - 1) median "
                      f"{statistics.median(spread):.1%}, largest {max(spread):.1%}")
    tuned_head = f" {'tuned ms':>9} {'torch/tuned':>11}" if tuned else ""
    print(f"{'kernel':<31} {'zerotrain ms':>13} {'torch ms':>10} {'torch/ours':>11}{tuned_head}")
    for name, ms in ours.items():
        p = peer.get(name, peer.get(LIKE_FOR_LIKE.get(name, "")))
        ratio = f"{p / ms:.2f}" if p else "-"
        t = tuned.get(name)
        tuned_cols = ""
        if t and ("gemm" in name or "linear" in name):  # other rows would repeat the default's figures
            tuned_cols = f" {t:>9.3f} {(f'{p / t:.2f}' if p else '-'):>11}"
        print(f"{name:<31} {ms:>13.3f} {(f'{p:.3f}' if p else '-'):>10} {ratio:>11}{tuned_cols}")
    # Peer-only rows measured against our kernel of the same job (attention through cuDNN, say).
    for name, p in peer.items():
        base = name.rsplit("_", 1)[0]
        if name not in ours and base in ours:
            print(f"{name:<31} {ours[base]:>13.3f} {p:>10.3f} {p / ours[base]:>11.2f}")
    if not ours:
        print(f"(no benchmark results: see {logs}/bench_kernels.1.log)")


if __name__ == "__main__":
    main()
