"""The extension points (issue 24): a representation head and a pooling registered from this file alone -- no other
file edited -- train, export and score; and no module outside the registries lists head or pooling names.

The toy head ``norm`` gives each text one non-negative number (softplus of a linear map of its mean token state),
a ``sparse_vector`` of width 1 scored by dot product; the toy pooling ``max`` is sentence-transformers' max pooling
(``pooling_mode_max_tokens``), so the export must load in sentence-transformers and give l2e's vectors.
"""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import run
from helpers_models import tiny_qwen3
from helpers_train import ROOT, make_training_data, read_log, write_config
from l2e.model.heads import HEADS, HeadSpec, register_head, sparse_vector_scores
from l2e.model.pooling import POOLING, POOLINGS, register


def max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pool_mask=None) -> torch.Tensor:
    """Max over the real tokens of each hidden dimension (sentence-transformers' max pooling)."""
    keep = attention_mask.bool() if pool_mask is None else attention_mask.bool() & pool_mask.bool()
    return hidden.float().masked_fill(~keep[..., None], -1e9).amax(dim=1)  # (batch, hidden)


class NormHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        w = keep.float()[..., None]
        mean = (hidden.float() * w).sum(dim=1) / w.sum(dim=1).clamp(min=1)  # (B, H)
        return F.softplus(self.linear.to(torch.float32)(mean))  # (B, 1)


@pytest.fixture
def toys():
    """``norm`` and ``max`` registered for one test; the registries as they were afterwards."""
    saved = [(table, dict(table)) for table in (HEADS, POOLINGS, POOLING)]
    register("max", st_mode="pooling_mode_max_tokens")(max_pool)
    register_head(HeadSpec(
        name="norm", kind="sparse_vector", build=lambda backbone, settings: NormHead(backbone.config.hidden_size),
        encode=lambda head, hidden, input_ids, real, text: {"norm": head(hidden, text)},
        score=sparse_vector_scores("norm"), summary="toy: one number per text", temperature=1.0, fusion_weight=0.5,
        enabled=lambda cfg: True))
    yield
    for table, before in saved:
        table.clear()
        table.update(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("data"), rows=8, negatives=1)


def test_a_head_and_a_pooling_from_one_file_train_export_and_score(toys, tmp_path, data):
    from sentence_transformers import SentenceTransformer

    from l2e.retrieval.embedder import Embedder
    from l2e.retrieval.search import FusedScorer, Reps, RepScorer

    cfg = write_config(tmp_path, "f2llm", tiny_qwen3(), data, train_batch_size=4, train_steps=2, checkpointing_steps=2,
                       validation_steps=100, pooling_mode="max")
    assert run.main(["--config", str(cfg)]) == 0
    out = tmp_path / "out" / "tiny.f2llm"
    log = [r for r in read_log(out) if "norm" in r]
    assert log and all(np.isfinite(r["norm"]) for r in log)  # its InfoNCE term trained
    final = out / "final"
    settings = json.loads((final / "l2e_model.json").read_text())
    assert settings["heads"] == ["norm"] and settings["pooling_mode"] == "max"
    assert dict(settings["hybrid_weights"]) == {"dense": 1.0, "norm": 0.5}
    assert "norm (toy: one number per text)" in (final / "README.md").read_text()
    assert json.loads((final / "1_Pooling" / "config.json").read_text())["pooling_mode_max_tokens"] is True

    embedder = Embedder.from_checkpoint(str(final), query_instruction="")
    docs = ["the cat sleeps on a mat", "the dog barks at night", "a fish swims"]
    reps = embedder.encode_reps(docs, ["dense", "norm"])
    assert reps["norm"].shape == (3, 1) and (reps["norm"].toarray() > 0).all()
    st = SentenceTransformer(str(final), device="cpu").encode(docs, convert_to_numpy=True)
    np.testing.assert_allclose(st, reps["dense"], atol=2e-5)  # the max pooling exported as sentence-transformers'

    queries = ["a cat", "a dog"]
    shared = Reps(embedder, ["dense", "norm"])
    norm = RepScorer(shared, "norm")
    norm.index(docs)
    q = embedder.encode_reps(queries, ["norm"])["norm"].toarray()
    np.testing.assert_allclose(norm.score(queries, ""), q @ reps["norm"].toarray().T, rtol=1e-5)
    fused = FusedScorer({n: RepScorer(shared, n) for n in ("dense", "norm")}, dict(embedder.model.settings.hybrid_weights))
    fused.index(docs)
    assert fused.score(queries, "").shape == (2, 3)


def test_the_toys_are_gone_after_their_test():
    assert "norm" not in HEADS and "max" not in POOLINGS and "max" not in POOLING


# --- no literal list of names outside the registries ---------------------------------------------------------------

REGISTRIES = {"l2e/model/heads", "l2e/model/pooling.py", "l2e/model/attention_pooling.py",
              "l2e/export/head_exports.py"}  # the files whose job is to name heads and poolings


def _strings(node) -> list:
    items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", [])
    return [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def name_lists(source: str, names: set) -> list:
    """Lines of ``source`` with a tuple / list / set / dict literal holding two or more of ``names``, or a comparison
    with one of them (an if-chain a new name would have to extend)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and len(set(_strings(node)) & names) >= 2:
            found.append(node.lineno)
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            flat = [s for side in sides for s in ([side] if isinstance(side, ast.Constant) else getattr(side, "elts", []))]
            if any(isinstance(s, ast.Constant) and s.value in names for s in flat):
                found.append(node.lineno)
    return found


def test_name_lists_finds_lists_and_if_chains():
    names = {"sparse", "colbert"}
    assert name_lists('X = ("sparse", "colbert")\nif h == "colbert": pass\nY = {"sparse": 1}\n', names) == [1, 2]
    assert name_lists('if h in ("sparse",): pass\nd["sparse"]\n', names) == [1]


def test_no_module_lists_head_or_pooling_names():
    files = [p for p in sorted((ROOT / "l2e").rglob("*.py")) + sorted(ROOT.glob("*.py"))
             if not any(str(p.relative_to(ROOT)).startswith(r) for r in REGISTRIES)]
    problems = []
    for names in (set(HEADS), set(POOLINGS)):
        for path in files:
            problems += [f"{path.relative_to(ROOT)}:{line}" for line in name_lists(Path(path).read_text(), names)]
    assert not problems, f"names of registered heads/poolings listed outside their registries: {problems}"
