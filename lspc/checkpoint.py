"""Complete, atomically written checkpoints that load with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import torch

from lspc import LSPCError

TEMP_PREFIX = ".tmp-"  # atomic_write_bytes' temporary files: only a killed writer leaves one behind


def atomic_write_bytes(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact; readers never see a partial one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the permissions a plain open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str, payload: Dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise LSPCError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise LSPCError(f"could not load checkpoint {path}: {err}") from None


def capture_rng_state(sampler: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every random stream training draws from, as tensors and plain Python values."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if sampler is not None:
        state["sampler"] = sampler.get_state()
    return state


def restore_rng_state(state: Dict[str, Any], sampler: Optional[torch.Generator] = None) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if sampler is not None:
        sampler.set_state(state["sampler"].to(sampler.get_state().device))
