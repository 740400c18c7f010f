#!/usr/bin/env python3
"""The peer of bench/bench_kernels.cpp: PyTorch eager on the same kernels and shapes (GPT-2 124M,
B*T = 16384 tokens, bf16), timed the same way (CUDA events, warm-up, median of repeats, random
data), printed in the same table and RESULT lines so scripts/gpu-check can pair them.

usage: python3 bench/peer_kernels.py [--repeats N] [--warmup N] [--calls N] [--pause-ms N]
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def time_ms(fn, repeats, warmup, calls, pause_ms=0):
    """GPU ms per call: `calls` back-to-back calls between CUDA events (the launch path hidden, as in
    bench/timing.h), median over `repeats`, after `pause_ms` of idle (bench/timing.h says why)."""
    if pause_ms > 0:
        fn()  # one-time work (plans, autotuning) before the pause, as in bench/timing.h
        torch.cuda.synchronize()
        time.sleep(pause_ms / 1000)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / calls)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--pause-ms", type=int, default=0)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("peer_kernels: no GPU visible; nothing to measure")
        return 0
    torch.manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16
    tokens, c, vocab, valid_vocab = 16384, 768, 50304, 50257
    rows = []  # (name, shape, ms, flops, bytes)
    t = lambda fn: time_ms(fn, a.repeats, a.warmup, a.calls, a.pause_ms)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, device=dev, dtype=bf16) * scale

    with torch.no_grad():
        x, w, b, dy = randn(tokens, c), randn(c), randn(c), randn(tokens, c)
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [c], w, b, 1e-5)
        act = tokens * c * 2
        rows.append(("layernorm_fwd", f"{tokens}x{c} bf16", t(lambda: F.layer_norm(x, (c,), w, b, 1e-5)), 0, 2 * act))
        rows.append(("layernorm_bwd", f"{tokens}x{c} bf16",
                     t(lambda: torch.ops.aten.native_layer_norm_backward(dy, x, [c], mean, rstd, w, b, [True, True, True])),
                     0, 3 * act))
        del x, dy, mean, rstd

        r, tt = 16 * 12 * 1024, 1024
        x, dy = randn(r, tt), randn(r, tt)
        y = torch.softmax(x, -1)
        act = r * tt * 2
        rows.append(("softmax_fwd", f"{r}x{tt} bf16", t(lambda: torch.softmax(x, -1)), 0, 2 * act))
        rows.append(("softmax_bwd", f"{r}x{tt} bf16",
                     t(lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, bf16)), 0, 3 * act))
        del x, dy, y

    # The classifier: cross entropy forward and backward through autograd, as eager training runs it.
    logits = randn(tokens, vocab, scale=2.0).requires_grad_()
    targets = torch.randint(0, valid_vocab, (tokens,), device=dev)

    def classifier():
        logits.grad = None
        loss = F.cross_entropy(logits, targets)
        loss.backward()

    act = tokens * vocab * 2
    rows.append(("classifier_fwd_bwd", f"{tokens}x{vocab} bf16", t(classifier), 0, 3 * act))
    del logits, targets

    with torch.no_grad():
        for name, fin, fout in (("qkv", c, 3 * c), ("attn_proj", c, c), ("fc", c, 4 * c), ("fc_proj", 4 * c, c)):
            x, w, dy = randn(tokens, fin), randn(fout, fin, scale=0.02), randn(tokens, fout)
            flops = 2.0 * tokens * fin * fout
            shape = f"{tokens}x{fin}x{fout}"
            rows.append((f"gemm_{name}_fwd", shape, t(lambda: x @ w.t()), flops, 0))
            rows.append((f"gemm_{name}_bwd_dx", shape, t(lambda: dy @ w), flops, 0))
            rows.append((f"gemm_{name}_bwd_dw", shape, t(lambda: dy.t() @ x), flops, 0))
        x, w, b = randn(tokens, c), randn(4 * c, c, scale=0.02), randn(4 * c)
        rows.append(("linear_fc_bias_gelu", f"{tokens}x{c}x{4 * c}",
                     t(lambda: F.gelu(F.linear(x, w, b), approximate="tanh")), 2.0 * tokens * c * 4 * c, 0))

    # Causal attention at GPT-2 124M's shape: eager's default backend for it (flash attention), and
    # cuDNN's, which eager can be told to use, for reference.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    bh, tt, d = (16, 12), 1024, 64
    q, k, v, dout = (randn(*bh, tt, d).requires_grad_() for _ in range(4))
    fwd_flops = 2.0 * 16 * 12 * tt * tt * d
    for suffix, backends in (("", None), ("_cudnn", [SDPBackend.CUDNN_ATTENTION])):
        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def fwd_bwd():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)

        try:
            if backends:
                with sdpa_kernel(backends):
                    f, fb = t(fwd), t(fwd_bwd)
            else:
                f, fb = t(fwd), t(fwd_bwd)
        except RuntimeError as e:
            print(f"attention{suffix}: {e}".splitlines()[0])
            continue
        rows.append((f"attention_fwd{suffix}", f"16x12x{tt}x{d} causal", f, fwd_flops, 0))
        rows.append((f"attention_fwd_bwd{suffix}", f"16x12x{tt}x{d} causal", fb, 3.5 * fwd_flops, 0))

    # Flash attention's deterministic backward (what torch.use_deterministic_algorithms(True) asks
    # for): the like-for-like peer of zerotrain's default, whose backward gives the same bits every
    # run (Note [Deterministic attention]). Whether PyTorch honoured the request is checked, not
    # assumed: two backward passes must give the same dQ bits.
    def dq_bits():
        q.grad = k.grad = v.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)
        return q.grad.clone()

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        print("flash attention, default mode: dQ bits repeat over 3 pairs of runs:",
              all(torch.equal(dq_bits(), dq_bits()) for _ in range(3)))
    torch.use_deterministic_algorithms(True)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            repeats = all(torch.equal(dq_bits(), dq_bits()) for _ in range(3))
            fb = t(fwd_bwd)
        rows.append(("attention_fwd_bwd_deterministic", f"16x12x{tt}x{d} causal", fb, 3.5 * fwd_flops, 0))
        print(f"flash attention, deterministic mode: dQ bits repeat over 3 pairs of runs: {repeats}")
    except RuntimeError as e:
        print(f"attention_deterministic: {e}".splitlines()[0])
    finally:
        torch.use_deterministic_algorithms(False)

    print(f"# PyTorch {torch.__version__} eager on {torch.cuda.get_device_name(0)}")
    print("\n| kernel | shape | ms | TFLOP/s | GB/s |\n| --- | --- | ---: | ---: | ---: |")
    for name, shape, ms, flops, nbytes in rows:
        tf = f"{flops / (ms * 1e-3) / 1e12:.0f}" if flops else ""
        gb = f"{nbytes / (ms * 1e-3) / 1e9:.0f}" if nbytes else ""
        print(f"| {name} | {shape} | {ms:.3f} | {tf} | {gb} |")
    for name, _, ms, _, _ in rows:
        print(f"RESULT {name} {ms:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
