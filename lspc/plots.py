"""The figures: training curves (paper Figure 2), the action space at one state (Figure 3) and
the restriction trade-off (Figure 4). Matplotlib's object API with the Agg canvas: no pyplot,
no global backend, no display needed. Every PNG is written atomically."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lspc import LSPCError
from lspc.checkpoint import atomic_write_bytes
from lspc.run_logger import eval_value, is_eval_row, read_metrics

# metrics.jsonl prefixes of the two policies evaluated during training
CURVE_PREFIXES = {"lspc-o": "eval", "lspc-s": "eval_star"}
POLICY_COLORS = {"lspc-o": "tab:orange", "lspc-s": "tab:blue", "cvae": "tab:gray"}
DPI = 120


def save_png(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))


def _threshold_lines(ax: Axes, thresholds: Sequence[float], horizontal: bool = True) -> None:
    """Dashed cost thresholds, labelled outside the axes (right of a horizontal line, above a vertical one)."""
    for kappa in thresholds:
        (ax.axhline if horizontal else ax.axvline)(kappa, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
        where = (1.0, kappa) if horizontal else (kappa, 1.0)
        coords = ("axes fraction", "data") if horizontal else ("data", "axes fraction")
        ax.annotate(f"κ={kappa:g}", where, xycoords=coords, xytext=(2, 0) if horizontal else (0, 2),
                    textcoords="offset points", fontsize=7, va="center" if horizontal else "bottom",
                    ha="left" if horizontal else "center")


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------
@dataclass
class Curves:
    """One run's evaluations during training: steps, and per policy the normalized reward and
    the raw episode cost (mean over the evaluation episodes)."""
    steps: np.ndarray
    normalized_reward: Dict[str, np.ndarray]
    cost: Dict[str, np.ndarray]


def read_curves(run_dir: str) -> Curves:
    """The evaluation rows of a run's ``metrics.jsonl``."""
    rows = [row for row in read_metrics(run_dir) if is_eval_row(row)]  # the release's names or ours before them
    if not rows:
        raise LSPCError(f"{run_dir}/metrics.jsonl has no evaluation rows yet (written every eval_every steps)")
    return Curves(
        steps=np.array([row["step"] for row in rows]),
        normalized_reward={p: np.array([eval_value(row, prefix, "reward", normalized=True) for row in rows])
                           for p, prefix in CURVE_PREFIXES.items()},
        cost={p: np.array([eval_value(row, prefix, "cost") for row in rows]) for p, prefix in CURVE_PREFIXES.items()},
    )


@dataclass
class CurveBand:
    """Mean and population standard deviation over runs at the steps all of them evaluated."""
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    runs: int


def aggregate(curves: Sequence[Curves], metric: str, policy: str) -> CurveBand:
    """``metric`` is ``normalized_reward`` or ``cost``. Runs of different lengths are compared
    on their common steps only."""
    common = curves[0].steps
    for run in curves[1:]:
        common = np.intersect1d(common, run.steps)
    if len(common) == 0:
        raise LSPCError("the runs have no evaluation step in common; were they trained with the same eval_every?")
    values = np.stack([getattr(run, metric)[policy][np.searchsorted(run.steps, common)] for run in curves])
    return CurveBand(common, values.mean(axis=0), values.std(axis=0), len(curves))


def plot_training_curves(groups: Dict[str, List[Curves]], thresholds: Dict[str, Sequence[float]], path: str,
                         policies: Sequence[str] = tuple(CURVE_PREFIXES)) -> None:
    """One column per group (a task, or a task and config variant): normalized reward on top,
    episode cost below with the task's thresholds dashed. Several runs in a group are drawn as
    their mean with a +-1 std band."""
    fig = Figure(figsize=(4.2 * len(groups), 5.6), layout="constrained")
    axes = fig.subplots(2, len(groups), squeeze=False, sharex="col")
    for col, (label, curves) in enumerate(groups.items()):
        top, bottom = axes[0, col], axes[1, col]
        for policy in policies:
            for ax, metric in ((top, "normalized_reward"), (bottom, "cost")):
                band = aggregate(curves, metric, policy)
                color = POLICY_COLORS[policy]
                ax.plot(band.steps, band.mean, color=color, marker="o", markersize=3, label=policy.upper())
                if band.runs > 1:
                    ax.fill_between(band.steps, band.mean - band.std, band.mean + band.std, color=color, alpha=0.2)
        _threshold_lines(bottom, thresholds[label])
        runs = len(curves)
        top.set_title(f"{label}\n" + ("1 run" if runs == 1 else f"mean ± std over {runs} runs"), fontsize=9)
        top.set_ylabel("normalized reward")
        bottom.set_ylabel("episode cost")
        bottom.set_xlabel("gradient steps")
        top.legend(fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# Action space at one state
# ---------------------------------------------------------------------------------------------
@dataclass
class ActionSnapshot:
    """Everything Figure 3 shows for one state of a 2-D action task."""
    title: str
    low: np.ndarray  # (2,) action bounds
    high: np.ndarray
    q_reward: np.ndarray  # (G, G) min of the twin reward Q heads on the action grid, [row = a1, col = a0]
    q_cost: np.ndarray  # (G, G) max of the twin cost Q heads
    cvae: np.ndarray  # (N, 2) actions of the unrestricted CVAE policy
    lspc_s: np.ndarray  # (N, 2) LSPC-S actions (the restricted latent box, decoded)
    lspc_o: np.ndarray  # (N, 2) LSPC-O samples
    lspc_o_mean: np.ndarray  # (2,) LSPC-O with z = eps_O * tanh(mean)


def _outline(ax: Axes, points: np.ndarray, color: str, label: str) -> None:
    """The convex hull of the decoded box samples: where LSPC-S can act in this state."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # all samples (nearly) on one point or line
        return
    closed = np.vstack([hull, hull[:1]])
    ax.plot(closed[:, 0], closed[:, 1], color=color, linewidth=1.5, label=label)


def plot_action_space(snapshot: ActionSnapshot, path: str) -> None:
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    extent = (snapshot.low[0], snapshot.high[0], snapshot.low[1], snapshot.high[1])
    fields = ((snapshot.q_reward, "Q_r(s, a)  (min of twin heads)", "viridis"),
              (snapshot.q_cost, "Q_c(s, a)  (max of twin heads)", "magma_r"))
    for ax, (field, name, cmap) in zip(axes, fields):
        image = ax.imshow(field, origin="lower", extent=extent, cmap=cmap, aspect="auto", interpolation="bilinear")
        fig.colorbar(image, ax=ax, label=name)
        ax.scatter(*snapshot.cvae.T, s=6, color="white", edgecolors="black", linewidths=0.3, alpha=0.7,
                   label="CVAE policy, z ~ N(0, I)")
        ax.scatter(*snapshot.lspc_s.T, s=6, color="tab:cyan", alpha=0.7, label="LSPC-S samples")
        _outline(ax, snapshot.lspc_s, "tab:cyan", "LSPC-S region (decoded latent box)")
        ax.scatter(*snapshot.lspc_o.T, s=10, color="tab:orange", edgecolors="black", linewidths=0.3,
                   label="LSPC-O samples")
        ax.scatter(*snapshot.lspc_o_mean, s=220, marker="*", color="red", edgecolors="black", linewidths=0.8,
                   label="LSPC-O, z = eps_O tanh(mean)", zorder=5)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel("action[0]")
        ax.set_ylabel("action[1]")
    axes[0].legend(fontsize=7, loc="lower left", framealpha=0.85)
    fig.suptitle(snapshot.title, fontsize=10)
    save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# Restriction sweep
# ---------------------------------------------------------------------------------------------
def plot_tradeoff(results: dict, path: str) -> None:
    """Normalized reward and episode cost against the restriction eps, and reward against cost
    with every point labelled by its eps (``results['sweep']`` from eval_lspc.py). Error bars:
    +-1 std over the evaluation episodes; the hollow marker is the value the run was trained with."""
    fig = Figure(figsize=(13.5, 4.2), layout="constrained")
    by_eps_reward, by_eps_cost, tradeoff = fig.subplots(1, 3)
    some_threshold = f"{results['thresholds'][0]:g}"  # normalized reward does not depend on the threshold
    for policy, sweep in results["sweep"].items():
        points = sweep["points"]
        eps = np.array([p["eps"] for p in points])
        reward = np.array([p["thresholds"][some_threshold]["normalized_reward"] for p in points])
        reward_std = np.array([p["thresholds"][some_threshold]["normalized_reward_std"] for p in points])
        cost, cost_std = np.array([p["cost"] for p in points]), np.array([p["cost_std"] for p in points])
        color = POLICY_COLORS[policy]
        label = f"{policy.upper()} (trained eps {sweep['trained_eps']:g})"
        by_eps_reward.errorbar(eps, reward, reward_std, color=color, marker="o", capsize=3, label=label)
        by_eps_cost.errorbar(eps, cost, cost_std, color=color, marker="o", capsize=3, label=label)
        tradeoff.errorbar(cost, reward, reward_std, cost_std, color=color, marker="o", capsize=2, label=label)
        for x, y, e in zip(cost, reward, eps):
            tradeoff.annotate(f"{e:g}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
        trained = [i for i, e in enumerate(eps) if np.isclose(e, sweep["trained_eps"])]
        for ax, xs, ys in ((by_eps_reward, eps, reward), (by_eps_cost, eps, cost), (tradeoff, cost, reward)):
            ax.scatter(xs[trained], ys[trained], s=160, facecolors="none", edgecolors=color, linewidths=1.5, zorder=5)
    _threshold_lines(by_eps_cost, results["thresholds"])
    _threshold_lines(tradeoff, results["thresholds"], horizontal=False)
    by_eps_reward.set(xlabel="restriction eps", ylabel="normalized reward")
    by_eps_cost.set(xlabel="restriction eps", ylabel="episode cost")
    tradeoff.set(xlabel="episode cost", ylabel="normalized reward")
    for ax, title in ((by_eps_reward, "reward vs restriction"), (by_eps_cost, "cost vs restriction"),
                      (tradeoff, "trade-off (point labels: eps)")):
        ax.set_title(title, pad=14)  # room for the threshold labels above the trade-off panel
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{results['task']}: restriction sweep, checkpoint {results['checkpoint']} (step {results['step']}), "
                 f"{results['episodes']} episodes", fontsize=10)
    save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# The results table as the papers draw it
# ---------------------------------------------------------------------------------------------
def plot_results_table(tasks: Sequence[str], methods: Sequence[str], cells: Sequence[Dict[str, tuple]],
                       best: Sequence[str | None], path: str, title: str = "") -> None:
    """One row per task, a (reward, cost) column pair per method: safe cells (normalized cost <= 1)
    in bold black, unsafe ones grey, the best safe method of each row on a highlighted background."""
    fig = Figure(figsize=(1.0 + 1.1 * len(methods) + 0.08 * max(len(t) for t in tasks), 0.4 + 0.25 * (len(tasks) + 1)))
    ax = fig.add_subplot()
    ax.set_axis_off()
    columns = ["task"] + [label for label in methods]
    text = [[task] + [("{:.2f} / {:.2f}".format(*row[m]) if m in row else "–") for m in methods]
            for task, row in zip(tasks, cells)]
    table = ax.table(cellText=text, colLabels=columns, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(columns))))  # the task names are wider than the cells
    table.scale(1.0, 1.35)
    for (r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if r == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#eeeeee")
            continue
        if c == 0:
            cell.set_text_props(ha="left")
            cell._loc = "left"
            continue
        method, row = methods[c - 1], cells[r - 1]
        if method not in row:
            continue
        safe = row[method][1] <= 1.0
        cell.set_text_props(weight="bold" if safe else "normal", color="black" if safe else "#9a9a9a")
        if method == best[r - 1]:
            cell.set_facecolor("#cfe8cf")
    ax.set_title(title or "normalized reward / cost; bold: safe (cost <= 1), grey: unsafe, green: best safe",
                 fontsize=8)
    save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# Zero-shot transfer (paper Figure 12) and the studies' value plots
# ---------------------------------------------------------------------------------------------
def _color(policy: str, index: int) -> str:
    return POLICY_COLORS.get(policy, f"C{index}")  # a baseline's one policy is not in POLICY_COLORS


def plot_transfer(results: Sequence[dict], trained_task: str, path: str) -> None:
    """One group of bars per evaluated task (eval_lspc.py results), one bar per policy: normalized
    reward on top, episode cost below with the thresholds as lines; error bars +-1 std over episodes."""
    tasks = [r["task"] for r in results]
    policies = list(results[0]["policies"])
    width = 0.8 / len(policies)
    fig = Figure(figsize=(max(6.0, 1.1 * len(tasks) + 2), 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(tasks))
    for i, policy in enumerate(policies):
        offset = x + (i - (len(policies) - 1) / 2) * width
        first = [f"{r['thresholds'][0]:g}" for r in results]  # normalized reward does not depend on the threshold
        scores = [r["policies"][policy] for r in results]
        reward = [s["thresholds"][k]["normalized_reward"] for s, k in zip(scores, first)]
        reward_std = [s["thresholds"][k]["normalized_reward_std"] for s, k in zip(scores, first)]
        color = _color(policy, i)
        top.bar(offset, reward, width, yerr=reward_std, color=color, capsize=2, label=policy.upper())
        bottom.bar(offset, [s["cost"] for s in scores], width, yerr=[s["cost_std"] for s in scores], color=color,
                   capsize=2, label=policy.upper())
    _threshold_lines(bottom, results[0]["thresholds"])
    names = [task.removeprefix("Offline").removesuffix("-v0") + (" (trained)" if task == trained_task else "")
             for task in tasks]
    bottom.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    top.set_ylabel("normalized reward")
    bottom.set_ylabel("episode cost")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, axis="y")
    top.legend(fontsize=8)
    r = results[0]
    top.set_title(f"zero-shot transfer of a run trained on {trained_task}: checkpoint {r['checkpoint']} "
                  f"(step {r['step']}), {r['episodes']} episodes per task", fontsize=9)
    save_png(fig, path)


def plot_against_value(points: Dict[str, Dict[float, List[Tuple[float, float]]]], xlabel: str, title: str,
                       path: str) -> None:
    """Normalized reward (left) and normalized cost (right, the threshold at 1) against a study's
    value, per policy the mean and +-1 std over seeds. ``points[policy][value]`` lists one
    (normalized reward, normalized cost) per seed."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, (policy, by_value) in enumerate(points.items()):
        xs = np.array(sorted(by_value))
        per_seed = [np.array(by_value[x]) for x in xs]  # (seeds, 2)
        for column, ax in enumerate(axes):
            mean = np.array([v[:, column].mean() for v in per_seed])
            std = np.array([v[:, column].std() for v in per_seed])
            color = _color(policy, i)
            ax.plot(xs, mean, color=color, marker="o", label=policy.upper())
            ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2)
    axes[1].axhline(1.0, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
    seeds = max(len(v) for by_value in points.values() for v in by_value.values())
    for ax, ylabel in zip(axes, ("normalized reward", "normalized cost (1 = threshold)")):
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_xticks(sorted({x for by_value in points.values() for x in by_value}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}; mean ± std over {seeds} seed{'s' if seeds > 1 else ''}", fontsize=10)
    save_png(fig, path)
