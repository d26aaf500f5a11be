"""Engine-exact models: the config switch and its checks, the model card's mode line, and vLLM serving the same
query vectors as l2e (run where benchmarks/serve_vllm.sh has built .venv-vllm: vLLM pins its own transformers)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_models import tiny_llama
from l2e.config import ConfigError, from_dict

ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))


def config(**fields):
    return from_dict({"model_path": tiny_llama(), "max_seq_length": 64, **fields}, check_paths=False)


def test_engine_exact_checks_name_the_key_and_the_fix():
    assert config(engine_exact=True, pooling_mode="mean").engine_exact
    with pytest.raises(ConfigError, match="skip_instruction=true leaves the instruction out; set skip_instruction=false"):
        config(engine_exact=True, pooling_mode="mean", skip_instruction=True)
    with pytest.raises(ConfigError, match="vLLM and TEI have no 'weighted_mean' pooling; use one of"):
        config(engine_exact=True, pooling_mode="weighted_mean")
    config(engine_exact=True, pooling_mode="eos", skip_instruction=True)  # eos pools a token after the instruction


def test_model_card_states_the_mode(tmp_path):
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    for skip, mode in ((False, "Mode: **engine-exact**"), (True, "Mode: **l2e-exact only**")):
        model, tok = build_model(config(pooling_mode="mean", skip_instruction=skip, query_instruction="Query: "))
        final = export_final(model, tok, str(tmp_path / f"final{skip}"))
        assert mode in (Path(final) / "README.md").read_text()


@pytest.mark.skipif(not (VLLM_VENV / ".installed").exists(),
                    reason="vLLM lives in its own virtualenv: run benchmarks/serve_vllm.sh once to build .venv-vllm")
def test_vllm_serves_an_engine_exact_models_query_vectors(tmp_path):
    """An engine-exact tiny Llama (head width 64 as SmolLM2's, which vLLM's CPU kernels need; bidirectional, mean over the whole prompt): vLLM's query vectors, the instruction
    prepended as text, equal l2e's to 1e-4 -- and its document vectors too."""
    from l2e.export.final import export_final
    from l2e.model.embedding_model import build_model

    from l2e.model.tiny import save_tiny_model

    cfg = from_dict({"model_path": save_tiny_model("llama-h64", str(tmp_path / "tiny")), "max_seq_length": 64,
                     "engine_exact": True, "pooling_mode": "mean", "bi_attn_enabled": True,
                     "query_instruction": "Instruct: find the package\nQuery: "}, check_paths=False)
    model, tok = build_model(cfg)
    final = export_final(model, tok, str(tmp_path / "final"))
    out = tmp_path / "serve"
    out.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    script = str(ROOT / "benchmarks" / "serve_vllm.py")
    common = ["--final", final, "--out", str(out), "--n", "16"]
    subprocess.run([sys.executable, script, "reference", *common], check=True, env=env)
    done = subprocess.run([str(VLLM_VENV / "bin" / "python"), script, "offline", *common], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ref, got = np.load(out / "l2e.npz"), np.load(out / "vllm_offline.npz")
    assert json.loads((out / "l2e.json").read_text())["skip_instruction"] is False
    np.testing.assert_allclose(got["queries"], ref["queries"], atol=1e-4)
    np.testing.assert_allclose(got["docs"], ref["docs"], atol=1e-4)
