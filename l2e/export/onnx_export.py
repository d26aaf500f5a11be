"""ONNX export of a ``final/`` folder, int8 dynamic quantisation, and ONNX Runtime as an l2e model.

    python -m l2e.onnx_export --ckpt_dir output/smollm2.recipe/final            # -> final/onnx/model.onnx
    python -m l2e.onnx_export --ckpt_dir output/smollm2.recipe/final --int8     # + onnx/model_qint8.onnx
    python evaluate_mteb.py --ckpt_dir output/smollm2.recipe/final --onnx onnx/model_qint8.onnx --data_dir data/dev-small

Why not sentence-transformers' ONNX backend: it exports and loads through optimum-onnx, whose every release pins
``transformers<4.58`` (l2e needs 5.x; pip answers ResolutionImpossible), and optimum's exporter fails on
transformers 5's masking code. So the graph is traced here with ``torch.onnx.export`` (TorchScript exporter),
under the names optimum, sentence-transformers and text-embeddings-inference read: inputs ``input_ids`` and
``attention_mask``, outputs ``last_hidden_state`` (batch, seq, hidden) and ``sentence_embedding`` (batch,
hidden: the model's pooling over the attention mask, normalised). Position ids are computed from the mask as
in l2e (left padding gives the same states), and a bidirectional model's mask is traced in (``is_causal``).
:class:`OnnxModel` runs the graph with ONNX Runtime and pools ``last_hidden_state`` with l2e's own pooling,
skip-instruction included, so ``Embedder(OnnxModel(...))`` is a drop-in replacement of the torch model.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import torch
from torch import nn

from l2e.core.errors import L2EError, run_main

ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_qint8.onnx"


class OnnxError(L2EError):
    """ONNX export or ONNX Runtime problems (missing packages, a model the graph cannot express)."""


def _require(module: str, pip: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxError(f"ONNX needs the {pip} package: pip install {pip} (or pip install -e \".[serve]\")") from None


class _Graph(nn.Module):
    """What the ONNX file computes: token states and the pooled, normalised sentence embedding."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.model.token_states(input_ids, attention_mask)
        pooled = self.model._pool(hidden, attention_mask, None)  # no prompt input: every real token
        return hidden, torch.nn.functional.normalize(pooled.float(), dim=-1)


def export_onnx(ckpt_dir: str, opset: int = 18) -> str:
    """``ckpt_dir/onnx/model.onnx`` from an l2e checkpoint (an adapter is merged first); returns its path."""
    _require("onnx", "onnx")
    from l2e.core.atomic import atomic_file
    from l2e.data.tokens import encode_texts, pad_batch
    from l2e.model.embedding_model import load_embedding_model

    model, tokenizer = load_embedding_model(ckpt_dir, torch_dtype="float32")
    model.merge_adapter().eval()
    # Traced on a padded batch of two texts: the graph keeps the masking general (checked in the tests).
    ids, lens = encode_texts(tokenizer, ["a short text", "a longer text that needs more tokens than the first"], 64)
    batch = pad_batch(ids, tokenizer.pad_token_id, lens)
    path = os.path.join(ckpt_dir, ONNX_DIR, ONNX_FILE)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
               "last_hidden_state": {0: "batch", 1: "seq"}, "sentence_embedding": {0: "batch"}}
    with atomic_file(path) as tmp, torch.no_grad():
        torch.onnx.export(_Graph(model), (batch["input_ids"], batch["attention_mask"]), tmp, dynamo=False,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state", "sentence_embedding"], dynamic_axes=dynamic,
                          opset_version=opset)
    return path


def quantize_int8(onnx_path: str, out_path: Optional[str] = None) -> str:
    """Dynamic int8 quantisation of the weights (ONNX Runtime ``quantize_dynamic``, QInt8); activations stay
    float and are quantised per batch at run time. Returns the new file's path."""
    _require("onnxruntime", "onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from l2e.core.atomic import atomic_file

    out_path = out_path or os.path.join(os.path.dirname(onnx_path), INT8_FILE)
    with atomic_file(out_path) as tmp:
        quantize_dynamic(onnx_path, tmp, weight_type=QuantType.QInt8)
    return out_path


class OnnxModel(nn.Module):
    """An ``EmbeddingModel`` stand-in backed by ONNX Runtime: same settings, same ``forward`` contract."""

    def __init__(self, ckpt_dir: str, file_name: str = os.path.join(ONNX_DIR, ONNX_FILE), threads: int = 0):
        super().__init__()
        ort = _require("onnxruntime", "onnxruntime")
        from l2e.model.pooling import get_pooling_spec
        from l2e.model.settings import ModelSettings

        path = os.path.join(ckpt_dir, file_name)
        if not os.path.isfile(path):
            raise OnnxError(f"{path}: not found; export it first: python -m l2e.onnx_export --ckpt_dir {ckpt_dir}")
        self.settings = ModelSettings.load(ckpt_dir)
        self.trainable_pooling = get_pooling_spec(self.settings.pooling_mode).trainable
        if self.trainable_pooling and self.settings.skip_instruction:
            raise OnnxError(f"{ckpt_dir}: a trainable pooling with skip_instruction cannot run from ONNX (the graph "
                            "pools every token; it has no prompt input)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.hidden_size = self.session.get_outputs()[0].shape[-1]
        self.heads = nn.ModuleDict()
        self.skip_instruction = self.settings.skip_instruction
        self.pooling_mode = self.settings.pooling_mode

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        from l2e.model.pooling import get_pooling

        hidden, pooled = self.session.run(None, {"input_ids": input_ids.cpu().numpy().astype("int64"),
                                                 "attention_mask": attention_mask.cpu().numpy().astype("int64")})
        if self.trainable_pooling:
            return torch.from_numpy(pooled)
        return get_pooling(self.pooling_mode)(torch.from_numpy(hidden), attention_mask,
                                              pool_mask if self.skip_instruction else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_dir", required=True, help="an l2e checkpoint (final/)")
    p.add_argument("--int8", action="store_true", help="also write onnx/model_qint8.onnx (dynamic int8)")
    args = p.parse_args(argv)

    def export() -> int:
        if not os.path.isfile(os.path.join(args.ckpt_dir, "l2e_model.json")):
            raise OnnxError(f"--ckpt_dir {args.ckpt_dir!r}: not an l2e checkpoint (no l2e_model.json)")
        path = export_onnx(args.ckpt_dir)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB)")
        if args.int8:
            q = quantize_int8(path)
            print(f"wrote {q} ({os.path.getsize(q) / 1e6:.0f} MB)")
        return 0

    return run_main(export)


if __name__ == "__main__":
    sys.exit(main())
