"""Search after encoding, exhaustive vs indexed, per representation: seconds for every query of a BEIR folder and the
indexed search's recall@100 of the exhaustive top 100 (1.0: the same documents).

    python benchmarks/bench_search.py --ckpt_dir output/smollm2.distill/lexical/final --data_dir ../shared/data/dev \
        --out docs/results/search/bench_search.json

Rows: dense (torch matmul + exact top-k; faiss IndexFlatIP when installed), each sparse head (the old per-block
``q @ D.T`` that re-transposes the corpus, against l2e.retrieval.search.SparseIndex), each multi-vector head
(exhaustive MaxSim against the PLAID-style candidate stage, l2e.retrieval.search.ColbertCandidates, at each of
``--colbert_settings``). A checkpoint
without a multi-vector head gets a seeded, untrained ColBERT projection (``--add_colbert``, labelled so): the candidate
stage's recall and speed are properties of the search, measured on real contextual token states. Every text is
encoded once, before any timing. Quality (nDCG@10) comes from evaluate_mteb.py, not from here.
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

from l2e.core.atomic import write_json  # noqa: E402
from l2e.model.heads import get_head  # noqa: E402
from l2e.retrieval.embedder import Embedder  # noqa: E402
from l2e.retrieval.mteb_wrapper import load_beir, sample_query_ids  # noqa: E402
from l2e.retrieval.search import (ColbertCandidates, RepScorer, Reps, SparseIndex, has_faiss,  # noqa: E402
                                  search_top_k)

BLOCK = 256


def recall_at(ref: np.ndarray, got: np.ndarray, k: int = 100) -> float:
    """Mean share of each query's reference top-k found in the other top-k."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / min(k, len(a)) for a, b in zip(ref, got)]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class OldSparse:
    """The sparse search before the inverted index: each query block times the CSR corpus, transposed per call."""

    def __init__(self, reps, name):
        self.reps, self.name = reps, name

    def score(self, queries, instruction=None):
        q = self.reps.queries(queries, instruction)[self.name]
        return np.asarray((q @ self.docs.T).todense(), dtype=np.float32)


def add_colbert(embedder: Embedder, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = embedder.model
    model.settings = model.settings.replace(heads=(*model.settings.heads, "colbert"))
    model.heads["colbert"] = get_head("colbert").build(model.backbone, model.settings).to(embedder.device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--out", required=True, help="JSON results (the table goes beside it as .md)")
    p.add_argument("--add_colbert", action=argparse.BooleanOptionalAction, default=True,
                   help="give a checkpoint without a multi-vector head a seeded untrained one")
    p.add_argument("--colbert_settings", default="256:2:1024,256:4:1024,256:16:256,256:64:256,512:16:512",
                   help="multi-vector candidate searches to time, each candidates:nprobe:refine (refine at or below "
                   "candidates: no centroid-interaction stage)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch_size", type=int, default=32)
    args = p.parse_args(argv)
    settings = [tuple(int(x) for x in item.split(":")) for item in args.colbert_settings.split(",") if item.strip()]
    if any(len(t) != 3 or min(t) < 0 or t[1] < 1 for t in settings):
        p.error(f"--colbert_settings: give candidates:nprobe:refine items, nprobe >= 1 (got {args.colbert_settings!r})")

    embedder = Embedder.from_checkpoint(args.ckpt_dir, precision=args.precision)
    added = []
    if args.add_colbert and not any(get_head(h).kind == "multi_vector" for h in embedder.model.heads):
        add_colbert(embedder)
        added.append("colbert")
    corpus, queries, qrels = load_beir(args.data_dir)
    texts = list(corpus.values())
    qtexts = [queries[q] for q in sample_query_ids(qrels, queries, 0)]
    names = ["dense", *embedder.model.heads]
    reps = Reps(embedder, names, batch_size=args.batch_size, show_progress=True)
    _, encode_docs_s = timed(lambda: reps.index(texts))
    _, encode_queries_s = timed(lambda: [reps.queries(qtexts[s:s + BLOCK], None) for s in range(0, len(qtexts), BLOCK)])
    rows = []

    def compare(name, kind, exhaustive, indexed):
        """indexed: [(label, scorer, seconds to build its index or None)], each timed against one exhaustive run."""
        (ref, ref_s) = timed(lambda: search_top_k(exhaustive, qtexts, 100, BLOCK))
        for label, scorer, build_s in indexed:
            (got, got_s) = timed(lambda: search_top_k(scorer, qtexts, 100, BLOCK))
            row = {"representation": name + (" (untrained projection)" if name in added else ""), "kind": kind,
                   "exhaustive_s": ref_s, "indexed": label, "indexed_s": got_s, "speedup": ref_s / max(got_s, 1e-9),
                   "index_build_s": build_s, "recall_at_100_vs_exhaustive": recall_at(ref[1], got[1])}
            rows.append(row)
            print(json.dumps(row), flush=True)

    for name in names:
        if name == "dense":
            exhaustive = RepScorer(reps, "dense")
            if has_faiss():
                import faiss

                class Faiss:
                    def __init__(self):
                        self.index = faiss.IndexFlatIP(reps.docs["dense"].shape[1])
                        self.index.add(np.ascontiguousarray(reps.docs["dense"]))

                    def top_k(self, texts_, k, instruction=None):
                        from l2e.retrieval.search import rank_rows

                        s, i = self.index.search(np.ascontiguousarray(reps.queries(texts_, instruction)["dense"]), k)
                        return rank_rows(s, i.astype(np.int64))

                compare("dense", "dense", exhaustive, [("faiss IndexFlatIP", Faiss(), None)])
            else:
                compare("dense", "dense", exhaustive, [("the same (faiss not installed)", exhaustive, None)])
        elif get_head(name).kind == "sparse_vector":
            old = OldSparse(reps, name)
            old.docs = reps.postings[name].dense if reps.postings[name].dense is not None else \
                reps.postings[name].postings.T.tocsr()
            index: SparseIndex = reps.postings[name]
            compare(name, "sparse", old, [("inverted index" if index.dense is None else
                                           "dense BLAS (vectors not sparse)", RepScorer(reps, name), None)])
        else:
            indexed = []
            for candidates, nprobe, refine in settings:
                cand = ColbertCandidates(reps, name, candidates, nprobe, refine=refine)
                _, build_s = timed(lambda: cand.index(texts))
                stage = f", centroid interaction on {refine}" if refine > candidates else ""
                indexed.append((f"{len(cand.centroids)} centroids, nprobe {nprobe}{stage}, exact on {candidates}",
                                cand, build_s))
            compare(name, "multi_vector", RepScorer(reps, name), indexed)
    result = {"ckpt_dir": args.ckpt_dir, "data_dir": args.data_dir, "documents": len(texts), "queries": len(qtexts),
              "encode_documents_s": encode_docs_s, "encode_queries_s": encode_queries_s,
              "precision": embedder.precision.name, "threads": torch.get_num_threads(), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json(args.out, result, indent=2)
    lines = [f"{len(texts):,} documents, {len(qtexts):,} queries; encoding (not timed below) {encode_docs_s:.0f}s + "
             f"{encode_queries_s:.0f}s", "",
             "| representation | exhaustive s | indexed | index build s | indexed s | speed-up | recall@100 vs exhaustive |",
             "|---|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['representation']} | {r['exhaustive_s']:.1f} | {r['indexed']} | "
              f"{'' if r['index_build_s'] is None else format(r['index_build_s'], '.1f')} | {r['indexed_s']:.1f} | "
              f"{r['speedup']:.1f}x | {r['recall_at_100_vs_exhaustive']:.3f} |" for r in rows]
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
