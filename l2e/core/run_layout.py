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

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    @property
    def config(self) -> str:
        return self._path(self.CONFIG)

    @property
    def training_log(self) -> str:
        return self._path(self.TRAINING_LOG)

    @property
    def validation_log(self) -> str:
        return self._path(self.VALIDATION_LOG)

    @property
    def summary(self) -> str:
        return self._path(self.SUMMARY)

    @property
    def final(self) -> str:
        return self._path(self.FINAL)

    @property
    def final_adapter(self) -> str:
        return self._path(self.FINAL_ADAPTER)

    @property
    def merge_record(self) -> str:
        return self._path(self.MERGE_RECORD)

    def step(self, n: int) -> str:
        return self._path(f"step_{n}")

    @classmethod
    def of_export(cls, folder: str) -> "RunLayout":
        """The run a ``final/`` (or any folder directly inside a run) belongs to."""
        return cls(os.path.dirname(os.path.normpath(folder)))
