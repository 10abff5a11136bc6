"""The command lines: a help line for every flag, --print_config, automatic run names, the per-task
default cost limit, suggestions for typos, and no empty run directory after an early error."""
import argparse
import glob
import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

import train_lspc_iql
from conftest import ROOT, load_script, tiny_args
from lspc import LSPCError
from lspc.methods.baselines import BaselineConfig
from lspc.envs import SUITES, cost_limits
from lspc_iql_configs import TrainConfig, _parser, field_help, load_config

train_baseline = load_script("train_baseline")


def run_main(main, argv, capsys):
    """A script's main: (exit status, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class", [TrainConfig, BaselineConfig])
def test_every_config_field_has_help(config_class):
    helps = field_help(config_class)
    assert set(helps) == {f.name for f in config_class.__dataclass_fields__.values()}
    assert [name for name, text in helps.items() if not text] == []
    # a field's own help, not a section comment or the next field's
    assert all(not text.startswith(("#", "---")) for text in helps.values())
    assert len(set(helps.values())) == len(helps)


def test_lspc_help_prints_every_field_help():
    text = " ".join(_parser().format_help().split())
    for name, help_text in field_help(TrainConfig).items():
        assert f"--{name} " in text and help_text in text, name
    assert "--print_config" in text and "table below" not in text


class _ParserSeen(Exception):
    pass


def entry_points():
    return (sorted(glob.glob(os.path.join(ROOT, "scripts", "*.py")))
            + sorted(glob.glob(os.path.join(ROOT, "tools", "**", "*.py"), recursive=True))
            + [os.path.join(ROOT, "eval_lspc.py")])


@pytest.mark.parametrize("path", entry_points(), ids=os.path.basename)
def test_every_flag_of_every_script_has_help(path, monkeypatch):
    """Each script's argparse parser as its main() builds it (stopped before it parses anything)."""
    def stop(self, args=None, namespace=None):
        raise _ParserSeen(self)

    name = os.path.basename(path)[:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    if not hasattr(module, "main"):
        pytest.skip("no command line")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop)
    monkeypatch.setattr(sys, "argv", [path])
    with pytest.raises(_ParserSeen) as seen:
        module.main()
    parser = seen.value.args[0]
    without = [action.option_strings or action.dest for action in parser._actions if not (action.help or "").strip()]
    assert without == []


# ---------------------------------------------------------------------------------------------
# --print_config and the per-task default cost limit
# ---------------------------------------------------------------------------------------------
FIRST_THRESHOLDS = {"OfflineBallRun-v0": 10.0, "OfflineCarGoal1Gymnasium-v0": 20.0,
                    "OfflineHopperVelocityGymnasium-v1": 20.0, "OfflineMetadrive-easysparse-v0": 10.0}


def test_default_cost_limit_is_the_tasks_first_threshold():
    for suite, tasks in SUITES.items():
        for task in tasks:
            cfg = load_config(["--task", task])
            assert cfg.cost_limit == cost_limits(task)[0], task
            assert cfg.group == f"{task}-cost-{cost_limits(task)[0]:g}"
    assert {task: load_config(["--task", task]).cost_limit for task in FIRST_THRESHOLDS} == FIRST_THRESHOLDS
    assert load_config(["--task", "OfflineCarGoal1Gymnasium-v0", "--cost_limit", "10"]).cost_limit == 10.0
    for task, kappa in FIRST_THRESHOLDS.items():
        cfg = train_baseline.load_config(["--algo", "bc-safe", "--task", task])
        assert (cfg.cost_limit, cfg.group) == (kappa, f"{task}-cost-{kappa:g}")
    explicit = train_baseline.load_config(["--algo", "bc-safe", "--task", "OfflineCarGoal1Gymnasium-v0",
                                           "--cost_limit", "40"])
    assert explicit.cost_limit == 40.0


def test_print_config_prints_the_tasks_resolved_config(tmp_path):
    proc = subprocess.run([sys.executable, "train_lspc_iql.py", "--task", "OfflineCarGoal1Gymnasium-v0",
                           "--print_config", "--logdir", str(tmp_path / "logs"), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["task"] == "OfflineCarGoal1Gymnasium-v0"
    assert (printed["cost_limit"], printed["episode_len"], printed["vae_clamper"]) == (20.0, 1000, 0.25)
    assert printed["group"] == "OfflineCarGoal1Gymnasium-v0-cost-20" and printed["name"] == "lspc_iql-seed0"
    assert not os.path.exists(tmp_path / "logs")  # nothing trained, nothing written


def test_print_config_applies_the_tasks_overrides_and_the_flags(capsys):
    code, out, _ = run_main(train_lspc_iql.main, ["--task", "OfflineDroneCircle-v0", "--print_config", "--device",
                                                  "cpu", "--beta_cost", "3"], capsys)
    printed = yaml.safe_load(out)
    assert code == 0 and (printed["episode_len"], printed["vae_clamper"], printed["cost_limit"]) == (300, 0.6, 10.0)
    assert printed["beta_cost"] == 3.0 and printed["name"] == "lspc_iql-beta_cost3-seed0"
    code, _, err = run_main(train_lspc_iql.main, ["--task", "OfflineDroneCircle-v0", "--print_config",
                                                  "--beta_cost", "-1"], capsys)
    assert code == 2 and err == "error: beta_cost must be >= 0, got -1.0\n"  # checked as for training


def test_baseline_print_config(tmp_path, capsys):
    code, out, _ = run_main(train_baseline.main, ["--algo", "cpq", "--task", "OfflineMetadrive-easysparse-v0",
                                                  "--print_config", "--logdir", str(tmp_path / "logs")], capsys)
    printed = yaml.safe_load(out)
    assert code == 0 and printed["algo"] == "cpq" and printed["cost_limit"] == 10.0
    assert printed["max_timesteps"] == 200_000 and printed["hparams"]["qc_scalar"] == 1.5  # MetaDrive's, OSRL's
    assert not os.path.exists(tmp_path / "logs")


# ---------------------------------------------------------------------------------------------
# run names
# ---------------------------------------------------------------------------------------------
def test_run_names_carry_the_non_default_fields():
    assert load_config([]).name == "lspc_iql-seed0"
    assert load_config(["--seed", "2", "--max_timesteps", "50", "--eval_every", "10", "--cost_limit", "20",
                        "--wandb_mode", "disabled", "--logdir", "x"]).name == "lspc_iql-seed2"  # not hyperparameters
    assert load_config(["--vae_clamper", "0.6"]).name == "lspc_iql-seed0"  # BallRun's own default
    assert load_config(["--beta_cost", "4"]).name == "lspc_iql-beta_cost4-seed0"
    assert load_config(["--beta_cost", "4", "--hidden_dim", "64", "--converse", "true"]).name == \
        "lspc_iql-hidden_dim64-beta_cost4-converseTrue-seed0"
    assert load_config(["--task", "OfflineAntRun-v0", "--vae_clamper", "0.6"]).name == "lspc_iql-vae_clamper0.6-seed0"
    assert load_config(["--name", "mine", "--beta_cost", "4"]).name == "mine"
    assert train_baseline.load_config(["--algo", "bc-all", "--task", "OfflineBallRun-v0"]).name == "bc-all-seed0"
    assert train_baseline.load_config(["--algo", "bc-all", "--task", "OfflineBallRun-v0", "--hparam",
                                       "actor_lr=0.0005", "--hidden_dim", "32"]).name == \
        "bc-all-hidden_dim32-actor_lr0.0005-seed0"
    assert train_baseline.load_config(["--algo", "cdt", "--task", "OfflineBallRun-v0", "--batch_size", "64",
                                       "--prompt", "10=300,5"]).name == "cdt-batch_size64-prompts10_300_5-seed0"


def test_a_hyperparameter_sweep_does_not_collide(ballrun_file, tmp_path, capsys):
    """Two runs of one task and seed that differ in --beta_cost: two run directories, both trained."""
    runs = []
    for beta in ("4", "2"):
        args = tiny_args(ballrun_file, tmp_path, max_timesteps=5, eval_every=5, beta_cost=beta)
        args = args[:args.index("--name")] + args[args.index("--name") + 2:]  # the automatic name
        code, out, err = run_main(train_lspc_iql.main, args, capsys)
        assert code == 0, err
        runs.append(out.split("run_dir: ")[1].split("\n")[0])
    group = os.path.join(str(tmp_path), "OfflineBallRun-v0-cost-10")
    assert runs == [os.path.join(group, "lspc_iql-batch_size64-hidden_dim32-latent_dim8-beta_cost4-seed0"),
                    os.path.join(group, "lspc_iql-batch_size64-hidden_dim32-latent_dim8-seed0")]  # 2 is the default
    assert all(os.path.isfile(os.path.join(run, "checkpoint", "model.pt")) for run in runs)


# ---------------------------------------------------------------------------------------------
# suggestions
# ---------------------------------------------------------------------------------------------
def test_a_mistyped_task_names_the_nearest(capsys):
    with pytest.raises(LSPCError, match=r"unknown task 'OfflineCarGoal1Gymnasiun-v0' \(did you mean "
                                        r"OfflineCarGoal1Gymnasium-v0\?\)"):
        load_config(["--task", "OfflineCarGoal1Gymnasiun-v0"])
    code, _, err = run_main(train_baseline.main, ["--algo", "cpq", "--task", "OfflineBalRun-v0"], capsys)
    assert code == 2 and "(did you mean OfflineBallRun-v0?)" in err


def test_baseline_names_the_nearest_flag(capsys):
    code, _, err = run_main(train_baseline.main, ["--algo", "cpq", "--task", "OfflineBallRun-v0", "--eval_episode",
                                                  "3"], capsys)
    assert code == 2 and err == "error: unknown flag --eval_episode; did you mean --eval_episodes?\n"


# ---------------------------------------------------------------------------------------------
# an early error leaves no run directory behind
# ---------------------------------------------------------------------------------------------
def test_batch_larger_than_the_data_leaves_nothing(ballrun_file, tmp_path, capsys):
    logdir = tmp_path / "logs"
    code, _, err = run_main(train_lspc_iql.main, tiny_args(ballrun_file, logdir, batch_size=5000), capsys)
    assert code == 2 and "batch_size 5000 is larger than the dataset" in err
    assert not os.path.exists(logdir)
    code, _, err = run_main(train_baseline.main, ["--algo", "bc-all", "--task", "OfflineBallRun-v0", "--dataset_path",
                                                  ballrun_file, "--logdir", str(logdir), "--batch_size", "5000",
                                                  "--wandb_mode", "disabled", "--device", "cpu"], capsys)
    assert code == 2 and "larger than" in err and not os.path.exists(logdir)


def test_a_failed_download_leaves_nothing_and_keeps_what_was_there(ballrun_file, tmp_path, monkeypatch, capsys):
    import lspc.data.dataset

    def no_network(url, **kwargs):
        raise LSPCError("could not download the dataset (no network)")

    monkeypatch.setattr(lspc.data.dataset, "fetch_dsrl_file", no_network)
    args = tiny_args("", tmp_path)
    args = args[:args.index("--dataset_path")] + args[args.index("--dataset_path") + 2:]  # dsrl's download
    # a group directory that another run already uses, and a stopped run's directory with only its config
    other = tmp_path / "OfflineBallRun-v0-cost-10" / "other-run"
    other.mkdir(parents=True)
    code, _, err = run_main(train_lspc_iql.main, args, capsys)
    assert code == 2 and "could not download" in err
    assert os.listdir(tmp_path / "OfflineBallRun-v0-cost-10") == ["other-run"]  # the new run dir is gone, not the rest
    stopped = tmp_path / "OfflineBallRun-v0-cost-10" / "lspc_iql-seed0"
    stopped.mkdir()
    (stopped / "config.yaml").write_text("task: OfflineBallRun-v0\n")
    code, _, err = run_main(train_lspc_iql.main, args, capsys)
    assert code == 2 and (stopped / "config.yaml").read_text() == "task: OfflineBallRun-v0\n"  # not ours to remove
    # a new logdir, created by the failing run, goes too
    args[args.index("--logdir") + 1] = str(tmp_path / "new" / "logs")
    code, _, _ = run_main(train_lspc_iql.main, args, capsys)
    assert code == 2 and not os.path.exists(tmp_path / "new")


def test_a_run_that_fails_after_it_started_keeps_its_directory(ballrun_file, tmp_path, monkeypatch):
    """Only errors before config.yaml is written remove the run directory: a started run stays."""
    import lspc.training

    def fail(*args, **kwargs):
        raise RuntimeError("failed in the loop")

    monkeypatch.setattr(lspc.training, "_loop", fail)
    cfg = load_config(tiny_args(ballrun_file, tmp_path / "logs"))
    with pytest.raises(RuntimeError, match="failed in the loop"):
        train_lspc_iql.train(cfg)
    assert os.path.isfile(os.path.join(str(tmp_path / "logs"), cfg.group, cfg.name, "config.yaml"))
