"""Peak resident memory and step time of one training config under different allocator settings, in one go.

    python benchmarks/bench_memory.py --config configs/cpu/smollm2.distill.json --steps 8
    python benchmarks/bench_memory.py --config configs/cpu/tiny.f2llm.json --steps 4 --rows default,mmap4

Each row runs ``run.py`` as its own process (peak memory is per process) for ``--steps`` optimizer steps with
validation off, and reads back the run's ``training_summary.json`` (``peak_rss_gb``: the process's VmHWM, model
loading and export included) and ``training_log.jsonl`` (median seconds per step, the first step left out: it
warms up). The peer every row is compared with is ``--peer`` (default ``default``: the config as it is, glibc's
malloc as it comes). ``--peer_commit REV`` runs the peer row with the code as of commit REV (``run.py`` and
``l2e/`` from a temporary git worktree, data paths resolved against this checkout): "today's speed" for a change
that has no switch to turn it off.

Rows: ``default``, or parts joined by ``+`` (``bf16+trim``): ``mmapN``: ``malloc_mmap_threshold_mb=N``
(allocations of N MiB or more mmapped and unmapped when freed -- l2e.train.memory.set_mmap_threshold); ``trim``:
``malloc_trim_each_step`` (the heap's free pages go back to the OS after every optimizer step); ``thp`` /
``nothp``: ``malloc_thp`` on / off (PyTorch's ``THP_MEM_ALLOC_ENABLE``: large blocks page-aligned on transparent
huge pages); ``guard`` / ``noguard``: ``malloc_trim_over_budget`` on / off (trim before a decoder layer while
resident memory is over the budget); ``nofuse``: ``lora_fused_add=false`` (peft's own LoRA forward, the adapter's
output added as a new tensor);
``bf16`` / ``fp32`` / ``auto``: ``precision``; ``budgetN``: ``memory_budget_gb=N`` (the checkpointing plan's
budget: more checkpointed layers, less memory, more recomputation); ``jemalloc``: libjemalloc preloaded (Debian
package libjemalloc2), the documented alternative.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def row_settings(name: str):
    """(run.py --set overrides, extra environment) of one row name: ``default`` or parts joined by ``+``."""
    sets, env = {}, {}
    for part in ([] if name == "default" else name.split("+")):
        if part == "jemalloc":
            env["LD_PRELOAD"] = JEMALLOC
        elif part in ("thp", "nothp"):  # malloc_thp: PyTorch's THP_MEM_ALLOC_ENABLE, set by the trainer
            sets["malloc_thp"] = part == "thp"
        elif part in ("guard", "noguard"):
            sets["malloc_trim_over_budget"] = part == "guard"
        elif part == "nofuse":
            sets["lora_fused_add"] = False
        elif part == "trim":
            sets["malloc_trim_each_step"] = True
        elif part in ("bf16", "fp32", "auto"):
            sets["precision"] = part
        elif part.startswith("mmap") and part[4:].replace(".", "", 1).isdigit():
            sets["malloc_mmap_threshold_mb"] = float(part[4:])
        elif part.startswith("budget") and part[6:].replace(".", "", 1).isdigit():
            sets["memory_budget_gb"] = float(part[6:])
        else:
            raise SystemExit(f"error: unknown row part {part!r} in {name!r}; use default, or parts joined by +: "
                             "jemalloc, thp, nothp, guard, noguard, nofuse, trim, bf16, fp32, auto, mmapN (N MiB, e.g. mmap4), budgetN (N GB, "
                             "e.g. budget4.5)")
    return sets, env


@contextlib.contextmanager
def code_at(rev: str):
    """The folder whose ``run.py`` (and ``l2e/``, imported from beside it) a row runs: this checkout, or a
    temporary worktree at ``rev``."""
    if not rev:
        yield ROOT, ""
        return
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                         capture_output=True, text=True).stdout.strip()
    if not sha:
        raise SystemExit(f"error: --peer_commit {rev!r} is not a commit of {ROOT}")
    folder = tempfile.mkdtemp(prefix="l2e_peer_code_")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", folder, sha], check=True, capture_output=True)
    try:
        yield folder, sha
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", folder], capture_output=True)


def run_row(args, name: str, out: str, code: str = ROOT, commit: str = "") -> dict:
    from l2e.config import format_overrides

    sets, env = row_settings(name)
    run_id = name.replace("+", "_")  # experiment_id allows letters, digits, "._-"
    if env.get("LD_PRELOAD") and not os.path.isfile(JEMALLOC):
        return {"row": name, "error": f"{JEMALLOC} not installed (apt-get install libjemalloc2)"}
    sets = {"train_steps": args.steps, "checkpointing_steps": args.steps, "validation_steps": 10 * args.steps,
            "eval_data_dir": "", "keep_last_n": 0, "log_interval": 1, "output_dir": out, "tb_dir": f"{out}/tb",
            "experiment_id": run_id, **sets}
    # Python puts the script's folder first on sys.path, so run.py imports the l2e/ beside it.
    cmd = [sys.executable, os.path.join(code, "run.py"), "--config", args.config, "--overwrite"]
    for override in format_overrides(sets):
        cmd += ["--set", override]
    log = os.path.join(out, f"{name}.log")
    with open(log, "w") as f:
        res = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env})
    if res.returncode:
        return {"row": name, "error": f"exit {res.returncode}: " + open(log).read()[-300:].replace("\n", " ")}
    run_dir = os.path.join(out, run_id)
    with open(os.path.join(run_dir, "training_summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "training_log.jsonl")) as f:
        log_rows = [json.loads(line) for line in f]
    elapsed = [r["elapsed_s"] for r in log_rows]
    steps = [b - a for a, b in zip(elapsed, elapsed[1:])]  # the first step (warm-up) is left out
    # Per step: the peak so far and the guard's trims (malloc_trim_over_budget), so a peak can be placed in time
    # (a step, or the final save and export after the last step).
    trail = [{k: r[k] for k in ("step", "rss_gb", "peak_rss_gb", "trims") if k in r} for r in log_rows]
    return {"row": name, "peak_rss_gb": summary["peak_rss_gb"], "s_per_step": statistics.median(steps),
            "checkpointed_layers": summary.get("checkpointed_layers"), **sets, **({"commit": commit} if commit else {}),
            "steps": trail}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/cpu/smollm2.distill.json")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rows", default="default,mmap1,mmap4,mmap16,jemalloc")
    p.add_argument("--json_out", default="", help="also write the rows here")
    p.add_argument("--peer", default="default", help="the row every speed is compared with (one of --rows)")
    p.add_argument("--peer_commit", default="", help="run the peer row with the code as of this commit")
    args = p.parse_args(argv)
    if args.peer not in args.rows.split(","):
        raise SystemExit(f"error: --peer {args.peer!r} is not one of --rows {args.rows!r}")
    if args.steps < 3:
        raise SystemExit("error: --steps must be >= 3 (the first step is a warm-up, the median needs two more)")
    results = []
    with tempfile.TemporaryDirectory(prefix="l2e_bench_memory_") as out, code_at(args.peer_commit) as (peer_code, sha):
        for name in args.rows.split(","):
            results.append(run_row(args, name, out, peer_code, sha) if name == args.peer else run_row(args, name, out))
            print(json.dumps(results[-1]), flush=True)
    peer = next((r for r in results if r["row"] == args.peer and "error" not in r), None)
    at = f" (code as of {sha[:7]})" if args.peer_commit else ""
    print(f"\n{args.config}, {args.steps} steps per row; peer: {args.peer}{at}\n")
    print(f"| row | checkpointed layers | peak RSS GB | s / step | speed vs {args.peer} |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        if "error" in r:
            print(f"| {r['row']} | | error: {r['error'][:80]} | | |")
            continue
        ratio = f"{peer['s_per_step'] / r['s_per_step']:.2f}x" if peer else ""
        layers = "-" if r["checkpointed_layers"] is None else r["checkpointed_layers"]  # "-": no memory budget
        print(f"| {r['row']} | {layers} | {r['peak_rss_gb']:.2f} | {r['s_per_step']:.2f} | {ratio} |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"config": args.config, "steps": args.steps, "peer": args.peer, "rows": results}, f, indent=2)


if __name__ == "__main__":
    main()
