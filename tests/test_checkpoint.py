"""Atomic writes and the RNG state round trip."""
import os
import random

import numpy as np
import pytest
import torch

from lspc.checkpoint import atomic_write_bytes, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "model.pt")
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, crash)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(str(tmp_path / "config.yaml"), lambda f: f.write(b"x: 1\n"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "config.yaml").st_mode & 0o777 == 0o644


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    sampler = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(str(tmp_path / "rng.pt"), {"rng": capture_rng_state(torch.device("cpu"), sampler)})
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=sampler))
    random.seed(9), np.random.seed(9), torch.manual_seed(9), sampler.manual_seed(9)
    assert restore_rng_state(load_checkpoint(str(tmp_path / "rng.pt"))["rng"], torch.device("cpu"), sampler) == []
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2]) and torch.equal(torch.rand(1, generator=sampler), expected[3])


def test_loading_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    from lspc import LSPCError

    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(LSPCError, match="could not load checkpoint"):
        load_checkpoint(str(path))
