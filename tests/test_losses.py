"""Loss terms on tiny tensors: hand-computed numbers, a loop reference, sentence-transformers as a peer oracle."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l2e.config import from_dict
from helpers_losses import make_loss_fn
from l2e.core.registry import lookup
from l2e.losses import LOSSES, build_loss, make_batch
from l2e.losses.infonce import infonce_rows
from l2e.losses.kd import kd_rows
from l2e.losses.matryoshka import matryoshka
from l2e.losses.spread_out import spread_out, uniformity

E = math.e


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def keys(*k):
    return torch.tensor(k, dtype=torch.long)


def rows_of(q, p, n=None, *, pos_keys, neg_keys=None, temperature=1.0, directions=("q2p",), mask=True,
            in_batch=True):
    batch = make_batch(q, p, n, pos_keys=pos_keys, neg_keys=neg_keys, use_in_batch=in_batch)
    return infonce_rows(batch, temperature=temperature, directions=directions, mask_false_negatives=mask)


# Two queries on the axes; q0 and p1 un-normalised on purpose (the loss normalises).
Q = t([[3, 0], [0, 1]])
P = t([[1, 0], [0, 2]])
N = t([[[-1, 0]], [[0, -1]]])  # (B=2, K=1, D=2)
PK, NK = keys(10, 11), keys([20], [21])


# --- InfoNCE: hand-computed ---------------------------------------------------------------------------------

def test_infonce_in_batch_with_hard_negatives_by_hand():
    # Row 0 scores (cos / 0.5): p0 2, p1 0, n0 -2, n1 0 -> log(e^2 + 2 + e^-2) - 2 = 2 log(1 + e^-2); row 1 alike.
    loss = make_loss_fn(temperature=0.5)(Q, P, N, pos_keys=PK, neg_keys=NK)
    assert loss["loss"].item() == pytest.approx(2 * math.log(1 + E**-2), abs=1e-6)
    assert loss["infonce"].item() == pytest.approx(loss["loss"].item())


def test_infonce_without_in_batch_uses_own_group_only():
    # Row 0: p0 2, n0 -2 -> log(e^2 + e^-2) - 2 = log(1 + e^-4).
    expected = math.log(1 + E**-4)
    fn = make_loss_fn(temperature=0.5)
    assert fn(Q, P, N, pos_keys=PK, neg_keys=NK, use_in_batch=False)["loss"].item() == pytest.approx(expected, abs=1e-6)
    off = make_loss_fn(temperature=0.5, in_batch_negatives=False)  # the config switch wins over the dataset's
    assert off(Q, P, N, pos_keys=PK, neg_keys=NK, use_in_batch=True)["loss"].item() == pytest.approx(expected, abs=1e-6)


def test_infonce_q2q_and_p2q_join_one_softmax_by_hand():
    # Row 0 at T=1: q2p [1, 0, -1, 0]; q2q [q0.q1 = 0]; p2q [p0.q0 = 1, p0.q1 = 0]  ->  log(2e + 4 + 1/e) - 1.
    fn = make_loss_fn(temperature=1.0, directions=["q2p", "q2q", "p2q"])
    expected = math.log(2 * E + 4 + 1 / E) - 1
    assert fn(Q, P, N, pos_keys=PK, neg_keys=NK)["loss"].item() == pytest.approx(expected, abs=1e-6)
    only_q2q = make_loss_fn(temperature=1.0, directions=["q2p", "q2q"])
    expected = math.log(E + 3 + 1 / E) - 1
    assert only_q2q(Q, P, N, pos_keys=PK, neg_keys=NK)["loss"].item() == pytest.approx(expected, abs=1e-6)


def test_false_negative_masking_by_hand():
    # Both queries have the same positive passage (key 5): unmasked each row sees it twice -> log 2 per row.
    q, p = t([[1, 0], [0, 1]]), t([[1, 0], [1, 0]])
    masked = make_loss_fn(temperature=1.0)(q, p, pos_keys=keys(5, 5))["loss"].item()
    unmasked = make_loss_fn(temperature=1.0, mask_false_negatives=False)(q, p, pos_keys=keys(5, 5))["loss"].item()
    assert masked == pytest.approx(0.0, abs=1e-7)
    assert unmasked == pytest.approx(math.log(2), abs=1e-6)


def test_without_masking_keys_are_optional():
    fn = make_loss_fn(temperature=0.5, directions=["q2p", "q2q", "p2q"], mask_false_negatives=False)
    with_keys = fn(Q, P, N, pos_keys=PK, neg_keys=NK)["loss"]
    assert fn(Q, P, N, pos_keys=None)["loss"].item() == pytest.approx(with_keys.item())
    assert fn(Q, P, N, pos_keys=None, use_in_batch=False)["loss"].item() == pytest.approx(math.log(1 + E**-4), abs=1e-6)


# --- InfoNCE: masking equals removal; a loop reference for every switch --------------------------------------

def test_duplicate_positive_is_the_same_as_removing_that_candidate():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    p[2] = p[0]  # the same passage text, so the same key
    masked = rows_of(q, p, pos_keys=keys(7, 8, 7))
    assert masked[0].item() == pytest.approx(rows_of(q[:2], p[:2], pos_keys=keys(7, 8))[0].item(), abs=1e-6)
    assert masked[2].item() == pytest.approx(rows_of(q[1:], p[1:], pos_keys=keys(8, 7))[1].item(), abs=1e-6)
    assert masked[1].item() == pytest.approx(rows_of(q, p, pos_keys=keys(7, 8, 7), mask=False)[1].item(), abs=1e-6)


def test_own_hard_negative_equal_to_the_positive_is_removed():
    g = torch.Generator().manual_seed(1)
    q, p, n = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(2, 2, 4, generator=g)
    masked = rows_of(q, p, n, pos_keys=keys(1, 2), neg_keys=keys([3, 1], [4, 5]), in_batch=False)
    kept = rows_of(q, p, n[:, :1], pos_keys=keys(1, 2), neg_keys=keys([3], [4]), in_batch=False)
    assert masked[0].item() == pytest.approx(kept[0].item(), abs=1e-6)
    assert masked[1].item() != pytest.approx(kept[1].item(), abs=1e-3)  # row 1 keeps both of its negatives


def reference_rows(q, p, n, pos_keys, neg_keys, temperature, directions, mask, in_batch):
    """InfoNCE per row written as explicit candidate lists (the definition, not the implementation)."""
    q, p, n = (F.normalize(x.double(), dim=-1) for x in (q, p, n))
    b, k = n.shape[:2]

    def cos(a, c):
        return float(a @ c) / temperature

    def same(key, i):
        return mask and int(key) == int(pos_keys[i])

    out = []
    for i in range(b):
        pos = cos(q[i], p[i])
        cands = [pos]
        for j in range(b) if in_batch else [i]:
            if j != i and not same(pos_keys[j], i):
                cands.append(cos(q[i], p[j]))
            cands += [cos(q[i], n[j, m]) for m in range(k) if not same(neg_keys[j, m], i)]
        if in_batch and "q2q" in directions:
            cands += [cos(q[i], q[j]) for j in range(b) if j != i and not same(pos_keys[j], i)]
        if in_batch and "p2q" in directions:
            cands += [cos(q[j], p[i]) for j in range(b) if j == i or not same(pos_keys[j], i)]
        if in_batch and "p2p" in directions:  # the passages of the other queries
            cands += [cos(p[i], p[j]) for j in range(b) if j != i and not same(pos_keys[j], i)]
            cands += [cos(p[i], n[j, m]) for j in range(b) if j != i for m in range(k) if not same(neg_keys[j, m], i)]
        out.append(math.log(sum(math.exp(c) for c in cands)) - pos)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("directions", [("q2p",), ("q2p", "q2q"), ("q2p", "p2q"), ("q2p", "q2q", "p2q"),
                                        ("q2p", "p2p"), ("q2p", "q2q", "p2p")])
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("in_batch", [True, False])
def test_infonce_matches_the_loop_reference(directions, mask, in_batch):
    g = torch.Generator().manual_seed(2)
    q, p, n = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    p[3] = p[1]  # queries 1 and 3 share a positive; query 0's second negative is query 2's positive
    n[0, 1] = p[2]
    pos_keys, neg_keys = keys(0, 1, 2, 1), keys([10, 2], [11, 12], [13, 2], [14, 15])
    got = rows_of(q, p, n, pos_keys=pos_keys, neg_keys=neg_keys, temperature=0.3, directions=directions,
                  mask=mask, in_batch=in_batch)
    want = reference_rows(q, p, n, pos_keys, neg_keys, 0.3, directions, mask, in_batch)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


# --- peer oracle: sentence-transformers ------------------------------------------------------------------------

class Precomputed(nn.Module):
    """A stand-in SentenceTransformer whose 'features' already are the embeddings."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, features):
        return {"sentence_embedding": features["emb"]}

    def get_embedding_dimension(self):
        return self.dim


def st_features(q, p, n):
    return [{"emb": q}, {"emb": p}] + [{"emb": n[:, k]} for k in range(n.shape[1])]


def random_leaves(seed, b=4, k=3, d=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in [(b, d), (b, d), (b, k, d)]]


@pytest.mark.parametrize("ours,theirs", [
    (["q2p"], ("query_to_doc",)),
    (["q2p", "q2q", "p2q"], ("query_to_doc", "query_to_query", "doc_to_query")),
    (["q2p", "q2q", "p2q", "p2p"], ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")),
])
def test_infonce_equals_sentence_transformers_mnrl(ours, theirs):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    q, p, n = random_leaves(3)
    mine = make_loss_fn(temperature=0.05, directions=ours)(q, p, n, pos_keys=torch.arange(4),
                                                           neg_keys=torch.arange(12).view(4, 3) + 4)["loss"]
    mnrl = MultipleNegativesRankingLoss(Precomputed(8), scale=20.0, directions=theirs, partition_mode="joint")
    ref = mnrl(st_features(q, p, n), labels=None)
    assert mine.item() == pytest.approx(ref.item(), abs=1e-5)
    g_mine = torch.autograd.grad(mine, [q, p, n])
    g_ref = torch.autograd.grad(ref, [q, p, n])
    for a, b in zip(g_mine, g_ref):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)


def test_mrl_equals_sentence_transformers_matryoshka():
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    q, p, n = random_leaves(4)
    mine = make_loss_fn(temperature=0.05, mrl_enabled=True, mrl_dims=[4, 2], mrl_dim_weights=[0.5, 0.25])(
        q, p, n, pos_keys=torch.arange(4), neg_keys=torch.arange(12).view(4, 3) + 4)
    model = Precomputed(8)
    ref = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), [8, 4, 2], [1.0, 0.5, 0.25])
    assert mine["loss"].item() == pytest.approx(ref(st_features(q, p, n), labels=None).item(), abs=1e-5)
    assert set(mine) == {"loss", "infonce", "infonce@4", "infonce@2"}


# --- Matryoshka: hand-computed -------------------------------------------------------------------------------

MQ, MP = t([[1, 1], [1, -1]]), t([[1, 1], [-1, 1]])
FULL = math.log(1 + E**-1) + 0.5  # cosines [[1, 0], [0, -1]]
FIRST = math.log(1 + E**-2) + 1  # first feature only: q -> [1, 1], p -> [1, -1]


def test_mrl_weights_prefixes_and_keeps_the_full_size_by_hand():
    fn = make_loss_fn(temperature=1.0, mrl_enabled=True, mrl_dims=[1], mrl_dim_weights=[0.5])
    out = fn(MQ, MP, pos_keys=keys(0, 1))
    assert out["infonce"].item() == pytest.approx(FULL, abs=1e-6)
    assert out["infonce@1"].item() == pytest.approx(FIRST, abs=1e-6)
    assert out["loss"].item() == pytest.approx(FULL + 0.5 * FIRST, abs=1e-6)


def test_mrl_without_full_and_with_full_listed():
    no_full = make_loss_fn(temperature=1.0, mrl_enabled=True, mrl_dims=[1], mrl_dim_weights=[0.5],
                           mrl_include_full=False)(MQ, MP, pos_keys=keys(0, 1))
    assert set(no_full) == {"loss", "infonce@1"}
    assert no_full["loss"].item() == pytest.approx(0.5 * FIRST, abs=1e-6)
    listed = make_loss_fn(temperature=1.0, mrl_enabled=True, mrl_dims=[2, 1], mrl_dim_weights=[0.3, 0.5])(
        MQ, MP, pos_keys=keys(0, 1))  # full size listed: its own weight, counted once
    assert set(listed) == {"loss", "infonce@2", "infonce@1"}
    assert listed["loss"].item() == pytest.approx(0.3 * FULL + 0.5 * FIRST, abs=1e-6)


# --- spread-out ------------------------------------------------------------------------------------------------

def test_spread_out_by_hand():
    # Points ±e1 (queries), ±e2 (positives): 2 pairs at squared distance 4, 4 pairs at 2.
    q, p = t([[1, 0], [-1, 0]]), t([[0, 1], [0, -1]])
    expected = math.log((2 * E**-4 + 4 * E**-2) / 6)
    assert uniformity(torch.cat([q, p]), 1.0).item() == pytest.approx(expected, abs=1e-6)
    out = make_loss_fn(temperature=1.0, spread_enabled=True, spread_weight=0.1, spread_t=1.0)(q, p, pos_keys=keys(0, 1))
    assert out["spread"].item() == pytest.approx(expected, abs=1e-6)
    # InfoNCE here: every cosine is 0, so each row is log 2.
    assert out["loss"].item() == pytest.approx(math.log(2) + 0.1 * expected, abs=1e-6)
    assert uniformity(t([[1, 0], [0, 5]]), 2.0).item() == pytest.approx(-4.0, abs=1e-6)  # one pair, ||.||² = 2


def test_spread_out_per_mrl_dim():
    out = make_loss_fn(temperature=1.0, spread_enabled=True, spread_t=1.0, mrl_enabled=True, mrl_dims=[1],
                       mrl_dim_weights=[0.5])(MQ, MP, pos_keys=keys(0, 1))
    # First feature: q -> [1, 1], p -> [1, -1]: 3 coincident points and one antipode: 3 pairs at 0, 3 at 4.
    assert out["spread@1"].item() == pytest.approx(math.log((3 + 3 * E**-4) / 6), abs=1e-6)
    total = FULL + 0.1 * out["spread"].item() + 0.5 * (FIRST + 0.1 * out["spread@1"].item())
    assert out["loss"].item() == pytest.approx(total, abs=1e-6)


def test_spread_out_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    term = spread_out(t=2.0)
    assert torch.autograd.gradcheck(lambda a, b: term(make_batch(a, b, pos_keys=keys(0, 1, 2))), (q, p))


# --- knowledge distillation -------------------------------------------------------------------------------------

KQ, KP, KN = t([[1, 0]]), t([[2, 0]]), t([[[0, 1]]])  # student cosines [1, 0]


def test_kd_is_zero_when_the_student_agrees_and_kl_by_hand():
    agree = kd_rows(KQ, KP, KN, t([2.0]), t([[0.0]]), temperature=1.0, kd_temperature=2.0)  # teacher [1, 0]
    assert agree.item() == pytest.approx(0.0, abs=1e-7)
    # Uniform teacher: KL = sum 0.5 (log 0.5 - log s), log s = [1, 0] - log(1 + e).
    uniform = kd_rows(KQ, KP, KN, t([0.0]), t([[0.0]]), temperature=1.0, kd_temperature=1.0)
    assert uniform.item() == pytest.approx(math.log(1 + E) - math.log(2) - 0.5, abs=1e-6)


def test_kd_term_in_the_total_and_skipped_without_teacher_scores():
    fn = make_loss_fn(temperature=1.0, kd_enabled=True, kd_weight=2.0)
    out = fn(KQ, KP, KN, pos_keys=keys(0), neg_keys=keys([1]), pos_scores=t([0.0]), neg_scores=t([[0.0]]))
    kl = math.log(1 + E) - math.log(2) - 0.5
    infonce = math.log(1 + E) - 1  # one query: candidates p (1) and n (0)
    assert out["kd"].item() == pytest.approx(kl, abs=1e-6)
    assert out["loss"].item() == pytest.approx(infonce + 2.0 * kl, abs=1e-6)
    assert "kd" not in fn(KQ, KP, KN, pos_keys=keys(0), neg_keys=keys([1]))


# --- builder, registry, dtypes -------------------------------------------------------------------------------------

def test_build_loss_reads_the_config():
    cfg = from_dict({"model_path": "m", "temperature": 0.5, "in_batch_negatives": False, "spread_enabled": True,
                     "mrl_enabled": True, "mrl_dims": [1], "mrl_dim_weights": [1.0]}, check_paths=False)
    out = build_loss(cfg)(Q, P, N, pos_keys=PK, neg_keys=NK)
    assert set(out) == {"loss", "infonce", "spread", "infonce@1", "spread@1"}
    assert out["infonce"].item() == pytest.approx(math.log(1 + E**-4), abs=1e-6)  # own group only


def test_registry_names_and_miss():
    assert sorted(LOSSES) == ["heads", "infonce", "kd", "mntp", "self_distill", "splade_flops", "spread_out"]
    with pytest.raises(KeyError, match="unknown loss .arcface.; valid: heads, infonce, kd, mntp, self_distill, splade_flops, spread_out"):
        lookup(LOSSES, "loss", "arcface")


def test_each_builder_reads_its_own_config_fields():
    from l2e.config import Config
    from l2e.losses import build_terms

    assert [t.name for t in build_terms(Config())] == ["infonce"]
    terms = {t.name: t for t in build_terms(Config(spread_enabled=True, spread_weight=0.3, kd_enabled=True,
                                                   kd_weight=2.0))}
    assert set(terms) == {"infonce", "spread", "kd"}
    assert terms["spread"].weight == 0.3 and terms["spread"].per_dim and terms["spread"].gathered
    assert terms["kd"].weight == 2.0 and not terms["kd"].per_dim and terms["kd"].needs_teacher


def test_a_new_loss_is_one_registered_builder(monkeypatch):
    """Adding a loss: register a builder; build_loss picks it up, Matryoshka applies it per prefix."""
    from l2e.config import Config
    from l2e.losses import Term

    monkeypatch.setitem(LOSSES, "norm", lambda cfg: Term("norm", lambda b: b.q.norm(dim=-1).mean(), 0.5))
    out = build_loss(Config(temperature=1.0, mrl_enabled=True, mrl_dims=[1], mrl_dim_weights=[1.0]))(
        MQ, MP, pos_keys=keys(0, 1))
    assert out["norm"].item() == pytest.approx(math.sqrt(2), abs=1e-6) and out["norm@1"].item() == pytest.approx(1.0)
    assert out["loss"].item() == pytest.approx(FULL + FIRST + 0.5 * (math.sqrt(2) + 1.0), abs=1e-6)


def test_half_precision_embeddings_are_scored_in_float32():
    out = make_loss_fn(temperature=0.5)(Q.bfloat16(), P.bfloat16(), N.bfloat16(), pos_keys=PK, neg_keys=NK)
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(2 * math.log(1 + E**-2), abs=1e-6)


# --- user-facing errors ---------------------------------------------------------------------------------------

def test_error_unknown_direction():
    with pytest.raises(ValueError, match=r"directions=\['q2p', 'd2d'\] must contain 'q2p' and only: q2p, p2q, q2q"):
        make_loss_fn(temperature=1.0, directions=["q2p", "d2d"])


def test_error_masking_needs_keys():
    fn = make_loss_fn(temperature=1.0)
    with pytest.raises(ValueError, match=r"mask_false_negatives=true needs pos_keys \(B,\)"):
        fn(Q, P, pos_keys=None)
    with pytest.raises(ValueError, match=r"mask_false_negatives=true needs neg_keys \(B, K\)"):
        fn(Q, P, N, pos_keys=PK)


def test_error_shapes():
    with pytest.raises(ValueError, match=r"shapes q \(2, 2\), p \(2, 2\), n \(2, 2\); expected"):
        make_loss_fn(temperature=1.0)(Q, P, N[:, 0], pos_keys=PK, neg_keys=NK)
    with pytest.raises(ValueError, match=r"neg_keys has shape \(2,\); expected \(2, 1\)"):
        make_loss_fn(temperature=1.0)(Q, P, N, pos_keys=PK, neg_keys=keys(20, 21))


def test_error_mrl_dims():
    with pytest.raises(ValueError, match="mrl_dims contains 4, larger than the embedding size 2"):
        make_loss_fn(temperature=1.0, mrl_enabled=True, mrl_dims=[4], mrl_dim_weights=[1.0])(Q, P, pos_keys=PK)
    with pytest.raises(ValueError, match="mrl_dims has 1 entries but mrl_dim_weights has 2"):
        make_loss_fn(temperature=1.0, mrl_enabled=True, mrl_dims=[1], mrl_dim_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="no embedding size to train"):
        matryoshka([], dims=[], weights=[], include_full=False)


def test_error_kd_scores_shape():
    fn = make_loss_fn(temperature=1.0, kd_enabled=True)
    with pytest.raises(ValueError, match=r"kd needs teacher pos_scores of shape \(1,\) and neg_scores of shape "
                                         r"\(1, 1\) with at least one hard negative; got \(1,\) and None"):
        fn(KQ, KP, KN, pos_keys=keys(0), neg_keys=keys([1]), pos_scores=t([0.0]))


# --- margins (Qwen3-Embedding's false-negative mask, PaddleNLP's additive margin) -------------------------------

def test_false_negative_margin_drops_candidates_above_the_positive_by_hand():
    # Row 0 at T=1: positive cos 0.6; candidates 0.9 (above 0.6 + 0.1: dropped) and 0.65 (kept).
    q = t([[1.0, 0.0]])
    p = t([[0.6, 0.8]])
    n = t([[[0.9, math.sqrt(1 - 0.81)], [0.65, math.sqrt(1 - 0.65**2)]]])
    fn = make_loss_fn(temperature=1.0, false_negative_margin=0.1)
    got = fn(q, p, n, pos_keys=keys(0), neg_keys=keys([1, 2]))["loss"].item()
    assert got == pytest.approx(math.log(math.exp(0.6) + math.exp(0.65)) - 0.6, abs=1e-6)
    off = make_loss_fn(temperature=1.0)(q, p, n, pos_keys=keys(0), neg_keys=keys([1, 2]))["loss"].item()
    assert off == pytest.approx(math.log(math.exp(0.6) + math.exp(0.9) + math.exp(0.65)) - 0.6, abs=1e-6)
    own = fn(q, p, n, pos_keys=keys(0), neg_keys=keys([1, 2]), use_in_batch=False)["loss"].item()
    assert own == pytest.approx(got, abs=1e-6)  # the same candidates in the own-group path


def test_positive_margin_by_hand():
    # Row 0 at T=0.5: positive cos 1 - 0.2 margin; negative cos 0 -> log(e^1.6 + e^0) - 1.6.
    q, p, n = t([[1.0, 0.0]]), t([[1.0, 0.0]]), t([[[0.0, 1.0]]])
    got = make_loss_fn(temperature=0.5, positive_margin=0.2)(q, p, n, pos_keys=keys(0), neg_keys=keys([1]))
    assert got["loss"].item() == pytest.approx(math.log(math.exp(1.6) + 1) - 1.6, abs=1e-6)
    with pytest.raises(Exception, match="false_negative_margin=-0.5: use -1"):
        from_dict({"model_path": "m", "false_negative_margin": -0.5}, check_paths=False)
