"""Fetch a DSRL dataset file: dsrl's cache, then DSRL's server, then the maintainers' Hugging Face mirror.

DSRL's own server is often down (DSRL issues 13, 14, 19, 21); the maintainers answered issue 21 by
pointing to the Hugging Face copy, which holds the same files under the same names.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional, Tuple

from lspc import LSPCError
from lspc.envs import dsrl_infos, dsrl_key

# The Hugging Face dataset repo DSRL's maintainers moved the files to: DSRL commit 71064f2 ("Switch to
# the huggingface host", 2025-11-12) points dsrl/infos.py's DATASET_URLS at
# https://huggingface.co/datasets/YYY-45/DSRL/resolve/main/<file>, and a maintainer gives the same
# address in DSRL issue 21. dsrl 0.1.0 on PyPI predates that commit and still names DSRL's server.
HF_MIRROR_REPO = "YYY-45/DSRL"
HF_REPO_ENV = "LSPC_DSRL_HF_REPO"  # overrides HF_MIRROR_REPO (another mirror, or a test)
HF_DEFAULT_ENDPOINT = "https://huggingface.co"  # HF_ENDPOINT overrides it, as in huggingface_hub

_CHUNK = 1 << 20


def dataset_url(task: str) -> str:
    """DSRL's URL for a task's dataset (``dsrl.infos.DATASET_URLS``)."""
    return dsrl_infos().DATASET_URLS[dsrl_key(task)]


def dsrl_cache_path(url: str) -> str:
    """Where dsrl itself would keep ``url``'s file: its dataset dir (``DSRL_DATASET_DIR``, default
    ``~/.dsrl/datasets``) joined with the URL's last component, so a file is never fetched twice."""
    dsrl_infos()  # imports dsrl quietly before its offline_env module
    from dsrl.offline_env import filepath_from_url

    return filepath_from_url(url)


def fetch_dsrl_file(task_or_url: str, *, cache_dir: Optional[str] = None,
                    timeout: float = 60.0) -> Tuple[str, str]:
    """The local path of a DSRL dataset file and where it came from: ``"cache"``, ``"dsrl"`` or
    ``"huggingface"``. One line says which; failing everywhere raises one LSPCError line.

    ``task_or_url`` is a task id (``OfflineBallRun-v0``) or a dataset URL as in ``DATASET_URLS``.
    ``cache_dir`` defaults to dsrl's dataset dir. ``timeout`` (seconds) bounds each network wait.
    """
    url = task_or_url if "://" in task_or_url else dataset_url(task_or_url)
    name = os.path.basename(urllib.parse.urlsplit(url).path)
    if not name:
        raise LSPCError(f"dataset URL {url!r} names no file")
    path = os.path.join(cache_dir, name) if cache_dir is not None else dsrl_cache_path(url)
    folder = os.path.dirname(path)
    if os.path.isfile(path):
        print(f"DSRL dataset {name}: using the cached {path}")
        return path, "cache"
    os.makedirs(folder, exist_ok=True)

    try:
        _download_url(url, path, timeout)
    except (OSError, http.client.HTTPException, ValueError) as err:  # ValueError: a malformed URL
        dsrl_failure = _reason(err)
    else:
        print(f"DSRL dataset {name}: downloaded from DSRL's server {url} to {path}")
        return path, "dsrl"

    repo = os.environ.get(HF_REPO_ENV) or HF_MIRROR_REPO
    endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    mirror = f"{endpoint}/datasets/{repo}"
    try:
        from huggingface_hub import hf_hub_download

        # local_dir puts the file at dsrl's path (no second copy in Hugging Face's cache); the
        # library downloads into local_dir/.cache/huggingface and moves the file only when complete.
        fetched = hf_hub_download(repo_id=repo, filename=name, repo_type="dataset", endpoint=endpoint,
                                  local_dir=folder, etag_timeout=timeout)
    except Exception as err:  # noqa: BLE001  huggingface_hub raises its own, httpx's and OSError types
        raise LSPCError(
            f"could not download DSRL dataset {name}: DSRL's server {url} failed ({dsrl_failure}) and so did "
            f"the Hugging Face mirror {mirror} ({_reason(err)}); offline, pass --dataset_path FILE, put the file "
            f"in DSRL_DATASET_DIR ({folder}), or make a DSRL-layout file with scripts/collect_dataset.py"
        ) from None
    print(f"DSRL dataset {name}: downloaded from the Hugging Face mirror {mirror} to {fetched} "
          f"(DSRL's server failed: {dsrl_failure})")
    return fetched, "huggingface"


def _download_url(url: str, path: str, timeout: float) -> None:
    """Stream ``url`` into a hidden file beside ``path`` and rename it to ``path`` only once every
    byte arrived, so a broken download never leaves a file that dsrl would take for a dataset."""
    fd, part = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _CHUNK)
            received = out.tell()
        if expected is not None and received != int(expected):
            raise ConnectionError(f"cut off after {received} of {expected} bytes")
        os.replace(part, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(part)


def _reason(err: BaseException) -> str:
    """A short, one-line cause for the error message."""
    while err.__cause__ is not None:  # huggingface_hub wraps the HTTP or network error in a generic one
        err = err.__cause__
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    status = getattr(getattr(err, "response", None), "status_code", None)  # huggingface_hub's HTTP errors
    if status is not None:
        return f"HTTP {status}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
