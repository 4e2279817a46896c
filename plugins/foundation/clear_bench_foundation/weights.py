"""Where pretrained weights come from: local files, the Hugging Face cache or hub, and their digests.

Nothing here ever substitutes random weights: a file that cannot be found is a
:class:`~clear_bench.errors.WeightsNotFoundError` that says where the loader looked and how to provide it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clear_bench.errors import ConfigError, UnusableWeightsError, WeightsNotFoundError

_TRUE = {"1", "true", "yes", "on"}


HUB_PROBE_TIMEOUT_S = 0.5
"""How long the one reachability probe of a process may take (name resolution included)."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for the local cache only (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@functools.cache
def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub ``endpoint`` opens within ``timeout`` seconds, name resolution
    included (checked once per process, in a daemon thread, since resolving a name has no timeout of its
    own). Without it, huggingface_hub retries every request with a growing back-off (about half a minute
    per file) before failing: a machine without the hub is answered within ``timeout`` instead."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def hub_endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, default huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_cache_dir(cache_dir: str | Path | None = None) -> str:
    """The Hugging Face cache folder a lookup uses: ``cache_dir``, else ``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub`` (huggingface_hub's own order, read without
    importing it)."""
    if cache_dir:
        return str(Path(cache_dir).expanduser())
    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"),
                                                     "huggingface")
    return str(Path(home).expanduser() / "hub")


def cached_hub_file(repo_id: str, filename: str, cache_dir: str | Path | None = None,
                    revision: str = "main") -> Path | None:
    """``filename`` of model repo ``repo_id`` in the Hugging Face cache layout
    (``models--org--name/snapshots/<commit>/<file>``, the commit named by ``refs/<revision>``), or ``None``:
    a file-system lookup that needs neither the network nor an import of huggingface_hub."""
    repo = Path(hub_cache_dir(cache_dir)) / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / revision
    try:
        commit = ref.read_text().strip() if ref.is_file() else revision
    except OSError:
        return None
    path = repo / "snapshots" / commit / filename
    return path if path.is_file() else None


def hub_file(repo_id: str, filenames: Sequence[str], *, who: str, how: str,
             cache_dir: str | Path | None = None) -> Path:
    """The first of ``filenames`` found in hub repo ``repo_id``: local cache first, then a download.

    The cache is read from the file system; the hub is asked only when it answers a connection within
    :data:`HUB_PROBE_TIMEOUT_S` and ``HF_HUB_OFFLINE`` is unset, so a machine without it loses no time on
    retries. ``who`` names the encoder in the error message and ``how`` tells the user how to provide the
    weights.
    """
    for name in filenames:
        found = cached_hub_file(repo_id, name, cache_dir)
        if found is not None:
            return found
    offline = hub_offline()
    cache = hub_cache_dir(cache_dir)
    if offline:
        tried = "the local cache only (HF_HUB_OFFLINE is set)"
    elif not hub_reachable(hub_endpoint()):
        tried = f"the local cache (the hub at {hub_endpoint()} did not answer within {HUB_PROBE_TIMEOUT_S} s)"
    else:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as exc:
            raise WeightsNotFoundError(f"{who}: huggingface_hub is not installed, so hub repo {repo_id} "
                                       f"cannot be read; {how}") from exc
        errors: list[str] = []
        for name in filenames:
            try:
                return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir))
            except Exception as exc:  # missing file, gated repo, a network that failed mid-way...
                errors.append(f"{name}: {type(exc).__name__}")
        tried = f"the local cache and the hub ({'; '.join(errors)})"
    raise WeightsNotFoundError(
        f"{who}: weights not found: looked for {', '.join(filenames)} of hub repo '{repo_id}' in {tried} "
        f"(cache: {cache}); {how}")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def existing_file(path: str | Path, *, who: str, option: str, how: str) -> Path:
    """``path`` when it is a file; a WeightsNotFoundError naming the option and the path otherwise."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise WeightsNotFoundError(f"{who}: option '{option}': file not found: {resolved}; {how}")
    return resolved


def refuse_remote_code(config: Mapping[str, Any], path: str | Path, *, who: str) -> None:
    """Refuse a ``config.json`` whose model needs code from its own repo (an ``auto_map`` field, what
    transformers' ``trust_remote_code`` would import and run): these encoders run transformers' own classes
    only, so such a folder is never loaded, silently or otherwise."""
    if "auto_map" in config:
        raise UnusableWeightsError(
            f"{path}: field 'auto_map': this model needs code from its repo ({_classes(config)}; "
            f"trust_remote_code); {who} runs transformers' own classes only and never runs a repo's code")


COMMIT = re.compile(r"[0-9a-f]{40}")


def allow_remote_code(config: Mapping[str, Any], path: str | Path, *, who: str, trusted: str | None,
                      option: str = "trust_remote_code") -> bool:
    """Whether the model of ``config`` (the ``config.json`` at ``path``) may run its repo's code.

    ``False`` when it needs none. When it does (an ``auto_map`` field), only with ``trusted`` naming the
    commit whose code the user has read, and only for a file of that commit's Hugging Face cache snapshot
    (``.../snapshots/<commit>/config.json``): a local folder or another revision is refused, since nothing
    would tie the code that runs to the commit that was trusted."""
    if "auto_map" not in config:
        return False
    if not trusted:
        raise UnusableWeightsError(
            f"{path}: field 'auto_map': this model runs code from its repo ({_classes(config)}); {who} runs "
            f"it only when option '{option}' names the 40-hex commit of that repo whose code you have read "
            "and trust")
    if not COMMIT.fullmatch(trusted):
        raise ConfigError(f"{who}: option '{option}': expected the 40-hex commit of the repo whose code you "
                          f"trust, got {trusted!r}")
    snapshot = Path(path).parent
    if snapshot.parent.name != "snapshots" or snapshot.name != trusted:
        raise UnusableWeightsError(
            f"{path}: option '{option}' trusts commit {trusted}, but this config is not from that commit's "
            f"Hugging Face cache snapshot (.../snapshots/{trusted}/); remote code runs only from there")
    return True


def _classes(config: Mapping[str, Any]) -> str:
    auto_map = config.get("auto_map")
    return ", ".join(str(v) for v in dict(auto_map).values()) if isinstance(auto_map, Mapping) else "auto_map"


def load_strict(model: Any, state: Mapping[str, Any], mismatch: str,
                error: type[Exception] = UnusableWeightsError) -> None:
    """Load ``state`` into the torch module ``model`` with exactly its keys and shapes. Otherwise raise
    ``error`` saying ``mismatch`` (e.g. ``"FILE: does not match X"``), then the keys missing and unexpected,
    or torch's words on the shapes."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise error(f"{mismatch}: missing keys {key_list(missing)}; unexpected keys {key_list(unexpected)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise error(f"{mismatch}: {exc}") from exc


def key_list(keys: Sequence[str], limit: int = 8) -> str:
    """``[a, b, ...] (+N more)``, or ``none``: the keys an error message names."""
    if not keys:
        return "none"
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more
