"""OSRL baselines: scripts/train_baseline.py on the tiny BallRun file, and eval_lspc.py on their runs."""
import contextlib
import dataclasses
import io
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
import yaml

import eval_lspc
from lspc import LSPCError
from lspc.methods.baselines import (ALGOS, OWN_MODULES, PER_THRESHOLD, BaselineConfig, BaselineMethod, config_dict,
                                   default_hparams, load_baseline_config, make_agent, make_sampler, training_data)
from lspc.checkpoint import load_checkpoint, save_checkpoint
from lspc.data.dataset import load_dataset
from lspc.envs import make_env
from lspc.run_logger import read_metrics
from lspc.training import MetricsWindow, NonFiniteLoss
from conftest import load_script
from test_eval import tree_digest
from test_training import assert_same_state, interrupt_after_first_log

train_baseline = load_script("train_baseline")
TASK = "OfflineBallRun-v0"
# the statistics each osrl trainer stores every step, as metrics.jsonl names them
TRAIN_KEYS = {
    "bc-all": {"actor_loss"},
    "bc-safe": {"actor_loss"},
    "cpq": {"loss_vae", "critic_loss", "cost_critic_loss", "alpha_value", "actor_loss"},
    "bcq-lag": {"loss_vae", "critic_loss", "cost_critic_loss", "actor_loss", "qc_penalty", "lagrangian"},
    "coptidice": {"chi_loss", "tau_loss", "D_kl", "Df", "td_error", "nu_loss", "lmbda_loss", "actor_loss", "tau",
                  "lmbda"},
    "cdt": {"nll", "ent", "ent_reg", "all_loss", "act_loss", "cost_loss", "cost_acc", "state_loss", "train_lr"},
    "bear-lag": {"loss_vae", "critic_loss", "cost_critic_loss", "actor_loss", "mmd_loss", "qc_penalty", "lagrangian",
                 "alpha_value"},
    "fisor": {"actor_loss", "value_loss", "q_loss", "reach_value_loss", "reach_q_loss", "weight_mean",
              "zero_weight_fraction", "feasible_fraction", "q_mean", "v_mean", "qh_mean", "vh_mean"},
    "trac": {"bc_loss", "trac_loss", "accuracy", "lr", "trac_phase"},
}
EVAL_KEYS = {"eval/Reward", "eval/Cost", "eval/Length", "eval/Reward_std", "eval/Cost_std", "eval/Length_std",
             "normalized_eval/Normalized_Reward", "normalized_eval/Normalized_Cost"}  # the release's names
TIME_KEYS = {"time/train_steps_per_s", "time/eval_s", "time/eval_share", "time/checkpoint_s", "time/checkpoint_share"}
# the tiny file is too small for CDT's Pareto augmentation (its grid filter keeps no trajectory); FISOR's critics
# train on a part of the batch (256 by default, more than the tests' 64); TraC switches
# from BC to classification at step 5, so the checkpoints of the resume test hold its frozen reference
TINY_HPARAMS = {"cdt": {"augment_percent": 0}, "fisor": {"critic_batch_size": 32},
                "trac": {"bc_steps": 5, "warmup_steps": 5}}
TINY_DATA_FLAGS = {algo: [token for name, value in hparams.items() for token in ("--hparam", f"{name}={value}")]
                   for algo, hparams in TINY_HPARAMS.items()}


def without_timing(rows):
    return [{key: value for key, value in row.items() if not key.startswith("time/")} for row in rows]


def flags(algo, dataset, logdir, **overrides):
    """A 20-step run with small networks, evaluated (2 episodes) at steps 10 and 20; None leaves a flag out."""
    values = dict(algo=algo, task=TASK, dataset_path=dataset, logdir=str(logdir), max_timesteps=20, batch_size=64,
                  eval_every=10, log_every=5, eval_episodes=2, hidden_dim=32, wandb_mode="disabled", device="cpu")
    values.update(overrides)
    # the plain run's name, which the tests look the run up by (tests/test_cli.py covers automatic names)
    values.setdefault("name", f"{values['algo']}-seed{values.get('seed', 0)}")
    return [token for key, value in values.items() if value is not None
            for token in (f"--{key}", str(value))] + TINY_DATA_FLAGS.get(values["algo"], [])


def train(argv):
    """train_baseline's CLI in this process: (run directory, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train_baseline.main(argv)
    run_dir = next(line for line in out.getvalue().splitlines() if line.startswith("run_dir: "))[len("run_dir: "):]
    return run_dir, out.getvalue()


def episode_costs(data):
    """Each episode's (start, end, cost return) in a DSRL-layout dict."""
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    starts = np.r_[0, ends[:-1] + 1]
    return [(s, e + 1, float(data["costs"][s:e + 1].sum())) for s, e in zip(starts, ends)]


@pytest.fixture(scope="module")
def runs(ballrun_file, tmp_path_factory):
    """Every algorithm trained once at cost limit 10: algo -> (run_dir, argv, stdout)."""
    logdir = tmp_path_factory.mktemp("baselines")
    trained = {}
    for algo in ALGOS:
        argv = flags(algo, ballrun_file, logdir)
        trained[algo] = (*train(argv), argv)
    return trained


def test_run_directory_config_and_checkpoint(runs):
    for algo, (run_dir, stdout, argv) in runs.items():
        assert run_dir.endswith(os.path.join(f"{TASK}-cost-10", f"{algo}-seed0"))
        assert stdout.count("run_dir: ") == 1 and stdout.rstrip().endswith(f"done: {run_dir}")
        assert sorted(os.listdir(run_dir)) == [".lock", "checkpoint", "config.yaml", "metrics.jsonl"]
        assert sorted(os.listdir(os.path.join(run_dir, "checkpoint"))) == ["model.pt", "model_best.pt"]
        # config.yaml holds the resolved config, and reads back to exactly it
        cfg = train_baseline.load_config(argv)
        with open(os.path.join(run_dir, "config.yaml")) as f:
            raw = yaml.safe_load(f)
        assert {"algo", "task", "seed", "cost_limit", "dataset_path", "episode_len", "hparams"} <= set(raw)
        assert [raw[key] for key in ("algo", "task", "seed", "cost_limit", "episode_len")] == [algo, TASK, 0, 10, 100]
        assert load_baseline_config(os.path.join(run_dir, "config.yaml")) == cfg
        defaults = default_hparams(algo, TASK)
        widths = {"a_hidden_sizes": [32, 32], "c_hidden_sizes": [32, 32], "vae_hidden_sizes": 32, "embedding_dim": 32,
                  "actor_hidden_dim": 32}
        changed = {**{k: v for k, v in widths.items() if k in defaults}, **TINY_HPARAMS.get(algo, {})}
        assert cfg.hparams == {**defaults, **changed}
        # the checkpoint: weights only, complete
        checkpoint = torch.load(os.path.join(run_dir, "checkpoint", "model.pt"), weights_only=True)
        assert set(checkpoint) == {"step", "model", "rng", "window", "best", "config", "wandb_id"}
        assert checkpoint["step"] == 20 and checkpoint["config"] == config_dict(cfg)
        assert {"python", "numpy", "torch", "sampler"} <= set(checkpoint["rng"])
        if algo not in OWN_MODULES:  # ours are checked below
            assert checkpoint["model"]["optimizers"] and checkpoint["model"]["model"]
    # the state osrl keeps outside state_dict()
    cpq = load_checkpoint(os.path.join(runs["cpq"][0], "checkpoint", "model.pt"))["model"]
    assert set(cpq["tensors"]) == {"log_alpha"}
    coptidice = load_checkpoint(os.path.join(runs["coptidice"][0], "checkpoint", "model.pt"))["model"]
    assert set(coptidice["tensors"]) == {"tau", "lmbda", "observations_std", "actions_std"}
    assert set(coptidice["optimizers"]) == {f"model.{name}" for name in
                                            ("actor_optim", "nu_optim", "chi_optim", "lmbda_optim", "tau_optim")}
    for algo in ("bcq-lag", "bear-lag"):
        state = load_checkpoint(os.path.join(runs[algo][0], "checkpoint", "model.pt"))["model"]
        assert set(state["controller"]) == {"error_old", "error_integral"}
    bear_lag = load_checkpoint(os.path.join(runs["bear-lag"][0], "checkpoint", "model.pt"))["model"]
    assert set(bear_lag["tensors"]) == {"log_alpha"} and bear_lag["n_train_steps"] == 20
    assert set(bear_lag["optimizers"]) == {f"model.{name}_optim" for name in ("actor", "critic", "cost_critic", "vae")}
    cdt = load_checkpoint(os.path.join(runs["cdt"][0], "checkpoint", "model.pt"))["model"]
    assert set(cdt["tensors"]) == {"log_temperature"}
    assert set(cdt["optimizers"]) == {"trainer.optim", "trainer.log_temperature_optimizer"}
    assert cdt["schedulers"]["scheduler"]["last_epoch"] == 20  # the warm-up schedule's position
    # ours: FISOR's target critics, EMA actor, training-noise generator and update count (its lr schedule)
    fisor = load_checkpoint(os.path.join(runs["fisor"][0], "checkpoint", "model.pt"))["model"]
    assert set(fisor["networks"]) == {"actor", "actor_ema", "q", "q_target", "value", "reach_q", "reach_q_target",
                                      "reach_value"}
    assert set(fisor["optimizers"]) == {"actor", "q", "reach_q", "value", "reach_value"}
    assert fisor["actor_updates"] == 40  # two actor updates a step
    assert fisor["generator"]["device_type"] == "cpu" and fisor["generator"]["state"].dtype == torch.uint8
    # TraC's frozen reference (BC ended at step 5) beside the policy, and its update count
    trac = load_checkpoint(os.path.join(runs["trac"][0], "checkpoint", "model.pt"))["model"]
    assert {"actor", "reference", "optimizer", "step"} <= set(trac) and trac["step"] == 20
    assert any(not torch.equal(trac["actor"][k], trac["reference"][k]) for k in trac["actor"])


def test_metrics_are_finite_and_logged_every_log_every(runs):
    for algo, (run_dir, _, _) in runs.items():
        rows = read_metrics(run_dir)
        train_rows = [row for row in rows if "eval/Reward" not in row]
        assert [row["step"] for row in train_rows] == [5, 10, 15, 20]
        for row in train_rows:
            assert set(row) == {"step"} | {f"train/{key}" for key in TRAIN_KEYS[algo]}
            assert all(math.isfinite(value) for value in row.values()), row
        assert train_rows[0] != train_rows[-1]  # the statistics move: steps were taken
        eval_rows = [row for row in rows if "eval/Reward" in row]
        assert [row["step"] for row in eval_rows] == [10, 20]
        for row in eval_rows:
            assert set(row) == {"step"} | EVAL_KEYS | TIME_KEYS
            assert row["eval/Length"] == 100.0
            assert row["normalized_eval/Normalized_Cost"] == pytest.approx(row["eval/Cost"] / 10.0)


def test_bc_safe_trains_only_on_trajectories_within_the_cost_limit(runs, ballrun_file):
    env = make_env(TASK)
    data = load_dataset(env, ballrun_file)
    episodes = episode_costs(data)
    for kappa in (10.0, 20.0):
        safe = [(s, e) for s, e, cost in episodes if cost <= kappa]
        assert 0 < len(safe) < len(episodes)  # the tiny file has both kinds
        cfg = train_baseline.load_config(flags("bc-safe", ballrun_file, "unused", cost_limit=kappa))
        kept = training_data(cfg, data)
        expected = np.concatenate([data["observations"][s:e] for s, e in safe])
        np.testing.assert_array_equal(kept["observations"], expected)
        np.testing.assert_array_equal(kept["actions"], np.concatenate([data["actions"][s:e] for s, e in safe]))
    env.close()
    safe_at_10 = sum(e - s for s, e, cost in episodes if cost <= 10)
    assert f"bc-safe trains on {safe_at_10} of the dataset's 1200 transitions" in runs["bc-safe"][1]
    assert "bc-all trains on 1200 of the dataset's 1200 transitions" in runs["bc-all"][1]
    assert safe_at_10 < 1200


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoint_reload_gives_identical_actions(algo, ballrun_file, tmp_path):
    cfg = train_baseline.load_config(flags(algo, ballrun_file, tmp_path))
    env, device = make_env(TASK), torch.device("cpu")
    data = training_data(cfg, load_dataset(env, ballrun_file))
    sampler = make_sampler(cfg, data, device)
    torch.manual_seed(0)  # the same initialization whatever ran before (an untrained FISOR can saturate its actions)
    agent = make_agent(cfg, env, device, data)
    for _ in range(3):
        agent.train(sampler.sample(cfg.batch_size))
    obs = torch.as_tensor(data["observations"][:16], dtype=torch.float32)

    def actions(agent, seed):
        generator = torch.Generator().manual_seed(seed)
        policy = agent.policy_at(10.0)
        if hasattr(policy, "reset"):  # CDT: the first step of 16 episodes
            policy.reset(len(obs))
        return policy(obs, generator)

    path = str(tmp_path / "model.pt")
    save_checkpoint(path, {"model": agent.state_dict()})
    fresh = make_agent(cfg, env, device)  # no data: as eval_lspc.py builds it
    assert not torch.equal(actions(fresh, 0), actions(agent, 0))
    fresh.load_state_dict(torch.load(path, weights_only=True)["model"])
    assert torch.equal(actions(fresh, 0), actions(agent, 0))
    assert not actions(agent, 0).requires_grad  # acting builds no graph
    assert_same_state(fresh.state_dict(), agent.state_dict())
    if hasattr(agent, "_schedulers"):  # osrl's: a scheduler's step count and rates come back with it
        for name, scheduler in agent._schedulers().items():
            restored = fresh._schedulers()[name].state_dict()
            assert {k: v for k, v in restored.items() if k != "lr_lambdas"} == \
                   {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}, name
    # the policy's noise comes from the evaluation generator only (BCQ-Lag's VAE latent, FISOR's diffusion sampler)
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    assert torch.equal(actions(agent, 1), actions(agent, 1))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(actions(agent, 1), actions(agent, 2)) == (algo not in ("bcq-lag", "fisor"))  # stochastic ones
    env.close()


def test_baseline_method_loads_the_data_its_method_trains_on(ballrun_file, tmp_path, capsys):
    cfg = train_baseline.load_config(flags("bc-safe", ballrun_file, tmp_path))
    method = BaselineMethod(cfg)
    assert method.label == f"bc-safe {TASK}" and method.policies == {"bc-safe": ("eval", "model_best.pt")}
    # config.yaml in the dataclass's order: what a run is (algo, task, seed, cost_limit) before how it ran
    assert list(yaml.safe_load(method.config_yaml())) == [f.name for f in dataclasses.fields(BaselineConfig)]
    env = make_env(TASK)
    capsys.readouterr()
    size = len(method.load_data(env)["observations"])
    assert 0 < size < 1_200  # BC-Safe: the trajectories within the cost limit
    assert f"data: bc-safe trains on {size} of the dataset's 1200 transitions" in capsys.readouterr().out
    BaselineMethod(dataclasses.replace(cfg, batch_size=size)).load_data(env)  # one batch of all of it: allowed
    with pytest.raises(LSPCError, match=f"batch_size 1200 is larger than the {size} transitions bc-safe trains on"):
        BaselineMethod(dataclasses.replace(cfg, batch_size=1_200)).load_data(env)
    with pytest.raises(LSPCError, match="bc-safe: no trajectory of the dataset has a cost <= -1"):
        BaselineMethod(dataclasses.replace(cfg, cost_limit=-1.0)).load_data(env)
    env.close()


@pytest.mark.parametrize("algo", ALGOS)
def test_resume_is_bit_exact(algo, runs, ballrun_file, tmp_path):
    # 10 steps, then --resume to 20, against the uninterrupted 20-step run of the fixture
    run_dir, _ = train(flags(algo, ballrun_file, tmp_path, max_timesteps=10))
    assert train([*flags(algo, ballrun_file, tmp_path), "--resume", run_dir])[0] == run_dir
    straight, resumed = (load_checkpoint(os.path.join(d, "checkpoint", "model.pt")) for d in (runs[algo][0], run_dir))
    for key in ("step", "model", "rng", "window", "best"):
        assert_same_state(resumed[key], straight[key], key)
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(runs[algo][0]))


def test_eval_lspc_scores_a_baseline_run_like_lspc(runs):
    for algo, (run_dir, _, _) in runs.items():
        before = tree_digest(run_dir)
        eval_lspc.main([run_dir, "--checkpoint", "best", "--eval_episodes", "2", "--seed", "0"])
        with open(os.path.join(run_dir, "eval", "results.json")) as f:
            results = json.load(f)
        per_threshold = algo in PER_THRESHOLD
        assert results["thresholds"] == ([10.0] if per_threshold else [10.0, 20.0, 40.0])
        assert (results["algo"], results["cost_limit"], results["checkpoint"], list(results["policies"])) == \
            (algo, 10.0, "best", [algo])
        entry = results["policies"][algo]
        assert set(entry["thresholds"]) == ({"10"} if per_threshold else {"10", "20", "40"})
        for kappa, scores in entry["thresholds"].items():
            # CDT is prompted per threshold: each threshold has episodes, and raw means, of its own
            cost = scores["cost"] if algo == "cdt" else entry["cost"]
            assert scores["normalized_cost"] == pytest.approx(cost / float(kappa))
        if algo == "cdt":
            assert [entry["thresholds"][k]["prompt"] for k in ("10", "20", "40")] == [[500, 10], [500, 20], [700, 40]]
        # the same seeded episodes as training's evaluation of that checkpoint (CDT: prompted for 10): the same returns
        logged = next(row for row in read_metrics(run_dir) if row["step"] == results["step"] and "eval/Reward" in row)
        scored = entry["thresholds"]["10"] if algo == "cdt" else entry
        assert (scored["reward"], scored["cost"]) == (logged["eval/Reward"], logged["eval/Cost"])
        assert sorted(os.listdir(os.path.join(run_dir, "eval"))) == ["results.json", "results.md"]
        after = tree_digest(run_dir)
        assert {k: v for k, v in after.items() if not k.startswith("eval")} == before


@pytest.mark.parametrize("argv,expected", [
    (["--cost_limits", "20", "40"], "cpq was trained for cost limit 10, so its score at --cost_limits 20 40 would "
                                    "mean nothing"),
    (["--eps_s", "0.5"], "only LSPC runs take --eps_s"),
    (["--policies", "lspc-o"], "unknown policies ['lspc-o']; "),
    (["--checkpoint", "best_o"], "is a cpq run: --checkpoint must be one of ['latest', 'best'], got 'best_o'"),
    (["--state_step", "5"], "--state_step applies to LSPC runs"),
])
def test_eval_lspc_refuses_what_does_not_apply_to_a_baseline(runs, capsys, argv, expected):
    run_dir = runs["cpq"][0]
    before = tree_digest(run_dir)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_lspc.main([run_dir, *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert tree_digest(run_dir) == before


def test_metrics_window_averages_and_names_the_first_non_finite_statistic():
    window = MetricsWindow(torch.device("cpu"))
    for step, (loss, other) in enumerate([(1.0, 2.0), (3.0, float("inf")), (float("nan"), 0.0)], start=1):
        window.add({"actor_loss": loss, "alpha_value": other}, step)
    with pytest.raises(NonFiniteLoss, match="alpha_value became NaN or infinite at step 2"):
        window.means()
    window = MetricsWindow(torch.device("cpu"))
    for step in (1, 2):
        window.add({"actor_loss": float(step)}, step)
    assert window.means() == {"train/actor_loss": 1.5} and window.means() == {}
    # at the same step a loss is named before the statistics it poisons, whatever their order
    window.add({"q_mean": torch.tensor(float("nan")), "q_loss": torch.tensor(float("inf"))}, 7)
    with pytest.raises(NonFiniteLoss, match="q_loss became NaN or infinite at step 7"):
        window.check_finite()


@pytest.mark.parametrize("change,expected", [
    (dict(algo="sac"), "unknown algo 'sac'; expected one of bc-all, bc-safe, cdt, bcq-lag, bear-lag, cpq, coptidice"),
    (dict(algo="cdt", cost_limit=30), "cdt has no prompt for cost limit 30 (it has prompts for 10, 20, 40); give one "
                                      "with --prompt 30=RETURN,COST"),
    (dict(prompt="10=500,10"), "--prompt applies to cdt only, not cpq"),
    (dict(algo="cdt", prompt="10=500"), "--prompt '10=500': expected KAPPA=RETURN,COST"),
    (dict(hparam="nope=1"), "--hparam 'nope=1': expected NAME=VALUE with NAME one of cpq's hyperparameters"),
    (dict(checkpoint_every_minutes=0), "checkpoint_every_minutes must be positive, got 0.0"),
    (dict(task="OfflineBallRun-v9"), "unknown task 'OfflineBallRun-v9'"),
    (dict(dataset_path="/nonexistent/data.hdf5"), "dataset file '/nonexistent/data.hdf5' does not exist"),
    (dict(batch_size=0), "batch_size must be positive, got 0"),
    (dict(cost_limit=-1), "cost_limit must be a finite number >= 0, got -1.0"),
    (dict(cost_limit="nan"), "cost_limit must be a finite number >= 0, got nan"),
    (dict(seed="x"), "argument --seed: invalid int value: 'x'"),
    (dict(max_time=5), "unknown flag --max_time; did you mean --max_timesteps?"),  # abbreviations are not taken
    (dict(latent_dim=8), "unknown flag --latent_dim; did you mean --hidden_dim?"),
    (dict(wandb_mode="sometimes"), "wandb_mode must be one of ['online', 'offline', 'disabled']"),
    (dict(algo="fisor", batch_size=16), "fisor: critic_batch_size 32 is larger than batch_size 16"),
    (dict(algo="fisor", batch_size=63), "fisor: batch_size must be even (the actor trains on its two halves), got 63"),
    (dict(algo="trac", hparam="seg_ratio=0"), "trac: seg_ratio must be a number in (0, 1], got 0"),
    (dict(algo="trac", hparam="safe_top_perc=0"), "trac: safe_top_perc must be a number in (0, 1], got 0"),
    (dict(algo=None), "--algo is required (one of bc-all, bc-safe, cdt, bcq-lag, bear-lag, cpq, coptidice, fisor, trac)"),
])
def test_bad_input_one_line_error_and_nothing_written(ballrun_file, tmp_path, capsys, change, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_baseline.main(flags(dataset=ballrun_file, logdir=tmp_path / "logs", **{"algo": "cpq", **change}))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert not os.path.exists(tmp_path / "logs")


def test_existing_runs_are_refused_or_resumed_unchanged(runs, ballrun_file, tmp_path, capsys):
    bc_safe_dir, _, argv = runs["bc-safe"]
    cases = [
        (argv, f"run directory {bc_safe_dir} already holds a run; continue it with --resume {bc_safe_dir}"),
        ([*argv, "--resume", bc_safe_dir, "--cost_limit", "20"], "a resumed run cannot change ['cost_limit']"),
        ([*argv, "--resume", bc_safe_dir, "--hidden_dim", "64"], "a resumed run cannot change ['hidden_dim']"),
        ([*argv, "--resume", bc_safe_dir], "the run is already at step 20; raise --max_timesteps to train further"),
        (["--resume", str(tmp_path)], f"--resume '{tmp_path}' is not a run directory"),
        # BC-Safe keeps 400 of the 1200 transitions at cost limit 10
        (flags("bc-safe", ballrun_file, tmp_path, batch_size=500), "batch_size 500 is larger than the 400 "
                                                                   "transitions bc-safe trains on"),
    ]
    before = tree_digest(bc_safe_dir)
    for case, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            train_baseline.main(case)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert exit_info.value.code == 2 and len(errors) == 1 and expected in errors[0], err
    assert tree_digest(bc_safe_dir) == before


@pytest.mark.parametrize("algo", ["bc-all", "fisor", "trac"])  # osrl-lib's and ours: the same loop
def test_sigint_saves_a_checkpoint_and_resume_continues(algo, ballrun_file, tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "train_baseline.py")
    argv = flags(algo, ballrun_file, tmp_path, max_timesteps=10_000_000, eval_every=10_000_000, log_every=50)
    run_dir = os.path.join(str(tmp_path), f"{TASK}-cost-10", f"{algo}-seed0")
    stderr = interrupt_after_first_log([sys.executable, script, *argv], run_dir)
    assert f"--resume {run_dir}" in stderr
    step = load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"]
    assert step >= 50
    resumed, _ = train(["--resume", run_dir, "--max_timesteps", str(step + 4), "--eval_every", "4"])
    assert load_checkpoint(os.path.join(resumed, "checkpoint", "model.pt"))["step"] == step + 4
