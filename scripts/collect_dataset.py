"""Collect a DSRL-layout dataset from the real simulator, with its dataset card.

    python scripts/collect_dataset.py --task OfflineCarCircle-v0 --episodes 600 --out data.hdf5 [--seed 0] [--workers 2]
    python scripts/collect_dataset.py --task OfflineDroneRun-v0 --behaviour fsrl --episodes 3000 --out drone.hdf5 \\
        [--cost_limits 5 20 80] [--agent_steps 200000 | --agent_steps 100000 200000 400000] [--action_noise 0.3]

Writes data.hdf5 (loadable by dsrl's get_dataset(h5path=...) and by train_lspc_iql.py
--dataset_path), data.card.json (statistics) and data.card.png (reward-vs-cost scatter).

Behaviours: ``controller`` (the default where one exists: the four Ball/Car tasks) drives the
simulator with lspc.data.collect's parameterized controllers. ``fsrl`` (the default elsewhere; needs
`make install-collect`) trains FSRL PPO- or SAC-Lagrangian agents at several cost limits, as DSRL did, or
reuses them from --agent_cache, rolls out their checkpoints with action noise, drops episodes
above the cost cap and thins the (cost, reward) plane with DSRL's grid filter. Its episodes are
saved in chunks beside the output (data.chunks/), so an interrupted collection continues there.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.data.behaviour import ALGORITHMS, COLLECTION_DEFAULTS, collection_setting  # noqa: E402
from lspc.data.collect import CONTROLLERS, collect, default_cost_cap, process_pool, write_dsrl_hdf5  # noqa: E402
from lspc.data.dataset_card import write_card  # noqa: E402
from lspc.envs import check_task  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="the DSRL task to collect")
    parser.add_argument("--behaviour", choices=("controller", "fsrl"), default=None,
                        help="default: controller for the Ball/Car tasks, fsrl otherwise")
    parser.add_argument("--episodes", type=int, default=None,
                        help="controller: episodes to keep (after the cost filter); "
                             "fsrl: episodes to roll out (before the cost cap and grid filter) "
                             "(default: 600, or the task's entry in lspc.data.behaviour.TASK_COLLECTION)")
    parser.add_argument("--out", required=True, help="output .hdf5 file")
    parser.add_argument("--seed", type=int, default=0, help="seeds the episodes and the behaviour noise (default: 0)")
    parser.add_argument("--max_cost", type=float, default=None,
                        help="drop episodes costing more (default: DSRL's max episode cost, at least 2x the top threshold)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="simulator processes (fsrl: also agents trained at once)")
    fsrl = parser.add_argument_group("fsrl behaviour")
    fsrl.add_argument("--agent_algorithm", choices=tuple(ALGORITHMS), default=None,
                      help="FSRL agent: PPO-Lagrangian or SAC-Lagrangian (default: ppol, or the task's "
                           "TASK_COLLECTION entry)")
    fsrl.add_argument("--cost_limits", type=float, nargs="+", default=None,
                      help="one agent per cost limit (default: the task's entry in lspc.data.behaviour.TASK_COLLECTION, "
                           "else half the lowest threshold, the middle one and twice the highest)")
    fsrl.add_argument("--agent_steps", type=int, nargs="+", default=None,
                      help="training steps per agent: one for all, or one per cost limit "
                           "(default: 200000, or the task's TASK_COLLECTION entry)")
    fsrl.add_argument("--agent_epoch_steps", type=int, default=None,
                      help="training steps per checkpoint (default: 10000, or the task's TASK_COLLECTION entry)")
    fsrl.add_argument("--agent_episodes_per_collect", type=int, default=None,
                      help="episodes per policy update (default: 20, or the task's TASK_COLLECTION entry)")
    fsrl.add_argument("--agent_hidden_sizes", type=int, nargs="+", default=[128, 128],
                      help="the agents' hidden layer widths (default: 128 128)")
    fsrl.add_argument("--agent_seed", type=int, default=0, help="seeds the agents' training (default: 0)")
    fsrl.add_argument("--agent_cache", default=None, help="trained agents (default: ~/.lspc/agents)")
    fsrl.add_argument("--action_noise", type=float, default=0.3,
                      help="per episode, Gaussian action noise of a scale drawn from [0, this]")
    fsrl.add_argument("--max_per_bin", type=int, default=10, help="grid filter: episodes kept per (cost, reward) cell")
    fsrl.add_argument("--cost_bins", type=int, default=60, help="grid filter: cells along the cost return")
    fsrl.add_argument("--reward_bins", type=int, default=50, help="grid filter: cells along the reward return")
    fsrl.add_argument("--chunk", type=int, default=20, help="episodes per chunk saved on disk")
    args = parser.parse_args()
    for name in COLLECTION_DEFAULTS:  # a flag not given takes the task's default
        if getattr(args, name) is None:
            setattr(args, name, collection_setting(args.task, name))
    if isinstance(args.agent_steps, (int, tuple)):  # a TASK_COLLECTION entry: one budget, or one per agent
        args.agent_steps = np.atleast_1d(args.agent_steps).tolist()
    return args


def chunks_dir(out: str) -> str:
    """Where an fsrl collection saves its episodes until the file is written: beside it."""
    return f"{out.removesuffix('.hdf5')}.chunks"


def collect_controller(args: argparse.Namespace, cost_cap: float) -> tuple:
    data = collect(args.task, args.episodes, args.seed, args.workers, cost_cap)
    provenance = {"task": args.task, "seed": args.seed, "behaviour": CONTROLLERS[args.task].__name__,
                  "cost_filter": f"episode cost <= {cost_cap:g}"}
    return data, provenance, {"episodes_attempted": int(data["episodes_attempted"])}, ()


def collect_with_agents(args: argparse.Namespace, cost_cap: float) -> tuple:
    from lspc.data import behaviour

    # checked before any training, which can take hours
    for name in ("episodes", "agent_epoch_steps", "agent_episodes_per_collect", "max_per_bin", "cost_bins",
                 "reward_bins", "chunk"):
        if getattr(args, name) <= 0:
            raise LSPCError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.action_noise < 0 or min(args.cost_limits or [0]) < 0:
        raise LSPCError(f"--action_noise and --cost_limits must be non-negative, got {args.action_noise:g} "
                        f"and {args.cost_limits}")
    limits = tuple(args.cost_limits) if args.cost_limits else behaviour.default_agent_cost_limits(args.task)
    steps = args.agent_steps * len(limits) if len(args.agent_steps) == 1 else args.agent_steps
    if len(steps) != len(limits) or min(steps) <= 0:
        given = " ".join(map(str, args.agent_steps))
        raise LSPCError(f"--agent_steps takes one positive budget for every agent or one per cost limit "
                        f"({len(limits)}: {' '.join(f'{c:g}' for c in limits)}), got {given}")
    behaviour.import_fsrl()
    config = behaviour.AgentConfig(algorithm=args.agent_algorithm, epoch_steps=args.agent_epoch_steps,
                                   episode_per_collect=args.agent_episodes_per_collect,
                                   hidden_sizes=tuple(args.agent_hidden_sizes), seed=args.agent_seed)
    configs = [dataclasses.replace(config, steps=n) for n in steps]
    train = functools.partial(behaviour.train_agent, args.task, cache_dir=args.agent_cache or behaviour.DEFAULT_CACHE)
    start = time.perf_counter()
    if args.workers > 1 and len(limits) > 1:
        with process_pool(min(args.workers, len(limits))) as pool:
            agents = list(pool.map(train, limits, configs))
    else:
        agents = list(map(train, limits, configs))
    training_seconds = time.perf_counter() - start

    data, provenance = behaviour.collect_dataset(
        args.task, agents, config, args.episodes, args.seed, chunks_dir(args.out), cost_cap,
        args.action_noise, args.max_per_bin, args.cost_bins, args.reward_bins, args.workers, args.chunk)
    card = {"episodes_attempted": int(data["episodes_attempted"]), "training_seconds": round(training_seconds, 1),
            "agents_trained_steps": int(sum(a.trained_steps for a in agents)),
            # what the agents cost, whichever runs trained them: with collection_seconds, the dataset's price
            "agent_training_seconds": round(sum(a.training_seconds for a in agents), 1),
            "agents": json.loads(provenance["agents"])}
    return data, provenance, card, behaviour.PACKAGES  # packages: versioned in the file


def main() -> None:
    args = parse_args()
    try:
        check_task(args.task)
        behaviour = args.behaviour or ("controller" if args.task in CONTROLLERS else "fsrl")
        if behaviour == "controller" and args.task not in CONTROLLERS:
            raise LSPCError(f"no behaviour controller for {args.task!r}; use --behaviour fsrl "
                            f"(controllers: {', '.join(sorted(CONTROLLERS))})")
        if not args.out.endswith(".hdf5"):
            raise LSPCError(f"--out must end in .hdf5, got {args.out!r}")
        if args.workers <= 0:
            raise LSPCError(f"--workers must be positive, got {args.workers}")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        start = time.perf_counter()
        cost_cap = default_cost_cap(args.task) if args.max_cost is None else args.max_cost
        run = collect_controller if behaviour == "controller" else collect_with_agents
        data, provenance, card_extra, packages = run(args, cost_cap)
        seconds = time.perf_counter() - start
        write_dsrl_hdf5(args.out, data, provenance, packages)
        scalars = {k: v for k, v in provenance.items() if not isinstance(v, np.ndarray)}  # the card is JSON
        stem = write_card(args.out, args.task, data, {**scalars, **card_extra, "collection_seconds": round(seconds, 1),
                                                       "workers": args.workers})
        if behaviour == "fsrl":
            shutil.rmtree(chunks_dir(args.out), ignore_errors=True)  # the episodes are in the file now
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (trained agents and saved episodes are kept)",
              file=sys.stderr)
        sys.exit(130)
    with open(f"{stem}.card.json") as f:
        card = json.load(f)
    print(json.dumps({k: card[k] for k in ("task", "episodes", "transitions", "reward_return", "cost_return",
                                           "fraction_cost_at_most", "collection_seconds")}))
    print(f"wrote {args.out}, {stem}.card.json, {stem}.card.png")


if __name__ == "__main__":
    main()
