"""``clear-bench check-encoder``: the built-in encoders conform on the real sample CT, and an encoder that
breaks one rule fails with that property named (and only that one)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from clear_bench.cli import main
from clear_bench.conformance import PROPERTIES, check_encoder, sample_scan
from clear_bench.registry import load_registry
from clear_bench.specs import Preprocessing

pytestmark = pytest.mark.network  # the public sample CT comes from a pinned PyPI sdist (cached after)

FLAWED_PLUGIN = textwrap.dedent('''
    """Test encoders: 'flawless' conforms; every other one breaks exactly one rule of check-encoder."""

    import torch
    from torch import nn

    from clear_bench import hookimpl
    from clear_bench.specs import Encoder, EncoderSpec, Option, Preprocessing

    FLAWS = ("flawless", "training-mode", "trainable", "wrong-size", "bad-mean", "wrong-dim", "nan",
             "noisy", "unseeded", "batch-mean")


    class Net(nn.Module):
        def __init__(self, flaw: str, size: int) -> None:
            super().__init__()
            self.flaw, self.size = flaw, size
            self.conv = nn.Conv2d(3, 8, 5, stride=4)

        def forward(self, x):
            if self.flaw == "wrong-size" and x.shape[-1] != 2 * self.size:
                raise ValueError(f"expects {2 * self.size} px inputs, got {x.shape[-1]}")
            h = self.conv(x).mean((2, 3))
            if self.flaw == "wrong-dim":
                h = torch.cat([h, h], 1)
            elif self.flaw == "nan":
                h = torch.where(h > h.median(), h, torch.full_like(h, float("nan")))
            elif self.flaw == "noisy":
                h = h + 0.01 * torch.rand_like(h)
            elif self.flaw == "batch-mean":
                h = h - h.mean(0, keepdim=True)
            return h


    def build(flaw, options):
        if flaw != "unseeded":
            torch.manual_seed(options["seed"])
        model = Net(flaw, 32)
        model.train() if flaw == "training-mode" else model.eval()
        if flaw != "trainable":
            model.requires_grad_(False)
        mean = (0.5,) if flaw == "bad-mean" else (0.5, 0.5, 0.5)
        return Encoder(name=flaw, model=model, embed_dim=8,
                       preprocessing=Preprocessing(image_size=32, channels=3, mean=mean, std=(0.25,) * 3),
                       weights_digest=f"random-init:{options['seed']}", random_init=True)


    @hookimpl
    def clear_bench_encoders():
        return [EncoderSpec(name=flaw, build=lambda options, flaw=flaw: build(flaw, options),
                            options={"seed": Option(int, 0, "seed")}) for flaw in FLAWS]
''')
BROKEN = {  # test encoder -> the property it breaks
    "training-mode": "eval-mode",
    "trainable": "frozen",
    "wrong-size": "preprocessing",
    "bad-mean": "preprocessing",
    "wrong-dim": "dim",
    "nan": "finite",
    "noisy": "deterministic",
    "unseeded": "deterministic",
    "batch-mean": "batch-invariant",
}
BUILT_IN = [  # core and LeCL encoders, random weights at a small size
    ("hu-reference", {}),
    ("image-probe", {}),
    ("lecl-vit", {"weights": "random", "arch": "vit_tiny_patch16", "img_size": 32}),
    ("lecl-mambaout", {"weights": "random", "img_size": 32}),
    ("lecl-vmamba", {"weights": "random", "img_size": 32}),
]


@pytest.fixture(scope="module")
def scan():
    return sample_scan()


@pytest.fixture(scope="module")
def flawed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flawed") / "flawed_encoders.py"
    path.write_text(FLAWED_PLUGIN)
    return path


@pytest.mark.parametrize(("name", "options"), BUILT_IN, ids=[name for name, _ in BUILT_IN])
def test_built_in_encoders_conform(name, options, scan):
    registry = load_registry()
    report = check_encoder(registry.encoder(name), options, scan=scan, slices=1)
    assert report.passed, "\n".join(report.lines())
    assert [r.name for r in report.results] == list(PROPERTIES)
    assert "ts-abdomen-ct" in report.inputs


def test_the_command_passes_a_conforming_encoder(flawed, capsys):
    assert main(["check-encoder", "flawless", "--plugin", str(flawed), "--slices", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == len(PROPERTIES) and "FAIL" not in out
    assert "[6, 3, 32, 32] from scan 'ts-abdomen-ct'" in out and "conforms: every property holds" in out


@pytest.mark.parametrize(("flaw", "prop"), BROKEN.items(), ids=list(BROKEN))
def test_an_encoder_breaking_one_rule_fails_naming_it(flaw, prop, flawed, scan):
    registry = load_registry([flawed], installed=False)
    report = check_encoder(registry.encoder(flaw), scan=scan, slices=1)
    assert report.failed == [prop], "\n".join(report.lines())
    assert report.result(prop).status == "FAIL"
    assert f"does not conform: {prop}" in report.lines()[-1]


def test_the_command_exits_1_and_names_the_property(flawed, capsys):
    assert main(["--plugin", str(flawed), "check-encoder", "batch-mean", "--slices", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  batch-invariant  instance" in out and "embedded alone differs" in out
    assert "encoder 'batch-mean' does not conform: batch-invariant" in out


def test_messages_say_what_is_wrong(flawed, scan):
    registry = load_registry([flawed], installed=False)

    def detail(flaw: str, prop: str) -> str:
        return check_encoder(registry.encoder(flaw), scan=scan, slices=1).result(prop).detail

    assert "in training mode" in detail("training-mode", "eval-mode")
    assert "require grad, e.g. conv.weight" in detail("trainable", "frozen")
    rejected = detail("wrong-size", "preprocessing")
    assert "rejects the input its preprocessing declares [3, 3, 32, 32]" in rejected
    assert "1 mean / 3 std values for 3 channel(s)" in detail("bad-mean", "preprocessing")
    assert "output shape [3, 16] for 3 inputs; the encoder declares [3, 8]" in detail("wrong-dim", "dim")
    assert "non-finite value(s)" in detail("nan", "finite")
    assert "the same batch embedded twice differs" in detail("noisy", "deterministic")
    assert "a second build with the same options embeds differently" in detail("unseeded", "deterministic")


def test_a_declared_preprocessing_is_compared(flawed, scan):
    registry = load_registry([flawed], installed=False)
    published = Preprocessing(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert check_encoder(registry.encoder("flawless"), scan=scan, slices=1, declared=published).passed
    other = Preprocessing(image_size=48, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    report = check_encoder(registry.encoder("flawless"), scan=scan, slices=1, declared=other)
    assert report.failed == ["preprocessing"]
    assert "image_size 32 (declared 48)" in report.result("preprocessing").detail


def test_bad_options_and_unknown_encoders_are_user_errors(flawed, capsys):
    assert main(["check-encoder", "flawless", "--plugin", str(flawed), "--option", "sed=1"]) == 2
    err = capsys.readouterr().err
    assert "--option sed: unknown option of encoder 'flawless' (did you mean 'seed'?)" in err
    assert main(["check-encoder", "no-such-encoder"]) == 2
    assert "unknown encoder 'no-such-encoder'" in capsys.readouterr().err


def test_the_howto_plugin_conforms(tmp_path, capsys):
    howto = Path(__file__).resolve().parents[2] / "docs" / "writing-an-encoder-plugin.md"
    [body] = re.findall(r"^`my-encoder/my_encoder.py`:\n\n```python\n(.*?)^```", howto.read_text(),
                        flags=re.M | re.S)
    plugin = tmp_path / "my_encoder.py"
    plugin.write_text(body)
    assert "clear-bench check-encoder my-timm --plugin my-encoder/my_encoder.py" in howto.read_text()
    code = main(["check-encoder", "my-timm", "--plugin", str(plugin), "--option", "weights=random",
                 "--option", "image_size=32", "--slices", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS") == len(PROPERTIES)
