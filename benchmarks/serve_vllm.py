"""vLLM on CPU serves an l2e ``final/``: its embeddings checked against l2e's own, offline and over HTTP.

    benchmarks/serve_vllm.sh output/smollm2.recipe/final        # builds .venv-vllm once (~0.9 GB download)

The shell script runs the three steps of this file in two virtualenvs (vLLM pins its own transformers, so it
cannot share the project's ``.venv``):

    .venv/bin/python benchmarks/serve_vllm.py reference --final F --out O   # l2e Embedder vectors (the truth)
    .venv-vllm/bin/python benchmarks/serve_vllm.py offline --final F --out O  # vllm.LLM(runner="pooling").embed
    .venv/bin/python benchmarks/serve_vllm.py http --out O --url URL         # /v1/embeddings of a running server
    .venv/bin/python benchmarks/serve_vllm.py compare --out O                # table + O/vllm.json

Texts: the first ``--n`` documents and queries of ``data/dev-small``. vLLM gets the raw text; queries get the
instruction prepended by the client (vLLM's ``/v1/embeddings`` does not apply sentence-transformers prompts).
vLLM's mean pooling averages every token, the instruction included: for a model trained with
``skip_instruction`` the query vectors therefore differ from l2e's, and the table says by how much.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def texts(n: int):
    def read(name, key):
        with open(os.path.join(ROOT, "data/dev-small", name)) as f:
            return [json.loads(line)[key] for _, line in zip(range(n), f)]

    docs = read("corpus.jsonl", "text")
    return docs, read("queries.jsonl", "text")


def settings(final: str) -> dict:
    with open(os.path.join(final, "l2e_model.json")) as f:
        return json.load(f)


def max_model_len(args) -> int:
    """``--max_model_len``, or the export's ``sentence_bert_config.json`` ``max_seq_length`` (the trained passage
    length: vLLM derives its limit from it and refuses a longer max_model_len)."""
    if args.max_model_len:
        return args.max_model_len
    with open(os.path.join(args.final, "sentence_bert_config.json")) as f:
        return json.load(f)["max_seq_length"]


def reference(args) -> None:
    import numpy as np

    sys.path.insert(0, ROOT)
    from l2e.retrieval.embedder import Embedder

    docs, queries = texts(args.n)
    emb = Embedder.from_checkpoint(args.final)
    t = time.perf_counter()
    d = emb.encode(docs)
    secs = time.perf_counter() - t
    q = emb.encode(queries, instruction=emb.query_instruction)
    np.savez(os.path.join(args.out, "l2e.npz"), docs=d, queries=q)
    with open(os.path.join(args.out, "l2e.json"), "w") as f:
        json.dump({"docs_per_s": len(docs) / secs, "instruction": emb.query_instruction,
                   "skip_instruction": emb.model.settings.skip_instruction,
                   "pooling": emb.model.settings.pooling_mode}, f)


def offline(args) -> None:
    import numpy as np
    from vllm import LLM

    docs, queries = texts(args.n)
    with open(os.path.join(args.out, "l2e.json")) as f:
        instruction = json.load(f)["instruction"]
    limit = max_model_len(args)
    t = time.perf_counter()
    llm = LLM(model=args.final, runner="pooling", dtype="float32", max_model_len=limit,
              enforce_eager=True, seed=0)
    startup = time.perf_counter() - t
    t = time.perf_counter()
    # vLLM refuses a text longer than max_model_len unless told to truncate; l2e truncates to the same length.
    cut = {"truncation": True, "max_length": limit}
    d = np.array([o.outputs.embedding for o in llm.embed(docs, tokenization_kwargs=cut)], dtype=np.float32)
    secs = time.perf_counter() - t
    q = np.array([o.outputs.embedding for o in llm.embed([instruction + x for x in queries], tokenization_kwargs=cut)],
                 dtype=np.float32)
    mc = llm.llm_engine.model_config
    np.savez(os.path.join(args.out, "vllm_offline.npz"), docs=d, queries=q)
    with open(os.path.join(args.out, "vllm_offline.json"), "w") as f:
        json.dump({"startup_s": startup, "docs_per_s": len(docs) / secs, "attn_type": str(mc.attn_type),
                   "pooler": str(mc.pooler_config)}, f)


def http(args) -> None:
    import urllib.request

    import numpy as np

    docs, queries = texts(args.n)
    with open(os.path.join(args.out, "l2e.json")) as f:
        instruction = json.load(f)["instruction"]

    limit = max_model_len(args)

    def embed(batch):
        body = json.dumps({"model": args.model, "input": batch, "truncate_prompt_tokens": limit}).encode()
        req = urllib.request.Request(args.url + "/v1/embeddings", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return [row["embedding"] for row in json.load(r)["data"]]

    t = time.perf_counter()
    d = np.array(embed(docs), dtype=np.float32)
    secs = time.perf_counter() - t
    q = np.array(embed([instruction + x for x in queries]), dtype=np.float32)
    np.savez(os.path.join(args.out, "vllm_http.npz"), docs=d, queries=q)
    with open(os.path.join(args.out, "vllm_http.json"), "w") as f:
        json.dump({"docs_per_s": len(docs) / secs}, f)


def compare(args) -> None:
    import numpy as np

    ref = np.load(os.path.join(args.out, "l2e.npz"))
    with open(os.path.join(args.out, "l2e.json")) as f:
        meta = json.load(f)
    rows = [{"path": "l2e Embedder (reference)", "docs_per_s": meta["docs_per_s"], "doc_diff": 0.0,
             "query_diff": 0.0}]
    for name, label in [("vllm_offline", "vLLM LLM(runner='pooling').embed"), ("vllm_http", "vLLM /v1/embeddings")]:
        path = os.path.join(args.out, name + ".npz")
        if not os.path.isfile(path):
            rows.append({"path": label, "error": "not run (see the log)"})
            continue
        got = np.load(path)
        with open(os.path.join(args.out, name + ".json")) as f:
            info = json.load(f)
        rows.append({"path": label, **info, "doc_diff": float(np.abs(got["docs"] - ref["docs"]).max()),
                     "query_diff": float(np.abs(got["queries"] - ref["queries"]).max())})
    lines = ["| path | docs/s | max abs diff, documents | max abs diff, queries (instruction in text) |",
             "| --- | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['error']} | | |")
        else:
            lines.append(f"| {r['path']} | {r['docs_per_s']:.1f} | {r['doc_diff']:.1e} | {r['query_diff']:.1e} |")
    note = ("queries: l2e pools without the instruction tokens (skip_instruction); vLLM pools every token"
            if meta["skip_instruction"] else "")
    print("\n".join(lines) + (f"\n\n{note}" if note else ""))
    with open(os.path.join(args.out, "vllm.json"), "w") as f:
        json.dump({"rows": rows, **meta}, f, indent=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["reference", "offline", "http", "compare"])
    p.add_argument("--final", default="output/smollm2.recipe/final")
    p.add_argument("--out", default="output/serve_vllm")
    p.add_argument("--n", type=int, default=64, help="documents and queries embedded")
    p.add_argument("--max_model_len", type=int, default=0, help="0: the export's max_seq_length")
    p.add_argument("--url", default="http://127.0.0.1:8765")
    p.add_argument("--model", default="", help="model name the server was started with (its --model path)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"reference": reference, "offline": offline, "http": http, "compare": compare}[args.step](args)


if __name__ == "__main__":
    main()
