"""Staged training: MNTP and SimCSE on raw text, init_from, merging, and a chain run from the CLI."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import run
import tokenize_data
from helpers_models import tiny_config, tiny_qwen3
from helpers_train import DEBIAN, TOKENIZER, make_training_data, read_log, write_config
from l2e.data.batching import MntpMasking
from l2e.losses.mntp import mntp_loss
from l2e.train.merge import MergeError, merge_checkpoints, merge_states, slerp


# --- MNTP -----------------------------------------------------------------------------------------------------


def test_mntp_labels_are_the_masked_tokens_and_the_rule_is_80_10_10():
    seqs = [list(range(100, 100 + n)) + [2] for n in (400, 3, 1)]
    masking = MntpMasking(mask_id=7, vocab_size=1000, probability=0.2)
    out = masking(seqs, 2, np.random.default_rng(0))
    ids, labels = out["input_ids"], out["labels"]
    chosen = labels != -100
    original = torch.full_like(ids, -1)
    for i, s in enumerate(seqs):
        original[i, :len(s)] = torch.tensor(s)
    assert torch.equal(labels[chosen], original[chosen])  # labels hold the original ids at the chosen positions
    assert not chosen[:, 0].any()  # position 0 has no previous token to predict it from
    assert not chosen[0, 400] and not chosen[2].any()  # EOS is never chosen; a one-token text has nothing
    row = chosen[0, :401]
    assert 0.15 < row.float().mean() < 0.25
    masked = (ids[0][row] == 7).float().mean()
    kept = (ids[0][row] == original[0][row]).float().mean()
    assert 0.7 < masked < 0.9 and 0.03 < kept < 0.2
    assert torch.equal(ids[0][~row], original[0, :401][~row])  # not chosen: unchanged


def test_mntp_loss_predicts_token_i_from_position_i_minus_1():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    weight = torch.randn(10, 4, generator=g)
    labels = torch.full((2, 5), -100)
    labels[0, 2], labels[1, 4] = 3, 9
    want = F.cross_entropy(torch.stack([hidden[0, 1] @ weight.T, hidden[1, 3] @ weight.T]), torch.tensor([3, 9]))
    torch.testing.assert_close(mntp_loss(hidden, labels, weight), want)
    assert mntp_loss(hidden, torch.full((2, 5), -100), weight).item() == 0.0


# --- merging --------------------------------------------------------------------------------------------------


def test_average_at_half_is_the_hand_computed_average():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([4])}
    out = merge_states([a, b], "average", weights=[0.5, 0.5])
    torch.testing.assert_close(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].item() == 3  # integer buffers come from the first checkpoint
    torch.testing.assert_close(merge_states([a, b], "average", weights=[3, 1])["w"], torch.tensor([1.5, 3.0]))


def test_slerp_endpoints_and_the_quarter_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    torch.testing.assert_close(slerp(0.0, a, b), a)
    torch.testing.assert_close(slerp(1.0, a, b), b)
    # theta = 90 degrees: at t = 0.5 both weigh sin(45)/sin(90)
    torch.testing.assert_close(slerp(0.5, a, b), torch.tensor([1.0, 2.0]) * np.sin(np.pi / 4))
    torch.testing.assert_close(slerp(0.3, a, 1.5 * a), 1.15 * a)  # parallel: linear interpolation


def test_ties_keeps_the_agreeing_signs_of_the_largest_updates():
    base = {"w": torch.zeros(4)}
    x = {"w": torch.tensor([1.0, -2.0, 0.1, 3.0])}
    y = {"w": torch.tensor([2.0, 1.0, -0.1, 1.0])}
    out = merge_states([x, y], "ties", base=base, density=1.0)["w"]
    # signs by total mass: +, -, 0 (tie broken to +), +; disjoint mean of the agreeing entries
    torch.testing.assert_close(out, torch.tensor([1.5, -2.0, 0.1, 2.0]))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    from l2e.model.embedding_model import build_model

    root = tmp_path_factory.mktemp("merge")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, tok = build_model(tiny_config("qwen3", pooling_mode="mean", lora_enabled=True, lora_dropout=0.0,
                                             max_seq_length=64, sparse_enabled=True))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name or "heads." in name:
                    p.normal_(0, 0.1)
        model.save(str(root / f"run{seed}"), tok)  # adapter checkpoints
        paths.append(str(root / f"run{seed}"))
    return paths


def test_merging_adapters_averages_their_full_weights_and_exports(two_checkpoints, tmp_path):
    from sentence_transformers import SentenceTransformer

    from l2e.export.final import export_final
    from l2e.retrieval.embedder import Embedder
    from l2e.train.merge import load_full

    merged, tok = merge_checkpoints(two_checkpoints, "average")
    a, b = load_full(two_checkpoints[0])[0], load_full(two_checkpoints[1])[0]
    for (name, p), q, r in zip(merged.state_dict().items(), a.state_dict().values(), b.state_dict().values()):
        if p.is_floating_point():
            torch.testing.assert_close(p, (q + r) / 2, msg=name)
    final = export_final(merged, tok, str(tmp_path / "final"))
    texts = ["apple pie", "bike repair"]
    np.testing.assert_allclose(SentenceTransformer(final, device="cpu").encode(texts, normalize_embeddings=True),
                               Embedder.from_checkpoint(final).encode(texts), atol=1e-5)


def test_merge_errors_are_one_line(two_checkpoints, tmp_path):
    with pytest.raises(MergeError, match="slerp merges exactly 2 checkpoints.*'nope' does not exist"):
        merge_checkpoints(two_checkpoints + ["nope"], "slerp")
    with pytest.raises(MergeError, match="ties needs base"):
        merge_checkpoints(two_checkpoints, "ties")


# --- SimCSE, init_from and a chain from the CLI -----------------------------------------------------------------


def raw_texts(folder, n=16):
    texts = [json.loads(line)["pos"][0] for line in DEBIAN.read_text().splitlines()[:n]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folder


def test_raw_text_needs_a_stage_task_type(tmp_path, capsys):
    raw = raw_texts(tmp_path / "raw")
    args = ["--input_dir", str(raw), "--output_dir", str(tmp_path / "tok"), "--tokenizer", str(TOKENIZER),
            "--max_seq_length", "64", "--valid_fraction", "0"]
    assert tokenize_data.main(args) == 2
    assert "say which with --task_types text=mntp or text=simcse" in capsys.readouterr().err
    assert tokenize_data.main(args + ["--task_types", "text=simcse"]) == 0
    meta = json.loads((tmp_path / "tok" / "text" / "meta.json").read_text())
    assert meta["task_type"] == "simcse" and meta["inline_instruction_rows"] == 0


def test_chain_mntp_then_supervised_then_merge_from_the_cli(tmp_path):
    raw = raw_texts(tmp_path / "raw")
    text_data = tmp_path / "text_tok"
    assert tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(text_data), "--tokenizer",
                               str(TOKENIZER), "--max_seq_length", "64", "--valid_fraction", "0",
                               "--task_types", "text=mntp"]) == 0
    pairs = make_training_data(tmp_path / "pairs", rows=8, negatives=1)
    common = dict(train_batch_size=4, checkpointing_steps=2, validation_steps=100, log_interval=1, keep_last_n=0,
                  bi_attn_enabled=True, pooling_mode="mean")
    mntp = write_config(tmp_path / "c1", "mrl_spread.lora.bi_mean", tiny_qwen3(), text_data, train_steps=4,
                        **common)
    supervised = write_config(tmp_path / "c2", "mrl_spread.lora.bi_mean", tiny_qwen3(), pairs, train_steps=4,
                              **common)
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "stages": [
        {"name": "mntp", "config": str(mntp)},
        {"name": "supervised", "config": str(supervised)},
        {"name": "merged", "merge": {"method": "slerp", "t": 0.5, "models": ["supervised:step_2", "supervised"]}}]}))
    assert run.main(["--chain", str(chain)]) == 0
    out = tmp_path / "out"
    assert "mntp" in read_log(out / "mntp")[0] and read_log(out / "mntp")[-1]["mntp"] > 0
    summary = json.loads((out / "supervised" / "config.json").read_text())
    assert summary["init_from"] == str(out / "mntp" / "final")
    assert (out / "merged" / "final" / "modules.json").exists()
    assert json.loads((out / "merged" / "merge.json").read_text())["method"] == "slerp"
    card = (out / "merged" / "final" / "README.md").read_text()  # a merge says it is one, of what and how
    assert card.startswith("# merged: an l2e text-embedding model") and "This model is a **merge** of 2" in card
    assert "| method | slerp |" in card and "| t | 0.5 |" in card and "step_2" in card and ".l2e-tmp" not in card
    supervised_card = (out / "supervised" / "final" / "README.md").read_text()
    assert supervised_card.startswith("# supervised:") and f'from_checkpoint("{out / "supervised" / "final"}")' \
        in supervised_card and "tmp" not in supervised_card.split("\n")[0]
    assert run.main(["--chain", str(chain)]) == 0  # finished stages are skipped, nothing retrains
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stages": [{"name": "x", "merge": {"models": ["y"]}}, {"config": "nope.json"}]}))
    assert run.main(["--chain", str(bad)]) == 2


def test_simcse_trains_on_raw_text(tmp_path):
    raw = raw_texts(tmp_path / "raw")
    data = tmp_path / "tok"
    assert tokenize_data.main(["--input_dir", str(raw), "--output_dir", str(data), "--tokenizer", str(TOKENIZER),
                               "--max_seq_length", "64", "--valid_fraction", "0", "--task_types",
                               "text=simcse"]) == 0
    cfg = write_config(tmp_path, "mrl_spread.lora.bi_mean", tiny_qwen3(), data, train_batch_size=16, train_steps=6,
                       checkpointing_steps=6, validation_steps=100, log_interval=1, attention_dropout=0.1,
                       learning_rate=2e-3, mrl_enabled=False, spread_enabled=False)
    assert run.main(["--config", str(cfg)]) == 0
    log = read_log(tmp_path / "out" / "tiny.mrl_spread.lora.bi_mean")
    assert log[-1]["loss"] < log[0]["loss"]


@pytest.mark.parametrize("spec,message", [
    ({"method": "slerp", "t": "half"}, "t='half' must be a number in [0, 1]"),
    ({"method": "slerp", "t": 1.5}, "t=1.5 must be in [0, 1]"),
    ({"method": "sum"}, "method='sum'; use one of"),
    ({"method": "average", "weights": [1, "x"]}, "must be a list of numbers"),
    ({"method": "dare_ties", "density": 2}, "density=2 must be a number in (0, 1]"),
])
def test_chain_merge_values_are_checked_before_any_stage_trains(tmp_path, capsys, spec, message):
    """A bad merge stage at the end of a chain is reported before the first stage trains (nothing is written)."""
    pairs = make_training_data(tmp_path / "pairs", rows=8, negatives=1)
    cfg = write_config(tmp_path / "c", "mrl_spread.lora.bi_mean", tiny_qwen3(), pairs, train_steps=2)
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "stages": [
        {"name": "sup", "config": str(cfg)},
        {"name": "m", "merge": {"models": ["sup", "sup:step_2"], **spec}}]}))
    for argv in (["--chain", str(chain)], ["--chain", str(chain), "--check"]):
        assert run.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_every_task_type_is_one_registered_objective_and_the_trainer_has_no_branch_per_type():
    import ast
    from pathlib import Path

    from l2e.config import Config
    from l2e.data.read import TASK_TYPES
    from l2e.losses import build_terms
    from l2e.train.objectives import OBJECTIVES

    assert set(OBJECTIVES) == set(TASK_TYPES)
    trainer = Path(__file__).resolve().parents[1] / "l2e" / "train" / "trainer.py"
    named = [n.value for n in ast.walk(ast.parse(trainer.read_text())) if isinstance(n, ast.Constant)
             and n.value in TASK_TYPES]
    assert named == []
    # MNTP is a term of the loss registry like the others, read by its objective only (a token-level batch).
    assert [t.name for t in build_terms(Config(), batch="tokens")] == ["mntp"]
    assert "mntp" not in [t.name for t in build_terms(Config())]
    cfg = Config()
    assert [OBJECTIVES[t](cfg, None, None).negatives(3) for t in ("retrieval", "clustering", "classification",
                                                                     "simcse")] == [3, 3, 1, 0]
    assert [OBJECTIVES[t].in_batch for t in ("retrieval", "clustering", "classification", "simcse", "mntp")] == [
        True, False, False, True, False]
