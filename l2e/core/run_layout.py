"""The run folder's layout: the one place its file and folder names are written.

    output_dir/experiment_id/            RunLayout(root)
        config.json                      the resolved config          .config
        training_log.jsonl               one line per logged step     .training_log
        validation_log.jsonl             one line per validation      .validation_log
        training_summary.json            written at the end           .summary
        step_N/                          checkpoints (resumable)      .step(N)
        final/                           the exported model           .final
        final_adapter/                   a LoRA run's adapter         .final_adapter
        merge.json                       a chain's merge stage        .merge_record

Pure paths (no I/O), so every room (training, export, evaluation, the benchmarks) can ask it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

STEP_PATTERN = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class RunLayout:
    root: str

    CONFIG = "config.json"
    TRAINING_LOG = "training_log.jsonl"
    VALIDATION_LOG = "validation_log.jsonl"
    SUMMARY = "training_summary.json"
    FINAL = "final"
    FINAL_ADAPTER = "final_adapter"
    MERGE_RECORD = "merge.json"
    # What a run folder holds besides checkpoints; any of these means a run was started there.
    RUN_FILES = (CONFIG, TRAINING_LOG, VALIDATION_LOG, SUMMARY, FINAL, FINAL_ADAPTER)

    # One read-only path per name above (RunLayout(root).final == os.path.join(root, "final")).
    config = property(lambda self: os.path.join(self.root, self.CONFIG))
    training_log = property(lambda self: os.path.join(self.root, self.TRAINING_LOG))
    validation_log = property(lambda self: os.path.join(self.root, self.VALIDATION_LOG))
    summary = property(lambda self: os.path.join(self.root, self.SUMMARY))
    final = property(lambda self: os.path.join(self.root, self.FINAL))
    final_adapter = property(lambda self: os.path.join(self.root, self.FINAL_ADAPTER))
    merge_record = property(lambda self: os.path.join(self.root, self.MERGE_RECORD))

    def step(self, n: int) -> str:
        return os.path.join(self.root, f"step_{n}")

    @classmethod
    def of_export(cls, folder: str) -> "RunLayout":
        """The run a ``final/`` (or any folder directly inside a run) belongs to."""
        return cls(os.path.dirname(os.path.normpath(folder)))
