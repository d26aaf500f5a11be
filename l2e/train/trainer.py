"""The training recipe: ``setup() → train() → cleanup()`` (the torchtune recipe shape).

accelerate owns devices, processes, DDP/DeepSpeed, ``save_state``/``load_state`` (model, optimizer,
scheduler, every process's RNG) and skipping the batches a resumed run already consumed. This module owns
what is specific to contrastive embedding training: one dataset per batch, three towers (queries,
positives, hard negatives) through one forward call, GradCache, validation by loss and nDCG@10, and
checkpoints that are either complete or absent.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.data_loader import skip_first_batches
from accelerate.utils import DistributedType, convert_to_fp32, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from l2e.config import Config, check_hidden_size
from l2e.core.atomic import staging_path, write_json
from l2e.core.errors import L2EError
from l2e.core.run_layout import RunLayout
from l2e.data.batching import BatchCollator, EpochBatches, has_teacher_scores, pair_lengths, plan_epoch
from l2e.data.read import row_lengths
from l2e.model.heads import enabled_heads
from l2e.model.precision import Precision, autocast, resolve_precision
from l2e.train import checkpoint
from l2e.train.memory import GB, ResidentGuard, current_rss_bytes, enable_thp, trim_heap
from l2e.train.objectives import build_objectives
from l2e.train.optim import build_optimizer, build_scheduler


class TrainingError(L2EError):
    """A problem that stops training with a one-line message (NaN loss, no data, bad resume point)."""


def check_runtime(cfg: Config, distributed_type) -> None:
    """Combinations the config cannot see on its own, refused before any model loads."""
    heads = enabled_heads(cfg)
    if heads and cfg.cross_device_negatives and distributed_type not in (DistributedType.NO,):
        # The heads' in-batch candidates are this process's only; gathering sparse / multi-vector reps across
        # processes is not written yet, and a silent mix of local and global negatives would be wrong.
        raise TrainingError(f"the {', '.join(heads)} head(s) train on one process only for now; run one process, "
                            "or set cross_device_negatives=false (each process then uses its own in-batch negatives)")
    if cfg.grad_cache and distributed_type == DistributedType.DEEPSPEED:
        # GradCache backpropagates each chunk separately; a DeepSpeed engine treats every backward as a
        # micro-step of its own gradient accumulation and would step the optimizer on partial gradients.
        raise TrainingError("grad_cache=true cannot run under DeepSpeed (each chunk's backward would step the "
                            "engine); use the DDP accelerate config, or grad_cache=false with a smaller batch")


class Towers(torch.nn.Module):
    """Runs the embedding model over several input groups in ONE module call.

    Why: DDP registers its gradient hooks per forward call; calling the wrapped model three times (queries,
    positives, negatives) before one backward is fragile under DDP, so the three passes live inside a
    single ``forward``.
    """

    def __init__(self, model: torch.nn.Module, precision: Optional[Precision] = None):
        super().__init__()
        self.model = model
        self.precision = precision or Precision("fp32", "")

    def forward(self, groups: List[Dict[str, torch.Tensor]], token_states: bool = False) -> list:
        # bf16 autocast here rather than accelerate's mixed_precision: accelerate keeps it in a process-wide
        # singleton, so two runs of one process (a chain, the tests) could not differ in precision. What leaves
        # the towers is fp32 again (the losses compute in fp32), as accelerate's wrapper does.
        device = next(self.model.parameters()).device
        with autocast(self.precision, device):
            # With representation heads each group gives a dict (dense + heads), from one backbone pass; MNTP
            # needs the token states themselves.
            if token_states:
                out = [self.model.token_states(g["input_ids"], g["attention_mask"]) for g in groups]
            else:
                encode = self.model.encode_all if len(self.model.heads) else self.model
                out = [encode(**g) for g in groups]
        return convert_to_fp32(out) if self.precision.bf16 else out


class Trainer:
    def __init__(self, cfg: Config, resume: Optional[str] = None, overwrite: bool = False):
        self.cfg, self.resume, self.overwrite = cfg, resume, overwrite
        self.run_dir = os.path.join(cfg.output_dir, cfg.experiment_id)
        self.layout = RunLayout(self.run_dir)  # every path inside the run folder
        self.step = 0  # optimizer steps done
        self.consumed = 0  # batches (micro-steps) consumed across epochs
        self.best: Optional[dict] = None
        self.history: List[dict] = []
        # Totals that survive --resume (restored from trainer_state.json): samples, seconds of training
        # steps, of validation, of checkpoints, and wall seconds of earlier sessions.
        self.totals = {"samples": 0, "steps_s": 0.0, "validation": 0.0, "checkpoint": 0.0, "wall_s": 0.0}
        self.lock: Optional[checkpoint.RunLock] = None

    # ------------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from l2e.data.read import load_tokenized
        from l2e.losses import build_loss
        from l2e.model.embedding_model import build_model

        cfg = self.cfg
        # Before torch's first CPU block anywhere in setup (the precision probe, accelerate): torch reads the
        # switch once per process, at its first block.
        thp = enable_thp() if cfg.malloc_thp else None
        self.guard = None  # ResidentGuard, with malloc_trim_over_budget (_bound_memory)
        # cpu=True without CUDA: accelerate then runs torchrun-launched processes as MULTI_CPU (gloo)
        # instead of silently training each process alone.
        # precision: bf16 autocast in the towers' forward (fp32 master weights and optimizer state);
        # l2e.model.precision decides and says why.
        self.precision = resolve_precision(cfg.precision)
        self.acc = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                               log_with="tensorboard", project_dir=cfg.tb_dir, cpu=not torch.cuda.is_available())
        if self.acc.is_main_process:
            print(f"precision: {self.precision.name} ({self.precision.reason})", flush=True)
        check_runtime(cfg, self.acc.distributed_type)
        self._tune_allocator(thp)
        resume_from = self._claim_run_dir()  # before anything in the run folder is written
        set_seed(cfg.seed)
        self.train_sets = load_tokenized(cfg.train_data_path, "train")
        self.valid_sets = [d for d in load_tokenized(cfg.train_data_path, "valid") if len(d)]
        self.model, self.tokenizer = build_model(cfg)
        coverage = getattr(self.model.backbone, "l2e_lora_coverage", None)
        if coverage and self.acc.is_main_process:
            print(coverage, flush=True)
        check_hidden_size(cfg, self.model.hidden_size)
        self.checkpoint_plan = self._bound_memory()
        self._check_data_matches_model()
        self._start_heads()
        self.loss_fn = build_loss(cfg)
        self.local_loss_fn = build_loss(_replace(cfg, cross_device_negatives=False))
        self.global_batch = cfg.train_batch_size * self.acc.num_processes
        self.batches_per_epoch = len(self._plan(0))
        if self.batches_per_epoch == 0:
            sizes = {d.name: len(d) for d in self.train_sets}
            raise TrainingError(f"no dataset in {cfg.train_data_path} has a full global batch of "
                                f"{self.global_batch} rows (sizes: {sizes}); lower train_batch_size")
        self.total_steps = cfg.train_steps if cfg.train_steps > 0 else (
            cfg.train_epochs * self.batches_per_epoch // cfg.gradient_accumulation_steps)
        optimizer = build_optimizer(self.model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                    betas=(cfg.adam_beta1, cfg.adam_beta2))
        self.scheduler = build_scheduler(optimizer, base_lr=cfg.learning_rate, min_lr=cfg.min_lr,
                                         warmup_steps=cfg.warmup_steps, total_steps=self.total_steps,
                                         kind=cfg.lr_scheduler)
        # The scheduler is NOT registered with accelerate's checkpointing: accelerate would unpickle it with
        # weights_only=False on resume. Its state is a step count, kept in trainer_state.json.
        self.towers, self.optimizer = self.acc.prepare(Towers(self.model, self.precision), optimizer)
        # One objective per task type (l2e.train.objectives): batch rule, collation, loss.
        objectives = build_objectives(cfg, self.tokenizer, self.model, self.train_sets + self.valid_sets)
        self.objectives, self.valid_objectives = objectives[:len(self.train_sets)], objectives[len(self.train_sets):]
        self.collator = BatchCollator(self.train_sets, self.objectives,
                                      num_hard_neg=cfg.num_hard_neg, query_len=cfg.query_len,
                                      passage_len=cfg.passage_len, pad_id=self.tokenizer.pad_token_id,
                                      seed=cfg.seed, rank=self.acc.process_index, world=self.acc.num_processes)
        self.negatives = self._report_negatives()
        if self.acc.is_main_process:
            cfg.save(self.layout.config)
        if resume_from:
            self._load_newest_loadable(resume_from)
        # purge_step: TensorBoard drops the events a killed run logged past the step this run resumes from.
        tb = {"tensorboard": {"purge_step": self.step + 1}} if resume_from else {}
        self.acc.init_trackers(cfg.experiment_id, config=_scalar_config(cfg), init_kwargs=tb)

    def _tune_allocator(self, thp: Optional[bool]) -> None:
        """malloc_mmap_threshold_mb: before the model loads, so every later large allocation follows it; and what
        malloc_thp (set at the very start of setup) achieved."""
        from l2e.train.memory import set_mmap_threshold

        if thp is not None and self.acc.is_main_process:
            print("memory: large CPU blocks page-aligned on transparent huge pages (THP_MEM_ALLOC_ENABLE=1)" if thp
                  else "warning: malloc_thp=true not in effect: torch had already allocated in this process with "
                  f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')!r} (it reads it once); set "
                  "THP_MEM_ALLOC_ENABLE=1 in the environment before starting", flush=True)
        mb = self.cfg.malloc_mmap_threshold_mb
        if mb <= 0:
            return
        applied = set_mmap_threshold(mb)
        if self.acc.is_main_process:
            print(f"memory: allocations of {mb:g} MiB or more are mmapped and returned when freed" if applied else
                  f"warning: malloc_mmap_threshold_mb={mb:g} ignored: this C library has no mallopt (not glibc)",
                  flush=True)

    def _claim_run_dir(self) -> Optional[str]:
        """Lock the run folder; pick the checkpoint to resume from, or make sure a new run starts clean."""
        if self.acc.is_main_process:
            self.lock = checkpoint.RunLock(self.run_dir)
        resume_from, notes = None, []
        if self.resume:
            resume_from, notes = checkpoint.resolve_resume(self.run_dir, self.resume)
        elif self.acc.is_main_process:
            checkpoint.check_fresh_run(self.run_dir, self.overwrite)
        if self.acc.is_main_process:
            for note in notes:
                print(f"warning: {note}; resuming from {os.path.basename(resume_from)} instead", flush=True)
        self.acc.wait_for_everyone()
        return resume_from

    def _check_data_matches_model(self) -> None:
        """The tokenized data must come from the model's tokenizer and agree with the config's instruction
        handling; teacher scores must exist where kd asks for them."""
        from l2e.data.read import DataError
        from l2e.data.tokens import tokenizer_fingerprint

        cfg, fingerprint = self.cfg, tokenizer_fingerprint(self.tokenizer)
        kd_sets = []
        for ds in self.train_sets:
            where = os.path.join(cfg.train_data_path, ds.name)
            theirs = ds.meta.get("tokenizer_fingerprint")
            if theirs is None:
                raise DataError(f"{where}: meta.json has no tokenizer_fingerprint (written by an older "
                                "tokenize_data.py); re-run tokenize_data.py so the tokenizer can be checked")
            if theirs != fingerprint:
                raise DataError(f"{where} was tokenized with another tokenizer ({ds.meta.get('tokenizer')}) than "
                                f"model_path={cfg.model_path!r}; re-run tokenize_data.py with this model's tokenizer")
            inline = ds.meta.get("inline_instruction_rows", 0)
            if inline and cfg.skip_instruction and ds.meta.get("instruction_separator") != cfg.instruction_separator:
                raise DataError(f"{where}: {inline} queries had their instruction found by instruction_separator="
                                f"{ds.meta.get('instruction_separator')!r} at tokenization, but the config says "
                                f"{cfg.instruction_separator!r}; use the same separator on both")
            if has_teacher_scores(ds):
                kd_sets.append(ds)
        if cfg.kd_enabled:
            self._check_kd(kd_sets)

    def _check_kd(self, kd_sets) -> None:
        cfg = self.cfg
        if not kd_sets:
            raise TrainingError(f"kd_enabled=true but no dataset in {cfg.train_data_path} carries teacher scores "
                                "(pos_scores / neg_scores in the raw rows); set kd_enabled=false or add scores")
        for ds in kd_sets:
            empty = int((row_lengths(ds.neg_ids) == 0).sum())
            if empty and cfg.num_hard_neg:
                raise TrainingError(f"kd_enabled=true: dataset {ds.name!r} has {empty} rows without hard negatives, "
                                    "so the teacher scored no candidate for them; re-tokenize with --min_negatives 1")
        missing = [ds.name for ds in self.train_sets if ds not in kd_sets]
        if missing and self.acc.is_main_process:
            print(f"warning: kd_enabled=true but datasets {missing} carry no teacher scores; their batches train "
                  "without the kd term", flush=True)

    def _start_heads(self) -> None:
        """Each head's own start from the training data (``HeadSpec.start``; e.g. the lexical head from BM25's idf)."""
        from l2e.data.read import document_frequency
        from l2e.model.heads import get_head

        for name, module in self.model.heads.items():
            start = get_head(name).start
            line = start and start(module, self.model.settings, self.model.carried_extras,
                                   lambda vocab_size: document_frequency(self.train_sets, vocab_size))
            if line and self.acc.is_main_process:
                print(line, flush=True)

    def _bound_memory(self):
        """memory_budget_gb: checkpoint the fewest decoder layers that keep a worst-case step under it."""
        from l2e.train.memory import apply_checkpointing, plan_checkpointing

        if self.cfg.memory_budget_gb <= 0 or self.cfg.gradient_checkpointing:
            return None
        plan = plan_checkpointing(self.cfg, self.model, self.acc.device, self.precision)
        apply_checkpointing(self.model.backbone, plan.layers)
        if self.acc.is_main_process:
            print(f"memory: {plan.layers} of {plan.total_layers} layers checkpointed, ~{plan.estimate_gb:.1f} GB "
                  f"estimated for a step of {plan.tokens_per_step} tokens (budget {plan.budget_gb} GB)", flush=True)
        if self.cfg.malloc_trim_over_budget:
            limit = plan.guard_limit_bytes()
            self.guard = ResidentGuard(limit)
            self.guard.attach(self.model.backbone)
            if self.acc.is_main_process:
                print(f"memory: freed heap pages go back to the OS before any decoder layer that starts above "
                      f"{limit / GB:.2f} GB resident (malloc_trim_over_budget)", flush=True)
        return plan

    def _report_negatives(self) -> List[dict]:
        """Rows topped up to num_hard_neg, said loudly once and kept for training_summary.json."""
        counts = self.collator.counts()
        if self.acc.is_main_process:
            for c in counts:
                if c.message():
                    print(f"warning: {c.message()}", flush=True)
        return [c.__dict__ for c in counts]

    def _plan(self, epoch: int):
        lengths = None
        if self.cfg.length_bucketing:
            lengths = [pair_lengths(d, self.cfg.query_len, self.cfg.passage_len) for d in self.train_sets]
        return plan_epoch([len(d) for d in self.train_sets], self.global_batch, self.cfg.seed, epoch, lengths)

    def _batches(self):
        """Endless stream of this rank's batches, starting after the ones already consumed."""
        epoch, skip = divmod(self.consumed, self.batches_per_epoch)
        while True:
            # batch_size=1 + unwrap: each item already is a whole batch, and skip_first_batches needs a batch sampler
            # Own generator: a DataLoader iterator draws its base seed from the global RNG otherwise, and a
            # resumed run would then replay dropout masks one draw off.
            loader = DataLoader(EpochBatches(self._plan(epoch), self.collator, epoch), batch_size=1,
                                shuffle=False, num_workers=self.cfg.dataloader_num_workers, collate_fn=_first,
                                generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
            if skip:
                loader = skip_first_batches(loader, skip)
            for batch in loader:
                yield epoch, batch
            epoch, skip = epoch + 1, 0

    # ------------------------------------------------------------------------------------------- train
    def train(self) -> None:
        cfg, acc = self.cfg, self.acc
        self.towers.train()
        stream = self._batches()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not acc.is_main_process)
        t_last, tokens = time.time(), 0
        self.t_start = time.time()
        self.overhead_s = {"validation": 0.0, "checkpoint": 0.0}  # this session's wall time that is not training
        try:
            while self.step < self.total_steps:
                epoch, batch = next(stream)
                with acc.accumulate(self.towers):
                    terms = self._forward_backward(batch)
                    self.consumed += 1
                    tokens += sum(int(v["attention_mask"].sum()) for v in batch.values()
                                  if isinstance(v, dict) and "attention_mask" in v)
                    grad_norm = None
                    if acc.sync_gradients:
                        # max_grad_norm=0 measures the norm without clipping: a non-finite gradient must stop
                        # the run before it reaches the weights either way.
                        grad_norm = acc.clip_grad_norm_(self.towers.parameters(), cfg.max_grad_norm or float("inf"))
                        self._check_finite_grad(grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                if cfg.malloc_trim_each_step:
                    # glibc keeps a step's freed activations in its heap, and a batch of new lengths may not fit
                    # those holes. Measured on the recipe (README, Performance): between steps resident memory
                    # falls to what is live, the peak inside a step does not move, and refaulting costs ~25%.
                    trim_heap()
                self.scheduler.step()
                self.step += 1
                self.totals["samples"] += self.global_batch * cfg.gradient_accumulation_steps
                bar.update(1)
                now = time.time()
                record = self._record(terms, batch, epoch, grad_norm, tokens * acc.num_processes / max(now - t_last, 1e-9))
                t_last, tokens = now, 0
                if self.step % cfg.log_interval == 0 or self.step == self.total_steps:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if self.step % cfg.validation_steps == 0 or self.step == self.total_steps:
                    with self._not_training("validation"):
                        self._validate()
                if self.step % cfg.checkpointing_steps == 0 or self.step == self.total_steps:
                    with self._not_training("checkpoint"):
                        self._save()
        finally:
            bar.close()  # before any error message, so the message is the last line

    def _forward_backward(self, batch: dict) -> Dict[str, torch.Tensor]:
        """One batch's forward and backward, by its dataset's objective (``l2e.train.objectives``)."""
        return self.objectives[batch["dataset"]].train_step(self, batch)

    def _check_finite(self, terms: Dict[str, torch.Tensor], ds) -> None:
        if not torch.isfinite(terms["loss"]).all():
            last = checkpoint.latest_checkpoint(self.run_dir) or "none yet"
            raise TrainingError(
                f"loss is {terms['loss'].item()} at step {self.step + 1} (dataset {ds.name!r}); nothing was "
                f"updated or saved, last good checkpoint: {last}. Check the model's weights and the data, then "
                "lower learning_rate or raise temperature.")

    def _check_finite_grad(self, grad_norm) -> None:
        if not torch.isfinite(torch.as_tensor(grad_norm)).all():
            last = checkpoint.latest_checkpoint(self.run_dir) or "none yet"
            raise TrainingError(f"gradient norm is {float(grad_norm)} at step {self.step + 1}; the optimizer did not "
                                f"step, nothing was saved, last good checkpoint: {last}. Lower learning_rate.")

    def _check_finite_weights(self) -> None:
        """Never save (and later call "last good") a checkpoint whose trainable weights are not finite."""
        model = self.acc.unwrap_model(self.towers).model
        bad = next((n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
        if bad:
            last = checkpoint.latest_checkpoint(self.run_dir) or "none yet"
            raise TrainingError(f"weight {bad} is not finite after step {self.step}; not saved, last good "
                                f"checkpoint: {last}. Lower learning_rate.")

    # ---------------------------------------------------------------------------------------- watching
    def _record(self, terms, batch, epoch, grad_norm, tokens_per_s) -> dict:
        ds = self.train_sets[batch["dataset"]]
        values = {k: self.acc.reduce(v.float(), reduction="mean").item() for k, v in terms.items()}
        # Resident memory now and the peak so far, per logged step: a run's peak (training_summary.json) says how
        # much, this says when -- a step, a validation pass or a checkpoint save.
        memory = {"rss_gb": current_rss_bytes() / GB, "peak_rss_gb": _peak_rss_gb()}
        if self.guard is not None:
            memory["trims"] = self.guard.take_trims()  # since the last record: how often the guard had to act
        record = {"step": self.step, "epoch": epoch, "dataset": ds.name, "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": float(grad_norm) if grad_norm is not None else None,
                  "tokens_per_s": tokens_per_s, "elapsed_s": time.time() - self.t_start, **memory, **values}
        scalars = {f"train/{k}": v for k, v in values.items()}
        scalars.update({f"train/{k}/{ds.name}": v for k, v in values.items()})
        scalars.update({"train/lr": record["lr"], "train/tokens_per_s": tokens_per_s})
        scalars.update({f"memory/{k}": v for k, v in memory.items()})
        if record["grad_norm"] is not None:
            scalars["train/grad_norm"] = record["grad_norm"]
        self.acc.log(scalars, step=self.step)
        if self.acc.is_main_process:
            with open(self.layout.training_log, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    @torch.no_grad()
    def _validate(self) -> None:
        """Validation loss per dataset (and nDCG@10 on ``eval_data_dir``), on the main process only."""
        if self.acc.is_main_process:
            self.towers.eval()
            # Training seconds so far, net of earlier validations and checkpoints: the x axis of a
            # learning curve and what a "N minutes of training" budget counts.
            result = {"step": self.step, "train_s": self._train_seconds()}
            for ds, objective in zip(self.valid_sets, self.valid_objectives):
                result[f"valid_loss/{ds.name}"] = self._valid_loss(ds, objective)
            if self.cfg.eval_data_dir:
                result.update(self._retrieval_metrics())
            self.towers.train()
            self.acc.log({k: v for k, v in result.items() if k != "step"}, step=self.step)
            with open(self.layout.validation_log, "a") as f:
                f.write(json.dumps(result) + "\n")
            key = "ndcg_at_10" if "ndcg_at_10" in result else None
            score = result[key] if key else -sum(v for k, v in result.items() if k.startswith("valid_loss/"))
            if len(result) > 1 and (self.best is None or score > self.best["score"]):
                self.best = {"step": self.step, "score": score, "metric": key or "-valid_loss", **result}
            self.history.append(result)
        self.acc.wait_for_everyone()

    @contextlib.contextmanager
    def _not_training(self, what: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.overhead_s[what] += time.time() - t0

    def _train_seconds(self) -> float:
        """Seconds of training steps so far (earlier sessions included), without validation and checkpoints."""
        if not hasattr(self, "t_start"):
            return self.totals["steps_s"]
        return self.totals["steps_s"] + time.time() - self.t_start - sum(self.overhead_s.values())

    def _run_totals(self) -> dict:
        """Totals over every session of this run (the resumed ones included)."""
        overhead = getattr(self, "overhead_s", {})
        wall = time.time() - self.t_start if hasattr(self, "t_start") else 0.0
        return {"samples": self.totals["samples"], "steps_s": self._train_seconds(),
                "validation": self.totals["validation"] + overhead.get("validation", 0.0),
                "checkpoint": self.totals["checkpoint"] + overhead.get("checkpoint", 0.0),
                "wall_s": self.totals["wall_s"] + wall}

    def _valid_loss(self, ds, objective) -> float:
        model = self.acc.unwrap_model(self.towers).model
        collator = BatchCollator([ds], [objective], num_hard_neg=self.cfg.num_hard_neg, query_len=self.cfg.query_len,
                                 passage_len=self.cfg.passage_len, pad_id=self.tokenizer.pad_token_id,
                                 seed=self.cfg.seed)
        size = min(self.global_batch, len(ds))
        losses = [objective.valid_loss(self, model, collator(planned, 0, i))
                  for i, planned in enumerate(plan_epoch([len(ds)], size, self.cfg.seed, 0))]
        return sum(losses) / max(1, len(losses))

    def _retrieval_metrics(self) -> dict:
        from l2e.retrieval.embedder import Embedder
        from l2e.retrieval.mteb_wrapper import evaluate_retrieval

        cfg = self.cfg
        model = self.acc.unwrap_model(self.towers).model
        embedder = Embedder(model, self.tokenizer, device=self.acc.device,  # the model's own settings
                            precision=self.precision.name)
        rows = evaluate_retrieval(embedder, cfg.eval_data_dir, max_queries=cfg.eval_max_queries,
                                  batch_size=cfg.train_batch_size * 2)
        return {k: rows[0][k] for k in ("ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10") if k in rows[0]}

    # ------------------------------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        """``step_N``: model (or adapter) + tokenizer + config + accelerate state, written atomically."""
        acc = self.acc
        self._check_finite_weights()
        final = self.layout.step(self.step)
        tmp = checkpoint.begin(final) if acc.is_main_process else staging_path(final)
        acc.wait_for_everyone()
        try:
            acc.save_state(os.path.join(tmp, "state"))
            if acc.is_main_process:
                self._save_model(tmp)
                _fault_point("after_state", self.step)
                state = {"step": self.step, "consumed_batches": self.consumed, "total_steps": self.total_steps,
                         "num_processes": acc.num_processes, "best": self.best,
                         "scheduler": _scheduler_state(self.scheduler), "totals": self._run_totals()}
                checkpoint.commit(tmp, final, state)
        except Exception as e:  # noqa: BLE001 -- torch.save / safetensors wrap ENOSPC in their own exceptions
            if not checkpoint.is_write_failure(e):
                raise
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)  # the partial step; never a complete checkpoint
            last = checkpoint.latest_checkpoint(self.run_dir) or "none yet"
            raise checkpoint.CheckpointError(
                f"saving {final} failed: {checkpoint.write_failure_text(e)}; the partial folder was removed and "
                f"the last complete checkpoint ({last}) is untouched -- free space, then --resume") from None
        if acc.is_main_process:
            checkpoint.prune(self.run_dir, self.cfg.keep_last_n)
        acc.wait_for_everyone()

    def _save_model(self, folder: str) -> None:
        self.acc.unwrap_model(self.towers).model.save(folder, self.tokenizer)
        self.cfg.save(os.path.join(folder, "training_config.json"))

    def _load_newest_loadable(self, path: str) -> None:
        """``--resume latest``: a checkpoint whose state is refused (a planted pickle, a foreign file with the
        right size) is skipped like a damaged one, with a warning, for the complete one before it. An explicit
        ``--resume PATH`` is that checkpoint or an error."""
        candidates = [path]
        if self.resume == "latest":
            older = [p for p in checkpoint.list_checkpoints(self.run_dir) if p != path]
            candidates += [p for p in reversed(older) if checkpoint.step_of(p) < checkpoint.step_of(path)
                           and checkpoint.damage(p) is None]
        for i, candidate in enumerate(candidates):
            try:
                self._load(candidate)
                return
            except checkpoint.CheckpointError as e:
                if i + 1 == len(candidates):
                    raise
                if self.acc.is_main_process:
                    print(f"warning: {e}; resuming from {os.path.basename(candidates[i + 1])} instead", flush=True)

    def _load(self, path: str) -> None:
        state = checkpoint.read_state(path)
        if state["num_processes"] != self.acc.num_processes:
            raise TrainingError(f"{path} was written by {state['num_processes']} processes; resume with the same "
                                f"number (now {self.acc.num_processes}) so the data order stays the same")
        try:
            self.acc.load_state(os.path.join(path, "state"))
        except Exception as e:  # noqa: BLE001 -- weights_only refusals, shape mismatches: one line, not a traceback
            raise checkpoint.CheckpointError(f"{path}: cannot load the training state ({type(e).__name__}: "
                                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        self.step, self.consumed, self.best = state["step"], state["consumed_batches"], state.get("best")
        _load_scheduler_state(self.scheduler, state.get("scheduler"), self.step)
        self.totals.update(state.get("totals", {}))
        if self.acc.is_main_process:
            for log in (self.layout.training_log, self.layout.validation_log):
                _truncate_log(log, self.step)
            print(f"resumed from {path} at step {self.step}")

    # ----------------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> dict:
        """Export ``final/`` (sentence-transformers layout; merged model for LoRA) and the run summary."""
        from l2e.export.final import export_final

        acc = self.acc
        acc.wait_for_everyone()
        summary = {}
        if acc.is_main_process:
            model = acc.unwrap_model(self.towers).model
            totals = self._run_totals()
            t0 = time.time()
            run = {"steps": self.step, "samples": totals["samples"], "steps_time_s": totals["steps_s"],
                   "validation": self.history}
            final_dir = export_final(model, self.tokenizer, self.layout.final,
                                     merge_lora=self.cfg.lora_merge_on_export, training_config=self.cfg, run=run)
            export_s = time.time() - t0
            totals["wall_s"] += export_s
            summary = {"experiment_id": self.cfg.experiment_id, "steps": self.step, "total_steps": self.total_steps,
                       "train_time_s": totals["wall_s"], "steps_time_s": totals["steps_s"],
                       "validation_time_s": totals["validation"], "checkpoint_time_s": totals["checkpoint"],
                       "export_time_s": export_s, "samples": totals["samples"],
                       "samples_per_s": totals["samples"] / max(totals["steps_s"], 1e-9),
                       "num_processes": acc.num_processes, "precision": self.precision.name,
                       "precision_reason": self.precision.reason, "best_validation": self.best,
                       "final_dir": final_dir, "final_is_adapter": model.is_adapter,
                       "hard_negatives": self.negatives, "validation": self.history,
                       "checkpointed_layers": self.checkpoint_plan.layers if self.checkpoint_plan else None,
                       "peak_rss_gb": _peak_rss_gb(),
                       "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None}
            write_json(self.layout.summary, summary, newline=False, indent=2)
        self._release_process_group()
        return summary

    def _release_process_group(self) -> None:
        """Tear the process group down while the interpreter is alive, with nothing left holding it.

        DDP's reducer keeps the gloo process group (and the work objects of its last all-reduce, which hold
        tensors) alive after ``destroy_process_group``; the group is then destroyed during interpreter shutdown,
        where a gloo worker thread that needs the GIL is ended by Python with a forced unwind through C++ code
        that may not throw: ``terminate called without an active exception``, SIGABRT, sometimes. So: every rank
        reaches the barrier (no one closes connections another still uses), the wrapped model and accelerate's
        references to it are dropped and collected, and only then is the group destroyed."""
        import gc

        acc = self.acc
        acc.wait_for_everyone()
        self.towers = None
        acc.free_memory()  # accelerate's own references to the prepared model and optimizer
        gc.collect()
        acc.end_training()  # trackers, then destroy_process_group

    def close(self) -> None:
        """Release the run folder (the kernel would at process exit; in-process callers need it now)."""
        if self.lock:
            self.lock.release()
            self.lock = None


def _first(items: list):
    return items[0]


def _replace(cfg: Config, **changes) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def _scalar_config(cfg: Config) -> dict:
    """TensorBoard hparams accept scalars only: lists become strings."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in cfg.to_dict().items()}


def _peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM), what a memory budget is about."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _scheduler_state(scheduler) -> dict:
    """The LR schedule's state as JSON (LambdaLR: step count and learning rates; its lambda is rebuilt)."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def _load_scheduler_state(scheduler, state: Optional[dict], step: int) -> None:
    if state is None:  # a checkpoint from before the state lived here: the schedule is a function of the step
        state = {"last_epoch": step, "_step_count": step + 1}
    scheduler.load_state_dict({**scheduler.state_dict(), **state})
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr


def _truncate_log(path: str, step: int) -> None:
    """Drop log lines past the resumed step: the killed run logged steps that the resumed run redoes. A line
    cut short by the kill (no newline, not JSON) is dropped too."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if line.endswith("\n") and record.get("step", step + 1) <= step:
                keep.append(line)
    from l2e.core.atomic import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.writelines(keep)


def _fault_point(name: str, step: int) -> None:
    """Crash on purpose where ``L2E_FAULT=name:step`` says; the crash-mid-save test uses it (no-op otherwise)."""
    if os.environ.get("L2E_FAULT") == f"{name}:{step}":
        os._exit(137)
