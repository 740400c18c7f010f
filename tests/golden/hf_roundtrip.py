#!/usr/bin/env python3
"""Checks a zerotrain export (`zerotrain export`, models/hf_gpt2.h) against PyTorch.

Reads the exported Hugging Face GPT-2 safetensors file with plain struct/json (no safetensors
package), runs it through a GPT-2 forward written here from the GPT-2 definition in Hugging Face's
layout (Conv1D weights [in, out]: y = x @ W + b; tied head: logits = h @ wte.T over the exported
vocabulary), and compares the logits with those zerotrain computed for the same tokens. If the
transformers package is installed, its GPT2LMHeadModel loads the same tensors and is compared too.

Usage: hf_roundtrip.py MODEL.safetensors EXPECTED.safetensors
  EXPECTED holds "tokens" (I64 [B, T]), "logits" (F32 [B, T, vocab]) and metadata n_head.
Exit status 0 and a line containing "match" when every logit agrees; 1 otherwise; 77 without torch.
Run by tests/unit/test_hf_gpt2.cpp (which skips when torch is missing).
"""
import json
import math
import struct
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the C++ test reports a skip, not a failure
    print("hf_roundtrip.py: torch is not installed")
    sys.exit(77)

DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16,
          "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=DTYPES[e["dtype"]]) if end > begin else \
            torch.empty(0, dtype=DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out, meta


def forward(w, idx, n_head):
    """GPT-2 in Hugging Face's layout, f64 for a tight comparison."""
    w = {k: v.double() for k, v in w.items()}
    b, t = idx.shape
    c = w["wte.weight"].shape[1]
    n_layer = len({k.split(".")[1] for k in w if k.startswith("h.")})
    x = w["wte.weight"][idx] + w["wpe.weight"][:t]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for l in range(n_layer):
        p = f"h.{l}."
        h = F.layer_norm(x, (c,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: [C, 3C]
        q, k, v = qkv.split(c, dim=-1)
        heads = lambda z: z.view(b, t, n_head, c // n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c // n_head)
        att = att.masked_fill(~causal, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (c,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (c,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
    return x @ w["wte.weight"].T


def transformers_logits(w, idx, n_head):
    """The same weights through Hugging Face's own GPT2LMHeadModel, when it is installed."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    vocab, c = w["wte.weight"].shape
    n_layer = len({k.split(".")[1] for k in w if k.startswith("h.")})
    cfg = GPT2Config(vocab_size=vocab, n_positions=w["wpe.weight"].shape[0], n_embd=c, n_layer=n_layer,
                     n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).double().eval()
    missing, unexpected = model.transformer.load_state_dict({k: v.double() for k, v in w.items()}, strict=False)
    missing = [m for m in missing if not m.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise SystemExit(f"transformers rejects the export: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        return model(idx).logits


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    weights, _ = read_safetensors(sys.argv[1])
    expected, meta = read_safetensors(sys.argv[2])
    n_head = int(meta["n_head"])
    idx = expected["tokens"].long()
    want = expected["logits"].double()
    checks = [("independent forward", forward(weights, idx, n_head))]
    hf = transformers_logits(weights, idx, n_head)
    if hf is not None:
        checks.append(("transformers GPT2LMHeadModel", hf))
    ok = True
    for name, got in checks:
        if got.shape != want.shape:
            print(f"{name}: logits shape {tuple(got.shape)}, zerotrain's {tuple(want.shape)}")
            ok = False
            continue
        err = (got - want).abs().max().item()
        scale = want.abs().max().item()
        tol = 1e-4 * max(1.0, scale)  # zerotrain computes in f32
        print(f"{name}: max |logit difference| {err:.3g} over {want.numel()} logits (scale {scale:.3g}, "
              f"tolerance {tol:.3g}): {'match' if err <= tol else 'MISMATCH'}")
        ok = ok and err <= tol
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
