"""The benchmark scripts' own logic: bench_encode end to end on a tiny exported model (each row in its own
process, vectors compared), bench_train's precision dimension (peers matched by precision, targets, rows of an
older run merged, the bf16 peak). Timings are not checked: tiny models on a shared CPU say nothing."""
import json
import os
import subprocess

import pytest

from helpers_models import tiny_config
from l2e.export.final import export_final
from l2e.model.embedding_model import build_model

import benchmarks.bench_encode as bench_encode
import benchmarks.bench_memory as bench_memory
import benchmarks.bench_train as bench_train
import benchmarks.gpu_check as gpu_check


def row(name, precision, samples_per_s, **extra):
    return {"row": name, "precision": precision, "s_per_step": 1.0, "samples_per_s": samples_per_s,
            "real_tokens_per_s": 1.0, "padded_positions_per_s": 1.0, "padding_share": 0.0, "peak_rss_gb": 1.0,
            "mfu": 0.5, **extra}


def test_bench_encode_runs_every_torch_row_and_compares_vectors(tmp_path):
    model, tok = build_model(tiny_config("qwen3", pooling_mode="mean", bi_attn_enabled=True))
    final = export_final(model, tok, str(tmp_path / "final"))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " + "word " * i}) + "\n" for i in range(10)))
    out = tmp_path / "out"
    bench_encode.main(["--model", final, "--corpus", str(corpus), "--limit", "6", "--batch_size", "4",
                       "--repeats", "1", "--warmup", "2", "--threads", "1", "--out", str(out),
                       "--rows", "st_fp32,l2e_fp32,compiled_fp32,l2e_bf16"])
    (result,) = json.loads((out / "results.json").read_text())
    assert result["texts"] == 6 and result["max_length"] == 64  # the model's own limit, for every row
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"st_fp32", "l2e_fp32", "compiled_fp32", "l2e_bf16"}
    assert not any("error" in r for r in rows.values())
    assert rows["l2e_fp32"]["max_abs_diff_vs_peer"] < 1e-5  # the same vectors as sentence-transformers
    assert rows["compiled_fp32"]["max_abs_diff_vs_peer"] < 1e-5 and rows["compiled_fp32"]["warmup_s"] > 0
    assert "vs_peer" not in rows["l2e_bf16"]  # its peer (st_bf16) did not run: no ratio against another precision
    assert 0 < rows["l2e_bf16"]["max_abs_diff_vs_fp32"] < 0.05  # bf16 really ran, and stayed close
    assert all(r["peak_rss_gb"] > 0 and r["texts_per_s"] > 0 for r in rows.values())


def test_bench_encode_refuses_unknown_rows(capsys):
    with pytest.raises(SystemExit):
        bench_encode.main(["--rows", "l2e_fp16"])
    assert "unknown l2e_fp16" in capsys.readouterr().err


def test_bench_train_compares_each_row_with_its_peer_at_the_same_precision():
    results = [row("st_lora", "fp32", 1.0), row("l2e_lora_bucketed", "fp32", 2.5, matmul_dtype=["float32"]),
               row("st_lora", "bf16", 2.0), row("l2e_lora_bucketed", "bf16", 3.0, matmul_dtype=["float32"])]
    text = bench_train.table(results, bench_train.PEERS)
    assert "| l2e_lora_bucketed | fp32 | 1.00 | 2.50 | 2.50x |" in text
    assert "| l2e_lora_bucketed | bf16 (matmuls ran fp32!) | 1.00 | 3.00 | 1.50x |" in text
    targets = bench_train.target_table(results)
    assert "| l2e_lora_bucketed | st_lora | fp32 | 2.50x | >= 2.0x met |" in targets
    assert "| l2e_lora_bucketed | st_lora | bf16 | 1.50x | >= 2.0x not met |" in targets
    assert "l2e_full_bucketed" not in targets  # no rows, no claim


def test_bench_train_merges_an_older_run_by_row_and_precision(tmp_path):
    old = [{"row": "st_full", "samples_per_s": 1.0}, {"row": "l2e_full", "samples_per_s": 1.0}]  # before --precision
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    merged = bench_train.merge_rows(str(path), [row("l2e_full", "bf16", 2.0), row("l2e_full", "fp32", 3.0)])
    assert [(r["row"], r.get("precision", "fp32"), r["samples_per_s"]) for r in merged] == [
        ("st_full", "fp32", 1.0), ("l2e_full", "fp32", 3.0), ("l2e_full", "bf16", 2.0)]


def test_bench_train_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit):
        bench_train.main(["--precision", "fp32,fp16", "--out", os.devnull])
    assert "fp16 is not one of fp32, bf16" in capsys.readouterr().err


def test_bench_train_leaves_the_batch_256_row_out_unless_named(capsys):
    assert "l2e_gradcache_lora_b256" not in bench_train.selected_rows("")
    assert "l2e_gradcache_lora" in bench_train.selected_rows("")
    assert bench_train.selected_rows("l2e_gradcache_lora_b256,st_full") == ["st_full", "l2e_gradcache_lora_b256"]
    with pytest.raises(SystemExit):
        bench_train.main(["--only", "l2e_lora,l2e_fast", "--out", os.devnull])
    assert "--only: no row l2e_fast" in capsys.readouterr().err


def test_bench_train_says_how_a_row_died(monkeypatch, tmp_path):
    """A worker the kernel kills (OOM: SIGKILL) leaves stderr empty; the row must say so, not just "failed"."""
    import subprocess
    import types

    args = types.SimpleNamespace(out=str(tmp_path), steps=1, warmup=0, batch=2, rows=4, chunk=2, peaks={},
                                 train="x", quick=True)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -9, "", ""))
    assert bench_train.spawn(args, "l2e_lora", {})["error"] == "killed by SIGKILL"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 2, "", "x\nerror: bad"))
    assert bench_train.spawn(args, "l2e_lora", {})["error"] == "exit 2: error: bad"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "done\n", ""))
    assert bench_train.spawn(args, "l2e_lora", {})["error"] == "no RESULT line"


def test_matmul_peak_is_measured_in_each_precision():
    assert bench_train.matmul_peak_gflops("fp32", sizes=(64,), repeats=1) > 0
    assert bench_train.matmul_peak_gflops("bf16", sizes=(64,), repeats=1) > 0


def test_compare_runs_prints_the_paired_interval_and_refuses_a_bad_file(tmp_path, capsys):
    import benchmarks.compare_runs as compare_runs

    row, base = tmp_path / "row.json", tmp_path / "base.json"
    row.write_text(json.dumps({"scores": {str(i): 1.0 for i in range(20)}}))
    base.write_text(json.dumps({"scores": {str(i): 0.5 for i in range(20)}}))
    compare_runs.main([str(row), str(base), "--resamples", "200"])
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| base.json")][0]
    assert "+0.5000" in line and "[+0.5000, +0.5000]" in line and line.endswith("| gain |")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="error: .*bad.json: not a per-query score file"):
        compare_runs.main([str(row), str(tmp_path / "bad.json")])


def test_plot_curve_draws_a_chains_stages_end_to_end(tmp_path, monkeypatch):
    import benchmarks.plot_curve as plot_curve

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "stage.json"
    cfg.write_text(json.dumps({"model_path": "m", "train_data_path": "d"}))
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps({"output_dir": "out", "stages": [
        {"name": "a", "config": str(cfg)}, {"name": "b", "config": str(cfg)},
        {"name": "m", "merge": {"method": "average", "models": ["a", "b"]}}, {"name": "c", "config": str(cfg)}]}))
    for stage, steps, seconds in (("a", 4, 100.0), ("b", 2, 50.0)):
        folder = tmp_path / "out" / stage
        folder.mkdir(parents=True)
        (folder / "training_log.jsonl").write_text(
            "".join(json.dumps({"step": s, "infonce": 1.0 / s}) + "\n" for s in range(1, steps + 1)))
        (folder / "validation_log.jsonl").write_text(json.dumps({"step": steps, "ndcg_at_10": 0.5, "train_s": seconds}))
        (folder / "training_summary.json").write_text(json.dumps({"steps_time_s": seconds}))
    # stage c has not run: the curve stops after b; the merge has no curve
    assert plot_curve.chain_runs(str(chain)) == [("a", os.path.join("out", "a"), 0, 0.0),
                                                 ("b", os.path.join("out", "b"), 4, 100.0)]
    plot_curve.main(["--chain", str(chain), "--out", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").stat().st_size > 1000
    with pytest.raises(SystemExit):
        plot_curve.main([str(tmp_path / "out" / "a"), "--chain", str(chain)])


def test_plot_curve_draws_the_panels_it_has_data_for(tmp_path):
    """Loss always; resident memory when a run logged it (now and peak so far); validation nDCG@10 only when a run
    scored eval_data_dir -- no empty panel."""
    import struct

    import benchmarks.plot_curve as plot_curve

    def png_width(path):
        return struct.unpack(">I", path.read_bytes()[16:20])[0]  # the IHDR chunk's width

    for name, memory in (("fp32", True), ("old", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "training_log.jsonl").write_text("".join(json.dumps(
            {"step": s, "infonce": 1.0 / s, **({"rss_gb": 6 + s / 10, "peak_rss_gb": 6.5 + s / 10} if memory else {})})
            + "\n" for s in range(1, 5)))
    widths = {}
    for panels, runs in ((1, ["old"]), (2, ["old", "fp32"])):
        plot_curve.main([str(tmp_path / r) for r in runs] + ["--out", str(tmp_path / f"{panels}.png")])
        widths[panels] = png_width(tmp_path / f"{panels}.png")
    (tmp_path / "old" / "validation_log.jsonl").write_text(json.dumps({"step": 4, "ndcg_at_10": 0.5}) + "\n")
    plot_curve.main([str(tmp_path / "old"), str(tmp_path / "fp32"), "--out", str(tmp_path / "3.png")])
    widths[3] = png_width(tmp_path / "3.png")
    assert widths[2] == 2 * widths[1] and widths[3] == 3 * widths[1]


def test_bench_search_compares_exhaustive_and_indexed_search(tmp_path):
    """Every representation of a tiny checkpoint (dense, a sparse head, an added untrained ColBERT projection):
    exhaustive and indexed timings, and the sparse inverted index finds exactly the exhaustive top 100."""
    import benchmarks.bench_search as bench_search
    from helpers_models import tiny_qwen3
    from l2e.config import from_dict
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    cfg = from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64, "sparse_enabled": True,
                     "pooling_mode": "mean"}, check_paths=False)
    model, tok = build_model(cfg)
    final = export_final(model, tok, str(tmp_path / "final"))
    out = tmp_path / "search.json"
    assert bench_search.main(["--ckpt_dir", final, "--data_dir", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "sample", "dev-mini"),
                              "--out", str(out), "--precision", "fp32", "--colbert_settings", "20:2:60,300:1000:300"]) == 0
    result = json.loads(out.read_text())
    rows = {r["kind"]: r for r in result["rows"]}  # the last ColBERT setting wins here
    assert set(rows) == {"dense", "sparse", "multi_vector"} and result["documents"] == 300
    few = [r for r in result["rows"] if r["kind"] == "multi_vector"][0]
    assert few["indexed"].endswith("nprobe 2, centroid interaction on 60, exact on 20") and few["index_build_s"] > 0
    assert 0 < few["recall_at_100_vs_exhaustive"] <= 0.2  # 20 candidates hold at most 20 of the top 100
    assert rows["sparse"]["recall_at_100_vs_exhaustive"] == 1.0
    assert rows["dense"]["recall_at_100_vs_exhaustive"] >= 0.999  # faiss sums in another order: near-ties at rank 100
    # every centroid probed and every document a candidate: the candidate stage is exhaustive MaxSim
    assert rows["multi_vector"]["recall_at_100_vs_exhaustive"] == 1.0
    assert rows["multi_vector"]["representation"] == "colbert (untrained projection)"
    assert "| sparse |" in out.with_suffix(".md").read_text()


def test_bench_memory_rows_combine_settings_and_refuse_unknown_parts():
    assert bench_memory.row_settings("default") == ({}, {})
    sets, env = bench_memory.row_settings("bf16+trim+thp+guard+mmap4+budget4.5")
    assert sets == {"precision": "bf16", "malloc_trim_each_step": True, "malloc_mmap_threshold_mb": 4.0,
                    "memory_budget_gb": 4.5, "malloc_thp": True, "malloc_trim_over_budget": True}
    assert env == {}
    assert bench_memory.row_settings("nothp+noguard")[0] == {"malloc_thp": False, "malloc_trim_over_budget": False}
    assert bench_memory.row_settings("nofuse+guard")[0] == {"lora_fused_add": False, "malloc_trim_over_budget": True}
    assert bench_memory.row_settings("jemalloc")[1] == {"LD_PRELOAD": bench_memory.JEMALLOC}
    with pytest.raises(SystemExit, match="unknown row part 'trimm' in 'bf16\\+trimm'"):
        bench_memory.row_settings("bf16+trimm")
    assert bench_memory.row_settings("auto")[0] == {"precision": "auto"}
    with pytest.raises(SystemExit, match="error: --peer 'fp32' is not one of --rows 'default,bf16'"):
        bench_memory.main(["--rows", "default,bf16", "--peer", "fp32"])


def test_bench_memory_runs_combined_rows_end_to_end(tmp_path, capsys):
    """Each row its own run.py process on a tiny model: a combined row's name is a valid run id, its settings
    reach the run, and the table compares it with the default row."""
    from helpers_models import tiny_qwen3
    from helpers_train import make_training_data, train_rows, write_config

    data = make_training_data(tmp_path / "d", rows=8, negatives=1)
    cfg = write_config(tmp_path / "c", "mrl_spread.lora.bi_mean", tiny_qwen3(), data, train_batch_size=train_rows(data))
    out = tmp_path / "rows.json"
    worktrees = subprocess.run(["git", "-C", bench_memory.ROOT, "worktree", "list"], capture_output=True, text=True).stdout
    bench_memory.main(["--config", str(cfg), "--steps", "3", "--rows", "default,trim+mmap4", "--json_out", str(out),
                       "--peer", "trim+mmap4", "--peer_commit", "HEAD"])
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert not any("error" in r for r in rows.values()), rows
    head = subprocess.run(["git", "-C", bench_memory.ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert rows["trim+mmap4"]["commit"] == head.strip() and "commit" not in rows["default"]  # the peer ran from HEAD
    assert subprocess.run(["git", "-C", bench_memory.ROOT, "worktree", "list"], capture_output=True,
                          text=True).stdout == worktrees  # and its worktree is gone
    assert rows["trim+mmap4"]["malloc_trim_each_step"] is True and rows["trim+mmap4"]["malloc_mmap_threshold_mb"] == 4
    assert all(r["peak_rss_gb"] > 0 and r["s_per_step"] > 0 for r in rows.values())
    trail = rows["trim+mmap4"]["steps"]  # per step: when the peak happened
    assert [r["step"] for r in trail] == [1, 2, 3] and all(r["peak_rss_gb"] >= r["rss_gb"] - 1e-3 for r in trail)
    printed = capsys.readouterr().out
    assert "| trim+mmap4 | - |" in printed and "speed vs trim+mmap4 |" in printed and "| 1.00x |" in printed
    assert f"peer: trim+mmap4 (code as of {head[:7]})" in printed
    with pytest.raises(SystemExit, match="error: --peer_commit 'no-such-rev' is not a commit of"):
        bench_memory.main(["--config", str(cfg), "--steps", "3", "--rows", "default", "--peer_commit", "no-such-rev"])


def test_bench_lora_times_peft_and_l2e_on_the_same_layers(tmp_path, capsys):
    import benchmarks.bench_lora as bench_lora

    out = tmp_path / "lora.json"
    bench_lora.main(["--quick", "--repeats", "1", "--batch", "4", "--tokens", "16", "--precision", "fp32,bf16",
                     "--json_out", str(out)])
    rows = {(r["row"], r["precision"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {(row, p) for row in bench_lora.ROWS for p in ("fp32", "bf16")}
    assert all(r["s"] > 0 for r in rows.values()) and rows[("peft", "fp32")]["vs_peer"] == 1.0
    # l2e's dropout keeps a 1-byte mask where peft keeps a dropped copy of each input
    assert rows[("l2e", "fp32")]["saved_mb"] < rows[("peft", "fp32")]["saved_mb"]
    assert "| l2e_torch_masks | fp32 |" in capsys.readouterr().out


def test_gpu_check_rows_are_valid_configs_without_a_gpu(tmp_path, capsys):
    # A GPU lease is minutes long: every row must pass run.py's own validation here, on the CPU.
    gpu_check.main(["--check", "--out", str(tmp_path)])
    printed = capsys.readouterr().out.split()
    assert printed[1::2] == list(gpu_check.rows(str(tmp_path)))
    configs = {c.experiment_id: c for c in gpu_check.check_rows(str(tmp_path))}
    assert configs["qwen3-0.6b_lora_gradcache"].grad_cache and configs["qwen3-0.6b_qlora_4bit"].lora_enabled
    assert configs["qwen3-0.6b_sdpa"].model_path == str(tmp_path / "models" / "qwen3-0.6b")
    cmd = gpu_check.row_command("qwen3-0.6b_deepspeed_zero2", "qwen3-0.6b", "configs/accelerate_config.yaml", {},
                                str(tmp_path))
    assert cmd[1:7] == ["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate_config.yaml",
                        "--num_processes", "1"]


def test_gpu_check_table_names_skipped_and_failed_rows():
    text = gpu_check.table([{"row": "a", "skipped": "flash_attn not installed"},
                            {"row": "b", "error": "exit 1: boom"},
                            {"row": "c", "s_per_step": 0.5, "tokens_per_step": 1000.0, "mfu": 0.25,
                             "peak_gpu_gb": 3.0}])
    assert "| a | flash_attn not installed |" in text and "| b | error: exit 1: boom |" in text
    assert "| c | 0.500 | 1000 | 25% | 3.0 |" in text
