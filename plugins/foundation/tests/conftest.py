"""Shared fixtures of the foundation-encoder tests: few threads, an offline Hugging Face hub, tiny configs."""

from __future__ import annotations

import json

import pytest
import torch

# BiomedCLIP's layout (timm ViT trunk, token pooling, linear projection) at toy size: timm's test_vit
TINY_OPEN_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": 160},
        "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": 256},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711]},
}


@pytest.fixture(autouse=True)
def _few_threads_and_offline_hub(monkeypatch):
    """Tests never reach the hub: a missing file must fail fast, from the cache alone."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_clip_dir(tmp_path):
    """A folder holding a tiny open_clip_config.json (no weights file)."""
    folder = tmp_path / "tiny-biomedclip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def ct_scan(tmp_path_factory):
    """One CT of the project's synthetic cohort (the ct-tasks plugin's source), small: 12 slices of 64 px."""
    from clear_bench.components import build_source
    from clear_bench.registry import load_registry

    source = build_source(load_registry(), {"name": "synthetic", "patients": 2, "slices": 12, "matrix": 64,
                                            "cache_dir": str(tmp_path_factory.mktemp("volumes"))})
    return source.load(source.scan_ids()[0])
