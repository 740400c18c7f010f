#!/usr/bin/env python3
"""Per-step summary of a CUPTI trace written by libzt_cupti_trace.so (bench/cupti_trace.cpp).

Steps are found by a marker kernel that runs a fixed number of times per step (the embedding
forward: twice, token and position). The first --skip steps are left out (warm-up). Printed per
step: wall time, GPU busy time (union of kernel, copy and memset intervals), kernel, copy and
synchronisation counts, the host's time inside synchronising calls, and the kernels by total time.

usage: python3 bench/trace_summary.py TRACE.csv [--marker embedding_forward_kernel --per-step 2 --skip 3 --top 30]
"""
import argparse
import collections
import csv
import sys


def union_ns(intervals):
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--marker", default="embedding_forward_kernel")
    p.add_argument("--per-step", type=int, default=2)
    p.add_argument("--skip", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    rows = []
    with open(a.trace) as f:
        for r in csv.DictReader(f):
            rows.append((r["kind"], r["name"], int(r["start_ns"]), int(r["end_ns"]), int(r["bytes"])))
    marks = sorted(s for k, n, s, e, b in rows if k == "k" and a.marker in n)
    starts = marks[:: a.per_step]
    if len(starts) < a.skip + 2:
        print(f"trace_summary: only {len(starts)} steps found by marker '{a.marker}'")
        return 1
    t0, t1 = starts[a.skip], starts[-1]
    steps = len(starts) - 1 - a.skip
    window = [r for r in rows if t0 <= r[2] < t1]
    gpu = [r for r in window if r[0] in "kcs"]
    busy = union_ns([(s, e) for _, _, s, e, _ in gpu])
    wall = t1 - t0
    per = lambda x: x / steps
    kernels = [r for r in window if r[0] == "k"]
    copies = [r for r in window if r[0] == "c"]
    syncs = [r for r in window if r[0] == "y"]
    host_sync_names = ("Synchronize", "cudaMemcpy", "cudaFree", "cudaMalloc", "cudaHostAlloc")
    host = collections.defaultdict(lambda: [0, 0])
    for k, n, s, e, _ in window:
        if k == "r":
            host[n][0] += 1
            host[n][1] += e - s
    print(f"{steps} steps: wall {per(wall) / 1e6:.2f} ms/step, GPU busy {per(busy) / 1e6:.2f} ms/step "
          f"({busy / wall:.1%}), idle {per(wall - busy) / 1e6:.2f} ms/step")
    print(f"per step: {per(len(kernels)):.0f} kernels ({per(sum(e - s for _, _, s, e, _ in kernels)) / 1e6:.2f} ms), "
          f"{per(len(copies)):.0f} copies ({per(sum(b for *_, b in copies)) / 1e6:.2f} MB, "
          f"{per(sum(e - s for _, _, s, e, _ in copies)) / 1e6:.3f} ms), {per(len(syncs)):.0f} synchronisations")
    print("\nhost runtime calls per step (count, ms):")
    for n, (c, ns) in sorted(host.items(), key=lambda kv: -kv[1][1])[:12]:
        flag = "  <- waits" if any(h in n for h in host_sync_names) else ""
        print(f"  {n:48} {per(c):>8.1f} {per(ns) / 1e6:>8.3f}{flag}")
    by = collections.defaultdict(lambda: [0, 0])
    for _, n, s, e, _ in kernels:
        by[n][0] += 1
        by[n][1] += e - s
    ktotal = sum(v[1] for v in by.values())
    print(f"\n{'kernel (per step)':88} {'count':>6} {'ms':>7} {'share':>6}")
    for n, (c, ns) in sorted(by.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"{n[:88]:88} {per(c):>6.0f} {per(ns) / 1e6:>7.3f} {ns / ktotal:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
