#!/usr/bin/env python3
"""Reference data for zerotrain's GPT-2 parity test, computed with PyTorch on the CPU in f32.

A tiny GPT-2 (2 layers, 2 heads, d_model 32, vocabulary 60 padded to 64, context 16) with weights
drawn here, a batch of tokens, and what zerotrain must reproduce: logits, the loss, every parameter
gradient, and the losses of 10 AdamW steps. The model below is written from the GPT-2 definition
(pre-LayerNorm blocks, tanh GeLU, tied embeddings), independently of zerotrain.

Weights use zerotrain's layout: linear weights are [out, in] (Hugging Face's Conv1D stores [in, out]).
Writes gpt2_tiny.safetensors next to this file. Usage: python3 tests/golden/make_gpt2_golden.py
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

L, H, C, V, VP, T, B = 2, 2, 32, 60, 64, 16, 2
LR, BETAS, EPS, WD, STEPS = 1e-3, (0.9, 0.95), 1e-8, 0.1, 10


def make_params(gen):
    def normal(*shape, std=0.02):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).float() * std

    def around(n, center):  # norms and biases away from their init, so their gradients matter
        return center + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64).float()

    p = {"wte.weight": normal(VP, C), "wpe.weight": normal(T, C)}
    for l in range(L):
        q = f"h.{l}."
        p[q + "ln_1.weight"], p[q + "ln_1.bias"] = around(C, 1.0), around(C, 0.0)
        p[q + "attn.c_attn.weight"], p[q + "attn.c_attn.bias"] = normal(3 * C, C, std=0.2), around(3 * C, 0.0)
        p[q + "attn.c_proj.weight"], p[q + "attn.c_proj.bias"] = normal(C, C, std=0.2), around(C, 0.0)
        p[q + "ln_2.weight"], p[q + "ln_2.bias"] = around(C, 1.0), around(C, 0.0)
        p[q + "mlp.c_fc.weight"], p[q + "mlp.c_fc.bias"] = normal(4 * C, C, std=0.2), around(4 * C, 0.0)
        p[q + "mlp.c_proj.weight"], p[q + "mlp.c_proj.bias"] = normal(C, 4 * C, std=0.1), around(C, 0.0)
    p["ln_f.weight"], p["ln_f.bias"] = around(C, 1.0), around(C, 0.0)
    return p


def forward(p, idx):
    b, t = idx.shape
    x = p["wte.weight"][idx] + p["wpe.weight"][:t]
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for l in range(L):
        q = f"h.{l}."
        h = F.layer_norm(x, (C,), p[q + "ln_1.weight"], p[q + "ln_1.bias"], 1e-5)
        qkv = h @ p[q + "attn.c_attn.weight"].T + p[q + "attn.c_attn.bias"]
        qq, kk, vv = qkv.split(C, dim=-1)
        heads = lambda z: z.view(b, t, H, C // H).transpose(1, 2)
        qq, kk, vv = heads(qq), heads(kk), heads(vv)
        att = (qq @ kk.transpose(-1, -2)) / math.sqrt(C // H)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ vv).transpose(1, 2).reshape(b, t, C)
        x = x + y @ p[q + "attn.c_proj.weight"].T + p[q + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p[q + "ln_2.weight"], p[q + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ p[q + "mlp.c_fc.weight"].T + p[q + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p[q + "mlp.c_proj.weight"].T + p[q + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    return x @ p["wte.weight"].T  # tied head, [B, T, VP]


def loss_of(logits, targets):
    return F.cross_entropy(logits[..., :V].reshape(-1, V), targets.reshape(-1))


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
    os.replace(path + ".tmp", path)


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20240520)
    params = {k: v.requires_grad_(True) for k, v in make_params(gen).items()}
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    idx, targets = tokens[:, :-1], tokens[:, 1:]

    logits = forward(params, idx)
    loss = loss_of(logits, targets)
    loss.backward()
    out = {"param." + k: v.detach().clone() for k, v in params.items()}
    out.update({"grad." + k: v.grad.detach().clone() for k, v in params.items()})
    out["tokens"] = tokens
    out["logits"] = logits.detach()
    out["loss"] = loss.detach().reshape(1)

    decay = [v for k, v in params.items() if v.dim() >= 2]
    no_decay = [v for k, v in params.items() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        step_loss = loss_of(forward(params, idx), targets)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    meta = {"n_layer": str(L), "n_head": str(H), "d_model": str(C), "vocab_size": str(V), "padded_vocab": str(VP),
            "seq_len": str(T), "batch": str(B), "lr": str(LR), "beta1": str(BETAS[0]), "beta2": str(BETAS[1]),
            "eps": str(EPS), "weight_decay": str(WD), "torch": torch.__version__}
    write_safetensors(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2_tiny.safetensors"), out, meta)
    print(f"loss {loss.item():.6f}; after {STEPS} AdamW steps {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
