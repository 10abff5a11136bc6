"""Configuration: defaults, per-task overrides, precedence, validation and --resume (lspc_iql_configs.py)."""
import sys
from dataclasses import replace
from pathlib import Path

import pyrallis
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lspc import LSPCError  # noqa: E402
from lspc.envs import ALL_TASKS  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig, load_config  # noqa: E402

BULLET_WIDE = ("OfflineAntCircle-v0", "OfflineBallRun-v0", "OfflineBallCircle-v0", "OfflineCarRun-v0",
               "OfflineCarCircle-v0", "OfflineDroneRun-v0", "OfflineDroneCircle-v0")


def write_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------------------------
# 1. defaults
# ---------------------------------------------------------------------------------------------
def test_defaults():
    cfg = load_config([])
    assert cfg.task == "OfflineBallRun-v0"
    # BallRun's overrides replace the base 1000 / 0.25 / 0.25
    assert (cfg.episode_len, cfg.vae_clamper, cfg.max_latent_action) == (100, 0.6, 0.6)
    assert cfg.group == "OfflineBallRun-v0-cost-10"  # "<task>-cost-<cost_limit:g>", 10.0 -> "10"
    assert cfg.name == "lspc_iql-seed0"
    assert cfg.resume is None
    assert cfg.device == ("cuda" if torch.cuda.is_available() else "cpu")  # "auto" resolved
    # untouched base values
    assert (cfg.batch_size, cfg.latent_dim, cfg.iql_tau, cfg.tau, cfg.max_weight) == (1024, 32, 0.7, 0.005, 200.0)
    assert cfg.safe_qc_vc_threshold == 999.0


def test_derived_names_follow_seed_and_cost_limit():
    cfg = load_config(["--seed", "3", "--cost_limit", "20.5"])
    assert cfg.group == "OfflineBallRun-v0-cost-20.5"
    assert cfg.name == "lspc_iql-seed3"
    cfg = load_config(["--group", "g", "--name", "n"])
    assert (cfg.group, cfg.name) == ("g", "n")


def test_load_config_ignores_sys_argv_when_given_a_list(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--task", "no-such-task"])
    assert load_config([]).task == "OfflineBallRun-v0"


# ---------------------------------------------------------------------------------------------
# 2. precedence: base < task override < YAML < CLI
# ---------------------------------------------------------------------------------------------
def test_yaml_overrides_task_override(tmp_path):
    path = write_yaml(tmp_path, "vae_clamper: 0.4\n")
    cfg = load_config(["--config_path", path])
    assert cfg.vae_clamper == 0.4  # YAML beats BallRun's 0.6
    assert cfg.max_latent_action == 0.6  # not in the YAML: the task override stays
    assert cfg.episode_len == 100


def test_yaml_value_equal_to_base_default_still_wins(tmp_path):
    path = write_yaml(tmp_path, "vae_clamper: 0.25\n")  # 0.25 = base default, BallRun says 0.6
    assert load_config(["--config_path", path]).vae_clamper == 0.25


@pytest.mark.parametrize("flag", [["--vae_clamper", "0.5"], ["--vae_clamper=0.5"]])
def test_cli_overrides_yaml(tmp_path, flag):
    path = write_yaml(tmp_path, "vae_clamper: 0.4\nlatent_dim: 8\n")
    cfg = load_config(["--config_path", path, *flag])
    assert cfg.vae_clamper == 0.5  # CLI beats the YAML's 0.4
    assert cfg.latent_dim == 8  # YAML beats the base 32


def test_config_path_equals_syntax(tmp_path):
    path = write_yaml(tmp_path, "vae_clamper: 0.4\n")
    assert load_config([f"--config_path={path}"]).vae_clamper == 0.4


@pytest.mark.parametrize("flag", [["--vae_clamper", "0.25"], ["--vae_clamper=0.25"]])
def test_cli_value_equal_to_base_default_still_wins(flag):
    # CarRun's override is 0.6; an explicit flag with the base default 0.25 must win over it
    cfg = load_config(["--task", "OfflineCarRun-v0", *flag])
    assert cfg.vae_clamper == 0.25
    assert cfg.max_latent_action == 0.6  # the other key keeps CarRun's override
    assert cfg.episode_len == 200


def test_cli_default_value_beats_yaml(tmp_path):
    path = write_yaml(tmp_path, "vae_clamper: 0.4\n")
    assert load_config(["--config_path", path, "--vae_clamper", "0.25"]).vae_clamper == 0.25


def test_yaml_task_selects_its_overrides(tmp_path):
    path = write_yaml(tmp_path, "task: OfflineAntRun-v0\n")
    cfg = load_config(["--config_path", path])
    assert (cfg.task, cfg.episode_len, cfg.vae_clamper) == ("OfflineAntRun-v0", 200, 0.25)


# ---------------------------------------------------------------------------------------------
# 3. the per-task table
# ---------------------------------------------------------------------------------------------
def test_task_overrides_cover_exactly_the_38_tasks():
    assert len(TASK_OVERRIDES) == 38
    assert sorted(TASK_OVERRIDES) == sorted(ALL_TASKS)
    for task, overrides in TASK_OVERRIDES.items():
        assert set(overrides) <= {f.name for f in TrainConfig.__dataclass_fields__.values()}, task


def test_metadrive_safety_mask():
    metadrive = [t for t in TASK_OVERRIDES if "Metadrive" in t]
    assert len(metadrive) == 9
    for task in metadrive:
        assert TASK_OVERRIDES[task]["safe_qc_vc_threshold"] == 0.02, task
        assert TASK_OVERRIDES[task]["episode_len"] == 1000, task
    cfg = load_config(["--task", "OfflineMetadrive-mediummean-v0"])  # applied through the loader
    assert (cfg.safe_qc_vc_threshold, cfg.episode_len, cfg.vae_clamper) == (0.02, 1000, 0.25)
    # off (999, the base default) everywhere else
    assert TrainConfig().safe_qc_vc_threshold == 999.0
    assert all("safe_qc_vc_threshold" not in TASK_OVERRIDES[t] for t in TASK_OVERRIDES if t not in metadrive)


def test_bullet_restriction_and_episode_lengths():
    # the authors' configs: 0.6 for the Bullet tasks except AntRun, which keeps the base 0.25
    assert TrainConfig().vae_clamper == TrainConfig().max_latent_action == 0.25
    assert set(TASK_OVERRIDES["OfflineAntRun-v0"]) == {"episode_len", "cost_limit"}
    ant_run = load_config(["--task", "OfflineAntRun-v0"])
    assert (ant_run.vae_clamper, ant_run.max_latent_action, ant_run.episode_len) == (0.25, 0.25, 200)
    for task in BULLET_WIDE:
        overrides = TASK_OVERRIDES[task]
        assert (overrides["vae_clamper"], overrides["max_latent_action"]) == (0.6, 0.6), task
    drone = load_config(["--task", "OfflineDroneCircle-v0"])
    assert (drone.vae_clamper, drone.max_latent_action, drone.episode_len) == (0.6, 0.6, 300)
    # DSRL's episode lengths
    lengths = {"OfflineBallRun-v0": 100, "OfflineCarRun-v0": 200, "OfflineDroneRun-v0": 200,
               "OfflineAntRun-v0": 200, "OfflineBallCircle-v0": 200, "OfflineCarCircle-v0": 300,
               "OfflineDroneCircle-v0": 300, "OfflineAntCircle-v0": 500}
    assert {t: TASK_OVERRIDES[t]["episode_len"] for t in lengths} == lengths


def test_safety_gymnasium_episode_lengths():
    gym_tasks = [t for t in TASK_OVERRIDES if t.endswith("Gymnasium-v0") or t.endswith("Gymnasium-v1")]
    assert len(gym_tasks) == 21  # 16 navigation + 5 velocity
    circles = sorted(t for t in gym_tasks if "Circle" in t)
    assert circles == ["OfflineCarCircle1Gymnasium-v0", "OfflineCarCircle2Gymnasium-v0",
                       "OfflinePointCircle1Gymnasium-v0", "OfflinePointCircle2Gymnasium-v0"]
    for task in gym_tasks:
        assert TASK_OVERRIDES[task]["episode_len"] == (500 if task in circles else 1000), task
    assert load_config(["--task", "OfflinePointCircle2Gymnasium-v0"]).episode_len == 500


# ---------------------------------------------------------------------------------------------
# 4. clear errors
# ---------------------------------------------------------------------------------------------
def test_unknown_task_lists_known_tasks():
    with pytest.raises(LSPCError) as err:
        load_config(["--task", "OfflineBallRun-v9"])
    assert "OfflineBallRun-v9" in str(err.value)
    assert "OfflineBallRun-v0" in str(err.value) and "OfflineMetadrive-harddense-v0" in str(err.value)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--vae_clamper=-0.1"], ["vae_clamper", "positive", "-0.1"]),
        (["--eval_every", "-1"], ["eval_every", ">= 0", "-1"]),
        (["--batch_size", "0"], ["batch_size", "positive", "0"]),
        (["--iql_tau", "1.0"], ["iql_tau", "(0, 1)", "1.0"]),
        (["--lspc_s_sampling", "box"], ["lspc_s_sampling", "clamp", "tanh", "truncated", "'box'"]),
        (["--wandb_mode", "x"], ["wandb_mode", "online", "offline", "disabled", "'x'"]),
    ],
)
def test_invalid_values(argv, words):
    with pytest.raises(LSPCError) as err:
        load_config(argv)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(LSPCError, match="CUDA is not available"):
        load_config(["--device", "cuda"])


# load_config checks the YAML itself before pyrallis reads it (pyrallis would raise a plain
# Exception, FileNotFoundError or AttributeError).
def test_yaml_with_unknown_field(tmp_path):
    path = write_yaml(tmp_path, "vae_clampr: 0.3\n")
    with pytest.raises(LSPCError) as err:
        load_config(["--config_path", path])
    assert "vae_clampr" in str(err.value)


def test_missing_config_path(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(LSPCError) as err:
        load_config(["--config_path", missing])
    assert "nope.yaml" in str(err.value)


def test_non_mapping_yaml(tmp_path):
    path = write_yaml(tmp_path, "- 1\n- 2\n")
    with pytest.raises(LSPCError, match="mapping"):
        load_config(["--config_path", path])


# ---------------------------------------------------------------------------------------------
# 5. --resume
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding the config.yaml of a finalized, non-default config."""
    cfg = load_config(["--task", "OfflineCarRun-v0", "--latent_dim", "8", "--seed", "3", "--vae_clamper", "0.3"])
    with open(tmp_path / "config.yaml", "w") as f:
        pyrallis.dump(cfg, f)
    return tmp_path, cfg


@pytest.mark.parametrize("resume_flag", ["space", "equals"])
def test_resume_returns_saved_config(run_dir, resume_flag):
    path, saved = run_dir
    argv = ["--resume", str(path)] if resume_flag == "space" else [f"--resume={path}"]
    cfg = load_config([*argv, "--max_timesteps", "500"])
    assert cfg.max_timesteps == 500
    assert cfg.resume == str(path)
    # everything else comes from the saved run, not from the defaults
    assert cfg == replace(saved, max_timesteps=500, resume=str(path))
    assert (cfg.task, cfg.latent_dim, cfg.seed, cfg.vae_clamper, cfg.name) == (
        "OfflineCarRun-v0", 8, 3, 0.3, "lspc_iql-latent_dim8-vae_clamper0.3-seed3")


@pytest.mark.parametrize("argv", [["--task", "OfflineBallRun-v0"], ["--latent_dim", "16"]])
def test_resume_cannot_change_model_fields(run_dir, argv):
    path, _ = run_dir
    with pytest.raises(LSPCError) as err:
        load_config(["--resume", str(path), *argv])
    assert argv[0][2:] in str(err.value)


def test_resume_without_config_yaml(tmp_path):
    with pytest.raises(LSPCError) as err:
        load_config(["--resume", str(tmp_path)])
    assert "config.yaml" in str(err.value)
