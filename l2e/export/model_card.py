"""``final/README.md``: the model card written with every export, as sentence-transformers writes one.

What a reader needs to use or judge the model: the base model, every component that was switched on, the
training data and steps, the run's validation metrics, the prompts, and how to load it in l2e,
sentence-transformers and the serving engines -- including what each engine cannot reproduce.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from l2e.core.run_layout import RunLayout
from l2e.export.head_exports import HEAD_EXPORTS
from l2e.model.heads import enabled_heads, get_head
from l2e.model.pooling import get_pooling_spec
from l2e.model.settings import ModelSettings


def write_model_card(folder: str, settings: ModelSettings, hidden_size: int, training_config=None,
                     run: Optional[Dict[str, Any]] = None, dest: Optional[str] = None) -> str:
    """``folder/README.md``. ``dest``: where the folder will live once complete (``folder`` may be l2e's
    staging copy, whose name must not reach the card)."""
    path = os.path.join(folder, "README.md")
    with open(path, "w") as f:
        f.write(model_card(settings, hidden_size, training_config, run or {}, dest or folder))
    return path


def card_title(path: str) -> str:
    """``output/run/final`` -> ``run``; any other folder -> its own name."""
    parts = os.path.normpath(path).split(os.sep)
    return parts[-2] if parts[-1] in (RunLayout.FINAL, RunLayout.FINAL_ADAPTER) and len(parts) > 1 else parts[-1]


def model_card(settings: ModelSettings, hidden: int, cfg, run: Dict[str, Any], path: str) -> str:
    name = os.path.normpath(path)
    base = os.path.basename(settings.base_model_path.rstrip("/")) + (f" ({settings.gguf_file})" if settings.gguf_file else "")
    lines = [f"# {card_title(path)}: an l2e text-embedding model", "",
             f"A {hidden}-dimensional embedding model trained with l2e from the decoder LLM "
             f"`{base}`. Cosine similarity; queries carry the instruction below, documents none.", "",
             "## Model details", "", "| | |", "|---|---|",
             f"| base model | `{settings.base_model_path}`{' / ' + settings.gguf_file if settings.gguf_file else ''} |",
             f"| attention | {'bidirectional (is_causal: false)' if settings.bi_attn_enabled else 'causal'} |",
             f"| pooling | {settings.pooling_mode}{', instruction tokens left out' if settings.skip_instruction else ''} |",
             f"| output | {hidden} dimensions, L2-normalised |",
             f"| max length | {settings.inference_max_length} tokens for queries and documents at inference (trained at "
             f"queries {settings.query_max_length}, documents {settings.passage_max_length}) |"]
    if settings.heads:
        lines.append(f"| other representations | {', '.join(settings.heads)} (sub-folders below) |")
    lines += (_merge(run.get("merge")) + _training(cfg, run) + _evaluation(run) + _prompts(settings)
              + _usage(settings, name)
              + _serving(settings, name))
    return "\n".join(lines) + "\n"


def _merge(merge: Optional[Dict[str, Any]]) -> List[str]:
    """A merged model says so: of which checkpoints, by which method, with which weights / t / density."""
    if not merge:
        return []
    lines = ["", "## Merge", "", f"This model is a **merge** of {len(merge['models'])} checkpoints "
             f"(`l2e.train.merge`, method `{merge.get('method', 'average')}`), not the output of one training run.", "",
             "| | |", "|---|---|", f"| method | {merge.get('method', 'average')} |"]
    lines += [f"| model {i + 1} | `{m}` |" for i, m in enumerate(merge["models"])]
    for key in ("weights", "t", "base", "density", "seed"):
        if merge.get(key) is not None:
            lines.append(f"| {key} | {merge[key]} |")
    return lines


def _training(cfg, run: Dict[str, Any]) -> List[str]:
    if cfg is None:
        return []
    on = [("LoRA", cfg.lora_enabled, f"r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}"),
          ("Matryoshka", cfg.mrl_enabled, f"dims {cfg.mrl_dims}"),
          ("spread-out", cfg.spread_enabled, f"weight {cfg.spread_weight}"),
          ("knowledge distillation", cfg.kd_enabled, f"weight {cfg.kd_weight}"),
          ("extra InfoNCE directions", len(cfg.loss_directions) > 1, ", ".join(cfg.loss_directions)),
          ("false-negative margin", cfg.false_negative_margin >= 0, str(cfg.false_negative_margin)),
          ("hard negatives", cfg.num_hard_neg > 0, f"{cfg.num_hard_neg} per row"),
          ("heads", bool(enabled_heads(cfg)),
           ", ".join(f"{h} ({get_head(h).summary})" if get_head(h).summary else h for h in enabled_heads(cfg))),
          ("self-distillation", cfg.self_distill_enabled, f"weight {cfg.self_distill_weight}"),
          ("started from", bool(cfg.init_from), cfg.init_from),
          ("layers kept", bool(cfg.num_layers), str(cfg.num_layers))]
    lines = ["", "## Training", "", "| | |", "|---|---|",
             f"| data | `{cfg.train_data_path}` |",
             f"| steps | {run.get('steps', cfg.train_steps)} x batch {cfg.train_batch_size} "
             f"({run.get('samples', '?')} samples) |",
             f"| optimiser | AdamW, lr {cfg.learning_rate} ({cfg.lr_scheduler}, warmup {cfg.warmup_steps}) |",
             f"| InfoNCE | temperature {cfg.temperature}, in-batch negatives: {cfg.in_batch_negatives} |"]
    lines += [f"| {label} | {detail} |" for label, enabled, detail in on if enabled]
    if run.get("steps_time_s"):
        lines.append(f"| training time | {run['steps_time_s'] / 60:.0f} min of steps |")
    lines += ["", "The whole resolved config is `training_config.json`."]
    return lines


def _evaluation(run: Dict[str, Any]) -> List[str]:
    history = run.get("validation") or []
    if not history:
        return []
    keys = [k for k in history[-1] if k not in ("step", "train_s")]
    lines = ["", "## Validation during training", "", "| step | " + " | ".join(keys) + " |",
             "|---:|" + "---:|" * len(keys)]
    lines += [f"| {h['step']} | " + " | ".join(f"{h[k]:.4f}" if isinstance(h.get(k), float) else str(h.get(k, ""))
                                               for k in keys) + " |" for h in history]
    return lines


def _prompts(settings: ModelSettings) -> List[str]:
    return ["", "## Prompts", "", f"- query: `{json.dumps(settings.query_instruction)}` (sentence-transformers "
            "prompt name `query`)", "- document: none"]


def _usage(settings: ModelSettings, name: str) -> List[str]:
    lines = ["", "## Usage", "", "l2e:", "```python", "from l2e.retrieval.embedder import Embedder",
             f'model = Embedder.from_checkpoint("{name}")',
             'scores = model.encode_queries(["query"]) @ model.encode_corpus(["document"]).T', "```", "",
             "sentence-transformers:", "```python", "from sentence_transformers import SentenceTransformer",
             f'model = SentenceTransformer("{name}"'
             + (", trust_remote_code=True" if get_pooling_spec(settings.pooling_mode).trainable else "") + ")",
             'q = model.encode(["query"], prompt_name="query"); d = model.encode(["document"])', "```"]
    for head in settings.heads:
        export = HEAD_EXPORTS.get(head)
        if export:
            lines += ["", f"{head}: `{export.st_class}(\"{name}/{export.folder}\"{export.load_kwargs})` "
                      "(sentence-transformers)"]
    lines += ["", "ONNX Runtime: `python -m l2e.onnx_export --ckpt_dir " + name + " --int8`, then "
              "`Embedder.from_onnx(\"" + name + "\")`."]
    return lines


def _serving(settings: ModelSettings, name: str) -> List[str]:
    spec = get_pooling_spec(settings.pooling_mode)
    pooling = spec.engine
    problems = []
    if pooling is None:
        problems.append(f"the engines have no {settings.pooling_mode} pooling")
    if settings.skip_instruction and spec.skips_instruction:
        problems.append("the engines pool the instruction's tokens too (skip-instruction is not served): query "
                        "vectors differ from l2e's")
    note = "; ".join(problems) if problems else "served vectors equal l2e's"
    mode = ("**engine-exact**: it pools the whole prompt, instruction included, as vLLM and text-embeddings-inference "
            "do, so the vectors they serve for queries and documents equal l2e's" if not problems else
            "**l2e-exact only**: " + "; ".join(problems) + ". Serve it with l2e's Embedder, sentence-transformers or "
            "ONNX Runtime (they reproduce it), or train with `engine_exact: true`")
    flag = f" --pooling {pooling}" if pooling else ""
    return ["", "## Serving", "",
            f"Mode: {mode}.", "",
            f"Compatibility: {note}.", "",
            "- vLLM (pooling runner; reads `is_causal` and the sentence-transformers pooling): "
            f"`vllm serve {name} --runner pooling --convert embed` -- prepend the query prompt yourself on "
            "`/v1/embeddings`.",
            f"- text-embeddings-inference (reads `use_bidirectional_attention`; on CPU it runs `onnx/model.onnx`): "
            f"`text-embeddings-router --model-id {name}{flag}`.",
            "- ONNX Runtime: `onnx/model.onnx` outputs `last_hidden_state` and `sentence_embedding`."]
