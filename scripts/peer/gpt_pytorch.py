#!/usr/bin/env python3
"""The peer: the same GPT as a libpipe model file, trained in PyTorch eager.

Reads a shipped GPT model file (share/models/gpt-*.toml) so that both sides
run the same architecture and sizes: token + learned position embedding, pre-LN
blocks with fused qkv attention (causal, 1/sqrt(D)) and a 4x GELU(tanh) MLP, a
final LayerNorm, an LM head tied to the embedding, cross-entropy, AdamW with
the same settings as libpipe's default (betas 0.9/0.95, weight decay 0.1 on
tensors of 2 or more dimensions). Prints tokens/s like `pipe-bench train`.

Run pinned to one core with one thread for the side-by-side comparison:
    taskset -c 0 $(scripts/peer/venv) scripts/peer/gpt_pytorch.py --model share/models/gpt-tiny.toml
(scripts/bench-vs-pytorch does both sides in one command; scripts/peer/venv installs the current
PyTorch from PyPI into a virtual environment under the build directory.)
"""
import argparse
import json
import math
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_gpt(path):
    with open(path, "rb") as f:
        spec = tomllib.load(f)
    layers = spec["layer"]
    emb = next(l for l in layers if l["type"] == "Embedding")
    block = next(l for l in layers if l["type"] == "TransformerBlock")
    n_blocks = sum(l.get("repeat", 1) for l in layers if l["type"] == "TransformerBlock")
    return dict(name=spec["model"].get("name", path), vocab=emb["vocab"], dim=emb["dim"],
                positions=emb["positions"], seq=spec["model"]["input_shape"][0], heads=block["heads"],
                ratio=block.get("mlp_ratio", 4), blocks=n_blocks)


def gpt2_init(module, blocks):
    """GPT-2's initialisation, as libpipe's layers do it (LayerNorms keep PyTorch's ones and zeros)."""
    for name, q in module.named_parameters():
        if q.dim() >= 2:
            std = 0.02 / math.sqrt(2 * blocks) if name.endswith(("proj.weight", "out.weight")) else 0.02
            nn.init.normal_(q, 0.0, std)
        elif "ln" not in name:
            nn.init.zeros_(q)


def adamw(params, lr):
    """libpipe's default AdamW: betas 0.9/0.95, weight decay 0.1 on tensors of 2 or more dimensions."""
    params = list(params)
    return torch.optim.AdamW([{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
                              {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


class Block(nn.Module):
    def __init__(self, c, heads, ratio):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, ratio * c)
        self.out = nn.Linear(ratio * c, c)

    def attention(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.wte = nn.Embedding(m["vocab"], m["dim"])
        self.wpe = nn.Embedding(m["positions"], m["dim"])
        self.blocks = nn.ModuleList(Block(m["dim"], m["heads"], m["ratio"]) for _ in range(m["blocks"]))
        self.ln_f = nn.LayerNorm(m["dim"])
        gpt2_init(self, m["blocks"])

    def forward(self, tokens, labels):
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # the head tied to the embedding
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="share/models/gpt-tiny.toml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = read_gpt(a.model)
    model = GPT(m)
    opt = adamw(model.parameters(), a.lr)
    tokens = torch.randint(0, m["vocab"], (a.batch, m["seq"]))
    labels = torch.randint(0, m["vocab"], (a.batch, m["seq"]))

    def step():
        loss = model(tokens, labels)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    losses = [step() for _ in range(a.steps)]
    elapsed = time.perf_counter() - t0
    params = sum(q.numel() for q in model.parameters())
    tokens_per_s = a.batch * m["seq"] * a.steps / elapsed
    result = dict(benchmark="train-pytorch", model=m["name"], params=params, batch=a.batch, steps=a.steps,
                  threads=a.threads, torch=torch.__version__, step_ms=1e3 * elapsed / a.steps,
                  tokens_per_s=tokens_per_s, first_loss=losses[0], last_loss=losses[-1])
    if a.json:
        print(json.dumps(result))
    else:
        print(f"# PyTorch {torch.__version__} eager, {a.threads} thread(s)")
        print(f"  {m['name']:>10} {params:>11,} batch {a.batch} step {1e3 * elapsed / a.steps:.2f} ms "
              f"{tokens_per_s:,.0f} tokens/s  loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
