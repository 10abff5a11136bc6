"""Bad input fails before training starts, with one line that says what is wrong."""
import os

import h5py
import numpy as np
import pytest

import train_lspc_iql
from conftest import tiny_args
from lspc.data.collect import write_dsrl_hdf5


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_lspc_iql.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def write_variant(tmp_path, data, **changes):
    variant = {**data, **changes}
    path = str(tmp_path / "variant.hdf5")
    write_dsrl_hdf5(path, variant, {})
    return path


def test_unknown_task(ballrun_file, tmp_path, capsys):
    err = run_main(tiny_args(ballrun_file, tmp_path, task="OfflineBallRun-v9"), capsys)
    assert "unknown task 'OfflineBallRun-v9'" in err and "OfflineCarGoal1Gymnasium-v0" in err


def test_dataset_shapes_must_match_the_env(ballrun_data, tmp_path, capsys):
    path = write_variant(tmp_path, ballrun_data, observations=ballrun_data["observations"][:, :6])
    err = run_main(tiny_args(path, tmp_path), capsys)
    assert "bservation shape does not match env" in err or "(1200, 6)" in err


def test_dataset_with_missing_keys(ballrun_data, tmp_path, capsys):
    path = str(tmp_path / "missing.hdf5")
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards"):
            f.create_dataset(key, data=ballrun_data[key])
    err = run_main(tiny_args(path, tmp_path), capsys)
    assert "lacks the DSRL keys" in err and "costs" in err and "next_observations" in err


def test_dataset_with_nan(ballrun_data, tmp_path, capsys):
    rewards = ballrun_data["rewards"].copy()
    rewards[17] = np.nan
    err = run_main(tiny_args(write_variant(tmp_path, ballrun_data, rewards=rewards), tmp_path), capsys)
    assert "'rewards'" in err and "NaN" in err and "transition 17" in err


def test_missing_dataset_file(tmp_path, capsys):
    err = run_main(tiny_args(str(tmp_path / "nope.hdf5"), tmp_path), capsys)
    assert "does not exist" in err


def test_batch_larger_than_dataset(ballrun_file, tmp_path, capsys):
    err = run_main(tiny_args(ballrun_file, tmp_path, batch_size=5000), capsys)
    assert "batch_size 5000 is larger than the dataset (1200 transitions)" in err


@pytest.mark.parametrize("flag,value,expected", [
    ("eval_every", -1, "eval_every must be >= 0"),
    ("vae_clamper", -0.1, "vae_clamper must be positive"),
    ("max_latent_action", 0, "max_latent_action must be positive"),
    ("lspc_o_sampling", "greedy", "lspc_o_sampling must be one of"),
])
def test_nonsensical_config_values(ballrun_file, tmp_path, capsys, flag, value, expected):
    assert expected in run_main(tiny_args(ballrun_file, tmp_path, **{flag: value}), capsys)


def test_unwritable_logdir(ballrun_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    err = run_main(tiny_args(ballrun_file, blocker), capsys)
    assert "cannot write to the run directory" in err


def test_existing_run_is_never_overwritten(ballrun_file, tmp_path, capsys):
    train_lspc_iql.main(tiny_args(ballrun_file, tmp_path, max_timesteps=5, eval_every=5))
    run_dir = os.path.join(str(tmp_path), "OfflineBallRun-v0-cost-10", "lspc_iql-seed0")
    before = open(os.path.join(run_dir, "checkpoint", "model.pt"), "rb").read()
    capsys.readouterr()
    err = run_main(tiny_args(ballrun_file, tmp_path, max_timesteps=5, eval_every=5), capsys)
    assert "already holds a run" in err and "--resume" in err
    assert open(os.path.join(run_dir, "checkpoint", "model.pt"), "rb").read() == before


def test_resume_of_a_non_run_directory(tmp_path, capsys):
    err = run_main(["--resume", str(tmp_path)], capsys)
    assert "is not a run directory" in err


def test_abbreviated_or_unknown_flag_is_refused(ballrun_file, tmp_path, capsys):
    # argparse alone would read --vae_clamp as --vae_clamper and the task override (0.6) would win
    err = run_main([*tiny_args(ballrun_file, tmp_path), "--vae_clamp", "0.25"], capsys)
    assert "unknown flag --vae_clamp; did you mean --vae_clamper?" in err
