"""Small raw datasets and a one-call tokenize run, shared by test_data.py and test_tokenize_data.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tokenize_data.py is a top-level script, not part of the l2e package
    sys.path.insert(0, str(ROOT))

import tokenize_data  # noqa: E402

TOKENIZER = ROOT / "tests" / "assets" / "smollm2_tokenizer"
DEBIAN = ROOT / "data" / "sample" / "debian" / "train.jsonl"
EOS = 2
INSTRUCTION = "Instruct: Given a package summary, retrieve its description\nQuery: "
SCORED_INSTRUCTION = "Instruct: Group animals\nQuery: "
ANIMAL_PROMPT = "Instruct: Cluster animal sentences\nQuery: "

# Negatives repeat across rows and one row's positive is another's negative: 4 distinct texts in all.
PAIRS = {
    "query": ["red fruit", "yellow fruit", "small red fruit", "green fruit"],
    "passage": ["apple", "banana", "cherry", "kiwi"],
    "negative_1": ["banana", "apple", "apple", "apple"],
    "negative_2": ["cherry", "cherry", "banana", "banana"],
}

SCORED = [
    {"query": "cats", "pos": ["a cat sat", "kittens play"], "neg": ["dogs bark"], "prompt": ANIMAL_PROMPT,
     "type": "clustering", "pos_scores": [0.9, 0.8], "neg_scores": [0.1]},
    {"query": "dogs", "pos": ["dogs bark"], "neg": ["a cat sat", "kittens play"], "prompt": "", "type": "clustering",
     "pos_scores": [0.7], "neg_scores": [0.2, 0.3]},
    {"query": "birds", "pos": ["birds sing"], "neg": [], "type": "clustering", "pos_scores": [0.5]},
]


def write_jsonl(path: Path, rows: List[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, columns: Dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def debian_rows(n: int) -> List[dict]:
    with open(DEBIAN) as f:
        return [json.loads(next(f)) for _ in range(n)]


def make_inputs(folder: Path, debian_lines: int = 300) -> Path:
    """debian.jsonl (real sample cut, plus row 1's query again at the end with another positive),
    pairs.parquet (F2LLM-style) and scored.jsonl (prompt, type, scores, two positives in a row)."""
    rows = debian_rows(debian_lines)
    rows.append({"query": rows[1]["query"], "pos": [rows[2]["pos"][0]], "neg": []})
    write_jsonl(folder / "debian.jsonl", rows)
    write_parquet(folder / "pairs.parquet", PAIRS)
    write_jsonl(folder / "scored.jsonl", SCORED)
    (folder.parent / "instructions.json").write_text(json.dumps({"scored": SCORED_INSTRUCTION}))
    return folder


def tokenize_args(input_dir: Path, output_dir: Path, *extra: str) -> List[str]:
    """The standard test run: short max lengths so that many texts are truncated."""
    return [
        "--input_dir", str(input_dir), "--output_dir", str(output_dir), "--tokenizer", str(TOKENIZER),
        "--max_seq_length", "128", "--query_max_length", "32", "--passage_max_length", "64",
        "--instruction", INSTRUCTION, "--instructions_file", str(input_dir.parent / "instructions.json"),
        "--task_types", "pairs=classification", "--valid_fraction", "0.2", "--batch_size", "64", *extra,
    ]


def run_tokenize(input_dir: Path, output_dir: Path, *extra: str) -> Path:
    assert tokenize_data.main(tokenize_args(input_dir, output_dir, *extra)) == 0
    return output_dir


def read_rows(folder: Path, split: str) -> List[dict]:
    return pq.read_table(folder / f"{split}.parquet").to_pylist()


def read_passages(folder: Path) -> List[List[int]]:
    return pq.read_table(folder / "passages.parquet").column("input_ids").to_pylist()
