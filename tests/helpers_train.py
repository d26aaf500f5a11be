"""A tokenized training set and config files for run.py tests (tiny models, a few CPU steps)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers_data import DEBIAN, ROOT, TOKENIZER, tokenize_data  # noqa: F401  (tokenize_data is the script)

BEIR_TINY = ROOT / "tests" / "assets" / "beir_tiny"
INSTRUCTION = "Instruct: Given a package summary, retrieve its description\nQuery: "


def make_training_data(folder: Path, rows: int = 12, negatives: int = 2, valid_fraction: float = 0.0,
                       scored: bool = False, *extra: str) -> Path:
    """``rows`` real Debian pairs whose negatives are other rows' positives, tokenized with SmolLM2's tokenizer.

    ``scored``: a second dataset ``scored`` (the next ``rows`` pairs) whose rows carry teacher scores."""
    lines = DEBIAN.read_text().splitlines()
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_pairs(raw / "debian.jsonl", [json.loads(line) for line in lines[:rows]], negatives)
    if scored:
        write_pairs(raw / "scored.jsonl", [json.loads(line) for line in lines[rows:2 * rows]], negatives, scores=True)
    out = folder / "tokenized"
    code = tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(out), "--tokenizer", str(TOKENIZER),
                               "--max_seq_length", "64", "--query_max_length", "32", "--instruction", INSTRUCTION,
                               "--valid_fraction", str(valid_fraction), *extra])
    assert code == 0
    return out


def write_pairs(path: Path, pairs: list, negatives: int, scores: bool = False, instruction: str = "") -> None:
    """JSONL rows: each pair's negatives are the next rows' positives; ``instruction`` is put inline."""
    with open(path, "w") as f:
        for i, p in enumerate(pairs):
            row = {"query": instruction + p["query"], "pos": p["pos"][:1],
                   "neg": [pairs[(i + k + 1) % len(pairs)]["pos"][0] for k in range(negatives)]}
            if scores:
                row.update(pos_scores=[0.9], neg_scores=[round(0.5 - 0.1 * k, 2) for k in range(negatives)])
            f.write(json.dumps(row) + "\n")


def train_rows(data: Path) -> int:
    with open(data / "data_stats.json") as f:
        return json.load(f)["datasets"]["debian"]["train_rows"]


def write_config(folder: Path, mix: str, model_dir: str, data: Path, **overrides) -> Path:
    """``configs/cpu/tiny.<mix>.json`` pointed at ``model_dir`` and ``data``, written under ``folder``."""
    with open(ROOT / "configs" / "cpu" / f"tiny.{mix}.json") as f:
        cfg = json.load(f)
    cfg.update({"model_path": model_dir, "train_data_path": str(data), "output_dir": str(folder / "out"),
                "tb_dir": str(folder / "tb"), "max_seq_length": 64, "query_max_length": 32,
                "passage_max_length": 64, "query_instruction": INSTRUCTION})
    cfg.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{mix}.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def run_cli(args, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
    res = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{args} exited {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


def read_log(run_dir: Path) -> list:
    with open(run_dir / "training_log.jsonl") as f:
        return [json.loads(line) for line in f]
