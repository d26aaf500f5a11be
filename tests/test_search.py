"""The one ranking rule of ``l2e.retrieval.search``: best first, equal scores by corpus index, exact at the cut."""
from __future__ import annotations

import numpy as np
import pytest

from l2e.retrieval.search import dense_top_k, group_by_prompt, rank_rows, search_top_k, top_k


def reference(scores: np.ndarray, k: int):
    """Full sort of every row: score descending, then index ascending."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("k", [1, 3, 7, 12, 50])
def test_top_k_equals_a_full_sort_even_when_ties_straddle_the_cut(k):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 12)).astype(np.float32)  # four values: ties everywhere, also at rank k
    scores[0] = 0.0  # a BM25 query of stopwords: every document scores 0
    got_s, got_i = top_k(scores, k)
    want_s, want_i = reference(scores, k)
    assert got_i.dtype == np.int64 and got_i.shape == (30, min(k, 12))
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_s, want_s)
    assert got_i[0].tolist() == list(range(min(k, 12)))


def test_rank_rows_orders_candidates_by_score_then_index():
    s, i = rank_rows(np.array([[0.5, 0.9, 0.5, 0.1]]), np.array([[7, 3, 2, 9]]))
    assert i.tolist() == [[3, 2, 7, 9]] and s.tolist() == [[0.9, 0.5, 0.5, 0.1]]


class MatrixScorer:
    def __init__(self, scores):
        self.scores = scores

    def score(self, queries, instruction=None):
        return self.scores[[int(q) for q in queries]]


def test_block_size_changes_no_result():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(25, 40)).astype(np.float32)
    queries = [str(i) for i in range(25)]
    whole = search_top_k(MatrixScorer(scores), queries, k=9, block=25)
    for block in (1, 4, 7):
        parts = search_top_k(MatrixScorer(scores), queries, k=9, block=block)
        np.testing.assert_array_equal(parts[1], whole[1])
    np.testing.assert_array_equal(whole[1], reference(scores, 9)[1])


def test_dense_top_k_is_the_inner_product_ranking():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(9, 8)).astype(np.float32)
    c = rng.normal(size=(30, 8)).astype(np.float32)
    c[5] = c[17]  # two equal documents: the lower index first
    s, i = dense_top_k(q, c, k=30, block=4)
    want_s, want_i = reference(q @ c.T, 30)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, rtol=1e-5)
    assert dense_top_k(q, c, k=100)[1].shape == (9, 30)  # k capped at the pool


def test_group_by_prompt_keeps_first_seen_order():
    assert group_by_prompt([None, "a", None, "b", "a"]) == {None: [0, 2], "a": [1, 4], "b": [3]}
