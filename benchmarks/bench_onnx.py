"""ONNX Runtime (fp32 and dynamic int8) against l2e's torch model: encoding speed and vector agreement.

    python -m l2e.onnx_export --ckpt_dir output/smollm2.recipe/final --int8      # once: onnx/model{,_qint8}.onnx
    python benchmarks/bench_onnx.py --final output/smollm2.recipe/final          # ~6 min on 2 cores
    # quality: nDCG@10 of the int8 graph on dev-small (the torch row is the checkpoint's own evaluation)
    python evaluate_mteb.py --ckpt_dir output/smollm2.recipe/final --onnx onnx/model_qint8.onnx --data_dir data/dev-small

The peer is l2e's own torch model (``Embedder.from_checkpoint``), run in the same process on the same texts
(the first ``--n`` documents and queries of ``data/dev-small``, length-sorted batches of 32, the same threads).
Per engine: seconds for documents and for queries (best of ``--repeats``), texts/s, speed-up against torch, and
the largest cosine distance of any vector from torch's (1 - cos). Writes ``--out``/onnx.json and prints a
Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def read(name: str, key: str, n: int) -> list:
    with open(os.path.join(ROOT, "data/dev-small", name)) as f:
        return [json.loads(line)[key] for _, line in zip(range(n), f)]


def timed(encode, texts, repeats: int):
    best, vecs = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        vecs = encode(texts, batch_size=32)
        best = min(best, time.perf_counter() - t)
    return best, vecs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--final", default="output/smollm2.recipe/final")
    p.add_argument("--n", type=int, default=500, help="documents and queries encoded per engine")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="0 = torch's thread count, used by every engine")
    p.add_argument("--out", default="output/bench_onnx")
    args = p.parse_args(argv)

    import torch

    from l2e.retrieval.embedder import Embedder

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    docs, queries = read("corpus.jsonl", "text", args.n), read("queries.jsonl", "text", args.n)
    engines = [("torch (peer)", lambda: Embedder.from_checkpoint(args.final))]
    for label, name in [("ONNX Runtime fp32", "onnx/model.onnx"), ("ONNX Runtime int8", "onnx/model_qint8.onnx")]:
        if not os.path.isfile(os.path.join(args.final, name)):
            raise SystemExit(f"error: {os.path.join(args.final, name)} is missing; run python -m l2e.onnx_export "
                             f"--ckpt_dir {args.final} --int8 first")
        engines.append((label, lambda name=name: Embedder.from_onnx(args.final, name, threads=threads)))

    rows, ref = [], None
    for label, load in engines:
        embedder = load()
        doc_s, doc_v = timed(embedder.encode, docs, args.repeats)
        q_s, q_v = timed(embedder.encode_queries, queries, args.repeats)  # the stored instruction, query length
        if ref is None:
            ref = (doc_v, q_v)
        dist = max(float((1 - (v * r).sum(1)).max()) for v, r in zip((doc_v, q_v), ref))
        rows.append({"engine": label, "docs_s": doc_s, "queries_s": q_s, "docs_per_s": len(docs) / doc_s,
                     "queries_per_s": len(queries) / q_s, "max_cosine_distance": dist})
        print(f"{label}: docs {doc_s:.1f} s, queries {q_s:.1f} s, max 1-cos {dist:.1e}", flush=True)
        del embedder
    base = rows[0]["docs_s"] + rows[0]["queries_s"]
    for r in rows:
        r["speedup"] = base / (r["docs_s"] + r["queries_s"])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "onnx.json"), "w") as f:
        json.dump({"final": args.final, "n": args.n, "threads": threads, "rows": rows}, f, indent=2)
    print(f"\n{args.n} documents + {args.n} queries of data/dev-small, batch 32, {threads} threads, best of "
          f"{args.repeats}\n")
    print("| engine | documents s | queries s | docs/s | speed-up vs torch | max 1 - cos vs torch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']} | {r['docs_s']:.1f} | {r['queries_s']:.1f} | {r['docs_per_s']:.0f} | "
              f"{r['speedup']:.2f}x | {r['max_cosine_distance']:.1e} |")


if __name__ == "__main__":
    main()
