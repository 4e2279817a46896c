"""Every file clear-bench and its plugins read could come from anywhere, so the shipped code reads
checkpoints only with ``torch.load(weights_only=True)``, YAML only with ``yaml.safe_load``, NumPy files
without pickles, and never unpickles. Checked on the source itself, call by call."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _shipped_files() -> list[Path]:
    """The Python files of the core and of every plugin package (their tests excluded)."""
    packages = [ROOT / "clear_bench", *(p for p in (ROOT / "plugins").glob("*/clear_bench_*") if p.is_dir())]
    return sorted(f for package in packages for f in package.rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """``(dotted name, call)`` of every call in ``path`` (``torch.load``, ``yaml.load``, ``load``...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            try:
                found.append((ast.unparse(node.func), node))
            except Exception:  # an exotic callee is not a loader
                continue
    return found


def _keyword(call: ast.Call, name: str) -> object:
    for keyword in call.keywords:
        if keyword.arg == name:
            return ast.literal_eval(keyword.value) if isinstance(keyword.value, ast.Constant) else "<expr>"
    return None


def test_every_loader_of_untrusted_bytes_is_the_safe_one() -> None:
    files = _shipped_files()
    assert len(files) > 50 and any("clear_bench_lecl" in str(f) for f in files)
    problems, torch_loads = [], 0
    for path in files:
        where = path.relative_to(ROOT)
        for name, call in _calls(path):
            line = f"{where}:{call.lineno}: {name}"
            if name == "torch.load":
                torch_loads += 1
                if _keyword(call, "weights_only") is not True:
                    problems.append(f"{line} without weights_only=True")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                          "yaml.unsafe_load_all"):
                problems.append(f"{line} (only yaml.safe_load)")
            elif name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load",
                          "pickle.Unpickler"):
                problems.append(f"{line} unpickles")
            elif name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") not in (None, False):
                problems.append(f"{line} allows pickles")
    assert torch_loads >= 1  # the check saw the one reader every checkpoint goes through
    assert not problems, problems
