"""``hf-image``: any transformers image model from a folder, preprocessing from its processor config; a model
that needs its repo's code runs only from the hub-cache snapshot of the commit the user names."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from clear_bench_foundation.encoders import build_hf_image
from transformers import Dinov2Config, Dinov2Model

from clear_bench.conformance import PROPERTIES, check_encoder
from clear_bench.errors import ConfigError, UnusableWeightsError, WeightsNotFoundError
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROCESSOR = {"size": {"height": 28, "width": 28}, "image_mean": [0.4, 0.4, 0.4], "image_std": [0.3, 0.3, 0.3]}
# a repo's own model code, as trust_remote_code would import it (one module: config and model)
MODELING = """
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling


class AcmeConfig(PretrainedConfig):
    model_type = "acme-tiny"

    def __init__(self, hidden_size=16, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size = hidden_size


class AcmeModel(PreTrainedModel):
    config_class = AcmeConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Conv2d(3, config.hidden_size, 14, stride=14)
        self.post_init()

    def forward(self, pixel_values):
        tokens = self.proj(pixel_values).flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1))
"""


def _save(folder) -> torch.nn.Module:
    torch.manual_seed(6)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                     image_size=28, patch_size=14)).eval()
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return model


def _remote_repo(cache) -> tuple:
    """A hub-cache snapshot of a repo whose config needs its own code (``auto_map``)."""
    repo = cache / "models--acme--tiny"
    snapshot = repo / "snapshots" / COMMIT
    code: dict = {}
    exec(compile(MODELING, "modeling_acme.py", "exec"), code)
    torch.manual_seed(7)
    model = code["AcmeModel"](code["AcmeConfig"](hidden_size=16)).eval()
    model.save_pretrained(snapshot)
    config = json.loads((snapshot / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_acme.AcmeConfig", "AutoModel": "modeling_acme.AcmeModel"}
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot / "modeling_acme.py").write_text(MODELING)
    (snapshot / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return model, snapshot


def test_a_transformers_folder_conforms_with_its_processor(tmp_path, ct_scan):
    model = _save(tmp_path / "dino")
    encoder = build_hf_image({"local_dir": str(tmp_path / "dino"), "output": "cls"})
    assert encoder.preprocessing == Preprocessing(image_size=28, channels=3, mean=(0.4,) * 3, std=(0.3,) * 3)
    x = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), model(pixel_values=x).last_hidden_state[:, 0])
    report = check_encoder(load_registry().encoder("hf-image"), {"local_dir": str(tmp_path / "dino")},
                           scan=ct_scan, slices=1, declared=encoder.preprocessing)
    assert report.passed, "\n".join(report.lines())
    assert [r.name for r in report.results] == list(PROPERTIES)


def test_a_folder_without_its_processor_says_so(tmp_path):
    _save(tmp_path / "dino")
    (tmp_path / "dino" / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsNotFoundError, match="preprocessor_config"):
        build_hf_image({"local_dir": str(tmp_path / "dino")})
    with pytest.raises(ConfigError, match="set option 'hub_id'"):
        build_hf_image({})


def test_remote_code_runs_only_at_the_trusted_commit(tmp_path, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # the repo's code goes here
    model, snapshot = _remote_repo(tmp_path / "hub")
    base = {"hub_id": "acme/tiny", "cache_dir": str(tmp_path / "hub")}
    with pytest.raises(UnusableWeightsError, match=r"runs code from its repo.*option 'trust_remote_code'"):
        build_hf_image(base)
    with pytest.raises(ConfigError, match="expected the 40-hex commit"):
        build_hf_image({**base, "trust_remote_code": "main"})
    with pytest.raises(WeightsNotFoundError, match=f"no snapshot of commit {'f' * 40}"):
        build_hf_image({**base, "trust_remote_code": "f" * 40})
    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    with pytest.raises(UnusableWeightsError, match="not from that commit's Hugging Face cache snapshot"):
        build_hf_image({"local_dir": str(copy), "trust_remote_code": COMMIT})
    encoder = build_hf_image({**base, "trust_remote_code": COMMIT})
    assert encoder.options["remote_code"] == COMMIT and type(encoder.model.model).__name__ == "AcmeModel"
    x = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), model(pixel_values=x).pooler_output)
