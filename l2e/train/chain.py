"""A training recipe as a chain of stages: ``run.py --chain chain.json`` (the source toolbox's phases A -> B -> C).

A chain file is JSON::

    {"output_dir": "output/chain-demo",
     "stages": [
        {"name": "mntp", "config": "configs/cpu/smollm2.mntp.json"},
        {"name": "supervised", "config": "configs/cpu/smollm2.recipe.json", "set": {"train_steps": 150}},
        {"name": "merged", "merge": {"method": "slerp", "t": 0.5, "models": ["supervised:step_100", "supervised"]}}
     ]}

- A training stage is a config (paths relative to the current folder) plus ``set`` overrides; it writes to
  ``output_dir/<name>/`` and, unless it sets ``init_from`` itself, starts from the previous training stage's
  ``final/`` with a fresh optimizer and schedule.
- A merge stage names checkpoints as ``<stage>`` (its ``final/``), ``<stage>:<folder>`` (e.g. a ``step_N``)
  or a path, and writes the merged model to ``output_dir/<name>/final/`` (``l2e.train.merge``).
- A stage whose ``final/`` exists is skipped (a killed chain continues where it stopped; ``--resume`` applies
  to the first stage that is not finished). Every problem in the file is reported before anything runs.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from l2e.core.errors import L2EError
from l2e.core.run_layout import RunLayout

STAGE_KEYS = {"name", "config", "set", "merge"}
MERGE_KEYS = {"method", "models", "weights", "t", "base", "density", "seed"}


class ChainError(L2EError):
    """A chain file that cannot run."""


def load_chain(path: str) -> Dict[str, Any]:
    """The chain file, checked at once: stage names, configs (validated), merge references."""
    from l2e.config import ConfigError, load_config

    if not os.path.isfile(path):
        raise ChainError(f"{path}: chain file not found")
    try:
        with open(path) as f:
            chain = json.load(f)
    except json.JSONDecodeError as e:
        raise ChainError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    problems: List[str] = []
    stages = chain.get("stages") if isinstance(chain, dict) else None
    if not isinstance(stages, list) or not stages:
        raise ChainError(f"{path}: expected {{\"output_dir\": ..., \"stages\": [...]}} with at least one stage")
    unknown = sorted(set(chain) - {"output_dir", "stages"})
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (use output_dir, stages)")
    names: List[str] = []
    for i, stage in enumerate(stages):
        where = f"stage {i + 1}"
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or not stage["name"]:
            problems.append(f"{where}: needs a \"name\"")
            continue
        name = stage["name"]
        where = f"stage {name!r}"
        if name in names:
            problems.append(f"{where}: the name is used twice")
        bad = sorted(set(stage) - STAGE_KEYS)
        if bad:
            problems.append(f"{where}: unknown key(s) {', '.join(bad)} (use {', '.join(sorted(STAGE_KEYS))})")
        if ("config" in stage) == ("merge" in stage):
            problems.append(f"{where}: give either \"config\" (training) or \"merge\"")
        elif "config" in stage:
            try:
                load_config(stage["config"], _overrides(stage), check_paths=False)
            except ConfigError as e:
                problems += [f"{where}: {p}" for p in e.problems]
        else:
            problems += _merge_problems(stage, where, names)
        names.append(name)
    if problems:
        raise ChainError(f"{path}: " + "; ".join(problems))
    chain.setdefault("output_dir", "output/chain")
    return chain


def resolved_stages(path: str, check_paths: bool = True) -> Dict[str, Any]:
    """``run.py --chain FILE --check``: the chain checked as :func:`load_chain` does, plus each training stage's
    paths, and every stage's resolved config (``init_from`` filled in as the chain will). Loads no model."""
    from l2e.config import ConfigError, format_overrides, load_config

    chain = load_chain(path)
    out, previous, problems = chain["output_dir"], None, []
    stages: Dict[str, Any] = {}
    for stage in chain["stages"]:
        name = stage["name"]
        if "merge" in stage:
            stages[name] = {"merge": stage["merge"]}
            continue
        extra = format_overrides({"output_dir": out, "experiment_id": name})
        try:
            resolved = load_config(stage["config"], _overrides(stage) + extra, check_paths=check_paths).to_dict()
        except ConfigError as e:
            problems += [f"stage {name!r}: {p}" for p in e.problems]
            continue
        if previous and "init_from" not in (stage.get("set") or {}):
            resolved["init_from"] = previous  # written by the stage before; need not exist yet
        stages[name] = resolved
        previous = RunLayout(os.path.join(out, name)).final
    if problems:
        raise ChainError(f"{path}: " + "; ".join(problems))
    return {"output_dir": out, "stages": stages}


def _overrides(stage: dict) -> List[str]:
    from l2e.config import format_overrides

    return format_overrides(stage.get("set") or {})


def _merge_problems(stage: dict, where: str, earlier: List[str]) -> List[str]:
    spec = stage["merge"]
    if not isinstance(spec, dict):
        return [f"{where}: \"merge\" must be an object"]
    problems = [f"{where}: unknown merge key(s) {', '.join(sorted(set(spec) - MERGE_KEYS))}"] if set(spec) - MERGE_KEYS \
        else []
    models = spec.get("models")
    if not isinstance(models, list) or len(models) < 2:
        problems.append(f"{where}: \"models\" must list at least 2 checkpoints")
        return problems
    from l2e.train.merge import value_problems

    problems += [f"{where}: {p}" for p in value_problems(
        spec.get("method", "average"), len(models), spec.get("weights"), spec.get("t", 0.5), spec.get("base"),
        spec.get("density", 0.5), spec.get("seed", 0))]
    for ref in models:
        if not isinstance(ref, str):
            problems.append(f"{where}: {ref!r} is not a checkpoint name or path")
            continue
        stage_name = ref.split(":", 1)[0]
        if not os.path.exists(ref) and stage_name not in earlier:
            problems.append(f"{where}: {ref!r} is neither an earlier stage nor a path")
    return problems


def run_chain(path: str, resume: Optional[str] = None) -> List[dict]:
    """Run every stage in order; returns one summary per stage."""
    chain = load_chain(path)
    out = chain["output_dir"]
    finals: Dict[str, str] = {}
    summaries = []
    previous: Optional[str] = None
    for stage in chain["stages"]:
        name, final = stage["name"], RunLayout(os.path.join(out, stage["name"])).final
        finals[name] = final
        if os.path.isfile(os.path.join(final, "l2e_model.json")):
            print(f"chain: stage {name!r} is done ({final}); skipped", flush=True)
            summaries.append({"stage": name, "final_dir": final, "skipped": True})
        elif "merge" in stage:
            summaries.append(_merge_stage(stage["merge"], finals, out, final))
            resume = None
        else:
            summaries.append(_train_stage(stage, out, previous, resume))
            resume = None
        if "config" in stage:
            previous = final
    return summaries


def _train_stage(stage: dict, out: str, previous: Optional[str], resume: Optional[str]) -> dict:
    from l2e.config import format_overrides, load_config
    from l2e.train.trainer import Trainer

    sets = stage.get("set") or {}
    extra = {"output_dir": out, "experiment_id": stage["name"]}
    if previous and "init_from" not in sets:
        extra["init_from"] = previous
    cfg = load_config(stage["config"], _overrides(stage) + format_overrides(extra))
    print(f"chain: stage {stage['name']!r}" + (f", from {cfg.init_from}" if cfg.init_from else ""), flush=True)
    trainer = Trainer(cfg, resume=resume)
    try:
        trainer.setup()
        trainer.train()
        return {"stage": stage["name"], **trainer.cleanup()}
    finally:
        trainer.close()


def _merge_stage(spec: dict, finals: Dict[str, str], out: str, final: str) -> dict:
    from l2e.core.atomic import write_json
    from l2e.export.final import export_final
    from l2e.train.merge import merge_checkpoints

    def resolve(ref: str) -> str:
        stage_name, _, sub = ref.partition(":")
        if stage_name in finals and not os.path.exists(ref):
            return os.path.join(os.path.dirname(finals[stage_name]), sub) if sub else finals[stage_name]
        return ref

    paths = [resolve(ref) for ref in spec["models"]]
    base = resolve(spec["base"]) if spec.get("base") else None
    print(f"chain: merging {', '.join(paths)} ({spec.get('method', 'average')})", flush=True)
    model, tokenizer = merge_checkpoints(paths, spec.get("method", "average"), weights=spec.get("weights"),
                                         t=spec.get("t", 0.5), base=base,
                                         density=spec.get("density", 0.5), seed=spec.get("seed", 0))
    card = {"method": spec.get("method", "average"), "models": paths,
            **{k: v for k, v in spec.items() if k not in ("method", "models")}}
    export_final(model, tokenizer, final, run={"merge": card})
    record = {"merged_from": paths, **{k: v for k, v in spec.items() if k != "models"}}
    write_json(RunLayout.of_export(final).merge_record, record, newline=False, indent=2)
    return {"stage": os.path.basename(os.path.dirname(final)), "final_dir": final, **record}
