"""The evaluation metrics carry the names of the authors' release (its train_lspc_iql.py logs
eval/Reward, eval/Cost, eval/Length, their _std, normalized_eval/Normalized_Reward and _Cost, and
the same under eval_star/ for LSPC-S), in metrics.jsonl and in wandb; eval_lspc.py's per-threshold
results go to the run's wandb summary; the project's readers take runs of either naming."""
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest

import eval_lspc
import train_lspc_iql
from conftest import load_script, tiny_args
from lspc.plots import read_curves
from lspc.run_logger import eval_entries, eval_value, read_metrics

RELEASE_KEYS = {f"{tab}/{name}" for tab in ("eval", "eval_star")
                for name in ("Reward", "Cost", "Length", "Reward_std", "Cost_std", "Length_std")} | {
    f"normalized_{tab}/Normalized_{name}" for tab in ("eval", "eval_star") for name in ("Reward", "Cost")}


class FakeWandb(types.ModuleType):
    """Stands in for the wandb module: records what a run logs and puts in its summary."""

    def __init__(self):
        super().__init__("wandb")
        self.logged, self.summary, self.inits = [], {}, []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self
        return types.SimpleNamespace(id=kwargs.get("id") or "fake-run-id",
                                     log=lambda row, step: fake.logged.append(row),
                                     summary=types.SimpleNamespace(update=fake.summary.update), finish=lambda: None)


@pytest.fixture(scope="module")
def trained(ballrun_file, tmp_path_factory):
    """A 20-step LSPC run (evaluations at steps 10 and 20) logged to a stand-in wandb."""
    fake = FakeWandb()
    saved = sys.modules.get("wandb")
    sys.modules["wandb"] = fake
    try:
        logdir = tmp_path_factory.mktemp("keys")
        cfg = train_lspc_iql.load_config(tiny_args(ballrun_file, logdir, wandb_mode="offline"))
        run_dir = train_lspc_iql.train(cfg)
    finally:
        if saved is None:
            del sys.modules["wandb"]
        else:
            sys.modules["wandb"] = saved
    return run_dir, fake


def test_metrics_jsonl_and_wandb_carry_the_release_names(trained):
    run_dir, fake = trained
    eval_rows = [row for row in read_metrics(run_dir) if "eval/Reward" in row]
    assert [row["step"] for row in eval_rows] == [10, 20]
    for row in eval_rows:
        assert RELEASE_KEYS <= set(row), sorted(RELEASE_KEYS - set(row))
        assert not any(key in row for key in ("eval/reward", "normalized_eval/reward", "eval_star/cost"))
        assert row["eval/Length"] == 100.0 and row["eval/Length_std"] == 0.0  # BallRun's 100-step time limit
        assert row["normalized_eval/Normalized_Cost"] == pytest.approx(row["eval/Cost"] / 10.0)
        assert row["eval/Reward_std"] >= 0 and row["eval_star/Cost_std"] >= 0
    wandb_eval = [row for row in fake.logged if "eval/Reward" in row]
    assert len(wandb_eval) == 2 and all(RELEASE_KEYS <= set(row) for row in wandb_eval)


def test_std_is_the_population_std_over_episodes():
    """np.std as the release computes it (ddof 0), not the sample std."""
    scores = {"reward": 2.0, "cost": 1.0, "length": 3.0, "reward_std": 1.0, "cost_std": 0.5, "length_std": 0.0,
              "normalized_reward": 0.2, "normalized_cost": 0.1}
    entries = eval_entries("eval_star", scores)
    assert entries == {"eval_star/Reward": 2.0, "eval_star/Reward_std": 1.0, "eval_star/Cost": 1.0,
                       "eval_star/Cost_std": 0.5, "eval_star/Length": 3.0, "eval_star/Length_std": 0.0,
                       "normalized_eval_star/Normalized_Reward": 0.2, "normalized_eval_star/Normalized_Cost": 0.1}

    from lspc.evaluation import summarize

    class Env:
        unwrapped = types.SimpleNamespace(set_target_cost=lambda k: None, get_normalized_score=lambda r, c: (r, c))

    episodes = {"reward": np.array([1.0, 3.0]), "cost": np.array([0.0, 4.0]), "length": np.array([10, 20])}
    summary = summarize(Env(), episodes, 10.0)
    assert (summary["reward_std"], summary["cost_std"], summary["length_std"]) == (1.0, 2.0, 5.0)


def test_eval_lspc_puts_per_threshold_results_in_the_wandb_summary(trained, monkeypatch, capsys):
    run_dir, _ = trained
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    eval_lspc.main([run_dir, "--eval_episodes", "2", "--no_figures", "--vector", "lockstep"])
    with open(os.path.join(run_dir, "eval", "results.json")) as f:
        results = json.load(f)
    (init,) = fake.inits
    assert init["id"] == "fake-run-id" and init["resume"] == "allow" and init["dir"] == run_dir
    for policy in ("lspc-o", "lspc-s", "cvae"):
        entry = results["policies"][policy]
        assert fake.summary[f"eval_lspc/{policy}/Reward"] == entry["reward"]
        assert fake.summary[f"eval_lspc/{policy}/Cost_std"] == entry["cost_std"]
        for kappa in ("10", "20", "40"):
            scores = entry["thresholds"][kappa]
            assert fake.summary[f"eval_lspc/{policy}/cost-{kappa}/Normalized_Reward"] == scores["normalized_reward"]
            assert fake.summary[f"eval_lspc/{policy}/cost-{kappa}/Normalized_Cost"] == scores["normalized_cost"]
            assert fake.summary[f"eval_lspc/{policy}/cost-{kappa}/Normalized_Cost_std"] == scores["normalized_cost_std"]
    assert "the wandb summary of run fake-run-id" in capsys.readouterr().out
    fake.inits.clear()
    eval_lspc.main([run_dir, "--eval_episodes", "2", "--no_figures", "--vector", "lockstep",
                    "--wandb_mode", "disabled"])
    assert fake.inits == []


def test_readers_take_either_naming(trained, tmp_path):
    """plot_runs / eval_lspc's training curves read a run logged with the release's names and one
    logged before them (eval/reward, normalized_eval/reward) alike."""
    run_dir, _ = trained
    rows = [row for row in read_metrics(run_dir) if "eval/Reward" in row]
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(os.path.join(run_dir, "config.yaml"), old)  # what plot_runs recognizes a run directory by
    renames = {"eval/Reward": "eval/reward", "eval/Cost": "eval/cost", "eval/Length": "eval/length",
               "eval_star/Reward": "eval_star/reward", "eval_star/Cost": "eval_star/cost",
               "eval_star/Length": "eval_star/length",
               "normalized_eval/Normalized_Reward": "normalized_eval/reward",
               "normalized_eval/Normalized_Cost": "normalized_eval/cost",
               "normalized_eval_star/Normalized_Reward": "normalized_eval_star/reward",
               "normalized_eval_star/Normalized_Cost": "normalized_eval_star/cost"}
    with open(old / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({renames.get(key, key): value for key, value in row.items() if not key.endswith("_std")})
                    + "\n")
    new_curves, old_curves = read_curves(run_dir), read_curves(str(old))
    assert list(new_curves.steps) == list(old_curves.steps) == [10, 20]
    for policy in ("lspc-o", "lspc-s"):
        assert list(new_curves.normalized_reward[policy]) == list(old_curves.normalized_reward[policy])
        assert list(new_curves.cost[policy]) == list(old_curves.cost[policy])
    assert list(new_curves.cost["lspc-s"]) == [row["eval_star/Cost"] for row in rows]
    normalized = rows[0]["normalized_eval_star/Normalized_Reward"]
    assert eval_value(rows[0], "eval_star", "reward", normalized=True) == normalized
    plot_runs = load_script("plot_runs")
    plot_runs.main([run_dir, str(old), "--out", str(tmp_path / "runs.png")])
    assert os.path.getsize(tmp_path / "runs.png") > 0
