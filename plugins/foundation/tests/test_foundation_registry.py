"""The foundation encoders are discovered through the clear_bench entry point of clear-bench-foundation."""

from __future__ import annotations

from clear_bench.registry import load_registry

NAMES = {"biomedclip": "slice", "dinov2": "slice", "dino-vit": "slice", "sam2-hiera": "slice",
         "rad-dino": "slice", "medsiglip": "slice", "ct-fm": "volume", "merlin": "volume"}


def test_foundation_encoders_are_registered():
    registry = load_registry()
    for name, kind in NAMES.items():
        assert name in registry.encoders, registry.failures
        entry = registry.encoders[name]
        assert entry.provider.distribution == "clear-bench-foundation"
        assert entry.spec.input_kind == kind
        assert "weights" in entry.spec.options and "random" in entry.spec.options["weights"].choices
        assert entry.spec.options["weights"].default != "random"


def test_the_generic_transformers_encoder_names_its_remote_code_rule():
    entry = load_registry().encoders["hf-image"]
    assert entry.provider.distribution == "clear-bench-foundation"
    assert entry.spec.options["trust_remote_code"].default is None
    assert "trust_remote_code" in entry.spec.description
