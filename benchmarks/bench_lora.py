"""LoRA's forward + backward: peft as it comes against l2e's LoRA path, on decoder layers of SmolLM2's shape.

    python benchmarks/bench_lora.py                 # 2 layers, batch 32 x 112 tokens, fp32 and bf16, ~2 min
    python benchmarks/bench_lora.py --quick         # tiny shapes, a few seconds (what the test runs)

Every row trains the same randomly initialised Llama layers (SmolLM2-135M's widths: hidden 576, MLP 1536, 9 query
and 3 key/value heads) with LoRA r=16, alpha 32, dropout 0.05 on all seven projections, in training mode:

- ``peft`` (the peer): peft's own ``lora.Linear`` -- ``nn.Dropout`` per adapted module, then
  ``result + lora_B(lora_A(dropout(x))) * scaling``.
- ``l2e_compact_dropout``: l2e's dropout (:func:`l2e.model.lora.compact_lora_dropout`: keeps a 1-byte mask, not a
  dropped copy, masks drawn by :func:`l2e.model.lora.dropout_keep_mask`), peft's add.
- ``l2e_torch_masks``: as ``l2e`` below, but each mask drawn by torch's CPU generator (``torch.rand_like(x) >= p``,
  what l2e did before ``dropout_keep_mask``): the cost of the draws alone.
- ``l2e``: l2e's dropout plus :func:`l2e.model.lora.fuse_lora_add` (the adapter added into the base output in place),
  which is what ``run.py`` trains with.

Seconds are the median of ``--repeats`` forward + backward passes after one warm-up, all rows in this process
(alternating, so drift in the machine's speed hits every row alike); "saved MB" is what autograd keeps for the
backward pass (each storage once). Peak memory of whole runs is ``bench_memory.py``'s job.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import l2e.model.lora as lora  # noqa: E402
from l2e.model.lora import compact_lora_dropout, fuse_lora_add  # noqa: E402

ROWS = ("peft", "l2e_torch_masks", "l2e_compact_dropout", "l2e")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(row: str, args) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    if args.quick:
        shape = dict(hidden_size=64, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2)
    else:
        shape = dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3)
    cfg = LlamaConfig(vocab_size=256, num_hidden_layers=args.layers, max_position_embeddings=512, **shape)
    model = get_peft_model(LlamaModel(cfg), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                       target_modules=TARGETS))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts lora_B at zero; any values will do for timing
            torch.nn.init.normal_(p, std=0.02)
    if row != "peft":
        compact_lora_dropout(model)
    if row in ("l2e", "l2e_torch_masks"):
        fuse_lora_add(model)
    return model.train()


@contextlib.contextmanager
def masks_for(row: str):
    if row != "l2e_torch_masks":
        yield
        return
    drawn_by_l2e = lora.dropout_keep_mask
    lora.dropout_keep_mask = lambda x, p: (torch.rand_like(x) >= p, 1.0 / (1.0 - p))
    try:
        yield
    finally:
        lora.dropout_keep_mask = drawn_by_l2e


def step(model, hidden: torch.Tensor, precision: str, row: str) -> None:
    with masks_for(row):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = model(inputs_embeds=hidden).last_hidden_state
        out.float().pow(2).mean().backward()


def saved_mb(model, hidden: torch.Tensor, precision: str) -> float:
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            model(inputs_embeds=hidden).last_hidden_state.sum()
    return sum(seen.values()) / 2 ** 20


def measure(args, precision: str) -> list:
    models = {row: build(row, args) for row in ROWS}
    width = models["peft"].base_model.model.config.hidden_size
    hidden = torch.randn(args.batch, args.tokens, width, generator=torch.Generator().manual_seed(1))
    times = {row: [] for row in ROWS}
    for row in ROWS:
        step(models[row], hidden, precision, row)  # warm-up
    for _ in range(args.repeats):
        for row in ROWS:
            models[row].zero_grad(set_to_none=True)
            t = time.perf_counter()
            step(models[row], hidden, precision, row)
            times[row].append(time.perf_counter() - t)
    peer = statistics.median(times["peft"])
    return [{"row": row, "precision": precision, "s": statistics.median(times[row]),
             "vs_peer": peer / statistics.median(times[row]), "saved_mb": saved_mb(models[row], hidden, precision)}
            for row in ROWS]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny widths (the test)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=112, help="positions per row")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--json_out", default="")
    args = p.parse_args(argv)
    rows = [r for precision in args.precision.split(",") for r in measure(args, precision)]
    print(f"{args.layers} layers, batch {args.batch} x {args.tokens} positions, {torch.get_num_threads()} threads; "
          "peer: peft")
    print("\n| row | precision | s / forward+backward | vs peft | saved for backward MB |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['precision']} | {r['s']:.3f} | {r['vs_peer']:.2f}x | {r['saved_mb']:.0f} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
