"""Evaluation and results: eval_lspc.py, the vectorized evaluator, the figures, the table tool."""
import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import eval_lspc
import train_lspc_iql
from conftest import load_script, tiny_args
from lspc.checkpoint import load_checkpoint, save_checkpoint
from lspc.envs import make_env, reset_seeded
from lspc import LSPCError
from lspc.evaluation import Evaluator, choose_vector, episode_seeds, score_at_thresholds
from lspc.plots import Curves, aggregate
from lspc_iql_configs import load_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP_ARGS = ["--eps_s", "0.1", "0.6", "--eps_o", "0.6", "1.5"]


def tree_digest(path):
    """Every file under ``path`` with the hash of its content."""
    digest = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                digest[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def without_eval(digest):
    return {name: h for name, h in digest.items() if not name.startswith("eval" + os.sep)}


@pytest.fixture(scope="module")
def tiny_run(ballrun_file, tmp_path_factory):
    """A 20-step run with evaluations at steps 10 and 20 (all three checkpoints, two metrics rows)."""
    return train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path_factory.mktemp("eval"))))


@pytest.fixture(scope="module")
def cli_output(tiny_run):
    """eval_lspc.py's CLI once on the tiny run, with both restriction sweeps."""
    before = tree_digest(tiny_run)
    eval_lspc.main(["--path", tiny_run, "--eval_episodes", "3", "--seed", "5", *SWEEP_ARGS])
    with open(os.path.join(tiny_run, "eval", "results.json")) as f:
        return {"results": json.load(f), "before": before, "after": tree_digest(tiny_run)}


def test_results_json_schema_and_values(tiny_run, cli_output):
    results = cli_output["results"]
    assert {"task", "run", "checkpoint", "step", "train_seed", "seed", "episodes", "thresholds", "device",
            "restriction", "policies", "sweep"} <= set(results)
    assert (results["task"], results["checkpoint"], results["step"], results["seed"], results["episodes"]) == \
        ("OfflineBallRun-v0", "latest", 20, 5, 3)
    assert results["thresholds"] == [10.0, 20.0, 40.0]  # Bullet suite by default
    assert results["restriction"] == {"eps_s": 0.6, "eps_o": 0.6, "lspc_s_sampling": "clamp",
                                      "lspc_o_sampling": "stochastic"}  # BallRun's task override
    assert list(results["policies"]) == ["lspc-o", "lspc-s", "cvae"]
    for entry in results["policies"].values():
        episodes = {key: np.array(values) for key, values in entry["episodes"].items()}
        assert len(episodes["reward"]) == 3 and (episodes["length"] == 100).all()
        assert entry["reward"] == pytest.approx(episodes["reward"].mean(), abs=1e-12)
        assert entry["reward_std"] == pytest.approx(episodes["reward"].std(), abs=1e-12)
        assert entry["cost"] == pytest.approx(episodes["cost"].mean(), abs=1e-12)
        assert set(entry["thresholds"]) == {"10", "20", "40"}
        for kappa, scores in entry["thresholds"].items():
            assert scores["normalized_cost"] == pytest.approx(entry["cost"] / float(kappa))
    # the policies' noise differs, so their returns do
    assert len({tuple(e["episodes"]["reward"]) for e in results["policies"].values()}) == 3


def test_restriction_sweep_reuses_the_episodes_and_restores_eps(tiny_run, cli_output):
    run = eval_lspc.load_run(tiny_run)
    eval_lspc.evaluate(run, ["lspc-s"], eval_episodes=1, eps_s=[0.1], eps_o=[2.0])
    assert run.agent.cfg is run.cfg  # the policies act with the run's eps again
    run.close()
    results = cli_output["results"]
    sweeps = results["sweep"]
    assert [p["eps"] for p in sweeps["lspc-s"]["points"]] == [0.1, 0.6]
    assert [p["eps"] for p in sweeps["lspc-o"]["points"]] == [0.6, 1.5]
    assert sweeps["lspc-o"]["trained_eps"] == 0.6 and "trained with eps_O = 0.6" in sweeps["lspc-o"]["note"]
    assert sweeps["lspc-s"]["parameter"] == "vae_clamper" and sweeps["lspc-o"]["parameter"] == "max_latent_action"
    for policy in ("lspc-s", "lspc-o"):
        at_trained = next(p for p in sweeps[policy]["points"] if p["eps"] == 0.6)
        # same episodes, same noise, same eps: the very same numbers as the main evaluation
        assert {k: v for k, v in at_trained.items() if k != "eps"} == results["policies"][policy]
        other = next(p for p in sweeps[policy]["points"] if p["eps"] != 0.6)
        assert other["episodes"]["reward"] != at_trained["episodes"]["reward"]


def test_cli_writes_table_and_figures_and_nothing_else(tiny_run, cli_output, capsys):
    eval_dir = os.path.join(tiny_run, "eval")
    assert sorted(os.listdir(eval_dir)) == ["action_space.png", "results.json", "results.md", "tradeoff.png",
                                            "training_curves.png"]
    for name in ("action_space.png", "training_curves.png", "tradeoff.png"):
        with open(os.path.join(eval_dir, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC
    with open(os.path.join(eval_dir, "results.md")) as f:
        table = f.read()
    lspc_o = cli_output["results"]["policies"]["lspc-o"]
    assert f"| lspc-o | {lspc_o['reward']:.1f} ± {lspc_o['reward_std']:.1f} |" in table
    assert "| 0.6 (trained) |" in table and "trained with eps_O = 0.6" in table
    assert without_eval(cli_output["after"]) == without_eval(cli_output["before"])


def test_normalized_scores_equal_dsrl():
    env = make_env("OfflineCarCircle-v0")
    episodes = {"reward": np.array([12.5, 300.0, 471.25]), "cost": np.array([0.0, 7.0, 35.0]),
                "length": np.array([300, 300, 120])}
    scored = score_at_thresholds(env, episodes, [0.0, 10.0, 20.0])
    reference = make_env("OfflineCarCircle-v0").unwrapped  # dsrl's OfflineEnv, called directly below
    for kappa in (0.0, 10.0, 20.0):
        reference.set_target_cost(kappa)
        expected = np.array([reference.get_normalized_score(r, c)
                             for r, c in zip(episodes["reward"], episodes["cost"])])
        scores = scored["thresholds"][f"{kappa:g}"]
        assert scores["normalized_reward"] == pytest.approx(expected[:, 0].mean(), rel=1e-12)
        assert scores["normalized_reward_std"] == pytest.approx(expected[:, 0].std(), rel=1e-12)
        assert scores["normalized_cost"] == pytest.approx(expected[:, 1].mean(), rel=1e-12)
    # dsrl's epsilon: at kappa 0 the cost is normalized as (C + 1) / 1
    assert scored["thresholds"]["0"]["normalized_cost"] == pytest.approx(np.mean(episodes["cost"] + 1.0))
    assert scored["thresholds"]["20"]["normalized_cost"] == pytest.approx(np.mean(episodes["cost"]) / 20.0)
    assert scored["cost_std"] == pytest.approx(np.std(episodes["cost"]))
    env.close()


def test_same_seed_same_numbers(tiny_run):
    first = eval_lspc.evaluate_run(tiny_run, "best_s", ["lspc-o", "lspc-s"], [10, 20], eval_episodes=2, seed=3)
    again = eval_lspc.evaluate_run(tiny_run, "best_s", ["lspc-o", "lspc-s"], [10, 20], eval_episodes=2, seed=3)
    other = eval_lspc.evaluate_run(tiny_run, "best_s", ["lspc-o", "lspc-s"], [10, 20], eval_episodes=2, seed=4)
    assert first == again
    assert first["policies"]["lspc-o"]["episodes"]["reward"] != other["policies"]["lspc-o"]["episodes"]["reward"]


@pytest.mark.parametrize("vector", ["lockstep", "sync"])
def test_evaluation_leaves_the_global_random_streams_alone(tiny_run, vector):
    # training evaluates between gradient steps: its numpy and torch streams must not move, also
    # across the in-process resets a SyncVectorEnv does after an episode ends
    run = eval_lspc.load_run(tiny_run)
    evaluator = Evaluator(run.cfg.task, run.cfg.episode_len, 2, vector)
    np.random.seed(123)
    torch.manual_seed(123)
    numpy_state, torch_state = np.random.get_state(), torch.get_rng_state()
    try:
        evaluator.run(run.agent.act_lspc_o, episode_seeds(0, 2), 0, run.agent.device)
    finally:
        evaluator.close()
        run.close()
    assert all(np.array_equal(now, saved) for now, saved in zip(np.random.get_state(), numpy_state))
    assert torch.equal(torch.get_rng_state(), torch_state)


def feedback_policy(obs, generator):
    """A deterministic, row-wise exact policy (no transcendental functions, whose vectorized and
    scalar kernels may differ in the last bit), so a batch and a single row act identically."""
    return (obs[:, :4] + 0.15).clamp(-1.0, 1.0)


def test_vector_modes_equal_a_plain_one_env_loop():
    task, episode_len, seeds = "OfflineDroneRun-v0", 200, episode_seeds(0, 2)
    plain = {"reward": [], "cost": [], "length": []}
    for seed in seeds:  # the reference: a new env per episode (Bullet's Drone keeps state across resets)
        env = make_env(task, episode_len)
        obs, reward, cost, length, done = reset_seeded(env, seed), 0.0, 0.0, 0, False
        while not done:
            action = feedback_policy(torch.as_tensor(obs[None], dtype=torch.float32), None)[0].numpy()
            obs, r, terminated, truncated, info = env.step(action)
            reward, cost, length, done = reward + r, cost + info.get("cost", 0.0), length + 1, terminated or truncated
        env.close()
        for key, value in (("reward", reward), ("cost", cost), ("length", length)):
            plain[key].append(value)
    # the Drone falls in some episodes: early terminations next to time-limit ends, and costs on the way
    assert min(plain["length"]) < 200 == max(plain["length"]) and min(plain["cost"]) > 0, plain
    for vector in ("lockstep", "sync", "async"):
        evaluator = Evaluator(task, episode_len, len(seeds), vector)
        try:  # the second run's envs have run an episode already: it must not matter
            runs = [evaluator.run(feedback_policy, seeds, 0, torch.device("cpu")) for _ in range(2)]
        finally:
            evaluator.close()
        for episodes in runs:
            for key in plain:
                assert episodes[key].tolist() == plain[key], (vector, key)


def test_vector_modes_agree_for_a_stochastic_trained_policy(tiny_run):
    results = {vector: eval_lspc.evaluate_run(tiny_run, policies=["lspc-o", "cvae"], thresholds=[10],
                                              eval_episodes=3, seed=2, vector=vector)
               for vector in ("lockstep", "sync", "async")}
    assert results["sync"] == results["lockstep"] == results["async"]


def test_metadrive_runs_its_episodes_in_subprocesses():
    # MetaDrive's engine is a process-wide singleton: several of its envs cannot live in one process
    metadrive, ballrun = "OfflineMetadrive-easysparse-v0", "OfflineBallRun-v0"
    assert choose_vector(metadrive, None, 10) == "async" and choose_vector(metadrive, "lockstep", 1) == "lockstep"
    assert choose_vector(ballrun, None, 10) == "lockstep" and choose_vector(ballrun, None, 10, "sync") == "sync"
    with pytest.raises(LSPCError, match="allows one environment per process: run its 10 episodes with --vector async"):
        choose_vector(metadrive, "sync", 10)


def test_gpu_checkpoint_loads_on_cpu(tiny_run, tmp_path, monkeypatch):
    copy = str(tmp_path / "run")
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("eval"))
    path = os.path.join(copy, "checkpoint", "model.pt")
    state = load_checkpoint(path)
    with monkeypatch.context() as patch:  # save the tensors tagged as CUDA storages, as a GPU run does
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(path, state)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    original = eval_lspc.evaluate_run(tiny_run, policies=["lspc-o"], eval_episodes=2)
    moved = eval_lspc.evaluate_run(copy, policies=["lspc-o"], eval_episodes=2)
    assert {**moved, "run": None} == {**original, "run": None}


def _rewrite_checkpoint(run, **config_changes):
    path = os.path.join(run, "checkpoint", "model.pt")
    state = load_checkpoint(path)
    state["config"].update(config_changes)
    save_checkpoint(path, state)


def _truncate_checkpoint(run):
    with open(os.path.join(run, "checkpoint", "model.pt"), "r+b") as f:
        f.truncate(1000)


def _widen_config(run):
    config = os.path.join(run, "config.yaml")
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("hidden_dim: 32", "hidden_dim: 48"))


@pytest.mark.parametrize("breaks,argv,expected", [
    (None, ["--path", "{empty}"], "is not a run directory: expected config.yaml and checkpoint/"),
    (lambda run: os.remove(os.path.join(run, "checkpoint", "model_best_s.pt")), ["--path", "{run}", "--checkpoint",
     "best_s"], "no best_s checkpoint in {run}: expected checkpoint/model_best_s.pt; it has latest, best_o"),
    (lambda run: _rewrite_checkpoint(run, task="OfflineCarRun-v0"), ["--path", "{run}"],
     "was trained on OfflineCarRun-v0, but the run directory is OfflineBallRun-v0: expected a checkpoint of "
     "OfflineBallRun-v0"),
    (_widen_config, ["--path", "{run}"], "does not fit the run's config.yaml: size mismatch"),
    (_truncate_checkpoint, ["--path", "{run}"], "could not load checkpoint"),
    (None, ["--path", "{run}", "--eval_episodes", "0"], "--eval_episodes must be positive, got 0"),
    (None, ["--path", "{run}", "--eps_s", "0.5", "-1"], "restriction values (--eps_s, --eps_o) must be positive"),
    (None, ["--path", "{run}", "--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "--device"),
    (None, ["--path", "{run}", "--path", "{run}/"], "{run} is given twice; give each run directory once"),
    (None, ["{run}", "{empty}"], "{empty} is not a run directory"),
])
def test_bad_input_one_line_error_and_run_untouched(tiny_run, tmp_path, capsys, breaks, argv, expected):
    run, empty = str(tmp_path / "run"), str(tmp_path / "empty")
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    os.makedirs(empty)
    if breaks is not None:
        breaks(run)
    before = tree_digest(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_lspc.main([arg.format(run=run, empty=empty) for arg in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    assert expected.format(run=run, empty=empty) in errors[0]
    assert tree_digest(run) == before and not os.path.exists(os.path.join(run, "eval"))
    assert os.listdir(empty) == []


# ---------------------------------------------------------------------------------------------
# scripts/make_table.py and scripts/plot_runs.py
# ---------------------------------------------------------------------------------------------
def write_fake_results(root, task, name, cells):
    """A results.json as eval_lspc.py writes it; cells: method -> {kappa: (normalized reward, cost)}."""
    eval_dir = os.path.join(root, name, "eval")
    os.makedirs(eval_dir)
    policies = {method: {"reward": 0.0, "cost": 0.0, "thresholds": {
        kappa: {"normalized_reward": r, "normalized_cost": c} for kappa, (r, c) in per_kappa.items()}}
        for method, per_kappa in cells.items()}
    with open(os.path.join(eval_dir, "results.json"), "w") as f:
        json.dump({"task": task, "run": os.path.join(root, name), "policies": policies}, f)


def test_make_table_averages_thresholds_and_seeds(tmp_path, capsys):
    make_table = load_script("make_table")
    task = "OfflineBallRun-v0"
    write_fake_results(tmp_path, task, "seed0", {
        "lspc-o": {"10": (0.8, 2.0), "20": (0.8, 1.0), "40": (0.8, 0.5)},
        "lspc-s": {"10": (0.4, 1.5), "20": (0.4, 1.0), "40": (0.4, 0.5)},
        "cvae": {"10": (0.2, 0.3), "20": (0.2, 0.15), "40": (0.2, 0.075)}})
    write_fake_results(tmp_path, task, "seed1", {
        "lspc-o": {"10": (0.6, 2.4), "20": (0.6, 1.2), "40": (0.6, 0.6)},
        "lspc-s": {"10": (0.3, 1.5), "20": (0.3, 1.0), "40": (0.3, 0.5)},
        "cvae": {"10": (0.1, 0.2), "20": (0.1, 0.1), "40": (0.1, 0.05)}})
    out = str(tmp_path / "table")
    make_table.main([str(tmp_path), "--out", out])
    # hand-computed means over 3 thresholds x 2 seeds
    expected = {"lspc-o": (0.7, 7.7 / 6), "lspc-s": (0.35, 1.0), "cvae": (0.15, 0.875 / 6)}
    with open(out + ".csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["task"], row["runs"], row["thresholds"]) == (task, "2", "10 20 40")
    for method, (reward, cost) in expected.items():
        assert float(row[f"{method}_normalized_reward"]) == pytest.approx(reward, abs=1e-12)
        assert float(row[f"{method}_normalized_cost"]) == pytest.approx(cost, abs=1e-12)
    assert row["best_safe"] == "lspc-s"  # lspc-o has more reward but is unsafe (1.28 > 1)
    with open(out + ".md") as f:
        markdown = f.read()
    assert markdown == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"
    table_row = next(line for line in markdown.splitlines() if line.startswith(f"| {task}"))
    # bold exactly on the safe cells: lspc-s (cost exactly 1) and cvae; lspc-o (1.28) plain; star on lspc-s
    assert table_row == f"| {task} | **0.35** ★ | **1.00** | 0.70 | 1.28 | **0.15** | **0.15** | 2 |"


def test_make_table_suite_average_and_bad_input(tmp_path, capsys):
    make_table = load_script("make_table")
    write_fake_results(tmp_path, "OfflineBallRun-v0", "a", {"lspc-o": {"10": (0.5, 0.5)}, "lspc-s": {"10": (0.2, 0.1)}})
    write_fake_results(tmp_path, "OfflineCarRun-v0", "b", {"lspc-o": {"10": (0.9, 1.5)}, "lspc-s": {"10": (0.4, 0.2)}})
    rows = make_table.build_rows(make_table.find_results([str(tmp_path)]))
    assert [row["task"] for row in rows] == ["OfflineBallRun-v0", "OfflineCarRun-v0", "average (bullet)"]
    assert rows[2]["cells"]["lspc-o"] == pytest.approx((0.7, 1.0))  # mean over the two tasks: safe, just
    assert rows[2]["cells"]["lspc-s"] == pytest.approx((0.3, 0.15))
    assert [row["best"] for row in rows] == ["lspc-o", "lspc-s", "lspc-o"]
    not_results = tmp_path / "notes" / "eval"
    not_results.mkdir(parents=True)
    (not_results / "results.json").write_text("[1, 2]")
    for paths, expected in (([str(not_results / "results.json")], "is not a results.json written by eval_lspc.py"),
                            ([str(tmp_path / "nothing-here")], "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            make_table.main([*paths, "--out", str(tmp_path / "t")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_plot_runs_groups_seeds_and_separates_configs(tmp_path, capsys):
    plot_runs = load_script("plot_runs")
    rows_by_seed = {0: [(10, 0.2, 4.0), (20, 0.4, 2.0)], 1: [(10, 0.4, 6.0), (20, 0.6, 0.0), (30, 0.7, 0.0)]}
    for seed, vae_clamper, rows in ((0, 0.6, rows_by_seed[0]), (1, 0.6, rows_by_seed[1]), (0, 0.25, rows_by_seed[0])):
        run = tmp_path / f"eps{vae_clamper}-seed{seed}"
        run.mkdir()
        config = f"task: OfflineBallRun-v0\nseed: {seed}\nname: r{seed}\nvae_clamper: {vae_clamper}\n"
        (run / "config.yaml").write_text(config)
        with open(run / "metrics.jsonl", "w") as f:
            for step, norm_reward, cost in rows:
                f.write(json.dumps({"step": step, "train/q_loss": 1.0}) + "\n")
                f.write(json.dumps({"step": step, "eval/reward": 0.0, "eval/cost": cost,
                                    "normalized_eval/reward": norm_reward, "normalized_eval/cost": cost / 10,
                                    "eval_star/reward": 0.0, "eval_star/cost": cost / 2,
                                    "normalized_eval_star/reward": norm_reward / 2,
                                    "normalized_eval_star/cost": cost / 20}) + "\n")
    groups = plot_runs.group_runs(plot_runs.find_run_dirs([str(tmp_path)]))
    assert {label: len(runs) for label, (_, runs) in groups.items()} == {
        "OfflineBallRun-v0\nvae_clamper=0.6": 2, "OfflineBallRun-v0\nvae_clamper=0.25": 1}
    curves = plot_runs.read_groups(groups)["OfflineBallRun-v0\nvae_clamper=0.6"]
    band = aggregate(curves, "normalized_reward", "lspc-o")  # steps 10 and 20 only: seed 0 stopped at 20
    assert band.steps.tolist() == [10, 20] and band.runs == 2
    assert band.mean == pytest.approx([0.3, 0.5]) and band.std == pytest.approx([0.1, 0.1])
    cost = aggregate(curves, "cost", "lspc-s")
    assert cost.mean == pytest.approx([2.5, 0.5]) and cost.std == pytest.approx([0.5, 0.5])
    out = str(tmp_path / "runs.png")
    plot_runs.main([str(tmp_path), "--out", out])
    with open(out, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert "vae_clamper=0.6: 2 runs" in capsys.readouterr().out


def test_aggregate_needs_a_common_step():
    a = Curves(np.array([10]), {"lspc-o": np.array([0.1])}, {"lspc-o": np.array([0.0])})
    b = Curves(np.array([20]), {"lspc-o": np.array([0.2])}, {"lspc-o": np.array([0.0])})
    with pytest.raises(LSPCError, match="no evaluation step in common"):
        aggregate([a, b], "normalized_reward", "lspc-o")
