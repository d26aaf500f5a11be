"""`python -m l2e.tiny` writes the tiny models that configs/cpu/tiny.*.json train."""
import pytest
from transformers import AutoConfig

from l2e.model import tiny


def test_cli_writes_loadable_model(tmp_path, capsys):
    assert tiny.main(["--arch", "deepseek_v3", "--out", str(tmp_path / "m")]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "deepseek_v3"
    assert (tmp_path / "m" / "tokenizer.json").exists()


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown tiny architecture 'gpt2'; choose one of qwen3, qwen3-0.6b, llama, llama-h64, deepseek_v3"):
        tiny.save_tiny_model("gpt2", "unused")
