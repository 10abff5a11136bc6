"""Time and host synchronizations per training step of every method at its default batch size.

    python tools/bench/bench_methods.py --dataset_path ~/.lspc/datasets/OfflineBallRun-v0.hdf5
        [--task OfflineBallRun-v0] [--methods lspc bc-all ...] [--steps 20] [--warmup 3]
        [--sync_steps 3] [--threads 1] [--device cpu|cuda] [--batch_size N] [--json FILE]

Each method is built by its own training code (``LSPCMethod`` / ``BaselineMethod``: its data,
seeded sampler and agent, OSRL's or the paper's default hyperparameters and batch size) on the
given dataset, then ``--steps`` steps of ``train(sampler.sample(batch))`` are timed after
``--warmup`` untimed ones, with the device synchronized before reading the clock.

Host syncs per step (the GPU waits for the host, or the host for the GPU: ``.item()``, boolean
masks, device-to-host copies...) are counted over ``--sync_steps`` steps, then again right after the
agent went through a checkpoint (``save_checkpoint`` / ``load_checkpoint`` / ``load_state_dict``,
as a resumed run does). On ``--device cuda`` they are CUDA's own count
(``torch.cuda.set_sync_debug_mode``); on the CPU they are counted on a virtual GPU
(``lspc.device_emulation``). Prints one JSON line per method and a markdown table.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository

import torch  # noqa: E402
import yaml  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.methods.baselines import ALGOS, BaselineConfig, BaselineMethod, default_hparams, default_schedule  # noqa: E402
from lspc.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from lspc.device_emulation import VirtualCuda, active  # noqa: E402
from lspc.envs import dataset_env  # noqa: E402
from lspc.training import Method, seed_all  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig  # noqa: E402
from train_lspc_iql import LSPCMethod  # noqa: E402

METHODS = ("lspc", *ALGOS)
SYNC_WARNING = "called a synchronizing CUDA operation"


def method_for(name: str, task: str, dataset_path: str, device: str, batch_size: Optional[int] = None,
               hparams: Optional[Dict[str, Any]] = None, **fields: Any) -> Method:
    """``name``'s training code with its defaults for ``task``; ``batch_size``, ``hparams`` (a
    baseline's) and config ``fields`` override them."""
    if name == "lspc":
        cfg = TrainConfig(task=task, **{**TASK_OVERRIDES[task], **fields}, dataset_path=dataset_path, device=device)
        return LSPCMethod(cfg if batch_size is None else dataclasses.replace(cfg, batch_size=batch_size))
    schedule = dict(default_schedule(name, task))
    hparams = dict(hparams or {})
    if batch_size is not None:
        schedule["batch_size"] = batch_size
        if name == "fisor":  # its critics' batch is a slice of the batch
            hparams.setdefault("critic_batch_size", min(batch_size, default_hparams(name, task)["critic_batch_size"]))
    return BaselineMethod(BaselineConfig(algo=name, task=task, episode_len=TASK_OVERRIDES[task]["episode_len"],
                                         dataset_path=dataset_path, device=device,
                                         hparams={**default_hparams(name, task), **hparams},
                                         **{**schedule, **fields}))


def build(method: Method):
    """``method``'s env (its spaces and data, no simulator), device, seeded sampler and agent, as the training
    loop makes them with evaluation off."""
    env = dataset_env(method.cfg.task)
    data = method.load_data(env)
    seed_all(0)
    device = torch.device(method.cfg.device)
    return env, device, method.make_sampler(data, device), method.make_agent(env, device, data)


def _sync_counter(device: torch.device) -> Callable[[Callable[[], Any]], List[str]]:
    """``count(fn)``: run ``fn`` and return where each host sync it made came from."""
    if device.type == "cuda" and _real_cuda():
        def count(fn):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    fn()
                    torch.cuda.synchronize(device)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            return [f"{w.filename}:{w.lineno}" for w in caught if SYNC_WARNING in str(w.message)]
        return count

    def count(fn):
        emulation = active()
        before = len(emulation.sync_sites)
        fn()
        return [f"{site.kind} at {site.where}" + (f" (in {site.within_torch})" if site.within_torch else "")
                for site in emulation.sync_sites[before:]]
    return count


def _real_cuda() -> bool:
    return active() is None and torch.cuda.is_available()


def host_syncs(method: Method, steps: int = 3, warmup: int = 2) -> Dict[str, Any]:
    """Host syncs per training step of ``method`` on its (CUDA) device, before and right after a
    checkpoint round trip; ``sites`` counts where they came from."""
    env, device, sampler, agent = build(method)
    count = _sync_counter(device)
    batch_size = method.cfg.batch_size
    try:
        for _ in range(warmup):
            agent.train(sampler.sample(batch_size))
        before = [count(lambda: agent.train(sampler.sample(batch_size))) for _ in range(steps)]
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "model.pt")
            save_checkpoint(path, {"model": agent.state_dict()})
            resumed = method.make_agent(env, device)
            resumed.load_state_dict(load_checkpoint(path)["model"])
        after = [count(lambda: resumed.train(sampler.sample(batch_size))) for _ in range(steps)]
    finally:
        env.close()
    return {"syncs_per_step": sum(map(len, before)) / steps, "after_resume": sum(map(len, after)) / steps,
            "sites": dict(collections.Counter(site for step in before + after for site in step))}


def time_steps(method: Method, steps: int, warmup: int) -> Dict[str, Any]:
    env, device, sampler, agent = build(method)
    batch_size = method.cfg.batch_size

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        for _ in range(warmup):
            agent.train(sampler.sample(batch_size))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            agent.train(sampler.sample(batch_size))
        synchronize()
        row = {"wall_ms_per_step": 1e3 * (time.perf_counter() - wall) / steps,
               "cpu_ms_per_step": 1e3 * (time.process_time() - cpu) / steps}
        if device.type == "cuda":
            row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        return row
    finally:
        env.close()


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, help="a DSRL-layout hdf5 file of --task")
    parser.add_argument("--task", default="OfflineBallRun-v0", help="the task (default: OfflineBallRun-v0)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="default: all ten")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--sync_steps", type=int, default=3,
                        help="steps whose host syncs are counted, before and after a checkpoint (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="one batch size for every method instead of each one's default")
    parser.add_argument("--hparam", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="one baseline hyperparameter (a YAML value), e.g. cdt.augment_percent=0; repeatable")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--syncs_csv", default=None,
                        help="also write the host-sync columns to this CSV file (with this command in its header)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    overrides: Dict[str, Dict[str, Any]] = collections.defaultdict(dict)
    for item in args.hparam:
        target, sep, value = item.partition("=")
        method_name, dot, hparam = target.partition(".")
        if not (sep and dot and method_name in ALGOS):
            raise LSPCError(f"--hparam takes METHOD.NAME=VALUE with METHOD one of {', '.join(ALGOS)}, got {item!r}")
        overrides[method_name][hparam] = yaml.safe_load(value)
    rows = []
    for name in args.methods:
        def build(device: str) -> Method:
            return method_for(name, args.task, args.dataset_path, device, args.batch_size, overrides.get(name))

        row = {"method": name, "steps": args.steps, "threads": torch.get_num_threads(), "device": args.device}
        method = build(args.device)
        row.update(batch_size=method.cfg.batch_size, **time_steps(method, args.steps, args.warmup))
        if on_gpu:
            syncs = host_syncs(build(args.device), args.sync_steps)
        else:
            with VirtualCuda():
                syncs = host_syncs(build("cuda"), args.sync_steps)
        row.update(syncs, syncs_counted_by="CUDA sync debug mode" if on_gpu else "virtual GPU (lspc.device_emulation)")
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| method | batch | wall ms / step | CPU ms / step | host syncs / step | after a resume |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['batch_size']} | {row['wall_ms_per_step']:.1f} | {row['cpu_ms_per_step']:.1f} "
              f"| {row['syncs_per_step']:g} | {row['after_resume']:g} |")
    print(f"\nhost syncs counted by {rows[0]['syncs_counted_by']}" if rows else "")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.syncs_csv:
        write_syncs_csv(args.syncs_csv, rows, argv if argv is not None else sys.argv[1:])
    return rows


def write_syncs_csv(path: str, rows: List[Dict[str, Any]], argv: List[str]) -> None:
    """The host-sync columns, with the command that measured them (the docs insert this file)."""
    with open(path, "w", newline="") as f:
        f.write(f"# command: python tools/bench/bench_methods.py {' '.join(argv)}\n")
        f.write(f"# what: host syncs per training step at each method's default batch size, counted by "
                f"{rows[0]['syncs_counted_by']}, before and right after a checkpoint round trip\n")
        writer = csv.writer(f)
        writer.writerow(["method", "batch", "host syncs / step", "after a resume"])
        for row in rows:
            writer.writerow([row["method"], row["batch_size"], f"{row['syncs_per_step']:g}", f"{row['after_resume']:g}"])


if __name__ == "__main__":
    try:
        main()
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
