"""A sentence-transformers module for bge-m3's lexical weights, so the exported sparse head loads in ``SparseEncoder``.

sentence-transformers 6.2 has SPLADE (``SpladePooling``) and static IDF weights, but no contextual per-token weight
head, so this one is l2e's own. Loading it needs ``SparseEncoder(path, trust_remote_code=True)`` with l2e
installed (sentence-transformers imports module classes outside its own package only then).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from sentence_transformers.base.modules.module import Module
from torch import nn

from l2e.model.heads import lexical_weights


class LexicalWeights(Module):
    """token states -> ``relu(Linear(h_t))`` on each token's id, max over positions; padding, the prompt and the
    ``unused_token_ids`` get no weight. Output: ``sentence_embedding`` (batch, vocab)."""

    config_keys = ["hidden_size", "embedding_dimension", "unused_token_ids", "idf"]

    def __init__(self, hidden_size: int, embedding_dimension: int, unused_token_ids: Sequence[int] = (),
                 idf: bool = False):
        super().__init__()
        self.hidden_size, self.embedding_dimension = hidden_size, embedding_dimension
        self.unused_token_ids = list(unused_token_ids)
        self.linear = nn.Linear(hidden_size, 1)
        self.idf = idf
        if idf:  # l2e's sparse_idf: each token's weight x sqrt(idf), as l2e.model.heads.LexicalHead
            self.register_buffer("token_idf", torch.ones(embedding_dimension))

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        hidden, ids, mask = features["token_embeddings"], features["input_ids"], features["attention_mask"]
        keep = mask.bool() & ~torch.isin(ids, torch.tensor(self.unused_token_ids, device=ids.device, dtype=ids.dtype))
        prompt = features.get("prompt_length")
        if prompt:  # right padding (the feature-extraction default): the prompt is the first tokens
            n = int(prompt[0]) if isinstance(prompt, torch.Tensor) else int(prompt)
            keep[:, :n] = False
        weights = torch.relu(self.linear(hidden.to(self.linear.weight.dtype))).squeeze(-1)
        if self.idf:
            weights = weights * self.token_idf.sqrt()[ids]
        features["sentence_embedding"] = lexical_weights(weights, ids, keep, self.embedding_dimension)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "LexicalWeights":
        config = cls.load_config(model_name_or_path, subfolder=subfolder)
        model = cls(**config)
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, subfolder=subfolder, model=model)


class TrainablePooling(Module):
    """l2e's attention / latent-attention pooling as a sentence-transformers module (replaces ``Pooling``).

    ``include_prompt: false`` leaves the prompt's tokens out of the pooling, as skip-instruction does in l2e
    (both count the prompt as tokenized alone). Loading needs ``trust_remote_code=True`` with l2e installed.
    """

    config_keys = ["pooling_mode", "hidden_size", "latent_num", "latent_heads", "latent_head_dim", "latent_mlp_mult",
                   "include_prompt"]

    def __init__(self, pooling_mode: str, hidden_size: int, latent_num: int = 32, latent_heads: int = 4,
                 latent_head_dim: int = 64, latent_mlp_mult: int = 1, include_prompt: bool = True):
        super().__init__()
        from l2e.model.attention_pooling import POOLERS

        self.pooling_mode, self.hidden_size, self.include_prompt = pooling_mode, hidden_size, include_prompt
        self.latent_num, self.latent_heads = latent_num, latent_heads
        self.latent_head_dim, self.latent_mlp_mult = latent_head_dim, latent_mlp_mult
        self.pooler = POOLERS[pooling_mode](hidden_size, latent_num=latent_num, latent_heads=latent_heads,
                                            latent_head_dim=latent_head_dim, latent_mlp_mult=latent_mlp_mult)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        keep = features["attention_mask"].bool().clone()
        prompt = features.get("prompt_length")
        if prompt and not self.include_prompt:  # right padding: the prompt is the first tokens
            keep[:, :int(prompt[0]) if isinstance(prompt, torch.Tensor) else int(prompt)] = False
        features["sentence_embedding"] = self.pooler(features["token_embeddings"], keep)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_size

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        self.save_torch_weights(output_path, safe_serialization=safe_serialization)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "TrainablePooling":
        model = cls(**cls.load_config(model_name_or_path, subfolder=subfolder))
        return cls.load_torch_weights(model_name_or_path=model_name_or_path, subfolder=subfolder, model=model)
