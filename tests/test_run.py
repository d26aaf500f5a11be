"""run.py end to end on tiny random Qwen3 and DeepSeek-V3 models: each component mix, files, loss."""
import json
import os
from pathlib import Path

import pytest

import run
from helpers_models import tiny_deepseek_v3, tiny_qwen3
from helpers_train import BEIR_TINY, make_training_data, read_log, train_rows, write_config

MIXES = ["f2llm", "mrl_spread", "mrl_spread.bi_mean", "mrl_spread.lora.bi_mean"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=8, negatives=2)


@pytest.mark.parametrize("arch", ["qwen3", "deepseek_v3"])
@pytest.mark.parametrize("mix", MIXES)
def test_mix_trains_and_writes_everything(tmp_path, data, arch, mix):
    model_dir = tiny_qwen3() if arch == "qwen3" else tiny_deepseek_v3()
    # One batch = the whole training set, so every step sees the same batch: its loss must fall.
    steps = 8
    cfg = write_config(tmp_path, mix, model_dir, data, train_batch_size=train_rows(data), train_steps=steps,
                       checkpointing_steps=4, validation_steps=4, log_interval=2, warmup_steps=1,
                       eval_data_dir=str(BEIR_TINY), learning_rate=2e-3 if "lora" in mix else 5e-4,
                       # peft cannot apply dropout to DeepSeek-V3's fused MoE experts (l2e says so in an error)
                       lora_dropout=0.0 if arch == "deepseek_v3" else 0.05)
    assert run.main(["--config", str(cfg)]) == 0
    run_dir = tmp_path / "out" / f"tiny.{mix}"
    log = read_log(run_dir)
    assert [r["step"] for r in log] == list(range(1, steps + 1))
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [r["loss"] for r in log]
    if "mrl" in mix:
        assert {"infonce@16", "infonce@32", "spread"} <= set(log[0])
    for name in ["config.json", "validation_log.jsonl", "training_summary.json", "step_4/trainer_state.json",
                 "step_8/state", "step_8/l2e_model.json", "final/modules.json", "final/1_Pooling/config.json",
                 "final/config.json", "final/tokenizer.json"]:
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "config.json").read_text())["pooling_mode"] == ("mean" if "bi_mean" in mix else "eos")
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["steps"] == steps and summary["best_validation"]["metric"] == "ndcg_at_10"
    # Training time is reported net of validation and checkpoints (what a time budget counts).
    assert summary["validation_time_s"] > 0 and summary["checkpoint_time_s"] > 0
    assert summary["steps_time_s"] + summary["validation_time_s"] + summary["checkpoint_time_s"] <= \
        summary["train_time_s"] + 1e-6
    curve = [json.loads(line) for line in (run_dir / "validation_log.jsonl").read_text().splitlines()]
    assert [v["step"] for v in curve] == [4, 8] and 0 < curve[0]["train_s"] < curve[1]["train_s"]
    assert 0 <= summary["best_validation"]["ndcg_at_10"] <= 1
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    if "lora" in mix:
        assert (run_dir / "final_adapter" / "adapter_config.json").exists()
        assert (run_dir / "step_8" / "adapter_config.json").exists()
        assert not (run_dir / "final" / "adapter_config.json").exists()  # merged plain model


def test_config_error_exits_2_before_loading(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"model_path": str(tmp_path / "nowhere"), "pooling": "mean"}))
    assert run.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'pooling'" in err and "does not exist" in err


def test_missing_training_data_is_one_line(tmp_path, capsys, data):
    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data)
    raw = json.loads(cfg.read_text())
    (tmp_path / "empty").mkdir()
    raw["train_data_path"] = str(tmp_path / "empty")  # exists, but holds no tokenized datasets
    cfg.write_text(json.dumps(raw))
    assert run.main(["--config", str(cfg)]) == 2
    assert "no dataset folders" in capsys.readouterr().err


def test_grad_cache_run_matches_plain_run(tmp_path, data):
    logs = {}
    for gc in (False, True):
        folder = tmp_path / ("gc" if gc else "plain")
        cfg = write_config(folder, "f2llm", tiny_qwen3(), data, train_batch_size=train_rows(data), train_steps=3,
                           checkpointing_steps=3, validation_steps=3, grad_cache=gc, grad_cache_mini_batch=3)
        assert run.main(["--config", str(cfg)]) == 0
        logs[gc] = read_log(folder / "out" / "tiny.f2llm")
    for a, b in zip(logs[False], logs[True]):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)


def test_nan_loss_stops_with_one_line_and_saves_nothing(tmp_path, data, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_qwen3(), broken)
    weights = load_file(str(broken / "model.safetensors"))
    name = next(k for k in weights if "layers.0" in k and k.endswith("weight") and weights[k].ndim == 2)
    weights[name][:] = float("nan")
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    cfg = write_config(tmp_path, "f2llm", str(broken), data, train_batch_size=4, train_steps=4)
    assert run.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: loss is nan at step 1 (dataset 'debian')") and "last good checkpoint" in err
    assert not list((tmp_path / "out" / "tiny.f2llm").glob("step_*"))


# --- issue 12: what the trainer says and refuses ---------------------------------------------------------------

def test_rows_short_of_hard_negatives_are_topped_up_and_said_loudly(tmp_path, capsys):
    data = make_training_data(tmp_path / "d", rows=8, negatives=0)
    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data, train_batch_size=4, train_steps=2, num_hard_neg=1,
                       checkpointing_steps=2, validation_steps=2)
    assert run.main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert ("warning: dataset 'debian': 8 of 8 rows have fewer than num_hard_neg=1 hard negatives (8 have none); "
            "rows with some repeat theirs (FlagEmbedding's rule), rows with none get random passages") in out
    summary = json.loads((tmp_path / "out" / "tiny.f2llm" / "training_summary.json").read_text())
    assert summary["hard_negatives"] == [{"dataset": "debian", "per_row": 1, "rows": 8, "short_rows": 0,
                                          "empty_rows": 8}]


def test_kd_without_teacher_scores_is_refused(tmp_path, data, capsys):
    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data, kd_enabled=True)
    assert run.main(["--config", str(cfg)]) == 2
    assert "kd_enabled=true but no dataset in" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tiny.f2llm" / "config.json").exists()


def test_grad_cache_under_deepspeed_is_refused():
    from accelerate.utils import DistributedType

    from l2e.config import Config
    from l2e.train.trainer import TrainingError, check_runtime

    check_runtime(Config(grad_cache=True), DistributedType.MULTI_CPU)
    check_runtime(Config(grad_cache=False), DistributedType.DEEPSPEED)
    with pytest.raises(TrainingError, match="grad_cache=true cannot run under DeepSpeed"):
        check_runtime(Config(grad_cache=True), DistributedType.DEEPSPEED)


def test_unmerged_lora_final_is_the_adapter(tmp_path, data, capsys):
    cfg = write_config(tmp_path, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, train_batch_size=4, train_steps=2,
                       checkpointing_steps=2, validation_steps=2, lora_merge_on_export=False)
    assert run.main(["--config", str(cfg)]) == 0
    final = tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean" / "final"
    assert f"LoRA adapter in {final}" in capsys.readouterr().out
    assert (final / "adapter_config.json").exists() and (final / "l2e_model.json").exists()


def test_inline_instructions_end_to_end(tmp_path, capsys):
    """instruction_separator: tokenize (queries carry 'Instruct: ...\\nQuery:' inline) -> train with
    skip-instruction -> Embedder -> export, where sentence-transformers gets the same text as prompt + query."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from helpers_train import DEBIAN, TOKENIZER, tokenize_data, write_pairs
    from l2e.retrieval.embedder import Embedder

    inline = "Instruct: Given a package summary, retrieve its description\nQuery:"
    raw = tmp_path / "raw"
    raw.mkdir()
    write_pairs(raw / "debian.jsonl", [json.loads(x) for x in DEBIAN.read_text().splitlines()[:8]], 1,
                instruction=inline + " ")
    data = tmp_path / "tok"
    assert tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(data), "--tokenizer", str(TOKENIZER),
                               "--max_seq_length", "64", "--valid_fraction", "0"]) == 0
    meta = json.loads((data / "debian" / "meta.json").read_text())
    assert meta["inline_instruction_rows"] == 8 and meta["instruction_separator"] == "Query:"
    cfg = write_config(tmp_path, "mrl_spread.bi_mean", tiny_qwen3(), data, train_batch_size=4, train_steps=2,
                       checkpointing_steps=2, validation_steps=2, skip_instruction=True, query_instruction="")
    assert run.main(["--config", str(cfg), "--set", "instruction_separator=Q:"]) == 2
    assert "8 queries had their instruction found by instruction_separator='Query:'" in capsys.readouterr().err
    assert run.main(["--config", str(cfg), "--overwrite"]) == 0
    final = str(tmp_path / "out" / "tiny.mrl_spread.bi_mean" / "final")
    queries = ["GNU chess engine", "7-Zip file archiver"]
    ours = Embedder.from_checkpoint(final).encode_queries([f"{inline} {q}" for q in queries])
    st = SentenceTransformer(final, device="cpu").encode([f" {q}" for q in queries], prompt=inline,
                                                         normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(st, ours, atol=1e-5)


def test_check_validates_and_prints_the_resolved_config_without_loading_a_model(tmp_path, data, capsys):
    cfg = write_config(tmp_path, "f2llm", str(tmp_path / "no-model-here"), data)
    assert run.main(["--config", str(cfg), "--check"]) == 2  # paths are checked ...
    assert "model_path=" in capsys.readouterr().err
    assert run.main(["--config", str(cfg), "--check", "--no_path_check", "--set", "learning_rate=0.001"]) == 0
    resolved = json.loads(capsys.readouterr().out)  # ... and the resolved config is JSON, every field
    assert resolved["learning_rate"] == 0.001 and resolved["pooling_mode"] == "eos" and "precision" in resolved
    assert not (tmp_path / "out").exists()  # --check writes nothing
    assert run.main(["--config", str(cfg), "--check", "--no_path_check", "--set", "pooling_mode=\"max\""]) == 2
    assert "pooling_mode='max' is not allowed" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parent.parent / "configs").rglob("*.json")),
                         ids=lambda p: os.path.relpath(p, Path(__file__).parent.parent))
def test_every_shipped_config_passes_check(path, capsys):
    """Every file in configs/ resolves and validates (paths aside: the data they name is made by commands)."""
    flag = "--chain" if "chain" in os.path.basename(path) else "--config"
    cwd = os.getcwd()
    os.chdir(Path(__file__).parent.parent)  # chains name their configs relative to the repository
    try:
        assert run.main([flag, path, "--check", "--no_path_check"]) == 0, capsys.readouterr().err
    finally:
        os.chdir(cwd)
