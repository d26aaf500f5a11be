"""Inference: texts -> L2-normalised float32 embeddings, exactly as the model saw texts in training.

Tokenization is ``l2e.data.tokens.encode_texts`` (the same function ``tokenize_data.py`` uses) and batches are
``pad_batch`` with its ``pool_mask``, so instructions, EOS handling and skip-instruction pooling agree with
training. Texts are sorted by length before batching (less padding), results come back in input order.

    emb = Embedder.from_checkpoint("output/l2e/final")          # a training checkpoint (full or adapter)
    emb = Embedder.from_pretrained("path/to/all-MiniLM-L6-v2")    # any HF / sentence-transformers / GGUF model
    q = emb.encode_queries(["what is rope?"]); d = emb.encode_corpus(["RoPE rotates ..."])
    scores = q @ d.T                                               # cosine similarities
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from l2e.core.errors import L2EError
from l2e.data.tokens import encode_inline, encode_texts, is_decoder_tokenizer, pad_batch
from l2e.model.bidirectional import set_bidirectional
from l2e.model.embedding_model import EmbeddingModel, load_backbone, load_embedding_model, load_tokenizer
from l2e.model.heads import get_head
from l2e.model.pooling import POOLINGS, pooling_from_st_mode
from l2e.model.precision import autocast, resolve_precision
from l2e.model.settings import ModelSettings, source_settings, split_gguf


CHUNKING = ("maxp", "late")  # how Embedder.encode(..., chunking=) encodes long documents


class Embedder:
    """Encode texts with an ``EmbeddingModel`` as its :class:`~l2e.model.settings.ModelSettings` say.

    ``query_instruction`` defaults to the model's settings (``None``); ``max_length`` (passages) and
    ``query_max_length`` to its one inference cap (``ModelSettings.inference_max_length``, what the exports
    apply); a value given here changes them for this embedder only. These are the one place an inference
    override lives: the constructors take them, and everything that encodes through an Embedder (MTEB's
    encoder, ``l2e.retrieval.search.Reps``, the miner) reads them from it instead of taking its own copy.
    ``device=None``: CUDA when available for a model on CPU, else wherever the model already is.
    """

    def __init__(self, model: EmbeddingModel, tokenizer, query_instruction: Optional[str] = None,
                 max_length: Optional[int] = None, device=None, query_max_length: Optional[int] = None,
                 precision: str = "fp32", compile: bool = False):
        first = next(model.parameters(), None)  # an ONNX model has no torch parameters: CPU, its own dtype
        here = first.device if first is not None else torch.device("cpu")
        if device is None:  # keep a model that already sits on an accelerator (e.g. mid-training validation)
            device = "cuda" if here.type == "cpu" and torch.cuda.is_available() else here
        self.device = torch.device(device)
        self.model = model if here == self.device else model.to(self.device)
        self.tokenizer = tokenizer
        s = model.settings
        self.query_instruction = s.query_instruction if query_instruction is None else query_instruction
        self.max_length = max_length or s.inference_max_length
        self.query_max_length = query_max_length or max_length or s.inference_max_length
        # bf16 autocast for the forward pass (weights stay as loaded).
        self.precision = resolve_precision(precision if first is not None else "fp32", self.device)
        self.compiled = compile
        self._forward = self._compile() if compile else self.model  # what encode() calls

    def _compile(self):
        """``torch.compile`` for inference, opt-in. Inductor with ``freezing`` folds the weights into the graph as
        constants, so the linears run on prepacked oneDNN / MKL weights and the elementwise work (RMSNorm, SiLU x up,
        residual adds) fuses, and under bf16 autocast the weights' bf16 copies can fold into constants instead of
        being cast again in every call (our reading of bf16's larger gain): SmolLM2 on 2 Xeon (AMX) cores encodes
        1.07x (fp32) / 1.69x (bf16) faster than eager, on 2 EPYC cores 1.17x / 1.14x (benchmarks/bench_encode.py;
        README, Encoding speed). Why opt-in: compiling costs ~1.5 min there, once per process (it pays after a few
        thousand texts), and frozen weights must not change afterwards -- an embedder used for validation during
        training must stay eager. ``dynamic=True``: batches differ in length and the last one in size; one graph
        serves them all instead of one compile per shape. ``encode`` (dense, maxp chunks) runs compiled;
        ``encode_reps`` and late chunking stay eager."""
        import shutil

        if next(self.model.parameters(), None) is None:
            raise L2EError("compile=True needs a torch model; ONNX Runtime optimises its own graph (leave compile off)")
        compiler = os.environ.get("CXX", "g++")
        if self.device.type == "cpu" and shutil.which(compiler) is None:
            raise L2EError(f"compile=True on CPU needs a C++ compiler: {compiler!r} is not on PATH (apt install g++, "
                           "or set CXX), or leave compile off")
        return torch.compile(self.model, dynamic=True, options={"freezing": True})

    @property
    def dim(self) -> int:
        return self.model.hidden_size

    def encode(self, texts: Sequence[str], instruction: Optional[str] = None, batch_size: int = 32,
               max_length: Optional[int] = None, dim: Optional[int] = None, show_progress: bool = False,
               separator: Optional[str] = None, precision: str = "float32", ranges: Optional[np.ndarray] = None,
               chunking: Optional[str] = None, chunk_tokens: int = 0):
        """(len(texts), dim or hidden) float32, unit L2 norm. ``dim`` keeps a Matryoshka prefix, renormalised.

        ``separator`` (without ``instruction``): each text carries its instruction inline, up to and including
        the first ``separator``; those tokens are left out of skip-instruction pooling.

        ``precision`` ("float32", "int8", "binary"): the vectors quantized as sentence-transformers'
        ``quantize_embeddings`` does (``l2e.retrieval.quantize``); int8 with ``ranges`` ((2, dim) from
        ``quantize.calibrate`` over a corpus sample), else calibrated on these texts. (The constructor's
        ``precision`` is another thing: the arithmetic of the forward pass.)

        ``chunking`` (documents): "maxp" encodes each ``chunk_tokens`` piece of a text as a text of its own; "late"
        encodes windows of up to ``max_length`` tokens once and pools each chunk from the states of the whole
        window (late chunking, Guenther et al. 2024, arXiv 2409.04701; with bidirectional attention each chunk has
        read the whole document). Nothing is truncated. Returns a list: per text, its chunks' vectors
        (chunks, dim or hidden), quantized as ``precision`` says.
        """
        from l2e.retrieval.quantize import quantize

        if dim is not None and not 0 < dim <= self.dim:
            raise ValueError(f"dim={dim} must be between 1 and the model's hidden size {self.dim}")
        texts = list(texts)
        if chunking:
            chunks = self._encode_chunked(texts, chunking, chunk_tokens, instruction, batch_size, max_length, dim,
                                          show_progress)
            if precision == "float32":
                return chunks
            flat = np.concatenate(chunks) if chunks else np.zeros((0, dim or self.dim), np.float32)
            codes = quantize(flat, precision, ranges)
            return np.split(codes, np.cumsum([len(c) for c in chunks])[:-1])
        out = np.zeros((len(texts), dim or self.dim), dtype=np.float32)
        with self._forward_context():
            for rows, batch in self._batches(texts, instruction, batch_size, max_length, separator, show_progress):
                emb = self._forward(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])  # (batch, hidden)
                emb = emb[:, :dim] if dim else emb
                out[rows] = torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
        return quantize(out, precision, ranges)

    @contextlib.contextmanager
    def _forward_context(self):
        """No autograd, and bf16 autocast where ``precision`` says so, entered once per call rather than per batch:
        autocast keeps the bf16 copies of the weights only while its context is open, so a context per batch cast
        every weight again for each batch (all-MiniLM-L6-v2's bf16 encode of 2,000 texts: 15.65 s per batch, 13.58 s
        once; sentence-transformers' ``encode`` inside one autocast context casts once). What leaves the model is made
        fp32 before it is normalised."""
        with torch.inference_mode(), autocast(self.precision, self.device):
            yield

    def _encode_chunked(self, texts, mode, chunk_tokens, instruction, batch_size, max_length, dim, show_progress):
        """Per text, (chunks, dim) unit vectors: see :meth:`encode`'s ``chunking``."""
        from l2e.data.tokens import chunk_windows

        if mode not in CHUNKING:
            raise L2EError(f"chunking={mode!r}: use one of {', '.join(CHUNKING)}")
        if instruction:
            raise L2EError("chunking is for documents, which carry no instruction here; encode queries whole")
        if mode == "late" and not hasattr(self.model, "token_states"):
            raise L2EError("late chunking needs the model's token states; an ONNX export returns pooled vectors only: "
                           "use maxp chunking or the torch checkpoint")
        specials = 1 if is_decoder_tokenizer(self.tokenizer) else 2
        window = chunk_tokens + specials if mode == "maxp" else (max_length or self.max_length)
        try:
            windows = chunk_windows(self.tokenizer, texts, chunk_tokens, window)
        except ValueError as e:
            raise L2EError(str(e)) from None
        flat = [(t, ids, spans) for t, per_text in enumerate(windows) for ids, spans in per_text]
        found: Dict[int, List[np.ndarray]] = {}
        batches = self._padded_batches([ids for _, ids, _ in flat], None, batch_size, show_progress,
                                       f"encode ({mode} chunks)")
        with self._forward_context():
            for rows, batch in batches:
                if mode == "maxp":  # one chunk per window: the plain forward pass
                    emb = self._forward(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])
                else:
                    hidden = self.model.token_states(batch["input_ids"], batch["attention_mask"])
                    owner = [j for j, i in enumerate(rows) for _ in flat[i][2]]
                    spans = torch.zeros((len(owner), hidden.shape[1]), dtype=torch.long, device=self.device)
                    for c, (a, b) in enumerate(span for i in rows for span in flat[i][2]):
                        spans[c, a:b] = 1
                    index = torch.tensor(owner, device=self.device)
                    emb = self.model.pool_spans(hidden[index], batch["attention_mask"][index], spans)
                emb = torch.nn.functional.normalize((emb[:, :dim] if dim else emb).float(), dim=-1).cpu().numpy()
                at = 0
                for i in rows:
                    n = len(flat[i][2])
                    found[i] = list(emb[at:at + n])
                    at += n
        out: List[List[np.ndarray]] = [[] for _ in texts]
        for i, (t, _, _) in enumerate(flat):  # windows in text order
            out[t] += found[i]
        return [np.stack(vectors).astype(np.float32) for vectors in out]

    def encode_reps(self, texts: Sequence[str], names: Sequence[str] = ("dense",), instruction: Optional[str] = None,
                    batch_size: int = 32, max_length: Optional[int] = None, show_progress: bool = False,
                    separator: Optional[str] = None) -> Dict[str, object]:
        """Every representation ``names`` asks for, from one pass: ``dense`` (n, hidden) unit vectors;
        a ``sparse_vector`` head (sparse, splade) a ``scipy.sparse.csr_matrix`` (n, width); a ``multi_vector`` head
        (colbert) a list of (tokens, dim) unit-vector arrays (real tokens only). See ``l2e.model.heads.KINDS``."""
        import scipy.sparse

        texts = list(texts)
        unknown = [n for n in names if n != "dense" and n not in self.model.heads]
        if unknown:
            raise L2EError(f"this model has no {', '.join(unknown)} head (it has: "
                           f"{', '.join(['dense', *self.model.heads]) })")
        parts: Dict[str, list] = {n: [] for n in names}
        order: List[int] = []
        with self._forward_context():
            for rows, batch in self._batches(texts, instruction, batch_size, max_length, separator, show_progress):
                reps = self.model.encode_all(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])
                order += rows
                for name in names:
                    if name == "dense":
                        parts[name].append(torch.nn.functional.normalize(reps["dense"].float(), dim=-1).cpu().numpy())
                    elif get_head(name).kind == "multi_vector":
                        mask = reps[f"{name}_mask"].cpu()
                        parts[name] += [v[m].float().cpu().numpy() for v, m in zip(reps[name], mask)]
                    else:
                        parts[name].append(scipy.sparse.csr_matrix(reps[name].float().cpu().numpy()))
        inverse = np.argsort(np.asarray(order, dtype=np.int64)) if order else np.zeros(0, dtype=np.int64)
        out: Dict[str, object] = {}
        for name, chunks in parts.items():
            if name == "dense":
                out[name] = np.concatenate(chunks)[inverse] if chunks else np.zeros((0, self.dim), np.float32)
            elif get_head(name).kind == "multi_vector":
                out[name] = [chunks[i] for i in inverse]
            else:
                out[name] = scipy.sparse.vstack(chunks).tocsr()[inverse] if chunks else scipy.sparse.csr_matrix(
                    (0, self.model.backbone.config.vocab_size), dtype=np.float32)
        return out

    def _batches(self, texts, instruction, batch_size, max_length, separator, show_progress):
        """``(row indices, device tensors)`` per batch, longest texts first (less padding), in eval mode."""
        if separator and not instruction:
            ids, inst_lens = encode_inline(self.tokenizer, texts, max_length or self.max_length, separator)
        else:
            ids, inst_lens = encode_texts(self.tokenizer, texts, max_length or self.max_length, instruction or None)
        return self._padded_batches(ids, inst_lens, batch_size, show_progress, "encode")

    def _padded_batches(self, ids, inst_lens, batch_size, show_progress, desc):
        """``(row indices, device tensors)`` per batch of token-id lists, longest first (less padding), in eval mode;
        ``inst_lens`` None: no instruction."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: an OOM shows up at once
        starts = range(0, len(order), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="batch")
        was_training = self.model.training  # validation during training must not leave dropout off
        self.model.eval()
        try:
            for start in starts:
                rows = order[start : start + batch_size]
                lens = [inst_lens[i] for i in rows] if inst_lens is not None else None
                batch = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id, lens)
                yield rows, {k: v.to(self.device) for k, v in batch.items()}
        finally:
            self.model.train(was_training)

    def encode_queries(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """Queries carry the stored instruction (``query_instruction``) and their own max length. With no
        instruction and ``skip_instruction``, a query's own inline instruction (up to the model's
        ``instruction_separator``) is left out of pooling."""
        kwargs.setdefault("instruction", self.query_instruction or None)
        kwargs.setdefault("max_length", self.query_max_length)
        s = self.model.settings
        if not kwargs["instruction"] and s.skip_instruction and s.instruction_separator:
            # Queries that carry their instruction inline (F2LLM's data): the separator marks where pooling
            # starts, as tokenize_data.py recorded it for training.
            kwargs.setdefault("separator", s.instruction_separator)
        return self.encode(texts, **kwargs)

    def encode_corpus(self, texts: Sequence[str], **kwargs) -> np.ndarray:
        """Documents carry no instruction (the asymmetric recipe of E5 / Qwen3-Embedding / F2LLM)."""
        kwargs.setdefault("instruction", None)
        return self.encode(texts, **kwargs)

    # --- constructors ----------------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str, device=None, torch_dtype: str = "auto", attn_implementation: str = "sdpa",
                        precision: str = "fp32", query_instruction: Optional[str] = None,
                        max_length: Optional[int] = None, compile: bool = False, **overrides) -> "Embedder":
        """A training checkpoint folder (full model, or adapter + base) with its saved settings;
        ``overrides`` replace :class:`ModelSettings` values that shape the model (e.g. ``pooling_mode="mean"``),
        ``query_instruction`` / ``max_length`` this embedder's defaults (see the class)."""
        model, tokenizer = load_embedding_model(path, torch_dtype, attn_implementation, **overrides)
        return cls(model, tokenizer, query_instruction=query_instruction, max_length=max_length, device=device,
                   precision=precision, compile=compile)

    @classmethod
    def from_onnx(cls, path: str, file_name: str = "onnx/model.onnx", threads: int = 0,
                  query_instruction: Optional[str] = None, max_length: Optional[int] = None) -> "Embedder":
        """A checkpoint's ONNX export (``python -m l2e.onnx_export``) run by ONNX Runtime, with its settings."""
        from l2e.export.onnx_export import OnnxModel
        from l2e.model.embedding_model import load_tokenizer

        return cls(OnnxModel(path, file_name, threads), load_tokenizer(path), query_instruction=query_instruction,
                   max_length=max_length, device="cpu")

    @classmethod
    def from_pretrained(cls, path: str, pooling: Optional[str] = None, bi_attn: bool = False,
                        query_instruction: str = "", max_length: Optional[int] = None, device=None,
                        gguf_file: str = "", torch_dtype: str = "auto", attn_implementation: str = "sdpa",
                        skip_instruction: bool = False, precision: str = "fp32", compile: bool = False) -> "Embedder":
        """Any plain HF folder, sentence-transformers folder or GGUF model (baselines for the evaluator).

        ``pooling=None``: the sentence-transformers pooling config when there is one, else ``eos`` for
        decoders and ``mean`` for encoders.
        """
        backbone = load_backbone(path, gguf_file, torch_dtype, attn_implementation)
        tokenizer = load_tokenizer(path, gguf_file)
        set_bidirectional(backbone, bi_attn)
        folder, _ = split_gguf(path, gguf_file)
        st_pooling, st_max_length = read_sentence_transformers(folder)
        if pooling is None and st_pooling:
            pooling = _st_pooling_name(st_pooling)
        if (st_pooling and is_decoder_tokenizer(tokenizer)
                and tokenizer("x")["input_ids"][-1:] != [tokenizer.eos_token_id]):
            # l2e ends every decoder text with EOS (what its exports' tokenizers do themselves); this folder's
            # tokenizer does not, so sentence-transformers encodes it without one: say so rather than differ silently
            warnings.warn(f"{folder}: its tokenizer does not end texts with EOS, so sentence-transformers encodes "
                          "them without it; l2e appends EOS to every decoder text, and the vectors will differ")
        pooling = pooling or ("eos" if is_decoder_tokenizer(tokenizer) else "mean")
        length = max_length or st_max_length or 512
        settings = ModelSettings(pooling_mode=pooling, bi_attn_enabled=bi_attn, skip_instruction=skip_instruction,
                                 query_instruction=query_instruction, query_max_length=length,
                                 passage_max_length=length, **source_settings(path, gguf_file))
        return cls(EmbeddingModel(backbone, settings), tokenizer, device=device, precision=precision, compile=compile)




def read_sentence_transformers(folder: str):
    """(pooling config dict or None, max_seq_length or None) from a sentence-transformers folder."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return None, None
    with open(modules_file) as f:
        modules = json.load(f)
    pooling = None
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            with open(os.path.join(folder, module["path"], "config.json")) as f:
                pooling = json.load(f)
    bert = {}
    bert_cfg = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(bert_cfg):
        with open(bert_cfg) as f:
            bert = json.load(f)
    if "message" in (bert.get("modality_config") or {}):
        # sentence-transformers >= 6 renders every text through the tokenizer's chat template when the folder
        # declares the message modality; l2e encodes plain text, so it would score another model, silently.
        raise L2EError(f"{bert_cfg}: sentence-transformers renders this folder's texts through its chat template "
                       "(modality_config has 'message'); l2e encodes plain text. Pin the text modality (keep only "
                       "'text' in modality_config) or load the model's plain folder instead")
    max_length = bert.get("max_seq_length")
    if max_length is None:  # sentence-transformers >= 6 keeps it as the tokenizer's model_max_length
        tok_cfg = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(tok_cfg):
            with open(tok_cfg) as f:
                length = json.load(f).get("model_max_length")
            # transformers writes a huge sentinel (int(1e30)) for "no limit"
            max_length = length if isinstance(length, int) and length < 1_000_000 else None
    return pooling, max_length


def _st_pooling_name(cfg: dict) -> str:
    """The l2e pooling of a sentence-transformers Pooling config: one boolean flag per mode (``pooling_mode_mean_tokens:
    true``, what l2e writes, readable by every version) or, as sentence-transformers >= 5 saves it, ``pooling_mode``
    holding a mode name or a list of them."""
    mode = cfg.get("pooling_mode")
    if mode is not None:
        on = [mode] if isinstance(mode, str) else list(mode)
    else:
        on = [flag for flag, value in cfg.items() if flag.startswith("pooling_mode") and value]
    names = [name for f in on if (name := pooling_from_st_mode(f))]
    if len(on) != 1 or len(names) != 1:
        supported = dict.fromkeys(s.st_mode for s in POOLINGS.values() if s.st_mode)
        raise L2EError(f"sentence-transformers pooling {on} is not supported; l2e supports exactly one of "
                         f"{', '.join(supported)} (or pass pooling=... explicitly)")
    return names[0]
