"""The paper's other experiments (issue 15): Converse LSPC-O, --data_ratio, zero-shot transfer
(eval_lspc.py --eval_task, scripts/transfer.py) and scripts/study.py's dry runs."""
import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import eval_lspc
import train_lspc_iql
from conftest import ROOT, tiny_args
from lspc import LSPCError
from lspc.data.collect import write_dsrl_hdf5
from lspc.data.dataset import load_dataset, subsample_trajectories, trajectory_bounds
from lspc.envs import make_env
from lspc_iql_configs import load_config
from test_losses import make_agent, make_batch, set_constant, set_head_constant

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import study  # noqa: E402
import train_baseline  # noqa: E402
import transfer  # noqa: E402

needs_metadrive = pytest.mark.skipif(importlib.util.find_spec("metadrive") is None,
                                     reason="MetaDrive is not installed (make install-suites)")


# ---------------------------------------------------------------------------------------------
# Converse LSPC-O
# ---------------------------------------------------------------------------------------------
def constant_critics_agent(converse: bool) -> "train_lspc_iql.LSPC":
    """V = 0.1 and Q_target = min(0.6, 0.9) = 0.6: reward advantage 0.5, w_r = exp(2 * 0.5) = e.
    V_c = 0.2 and Q_c target = max(0.5, 0.1) = 0.5: cost advantage -0.3, w_c = exp(4 * -0.3) = exp(-1.2)."""
    agent = make_agent(converse=converse, beta_reward=2.0, beta_cost=4.0)
    set_constant(agent.value.v, 0.1)
    set_head_constant(agent.q_target, 0, 0.6)
    set_head_constant(agent.q_target, 1, 0.9)
    set_constant(agent.cost_value.v, 0.2)
    set_head_constant(agent.cost_q_target, 0, 0.5)
    set_head_constant(agent.cost_q_target, 1, 0.1)
    return agent


@pytest.mark.parametrize("converse, cvae_weight, encoder_weight", [
    (False, math.exp(-1.2), math.e),  # the paper's LSPC: w_c on the CVAE (eq. 10), w_r on the encoder (eq. 14)
    (True, math.e, math.exp(-1.2)),  # Converse LSPC-O: swapped
])
def test_converse_swaps_the_two_weights_hand_computed(converse, cvae_weight, encoder_weight):
    agent = constant_critics_agent(converse)
    batch = make_batch()
    torch.manual_seed(3)
    _, weights, m = agent.critic_and_cvae_losses(batch, torch.randn(8, agent.cfg.latent_dim))
    # one weight for the whole batch: cvae_loss = w * (mean recon + 0.5 * mean KL)
    assert m["cvae_loss"].item() == pytest.approx(cvae_weight * (m["cvae_recon"].item() + 0.5 * m["cvae_kl"].item()),
                                                  rel=1e-5)
    assert torch.allclose(weights, torch.full((8,), encoder_weight), rtol=1e-6)
    # the logged weights are the same in both modes: they name the advantage, not the network it weighs
    assert m["reward_weight_mean"].item() == pytest.approx(math.e, rel=1e-6)
    assert m["cost_weight_mean"].item() == pytest.approx(math.exp(-1.2), rel=1e-6)
    noise = torch.randn(8, agent.cfg.latent_dim, generator=torch.Generator().manual_seed(4))
    loss, _ = agent.safety_encoder_loss(batch, weights, noise)
    z = agent.safety_encoder.sample(batch["observations"], agent.cfg.max_latent_action, noise)
    squared = (agent.cvae.decode(batch["observations"], z) - batch["actions"]).pow(2).sum(-1).mean()
    assert loss.item() == pytest.approx(encoder_weight * squared.item(), rel=1e-5)


def test_converse_step_moves_only_the_cvae_and_encoder_differently():
    """One step from the same parameters and noise: the critics learn the same, the CVAE does not."""
    agents = [make_agent(), make_agent(converse=True)]
    batch = make_batch()
    for agent in agents:
        torch.manual_seed(7)
        agent.train(batch)
    plain, converse = agents
    for name in ("q", "value", "cost_q", "cost_value", "q_target", "cost_q_target"):
        for a, b in zip(getattr(plain, name).parameters(), getattr(converse, name).parameters()):
            assert torch.equal(a, b), name
    for name in ("cvae", "safety_encoder"):
        assert any(not torch.equal(a, b) for a, b in zip(getattr(plain, name).parameters(),
                                                          getattr(converse, name).parameters())), name


# ---------------------------------------------------------------------------------------------
# --data_ratio
# ---------------------------------------------------------------------------------------------
def numbered_trajectories(lengths, unfinished_last=False):
    """Trajectory i has ``lengths[i]`` steps whose observations are all i (and rewards the step index)."""
    ids = np.repeat(np.arange(len(lengths)), lengths)
    steps = np.concatenate([np.arange(n) for n in lengths])
    ends = np.r_[steps[1:] == 0, True]
    if unfinished_last:
        ends[-1] = False
    terminals = ends & (ids % 2 == 0)  # both kinds of end
    return {"observations": np.repeat(ids[:, None], 7, axis=1).astype(np.float32),
            "next_observations": np.repeat(ids[:, None], 7, axis=1).astype(np.float32),
            "actions": np.zeros((len(ids), 2), dtype=np.float32), "rewards": steps.astype(np.float32),
            "costs": np.zeros(len(ids), dtype=np.float32), "terminals": terminals, "timeouts": ends & ~terminals}


def test_data_ratio_keeps_whole_trajectories_and_is_seeded():
    lengths = [3, 5, 2, 7, 4, 6, 1, 8, 3, 5]
    data = numbered_trajectories(lengths, unfinished_last=True)
    assert [end - start for start, end in trajectory_bounds(data)] == lengths  # the unfinished one counts
    picked = {}
    for seed in (0, 1):
        kept = subsample_trajectories(data, 0.3, seed)
        ids = kept["observations"][:, 0].astype(int)
        chosen = list(dict.fromkeys(ids))
        assert len(chosen) == 3 and chosen == sorted(chosen)  # round(0.3 * 10), in dataset order
        for i in chosen:  # each one whole: all its steps, in order, with its own end flags
            rows = ids == i
            assert kept["rewards"][rows].tolist() == list(range(lengths[i]))
        assert len(ids) == sum(lengths[i] for i in chosen)
        again = subsample_trajectories(data, 0.3, seed)
        assert all(np.array_equal(again[key], kept[key]) for key in data)
        picked[seed] = chosen
    assert picked[0] != picked[1]
    assert len(trajectory_bounds(subsample_trajectories(data, 0.01, 0))) == 1  # never empty
    assert all(np.array_equal(subsample_trajectories(data, 1.0, 5)[key], data[key]) for key in data)


def test_data_ratio_through_load_dataset_and_the_config(tmp_path):
    path = str(tmp_path / "numbered.hdf5")
    write_dsrl_hdf5(path, numbered_trajectories([10] * 8), {"task": "OfflineBallRun-v0"})
    env = make_env("OfflineBallRun-v0")
    try:
        half = load_dataset(env, path, data_ratio=0.5, seed=2)
        assert len(half["observations"]) == 40 and len(np.unique(half["observations"][:, 0])) == 4
        assert np.array_equal(load_dataset(env, path, data_ratio=0.5, seed=2)["observations"], half["observations"])
    finally:
        env.close()
    assert load_config(["--data_ratio", "0.25", "--device", "cpu"]).data_ratio == 0.25
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(LSPCError, match=r"^data_ratio \(the fraction of trajectories kept\) must be in \(0, 1\]"):
            load_config(["--data_ratio", bad, "--device", "cpu"])


# ---------------------------------------------------------------------------------------------
# Zero-shot transfer
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lspc_run(ballrun_file, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("transfer")
    train_lspc_iql.main(tiny_args(ballrun_file, logdir, max_timesteps=10, eval_every=10))
    return os.path.join(str(logdir), "OfflineBallRun-v0-cost-10", "lspc_iql-seed0")


def test_eval_task_scores_on_the_other_task_with_its_references(lspc_run, capsys):
    """BallRun and CarRun share their spaces (7-D observations, 2-D actions in [-1, 1])."""
    eval_lspc.main([lspc_run, "--eval_task", "OfflineCarRun-v0", "--eval_episodes", "2", "--policies", "lspc-o"])
    assert "(zero-shot: trained on OfflineBallRun-v0)" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(lspc_run, "eval", "results.json"))  # the run's own results untouched
    with open(os.path.join(lspc_run, "eval", "transfer", "OfflineCarRun-v0", "results.json")) as f:
        results = json.load(f)
    assert (results["task"], results["trained_task"], results["thresholds"]) == (
        "OfflineCarRun-v0", "OfflineBallRun-v0", [10.0, 20.0, 40.0])
    entry = results["policies"]["lspc-o"]
    car, ball = make_env("OfflineCarRun-v0").unwrapped, make_env("OfflineBallRun-v0").unwrapped
    car.set_target_cost(20.0)
    ball.set_target_cost(20.0)
    expected = np.mean([car.get_normalized_score(r, c) for r, c in zip(entry["episodes"]["reward"],
                                                                      entry["episodes"]["cost"])], axis=0)
    assert entry["thresholds"]["20"]["normalized_reward"] == pytest.approx(expected[0])
    assert entry["thresholds"]["20"]["normalized_cost"] == pytest.approx(expected[1])
    assert entry["thresholds"]["20"]["normalized_reward"] != pytest.approx(
        ball.get_normalized_score(entry["reward"], entry["cost"])[0])
    assert entry["episodes"]["length"] == [200, 200]  # CarRun's time limit (BallRun's is 100)


@pytest.mark.parametrize("task, space", [
    ("OfflineBallCircle-v0", "observation"),  # 8-D observations
    pytest.param("OfflineMetadrive-easysparse-v0", "observation", marks=needs_metadrive),
])
def test_eval_task_with_other_spaces_is_one_error_line(lspc_run, task, space, capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_lspc.main([lspc_run, "--eval_task", task, "--eval_episodes", "2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot evaluate {lspc_run} on {task}: its {space} space")
    assert not os.path.exists(os.path.join(lspc_run, "eval", "transfer", task))


def test_transfer_script_table_and_chart(lspc_run, capsys):
    transfer.main([lspc_run, "--tasks", "OfflineBallRun-v0", "OfflineCarRun-v0", "--eval_episodes", "2"])
    out_dir = os.path.join(lspc_run, "eval", "transfer")
    with open(os.path.join(out_dir, "transfer.md")) as f:
        rows = [line for line in f if line.startswith("| Offline")]
    assert [row.split(" | ")[:2] for row in rows] == [
        [f"| {task}", policy] for task in ("OfflineBallRun-v0 (trained)", "OfflineCarRun-v0")
        for policy in ("lspc-o", "lspc-s", "cvae")]
    assert os.path.getsize(os.path.join(out_dir, "transfer.png")) > 10_000
    own = eval_lspc.evaluate_run(lspc_run, eval_episodes=2)  # the run's own task: the plain evaluation
    with open(os.path.join(out_dir, "OfflineBallRun-v0", "results.json")) as f:
        assert json.load(f)["policies"]["lspc-s"]["episodes"] == own["policies"]["lspc-s"]["episodes"]
    with pytest.raises(SystemExit):
        transfer.main([lspc_run, "--tasks", "OfflineCarRun-v0", "OfflineNoSuchTask-v0"])
    assert capsys.readouterr().err.startswith("error: unknown task 'OfflineNoSuchTask-v0'")


def test_transfer_of_a_baseline_run(ballrun_file, tmp_path):
    train_baseline.main(["--algo", "bc-all", "--task", "OfflineBallRun-v0", "--dataset_path", ballrun_file,
                         "--logdir", str(tmp_path), "--max_timesteps", "10", "--batch_size", "64", "--eval_every",
                         "10", "--eval_episodes", "2", "--hidden_dim", "32", "--wandb_mode", "disabled",
                         "--device", "cpu", "--name", "bc-all-seed0"])
    run_dir = os.path.join(str(tmp_path), "OfflineBallRun-v0-cost-10", "bc-all-seed0")
    (result,) = transfer.transfer(run_dir, ["OfflineCarRun-v0"], eval_episodes=2)
    assert (result["task"], result["algo"], list(result["policies"])) == ("OfflineCarRun-v0", "bc-all", ["bc-all"])


# ---------------------------------------------------------------------------------------------
# scripts/study.py --dry_run
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, values, dirs, flag", [
    ("restriction", ["0.25", "1"], ["restriction"], "--eps_s 0.25 1.0 --eps_o 0.25 1.0 --no_figures"),
    ("converse", ["0", "1"], ["default", "converse=1"], "--converse=true"),
    ("lambda", ["0.5", "2"], ["default", "beta_cost=0.5", "beta_reward=0.5"], "--beta_reward 0.5"),
    ("xi", ["0.7", "0.9"], ["default", "iql_tau=0.9"], "--iql_tau 0.9"),
    ("data_ratio", ["0.25", "1"], ["default", "data_ratio=0.25"], "--data_ratio 0.25"),
])
def test_study_dry_run_lists_its_runs(name, values, dirs, flag, tmp_path, capsys):
    study.main(["--study", name, "--task", "OfflineBallRun-v0", "--seeds", "0", "3", "--values", *values,
                "--max_timesteps", "100", "--logdir", str(tmp_path), "--dry_run"])
    out = capsys.readouterr().out
    runs_dir = os.path.join(str(tmp_path), "OfflineBallRun-v0", "runs")
    listed = [line.split("(")[-1].rstrip(")") for line in out.splitlines() if line.startswith("# ")]
    assert listed == [os.path.join(runs_dir, d, "OfflineBallRun-v0-cost-10", f"lspc_iql-seed{seed}")
                      for d in dirs for seed in (0, 3)]
    assert flag in out and "--max_timesteps 100" in out
    assert f"dry run: {2 * len(dirs)} of {2 * len(dirs)} runs to submit" in out
    assert not os.path.exists(runs_dir)  # nothing ran


def test_study_refuses_bad_values_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--study", "xi", "--task", "OfflineBallRun-v0", "--values", "1.5", "--logdir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --values for the xi study: iql_tau (the expectile) must be in (0, 1), got 1.5\n"


def test_study_figures_from_finished_runs(tmp_path, capsys, monkeypatch):
    """draw() on stand-in results: each run's final scores at the first threshold, per value and seed."""
    args = study.parse_args(["--study", "data_ratio", "--task", "OfflineBallRun-v0", "--seeds", "0", "1",
                             "--values", "0.5", "1", "--logdir", str(tmp_path), "--dry_run"])
    args.values = [0.5, 1.0]
    args.runs_dir = str(tmp_path / "runs")
    args.study_dir = str(tmp_path / "data_ratio")
    _, planned = study.plan(args)
    drawn = {}
    monkeypatch.setattr(study, "plot_against_value", lambda points, *rest: drawn.update(points))
    for name, jobs in planned.items():
        for run in (run for job in jobs for run in job.runs):
            os.makedirs(os.path.join(run.run_dir, "eval"))
            score = 0.1 * run.seed + (0.5 if name == "default" else 0.0)
            policies = {p: {"thresholds": {"10": {"normalized_reward": score + i, "normalized_cost": 2 * score}}}
                        for i, p in enumerate(("lspc-o", "lspc-s"))}
            with open(os.path.join(run.run_dir, "eval", "results.json"), "w") as f:
                json.dump({"thresholds": [10.0, 20.0, 40.0], "policies": policies}, f)
    assert study.draw(args, planned) == [os.path.join(args.study_dir, "data_ratio.png")]
    assert drawn == {"lspc-o": {0.5: [(0.0, 0.0), (0.1, 0.2)], 1.0: [(0.5, 1.0), (0.6, 1.2)]},
                     "lspc-s": {0.5: [(1.0, 0.0), (1.1, 0.2)], 1.0: [(1.5, 1.0), (1.6, 1.2)]}}
