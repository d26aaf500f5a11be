"""The GPU paths of the trainer, timed: run by benchmarks/gpu_check.sh (see there); needs CUDA.

Each row is ``run.py`` on the embedded Debian sample for a few bf16 steps; a row whose package is missing
(flash-attn, deepspeed, bitsandbytes) is reported as skipped with the reason, never silently dropped.
MFU: 6 x non-embedding parameters x real tokens per step (4x under LoRA, +2x for GradCache's extra forward)
over the step time, divided by the bf16 matmul peak measured here first.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SAMPLE = os.path.join(ROOT, "data", "sample", "debian")
INSTRUCTIONS = os.path.join(ROOT, "data", "sample", "instructions.json")
TOKENIZER = os.path.join(ROOT, "tests", "assets", "smollm2_tokenizer")
BASE_CONFIG = "configs/cpu/tiny.f2llm.json"  # every row is this config with its overrides (rows())


def bf16_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - t) / 1e12


def rows(out: str):
    """name -> (model arch, accelerate config or None, run.py --set overrides, required package)."""
    base = {"torch_dtype": "bfloat16", "train_batch_size": 64, "train_steps": 12, "log_interval": 1,
            "checkpointing_steps": 1000, "validation_steps": 1000, "num_hard_neg": 0, "bi_attn_enabled": True,
            "pooling_mode": "mean", "length_bucketing": True, "max_seq_length": 256, "query_max_length": 64,
            "passage_max_length": 256, "warmup_steps": 1, "eval_data_dir": ""}
    lora = {"lora_enabled": True, "learning_rate": 5e-4}
    return {
        "tiny_sdpa": ("qwen3", None, base, None),
        "qwen3-0.6b_sdpa": ("qwen3-0.6b", None, base, None),
        "qwen3-0.6b_flash_attention_2": ("qwen3-0.6b", None, {**base, "attn_implementation": "flash_attention_2"},
                                         "flash_attn"),
        "qwen3-0.6b_deepspeed_zero2": ("qwen3-0.6b", "configs/accelerate_config.yaml", base, "deepspeed"),
        "qwen3-0.6b_qlora_4bit": ("qwen3-0.6b", None, {**base, **lora, "quantization": "4bit"}, "bitsandbytes"),
        "qwen3-0.6b_lora_gradcache": ("qwen3-0.6b", None, {**base, **lora, "grad_cache": True,
                                                         "grad_cache_mini_batch": 16, "train_batch_size": 256}, None),
    }


def tokenized_dir(out: str) -> str:
    """The embedded sample, tokenized once: every row trains on it."""
    return os.path.join(out, "tokenized")


def row_sets(name: str, arch: str, overrides: dict, out: str) -> dict:
    """The ``run.py --set`` keys of one row: its overrides and where its model, data and run go."""
    return {**overrides, "model_path": os.path.join(out, "models", arch),
            "train_data_path": tokenized_dir(out), "experiment_id": name,
            "output_dir": os.path.join(out, "runs"), "tb_dir": os.path.join(out, "tb")}


def row_command(name: str, arch: str, accel, overrides: dict, out: str) -> list:
    from l2e.config import format_overrides

    launch = ["-m", "accelerate.commands.launch", "--config_file", accel, "--num_processes", "1"] if accel else []
    cmd = [sys.executable, *launch, "run.py", "--config", BASE_CONFIG, "--overwrite"]
    for override in format_overrides(row_sets(name, arch, overrides, out)):
        cmd += ["--set", override]
    return cmd


def check_rows(out: str) -> list:
    """Every row's resolved config, validated the way run.py validates it, on any machine (no CUDA, no model):
    a GPU lease is minutes long, so a misspelt key must fail here rather than there."""
    from l2e.config import format_overrides, load_config

    return [load_config(os.path.join(ROOT, BASE_CONFIG), format_overrides(row_sets(name, arch, overrides, out)),
                        check_paths=False)
            for name, (arch, _accel, overrides, _needs) in rows(out).items()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=os.path.join(ROOT, "output", "gpu_check"))
    p.add_argument("--only", default="", help="comma-separated rows to run (default: all)")
    p.add_argument("--row_timeout", type=int, default=300,
                   help="seconds before a row is stopped and reported as an error (a GPU lease is short)")
    p.add_argument("--check", action="store_true",
                   help="only validate every row's config (no GPU needed) and exit")
    args = p.parse_args(argv)
    if args.check:
        for config in check_rows(args.out):
            print(f"ok: {config.experiment_id}")
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device; this check needs a GPU (the CPU paths are covered by make test)")
    peak = bf16_peak_tflops()
    data = tokenized_dir(args.out)
    if not os.path.isdir(data):
        subprocess.run([sys.executable, "tokenize_data.py", "--input_dir", SAMPLE, "--output_dir", data, "--tokenizer",
                        TOKENIZER, "--max_seq_length", "256", "--query_max_length", "64",
                        "--instructions_file", INSTRUCTIONS], cwd=ROOT, check=True)
    results = []
    for name, (arch, accel, overrides, needs) in rows(args.out).items():
        if args.only and name not in args.only.split(","):
            continue
        if needs and importlib.util.find_spec(needs) is None:
            results.append({"row": name, "skipped": f"{needs} not installed"})
            continue
        results.append(run_row(name, arch, accel, overrides, args.out, args.row_timeout, peak))
        print(json.dumps(results[-1]), flush=True)
    text = f"bf16 matmul peak: {peak:.0f} TFLOP/s on {torch.cuda.get_device_name()}\n\n" + table(results)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


def run_row(name: str, arch: str, accel, overrides: dict, out: str, timeout: int, peak: float) -> dict:
    """One row: its model made once per architecture, run.py in its own process (its whole output in
    ``logs/ROW.log``), then measured -- or an error naming the log."""
    from l2e.model.tiny import save_tiny_model

    sets = row_sets(name, arch, overrides, out)
    if not os.path.isdir(sets["model_path"]):
        save_tiny_model(arch, sets["model_path"])
    log = os.path.join(out, "logs", f"{name}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    t = time.perf_counter()
    try:
        with open(log, "w") as f:
            code = subprocess.run(row_command(name, arch, accel, overrides, out), cwd=ROOT, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return {"row": name, "error": f"stopped after {timeout} s (--row_timeout); see {log}"}
    if code:
        with open(log) as f:
            last = (f.read().strip().splitlines() or ["?"])[-1]
        return {"row": name, "error": f"exit {code}: {last[:200]} (whole output: {log})"}
    return measure(name, os.path.join(sets["output_dir"], name), overrides, peak, time.perf_counter() - t)


def measure(name: str, run_dir: str, overrides: dict, peak: float, wall: float) -> dict:
    from transformers import AutoConfig

    with open(os.path.join(run_dir, "training_log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "training_summary.json")) as f:
        summary = json.load(f)
    steps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(log, log[1:])][2:]
    s_per_step = statistics.median(steps)
    tokens = statistics.median(r["tokens_per_s"] * s for r, s in zip(log[3:], steps))  # real tokens per step
    import torch
    from transformers import AutoModel

    with torch.device("meta"):  # the architecture's exact parameter count, no memory
        model = AutoModel.from_config(AutoConfig.from_pretrained(os.path.join(run_dir, "final")))
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    factor = (4 if overrides.get("lora_enabled") else 6) + (2 if overrides.get("grad_cache") else 0)
    mfu = factor * n * tokens / s_per_step / 1e12 / peak
    return {"row": name, "s_per_step": s_per_step, "tokens_per_step": tokens, "mfu": mfu,
            "peak_gpu_gb": summary.get("peak_gpu_gb"), "wall_s": wall}


def table(results) -> str:
    lines = ["| row | s/step | tokens/step | MFU | peak GPU GB |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if "s_per_step" not in r:
            lines.append(f"| {r['row']} | {r.get('skipped') or 'error: ' + r.get('error', '')} | | | |")
        else:
            lines.append(f"| {r['row']} | {r['s_per_step']:.3f} | {r['tokens_per_step']:.0f} | {100 * r['mfu']:.0f}% | "
                         f"{r['peak_gpu_gb']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
