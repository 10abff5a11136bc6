"""Time per training step of every method at its default batch size, in one process.

    python scripts/bench_methods.py --dataset_path ~/.lspc/datasets/OfflineBallRun-v0.hdf5
        [--task OfflineBallRun-v0] [--methods lspc bc-all ...] [--steps 20] [--warmup 3]
        [--threads 1] [--device cpu|cuda]

Each method is built by its own training code (``LSPCMethod`` / ``BaselineMethod``: its data,
seeded sampler and agent, OSRL's or the spec's default hyperparameters and batch size) on the
given dataset, then ``--steps`` steps of ``train(sampler.sample(batch))`` are timed after
``--warmup`` untimed ones, with the device synchronized before reading the clock. Prints one JSON
line per method (wall and process CPU milliseconds per step) and a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from lspc.baselines import ALGOS, BaselineConfig, BaselineMethod, default_hparams, default_schedule  # noqa: E402
from lspc.envs import make_env  # noqa: E402
from lspc.training import seed_all  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig  # noqa: E402
from train_lspc_iql import LSPCMethod  # noqa: E402

METHODS = ("lspc", *ALGOS)


def method_for(name: str, task: str, dataset_path: str, device: str):
    if name == "lspc":
        return LSPCMethod(TrainConfig(task=task, **TASK_OVERRIDES[task], dataset_path=dataset_path, device=device))
    return BaselineMethod(BaselineConfig(algo=name, task=task, episode_len=TASK_OVERRIDES[task]["episode_len"],
                                         dataset_path=dataset_path, device=device,
                                         hparams=default_hparams(name, task), **default_schedule(name, task)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, help="a DSRL-layout hdf5 file of --task")
    parser.add_argument("--task", default="OfflineBallRun-v0", help="the DSRL task (default: OfflineBallRun-v0)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to time (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per method (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = []
    for name in args.methods:
        method = method_for(name, args.task, args.dataset_path, args.device)
        env = make_env(args.task)
        data = method.load_data(env)
        seed_all(0)
        sampler, agent = method.make_sampler(data, device), method.make_agent(env, device, data)
        batch_size = method.cfg.batch_size
        for _ in range(args.warmup):
            agent.train(sampler.sample(batch_size))
        synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            agent.train(sampler.sample(batch_size))
        synchronize()
        row = {"method": name, "batch_size": batch_size, "steps": args.steps, "threads": torch.get_num_threads(),
               "device": args.device, "wall_ms_per_step": 1e3 * (time.perf_counter() - wall) / args.steps,
               "cpu_ms_per_step": 1e3 * (time.process_time() - cpu) / args.steps}
        print(json.dumps(row), flush=True)
        rows.append(row)
        env.close()
    print("\n| method | batch | wall ms / step | CPU ms / step |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['batch_size']} | {row['wall_ms_per_step']:.1f} | {row['cpu_ms_per_step']:.1f} |")


if __name__ == "__main__":
    main()
