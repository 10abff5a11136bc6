"""Complete, atomically written checkpoints that load with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import json
import os
import random
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from lspc import LSPCError

CUDA_GENERATOR_STATE_BYTES = 16  # a CUDA generator: seed and Philox offset
TEMP_PREFIX = ".tmp-"  # atomic_write_bytes' temporary files: only a killed writer leaves one behind


def atomic_write_bytes(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact; readers never see a partial one.
    """
    os.replace(_write_temporary(path, write), path)


def _write_temporary(path: str, write) -> str:
    """``write(file)`` into a new temporary file next to ``path``, flushed to disk; returns its path."""
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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def save_checkpoints_together(writes: List[Tuple[str, Dict[str, Any]]], journal: str) -> None:
    """Write several checkpoints (a stacked run's seeds) so that a kill leaves all of them or none:
    each goes to a temporary file next to its path; the journal listing them is written (the commit
    point); then each is renamed into place and the journal removed. ``finish_commit(journal)`` at the
    next start completes renames a kill cut short; temporary files without a journal are not committed.
    An error names the file that failed (``OSError.filename``)."""
    temporaries: List[Tuple[str, str]] = []
    try:
        for path, payload in writes:
            try:
                temporaries.append((_write_temporary(path, lambda f: torch.save(payload, f)), path))
            except OSError as err:
                err.filename = path
                raise
    except BaseException:
        for tmp, _ in temporaries:
            os.remove(tmp)
        raise
    atomic_write_bytes(journal, lambda f: f.write(json.dumps(temporaries).encode()))
    finish_commit(journal)


def finish_commit(journal: str) -> None:
    """Complete the renames of a committed ``save_checkpoints_together`` (a no-op without its journal)."""
    if not os.path.exists(journal):
        return
    with open(journal, encoding="utf-8") as f:
        temporaries = json.load(f)
    for tmp, path in temporaries:
        if os.path.exists(tmp):
            os.replace(tmp, path)
    os.remove(journal)


def save_checkpoint(path: str, payload: Dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint at ``path``, every tensor on the CPU whatever device wrote it: each
    ``load_state_dict`` then puts its own tensors where they belong (parameters on the model's
    device, Adam's step counters on the CPU, numpy's RNG keys where numpy can read them)."""
    if not os.path.isfile(path):
        raise LSPCError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise LSPCError(f"could not load checkpoint {path}: {err}") from None


def generator_state(generator: torch.Generator) -> Dict[str, Any]:
    """A generator's state with its device type: a CUDA state (16 bytes) fits only a CUDA generator."""
    return {"device_type": generator.device.type, "state": generator.get_state()}


def restore_generator(generator: torch.Generator, saved: Any) -> bool:
    """Restore ``saved`` (from ``generator_state``) into ``generator`` if it was taken on the same device
    type; returns whether it was. A bare state tensor (older checkpoints) is told apart by its size."""
    if isinstance(saved, torch.Tensor):
        saved = {"device_type": "cuda" if saved.numel() == CUDA_GENERATOR_STATE_BYTES else "cpu", "state": saved}
    if saved["device_type"] != generator.device.type:
        return False
    generator.set_state(saved["state"])
    return True


def derived_seed(seed: int, step: int) -> int:
    """A seed for a random stream that restarts at ``step`` (a resume on another device type)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]) >> 1


def capture_rng_state(device: torch.device, sampler: Optional[torch.Generator] = None,
                      noise: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every random stream training draws from, as tensors and plain Python values: Python's, numpy's,
    torch's CPU generator, the training GPU's default generator (that GPU's only: a resume may see fewer
    GPUs) and the batch sampler's. ``noise``: the generator that stands in for the training device's
    default one (a seed of a stacked run draws its noise from its own), saved in its place."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
        "device_type": device.type,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if noise is not None:
        state["cuda" if device.type == "cuda" else "torch"] = noise.get_state()
    if sampler is not None:
        state["sampler"] = generator_state(sampler)
    return state


def restore_rng_state(state: Dict[str, Any], device: torch.device, sampler: Optional[torch.Generator] = None,
                      noise: Optional[torch.Generator] = None) -> List[str]:
    """Restore what ``capture_rng_state`` saved. The CPU streams always come back; the GPU's and the
    sampler's only on the device type that wrote them. Returns the streams that were not restored.
    ``noise`` takes the state saved for the training device's default generator instead of it."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if noise is not None and device.type == "cpu":
        noise.set_state(state["torch"])
    lost = []
    saved_cuda = state.get("cuda")
    if isinstance(saved_cuda, list):  # older checkpoints: every visible GPU's
        saved_cuda = saved_cuda[0] if saved_cuda else None
    if device.type == "cuda":
        if saved_cuda is not None and noise is not None:
            noise.set_state(saved_cuda)
        elif saved_cuda is not None:
            torch.cuda.set_rng_state(saved_cuda, device)
        else:
            lost.append("the GPU's default generator")
    if sampler is not None and not restore_generator(sampler, state["sampler"]):
        lost.append("the batch sampler's")
    return lost
