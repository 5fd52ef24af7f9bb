#!/usr/bin/env python3
"""The pipeline peer: the same GPT as a DeepSpeed PipelineModule, trained by DeepSpeed's PipelineEngine.

The model is scripts/peer/gpt_pytorch.py's (read from the same libpipe model file), written the
way DeepSpeed's pipeline users write it: LayerSpecs for the blocks and the final LayerNorm, a
TiedLayerSpec for the token embedding and, with forward_fn, for the LM head that shares its
weight; cross-entropy as the PipelineModule's loss_fn; libpipe's AdamW settings; the layers split
by `--partition-method` (default `type:Block`, the same split as pipe-train's
`type:TransformerBlock`). On the CPU it runs over gloo with one thread per rank.

Launch one process per stage with mpirun (each rank reads its rank from Open MPI's environment):
    mpirun -np 2 $(scripts/peer/venv) scripts/peer/gpt_deepspeed.py --stages 2 --json
Prints, from rank 0, tokens/s and the step time: the mean over the steps after the warm-up ones,
each step being one `train_batch` of `--micro-batches` micro-batches. scripts/bench-pipeline runs it
beside pipe-train.
"""
import argparse
import json
import os
import sys
import time

# DeepSpeed reads the process group from torchrun's variables; mpirun sets Open MPI's.
for ours, ompi in (("RANK", "OMPI_COMM_WORLD_RANK"), ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"),
                   ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")):
    os.environ.setdefault(ours, os.environ.get(ompi, "0" if ours != "WORLD_SIZE" else "1"))
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29517")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import deepspeed  # noqa: E402
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_pytorch import Block, adamw, gpt2_init, read_gpt  # noqa: E402


class TokenEmbedding(nn.Module):
    """The token embedding; its weight is tied to the LM head's through TiedLayerSpec."""

    def __init__(self, vocab, dim):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)

    def forward(self, tokens):
        return self.wte(tokens)


def lm_head(embedding, x):
    return x @ embedding.wte.weight.t()


class PositionEmbedding(nn.Module):
    def __init__(self, positions, dim):
        super().__init__()
        self.wpe = nn.Embedding(positions, dim)

    def forward(self, x):
        return x + self.wpe(torch.arange(x.shape[1]))


class FinalNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, x):
        return self.ln_f(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="share/models/gpt-tiny.toml")
    p.add_argument("--stages", type=int, default=1)
    p.add_argument("--micro-batches", type=int, default=8)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the mean")
    p.add_argument("--partition-method", default="type:Block")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.steps <= a.warmup:
        p.error(f"--steps {a.steps} must exceed --warmup {a.warmup}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    m = read_gpt(a.model)
    c = m["dim"]
    layers = [TiedLayerSpec("embedding", TokenEmbedding, m["vocab"], c, tied_weight_attr="wte.weight"),
              LayerSpec(PositionEmbedding, m["positions"], c),
              *[LayerSpec(Block, c, m["heads"], m["ratio"]) for _ in range(m["blocks"])],
              LayerSpec(FinalNorm, c),
              TiedLayerSpec("embedding", TokenEmbedding, m["vocab"], c, forward_fn=lm_head,
                            tied_weight_attr="wte.weight")]

    def loss_fn(logits, labels):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    net = PipelineModule(layers=layers, num_stages=a.stages, loss_fn=loss_fn, partition_method=a.partition_method,
                         activation_checkpoint_interval=0)
    gpt2_init(net, m["blocks"])
    with torch.no_grad():  # each stage drew its own copy of the tied embedding: make them one again
        net._synchronize_tied_weights()
    config = {"train_micro_batch_size_per_gpu": a.micro_batch_size, "gradient_accumulation_steps": a.micro_batches,
              "steps_per_print": 10**9, "wall_clock_breakdown": False}
    engine, _, _, _ = deepspeed.initialize(model=net, optimizer=adamw(net.parameters(), a.lr), config=config)

    generator = torch.Generator().manual_seed(1)

    def batches():
        while True:
            shape = (a.micro_batch_size, m["seq"])
            yield (torch.randint(0, m["vocab"], shape, generator=generator),
                   torch.randint(0, m["vocab"], shape, generator=generator))

    data = batches()
    times, losses = [], []
    for _ in range(a.steps):
        torch.distributed.barrier()
        t0 = time.perf_counter()
        losses.append(float(engine.train_batch(data_iter=data)))
        times.append(time.perf_counter() - t0)
    mean = sum(times[a.warmup:]) / len(times[a.warmup:])
    tokens = a.micro_batches * a.micro_batch_size * m["seq"]
    if torch.distributed.get_rank() == 0:
        result = dict(benchmark="train-deepspeed", model=m["name"], stages=a.stages, micro_batches=a.micro_batches,
                      micro_batch_size=a.micro_batch_size, steps=a.steps, warmup=a.warmup,
                      partition_method=a.partition_method, torch=torch.__version__, deepspeed=deepspeed.__version__,
                      step_ms=1e3 * mean, tokens_per_s=tokens / mean, first_loss=losses[0], last_loss=losses[-1])
        if a.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"# DeepSpeed {deepspeed.__version__} PipelineEngine, PyTorch {torch.__version__}, gloo, 1 thread/rank")
            print(f"  {m['name']} {a.stages} stage(s), {a.micro_batches} x {a.micro_batch_size}: step "
                  f"{1e3 * mean:.1f} ms, {tokens / mean:,.0f} tokens/s, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == "__main__":
    main()
