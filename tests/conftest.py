"""Test session setup: offline hub, one torch thread (tiny models are ~100x slower with two threads fighting
over two cores), and the repo root importable (run.py, tokenize_data.py, evaluate_mteb.py are scripts)."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the run.py / accelerate subprocesses
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
