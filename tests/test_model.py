"""Loading, EmbeddingModel forward/save/load, LoRA adapters and merging, on tiny random models."""
import json
import os

import pytest
import torch

import l2e.model.embedding_model as model_module
from helpers_models import TINY_MODELS, tiny_config
from l2e.core.errors import ModelError
from l2e.model.embedding_model import (
    SETTINGS_FILE, EmbeddingModel, ModelNotAvailableError, build_model, ensure_pad_token, load_embedding_model,
    resolve_dtype, split_gguf,
)
from l2e.data.tokens import encode_texts, pad_batch
from l2e.model.settings import ModelSettings, SettingsError

ARCHS = ["qwen3", "deepseek_v3", "llama"]
TEXTS = ["a short text", "a somewhat longer text about rotary position embeddings"]
INSTRUCTION = "Instruct: retrieve passages\nQuery: "


def make_batch(tokenizer, texts=TEXTS, instruction=None):
    ids, lens = encode_texts(tokenizer, texts, 64, instruction)
    return pad_batch(ids, tokenizer.pad_token_id, lens)


@torch.no_grad()
def embed(model, batch):
    return model.eval()(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])


def left_pad(batch):
    """The same batch, padding moved to the left."""
    out = {k: torch.zeros_like(v) for k, v in batch.items()}
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        for k, v in batch.items():
            out[k][i, v.shape[1] - n :] = v[i, :n]
    return out


def randomize_lora(model, seed=0):
    """Fresh LoRA B matrices are zero (adapter = identity); make the adapter matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


# --- building and forward -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_build_model_embeds(arch):
    model, tokenizer = build_model(tiny_config(arch))
    assert isinstance(model, EmbeddingModel) and model.pooling_mode == "eos" and model.hidden_size == 64
    assert not model.is_adapter and not hasattr(model.backbone, "lm_head")
    assert tokenizer.pad_token_id == 2 and tokenizer.padding_side == "right"
    out = embed(model, make_batch(tokenizer))
    assert out.shape == (2, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("pooling", ["eos", "mean", "weighted_mean"])
@pytest.mark.parametrize("bi_attn", [False, True])
def test_left_and_right_padding_give_the_same_embedding(pooling, bi_attn):
    model, tokenizer = build_model(tiny_config("qwen3", pooling_mode=pooling, bi_attn_enabled=bi_attn))
    batch = make_batch(tokenizer)
    torch.testing.assert_close(embed(model, left_pad(batch)), embed(model, batch), atol=1e-5, rtol=1e-4)


def test_pool_mask_used_only_with_skip_instruction():
    model, tokenizer = build_model(tiny_config("llama", pooling_mode="mean"))
    batch = make_batch(tokenizer, instruction=INSTRUCTION)
    no_pool_mask = {**batch, "pool_mask": batch["attention_mask"]}
    torch.testing.assert_close(embed(model, batch), embed(model, no_pool_mask))
    model.settings = model.settings.replace(skip_instruction=True)
    assert (embed(model, batch) - embed(model, no_pool_mask)).abs().max() > 1e-3


def test_dtype_and_attention_implementation():
    assert resolve_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    assert resolve_dtype("float16") == torch.float16
    model, _ = build_model(tiny_config("qwen3", torch_dtype="bfloat16", attn_implementation="eager"))
    assert model.backbone.dtype == torch.bfloat16
    assert model.backbone.config._attn_implementation == "eager"


def test_flash_attention_missing_is_a_clear_error():
    if torch.cuda.is_available() and model_module.importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ModelError, match="needs the flash-attn package .* Use attn_implementation='sdpa'"):
        build_model(tiny_config("qwen3", attn_implementation="flash_attention_2"))


def test_gradient_checkpointing_switch_and_backward():
    model, tokenizer = build_model(tiny_config("qwen3", gradient_checkpointing=True, lora_enabled=True))
    assert model.backbone.base_model.model.is_gradient_checkpointing
    model.train()
    batch = make_batch(tokenizer)
    model(batch["input_ids"], batch["attention_mask"]).sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None for g in grads)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(model_module, "_hub_offline", lambda: True)
    with pytest.raises(ModelNotAvailableError, match=r"model_path='l2e-tests/no-such-model' is not available "
                       r"locally.*set model_path to that folder"):
        build_model(tiny_config("qwen3", model_path="l2e-tests/no-such-model"))


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="is not available locally"):
        build_model(tiny_config("qwen3", model_path=str(tmp_path / "nope")))


def test_split_gguf():
    assert split_gguf("/m/x.Q4.gguf") == ("/m", "x.Q4.gguf")
    assert split_gguf("/m", "x.gguf") == ("/m", "x.gguf")
    assert split_gguf("/m") == ("/m", None)


def test_pad_token_falls_back_to_eos():
    _, tokenizer = build_model(tiny_config("qwen3"))
    tokenizer.pad_token = None
    tokenizer.padding_side = "left"
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.padding_side == "right"
    tokenizer.pad_token, tokenizer.eos_token = None, None
    with pytest.raises(ModelError, match="has neither a pad nor an eos token"):
        ensure_pad_token(tokenizer)


def test_unknown_pooling_fails_at_construction():
    model, _ = build_model(tiny_config("qwen3"))
    with pytest.raises(SettingsError, match="pooling_mode='max'; use one of eos, last, mean, weighted_mean, cls"):
        EmbeddingModel(model.backbone, ModelSettings(pooling_mode="max"))


# --- save / load -----------------------------------------------------------------------------------------


def test_full_model_save_and_load(tmp_path):
    cfg = tiny_config("deepseek_v3", bi_attn_enabled=True, pooling_mode="mean", skip_instruction=True,
                      query_instruction=INSTRUCTION, query_max_length=32)
    model, tokenizer = build_model(cfg)
    batch = make_batch(tokenizer, instruction=INSTRUCTION)
    expected = embed(model, batch)
    model.save(str(tmp_path), tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json", SETTINGS_FILE} <= set(os.listdir(tmp_path))
    with open(tmp_path / SETTINGS_FILE) as f:
        saved = json.load(f)
    assert saved == {
        "pooling_mode": "mean", "bi_attn_enabled": True, "skip_instruction": True, "is_adapter": False,
        "instruction_separator": "Query:", "query_instruction": INSTRUCTION, "query_max_length": 32,
        "passage_max_length": 64, "base_model_path": TINY_MODELS["deepseek_v3"](), "gguf_file": "", "heads": [],
        "colbert_dim": 128, "special_token_ids": [], "sparse_idf": False, "hybrid_weights": [], "latent_num": 32,
        "latent_heads": 4, "latent_head_dim": 64, "latent_mlp_mult": 1,
    }
    assert ModelSettings.from_config(cfg) == ModelSettings(**saved)  # built once from the config, saved as is
    loaded, tok2 = load_embedding_model(str(tmp_path))
    assert loaded.skip_instruction and loaded.pooling_mode == "mean" and loaded.settings == model.settings
    assert loaded.settings.query_instruction == INSTRUCTION
    torch.testing.assert_close(embed(loaded, make_batch(tok2, instruction=INSTRUCTION)), expected)


def test_load_overrides_and_their_errors(tmp_path):
    model, tokenizer = build_model(tiny_config("llama", pooling_mode="mean"))
    model.save(str(tmp_path), tokenizer)
    loaded, _ = load_embedding_model(str(tmp_path), pooling_mode="eos", bi_attn_enabled=True)
    assert loaded.pooling_mode == "eos" and loaded.settings.bi_attn_enabled is True
    assert loaded.backbone.config.is_causal is False
    with pytest.raises(SettingsError, match=r"cannot override \['pooling'\]; model settings are: pooling_mode, "):
        load_embedding_model(str(tmp_path), pooling="eos")
    with pytest.raises(SettingsError, match="no l2e_model.json, so it is not an l2e checkpoint"):
        load_embedding_model(TINY_MODELS["llama"]())


def test_settings_file_problems_are_one_line(tmp_path):
    model, tokenizer = build_model(tiny_config("llama"))
    model.save(str(tmp_path), tokenizer)
    path = tmp_path / SETTINGS_FILE
    path.write_text(path.read_text()[:20])
    with pytest.raises(SettingsError, match="l2e_model.json: not valid JSON"):
        load_embedding_model(str(tmp_path))
    path.write_text(json.dumps({**ModelSettings().to_dict(), "sparse_head": True}))
    with pytest.raises(SettingsError, match="unknown setting\\(s\\) sparse_head; written by a newer l2e"):
        load_embedding_model(str(tmp_path))


# --- LoRA ------------------------------------------------------------------------------------------------


def test_only_adapter_parameters_are_trainable():
    model, _ = build_model(tiny_config("qwen3", lora_enabled=True))
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # r=16 per layer: q 16*(64+64) + k, v 16*(64+32) + o 16*(64+64) + gate, up, down 16*(64+128) each, 2 layers
    assert sum(trainable.values()) == 2 * (2048 + 1536 + 1536 + 2048 + 3 * 3072) == 32768


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_save_and_load(arch, tmp_path):
    # DeepSeek-V3's fused MoE experts cannot take LoRA dropout (see test_lora_dropout_on_fused_experts_error).
    model, tokenizer = build_model(tiny_config(arch, lora_enabled=True, lora_dropout=0.0, bi_attn_enabled=True))
    randomize_lora(model)
    batch = make_batch(tokenizer)
    expected = embed(model, batch)
    model.save(str(tmp_path), tokenizer)
    files = set(os.listdir(tmp_path))
    assert {"adapter_config.json", "adapter_model.safetensors", SETTINGS_FILE} <= files
    assert "model.safetensors" not in files
    loaded, _ = load_embedding_model(str(tmp_path))
    assert loaded.settings.is_adapter and loaded.settings.base_model_path == TINY_MODELS[arch]()
    assert loaded.is_adapter and loaded.backbone.config.is_causal is False
    torch.testing.assert_close(embed(loaded, batch), expected)


def test_continue_from_adapter(tmp_path):
    model, tokenizer = build_model(tiny_config("qwen3", lora_enabled=True))
    randomize_lora(model)
    model.save(str(tmp_path), tokenizer)
    resumed, _ = build_model(tiny_config("qwen3", lora_enabled=True, lora_adapter_path=str(tmp_path)))
    before = {n: p for n, p in model.named_parameters() if "lora_" in n}
    after = {n: p for n, p in resumed.named_parameters() if "lora_" in n}
    assert before.keys() == after.keys()
    for name, p in after.items():
        assert p.requires_grad
        torch.testing.assert_close(p, before[name])


def test_adapter_path_without_lora_enabled_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="lora_adapter_path is set but lora_enabled=false"):
        build_model(tiny_config("qwen3", lora_adapter_path=str(tmp_path)))


@pytest.mark.parametrize("arch", ["qwen3", "deepseek_v3"])
def test_merge_adapter_matches_unmerged(arch, tmp_path):
    model, tokenizer = build_model(tiny_config(arch, lora_enabled=True, lora_dropout=0.0, pooling_mode="mean"))
    randomize_lora(model)
    batch = make_batch(tokenizer)
    unmerged = embed(model, batch)
    assert model.merge_adapter() is model and not model.is_adapter
    model.save(str(tmp_path), tokenizer)
    torch.testing.assert_close(embed(model, batch), unmerged, atol=1e-5, rtol=1e-5)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and "adapter_config.json" not in files
    loaded, _ = load_embedding_model(str(tmp_path))
    assert loaded.settings.is_adapter is False and loaded.settings.pooling_mode == "mean"
    torch.testing.assert_close(embed(loaded, batch), unmerged, atol=1e-5, rtol=1e-5)


def test_merging_a_plain_model_changes_nothing():
    model, tokenizer = build_model(tiny_config("qwen3"))
    backbone, batch = model.backbone, make_batch(tokenizer)
    before = embed(model, batch)
    assert model.merge_adapter() is model and model.backbone is backbone
    torch.testing.assert_close(embed(model, batch), before)


def test_lora_targets_that_match_nothing_list_the_linear_layers():
    with pytest.raises(ModelError, match=r"lora_target_modules=\['wq'\] match no layer of this llama model; "
                       r"its linear layers are: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"):
        build_model(tiny_config("llama", lora_enabled=True, lora_target_modules=["wq"]))


def test_lora_dropout_on_fused_experts_error():
    with pytest.raises(ModelError, match=r"lora_dropout=0.05 cannot be used on the fused MoE experts of this "
                       r"deepseek_v3 model.*set lora_dropout=0"):
        build_model(tiny_config("deepseek_v3", lora_enabled=True))


def test_qlora_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: QLoRA is allowed here")
    with pytest.raises(ModelError, match=r"quantization='4bit' \(QLoRA\) needs a CUDA GPU .* "
                       r"set quantization='none'"):
        build_model(tiny_config("qwen3", lora_enabled=True, quantization="4bit"))


def test_num_layers_keeps_the_first_layers_and_reloads(tmp_path):
    from transformers import AutoModel

    full, tok = build_model(tiny_config("qwen3", pooling_mode="mean"))
    short, _ = build_model(tiny_config("qwen3", pooling_mode="mean", num_layers=1))
    assert len(short.backbone.layers) == 1 and short.backbone.config.num_hidden_layers == 1
    batch = make_batch(tok)
    with torch.no_grad():  # the same first layer: its output is the full model's hidden state after layer 1
        states = full.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True).hidden_states[1]
        mine = short.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(short.backbone.norm(states), mine)
    short.save(str(tmp_path), tok)
    assert AutoModel.from_pretrained(str(tmp_path)).config.num_hidden_layers == 1
    with pytest.raises(ModelError, match="num_layers=5 must be between 1 and the model's 2 layers"):
        build_model(tiny_config("qwen3", num_layers=5))
