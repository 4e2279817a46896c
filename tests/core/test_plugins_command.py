"""``clear-bench plugins``: every kind listed with its provider; encoder dims measured from the models."""

from __future__ import annotations

from clear_bench.cli import main


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.startswith("  ") and line.split()}


def test_plugins_lists_builtins_and_every_plugin_distribution(capsys) -> None:
    assert main(["plugins"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "clear-bench " in rows["abmil"] and "clear-bench " in rows["pma"]
    assert "clear-bench-lecl" in rows["lecl-vit"] and "clear-bench-lecl" in rows["lecl"]
    assert "clear-bench-foundation" in rows["biomedclip"]
    assert "clear-bench-ct-tasks" in rows["lesion-location"] and "clear-bench-ct-tasks" in rows["synthetic"]
    assert " volume " in rows["merlin"] and " slice " in rows["lecl-vmamba"]


def test_measure_builds_default_architectures_for_their_dims(capsys) -> None:
    # Three encoders, not all: random-init SigLIP So400m and ViT-Bs take a minute between them.
    names = ["lecl-mambaout", "merlin", "hu-reference"]
    assert main(["plugins", "--kind", "encoders", "--measure", *names]) == 0
    rows = _rows(capsys.readouterr().out)
    assert set(rows) - {"name", "-------------"} == set(names)
    assert "288 (default arch)" in rows["lecl-mambaout"]  # pooled + head.norm of femto's last stage
    assert "2048 (default arch)" in rows["merlin"]
    assert " 44 " in rows["hu-reference"]


def test_an_unknown_name_is_an_error_that_suggests_the_known_one(capsys) -> None:
    assert main(["plugins", "lecl-mambaot"]) == 2
    assert "lecl-mambaout" in capsys.readouterr().err
