"""Where pretrained weights come from: local files, the Hugging Face cache or hub, and their digests.

Nothing here ever substitutes random weights: a file that cannot be found is a
:class:`~clear_bench.errors.WeightsNotFoundError` that says where the loader looked and how to provide it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from clear_bench.errors import WeightsNotFoundError

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for the local cache only (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@functools.cache
def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub ``endpoint`` opens within ``timeout`` seconds (checked once per
    process). Without it, huggingface_hub retries every request with a growing back-off (about half a
    minute per file) before failing: a machine without the hub fails in seconds instead."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, default huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_cache_dir(cache_dir: str | Path | None = None) -> str:
    """The Hugging Face cache folder a lookup uses."""
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants
    except ImportError:
        return "~/.cache/huggingface/hub"
    return str(constants.HF_HUB_CACHE)


def hub_file(repo_id: str, filenames: Sequence[str], *, who: str, how: str,
             cache_dir: str | Path | None = None) -> Path:
    """The first of ``filenames`` found in hub repo ``repo_id``: local cache first, then a download.

    ``who`` names the encoder in the error message and ``how`` tells the user how to provide the weights.
    """
    offline = hub_offline()
    cache = hub_cache_dir(cache_dir)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise WeightsNotFoundError(f"{who}: huggingface_hub is not installed, so hub repo {repo_id} cannot "
                                   f"be read; {how}") from exc
    errors: list[str] = []
    for local_only in (True,) if offline else (True, False):
        if not local_only and not hub_reachable(hub_endpoint()):
            errors += [f"{name}: the hub ({hub_endpoint()}) is unreachable" for name in filenames]
            break
        for name in filenames:
            try:
                return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=local_only))
            except Exception as exc:  # missing file, no network, gated repo...
                errors.append(f"{name}: {type(exc).__name__}")
    tried = "the local cache only (HF_HUB_OFFLINE is set)" if offline else "the local cache and the hub"
    if not offline and not hub_reachable(hub_endpoint()):
        tried = f"the local cache (the hub at {hub_endpoint()} did not answer within 3 s)"
    raise WeightsNotFoundError(
        f"{who}: weights not found: looked for {', '.join(filenames)} of hub repo '{repo_id}' in {tried} "
        f"(cache: {cache}; {'; '.join(errors[-len(filenames):])}); {how}")


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
