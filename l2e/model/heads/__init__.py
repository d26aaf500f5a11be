"""Representations beside the pooled dense vector, one file per head: ``sparse`` (bge-m3 lexical weights,
``sparse.py``), ``splade`` (``splade.py``), ``colbert`` (multi-vector late interaction, ``colbert.py``).

``HEADS`` maps a head's name to its :class:`HeadSpec` (filled by ``@register_head``, the peft ``mapping.py``
pattern): how to build its module from the backbone and the model's settings, how it encodes a batch, how it scores
queries against documents, and plain data the higher rooms dispatch on -- its ``kind`` (``sparse_vector``: a
(batch, width) non-negative weight vector scored by dot product, given by the Embedder as a scipy csr matrix;
``multi_vector``: (batch, seq, dim) unit token vectors plus their mask under ``<name>_mask``, scored by mean
MaxSim, given as a list of (tokens, dim) arrays), its loss temperature and weight when the config names none, and
its fused-score weight. Nothing outside this package lists head names or branches on one: a new head is one file
here (plus, if it has a sentence-transformers peer, an ``@register_head_export`` in ``l2e/export/head_exports.py``).

A head reads the backbone's token states (batch, seq, hidden); ``real`` (batch, seq) marks the real tokens and
``text`` the real tokens outside the instruction.

Config: a head is on when the config's ``<name>_enabled`` is true (``HeadSpec.enabled`` may say otherwise); its
InfoNCE reads ``<name>_temperature`` / ``<name>_weight`` and the fused score ``fusion_<name>_weight`` where the config
has them, the spec's defaults where it does not (:func:`head_option`).
"""
from __future__ import annotations

from l2e.model.heads.maths import bm25_idf, flops, lexical_weights, maxsim, sparse_scores, splade_pool  # noqa: F401
from l2e.model.heads.registry import (HEADS, KINDS, HeadSpec, build_heads, enabled_heads, get_head,  # noqa: F401
                                      head_names, head_option, head_reps, head_scores, multi_vector_scores,
                                      register_head, sparse_vector_scores)

# The built-in heads: each file registers its spec on import.
from l2e.model.heads.sparse import LexicalHead  # noqa: E402,F401
from l2e.model.heads.splade import SpladeHead  # noqa: E402
from l2e.model.heads.colbert import ColbertHead  # noqa: E402

HEAD_NAMES = head_names()  # the built-in heads, for argparse choices; validation reads HEADS itself

__all__ = ["HEADS", "HEAD_NAMES", "HeadSpec", "KINDS", "ColbertHead", "LexicalHead", "SpladeHead", "bm25_idf",
           "build_heads", "enabled_heads", "flops", "get_head", "head_names", "head_option", "head_reps",
           "head_scores", "lexical_weights", "maxsim", "register_head", "sparse_scores", "splade_pool"]
