"""A dataset card: JSON statistics and a reward-vs-cost scatter of the trajectories (paper Fig. 10)."""
from __future__ import annotations

import json
from typing import Dict

import numpy as np

from lspc.checkpoint import atomic_write_bytes
from lspc.data.collect import episode_returns
from lspc.data.dataset import check_file_keys
from lspc.envs import cost_limits, dsrl_reference


STATISTICS = ("task", "episodes", "transitions", "reward_return", "cost_return", "fraction_cost_zero",
              "fraction_cost_at_most", "fraction_cost_above", "reward_range_vs_dsrl", "dsrl_reference")


def card_statistics(task: str, data: Dict[str, np.ndarray]) -> Dict[str, object]:
    returns = episode_returns(data)
    reward, cost = returns["reward"], returns["cost"]
    reference, highest = dsrl_reference(task), max(cost_limits(task))
    return {
        "task": task,
        "episodes": int(len(reward)),
        "transitions": int(len(data["rewards"])),
        "reward_return": {"min": float(reward.min()), "mean": float(reward.mean()), "max": float(reward.max())},
        "cost_return": {"min": float(cost.min()), "mean": float(cost.mean()), "max": float(cost.max())},
        "fraction_cost_zero": float((cost == 0).mean()),
        "fraction_cost_at_most": {f"{kappa:g}": float((cost <= kappa).mean()) for kappa in cost_limits(task)},
        "fraction_cost_above": {f"{highest:g}": float((cost > highest).mean())},
        # the share of DSRL's reference reward range that the trajectories' range covers (1.0: all of it);
        # returns beyond DSRL's range (e.g. below its minimum) do not count
        "reward_range_vs_dsrl": float(max(0.0, min(reward.max(), reference["max_episode_reward"])
                                          - max(reward.min(), reference["min_episode_reward"]))
                                      / (reference["max_episode_reward"] - reference["min_episode_reward"])),
        "dsrl_reference": reference,
    }


def plot_frontier(task: str, data: Dict[str, np.ndarray], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = episode_returns(data)
    reference = dsrl_reference(task)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(returns["cost"], returns["reward"], s=8, alpha=0.6, color="tab:blue", label="trajectories")
    for kappa, style in zip(cost_limits(task), ("--", "-.", ":")):
        ax.axvline(kappa, color="tab:red", linestyle=style, linewidth=1, label=f"threshold {kappa:g}")
    ax.axhspan(reference["min_episode_reward"], reference["max_episode_reward"], color="0.9", zorder=0,
               label="DSRL reward range")
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode reward")
    ax.set_title(f"{task}: {len(returns['cost'])} trajectories")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_card(dataset_path: str, task: str, data: Dict[str, np.ndarray], extra: Dict[str, object]) -> str:
    """Write ``<dataset>.card.json`` and ``<dataset>.card.png`` next to the dataset; returns the stem."""
    stem = dataset_path.removesuffix(".hdf5")
    stats = {**card_statistics(task, data), **extra}
    atomic_write_bytes(f"{stem}.card.json", lambda f: f.write(json.dumps(stats, indent=2).encode()))
    plot_frontier(task, data, f"{stem}.card.png")
    return stem


def refresh_card(dataset_path: str) -> str:
    """Recompute the statistics and scatter of an existing card from its dataset file (after the card's
    format changed), keeping what the collection recorded (provenance, times); returns the stem."""
    import h5py

    stem = dataset_path.removesuffix(".hdf5")
    check_file_keys(dataset_path)
    with open(f"{stem}.card.json", encoding="utf-8") as f:
        old = json.load(f)
    with h5py.File(dataset_path, "r") as f:
        data = {key: f[key][()] for key in ("rewards", "costs", "terminals", "timeouts")}
    recorded = {k: v for k, v in old.items() if k not in STATISTICS and not k.startswith("fraction_cost_above")}
    return write_card(dataset_path, old["task"], data, recorded)
