"""Training-step throughput: our trainer against a plain eager step of the same math.

    python tools/bench/bench_train.py [--device cpu|cuda] [--task OfflineBallRun-v0] [--rounds 5] [--steps 50]

(a) ``LSPC.train`` as the training loop calls it (metrics summed on the device, read rarely);
(b) the same losses written straightforwardly here: separate Q networks, one Adam per network
(PyTorch's default implementation), every logged value pulled to the host each step.
Same batch size, network sizes and data (random batches of the task's shapes). The two are
measured in alternating rounds in one process, and the median round rate of each is reported
as one JSON line.

Stacked seeds (``train_lspc_iql.py --seeds``), one JSON line per row, ``--csv`` for a results file:

    python tools/bench/bench_train.py --seeds 1 2 4 8 --batch_size 256 1024   # per-seed it/s against one seed
    python tools/bench/bench_train.py --seeds 1 2 4 8 --launches --device cpu  # kernel launches per seed-step
    python tools/bench/bench_train.py --seeds 1 2 4 8 --memory                 # data and model bytes held
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lspc.envs import TASK_SPACES  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig  # noqa: E402
from lspc.training import MetricsWindow  # noqa: E402
from train_lspc_iql import LSPC, METRIC_NAMES  # noqa: E402


def mlp(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class PlainStep:
    """The reference: train_lspc_iql.py's step written the obvious way. Every network is its own module with
    its own Adam (PyTorch's default implementation), each loss has its own backward pass, the
    safety-encoder loss also back-propagates into the decoder's weights (which are then not
    stepped), and the logged values are pulled to the host every step."""

    def __init__(self, state_dim: int, action_dim: int, max_action: float, cfg: TrainConfig, device: torch.device):
        h, z = cfg.hidden_dim, cfg.latent_dim
        self.cfg, self.max_action = cfg, max_action
        self.nets = {
            "q1": mlp(state_dim + action_dim, 1, h), "q2": mlp(state_dim + action_dim, 1, h), "v": mlp(state_dim, 1, h),
            "qc1": mlp(state_dim + action_dim, 1, h), "qc2": mlp(state_dim + action_dim, 1, h), "vc": mlp(state_dim, 1, h),
            "enc": mlp(state_dim + action_dim, 2 * z, h), "dec": mlp(state_dim + z, action_dim, h),
            "delta": mlp(state_dim, 2 * z, h),
        }
        for net in self.nets.values():
            net.to(device)
        self.targets = {k: copy.deepcopy(self.nets[k]) for k in ("q1", "q2", "qc1", "qc2")}
        self.opts = {k: torch.optim.Adam(net.parameters(), lr=cfg.learning_rate) for k, net in self.nets.items()}

    def load_from(self, agent: LSPC) -> None:
        """Copy ``agent``'s parameters (its twin-critic ensembles split into separate networks)."""
        twins = {"q": agent.q, "qc": agent.cost_q}
        targets = {"q": agent.q_target, "qc": agent.cost_q_target}
        with torch.no_grad():
            for prefix in twins:
                for head in (0, 1):
                    for source, net in ((twins[prefix], self.nets), (targets[prefix], self.targets)):
                        linears = [m for m in net[f"{prefix}{head + 1}"] if isinstance(m, nn.Linear)]
                        for linear, weight, bias in zip(linears, source.heads.weights, source.heads.biases):
                            linear.weight.copy_(weight[head].T)
                            linear.bias.copy_(bias[head, 0])
            for name, module in (("v", agent.value.v), ("vc", agent.cost_value.v), ("enc", agent.cvae.encoder),
                                 ("dec", agent.cvae.decoder), ("delta", agent.safety_encoder.net)):
                self.nets[name].load_state_dict(module.state_dict())

    def _update(self, names, loss):
        for n in names:
            self.opts[n].zero_grad()
        loss.backward()
        for n in names:
            self.opts[n].step()

    def train(self, b) -> dict:
        cfg, n, t = self.cfg, self.nets, self.targets
        s, a, s2 = b["observations"], b["actions"], b["next_observations"]
        sa, not_done = torch.cat([s, a], 1), 1 - b["dones"]
        with torch.no_grad():
            q_t = torch.min(t["q1"](sa), t["q2"](sa)).squeeze(-1)
            qc_t = torch.max(t["qc1"](sa), t["qc2"](sa)).squeeze(-1).clamp(min=0)
            next_v, next_vc = n["v"](s2).squeeze(-1), n["vc"](s2).squeeze(-1).clamp(min=0)
        v = n["v"](s).squeeze(-1)
        u = q_t - v
        v_loss = (torch.abs(cfg.iql_tau - (u < 0).float()) * u ** 2).mean()
        self._update(["v"], v_loss)
        target = b["rewards"] + cfg.discount * not_done * next_v
        q_loss = 0.5 * (F.mse_loss(n["q1"](sa).squeeze(-1), target) + F.mse_loss(n["q2"](sa).squeeze(-1), target))
        self._update(["q1", "q2"], q_loss)
        vc = n["vc"](s).squeeze(-1)
        uc = vc - qc_t
        vc_loss = (torch.abs(cfg.iql_tau - (uc < 0).float()) * uc ** 2).mean()
        self._update(["vc"], vc_loss)
        c_target = b["costs"] + cfg.discount * not_done * next_vc
        qc_loss = 0.5 * (F.mse_loss(n["qc1"](sa).squeeze(-1), c_target) + F.mse_loss(n["qc2"](sa).squeeze(-1), c_target))
        self._update(["qc1", "qc2"], qc_loss)
        w_c = torch.exp(cfg.beta_cost * (vc.detach() - qc_t)).clamp(max=cfg.max_weight)
        unsafe = (vc.detach() > cfg.safe_qc_vc_threshold) | (qc_t > cfg.safe_qc_vc_threshold)
        w_c = torch.where(unsafe, torch.zeros_like(w_c), w_c)
        mean, log_std = n["enc"](sa).chunk(2, -1)
        log_std = log_std.clamp(-4, 15)
        zs = mean + log_std.exp() * torch.randn_like(mean)
        recon = self.max_action * torch.tanh(n["dec"](torch.cat([s, zs], 1)))
        recon_err = ((recon - a) ** 2).sum(-1)
        kl = (0.5 * (mean ** 2 + (2 * log_std).exp() - 1) - log_std).mean(-1)
        vae_loss = (w_c * recon_err + cfg.vae_beta * w_c * kl).mean()
        self._update(["enc", "dec"], vae_loss)
        w_r = torch.exp(cfg.beta_reward * u.detach()).clamp(max=cfg.max_weight)
        d_mean, d_log_std = n["delta"](s).chunk(2, -1)
        z = cfg.max_latent_action * torch.tanh(d_mean + d_log_std.clamp(-10, 2).exp() * torch.randn_like(d_mean))
        decoded = self.max_action * torch.tanh(n["dec"](torch.cat([s, z], 1)))
        enc_loss = (w_r * ((decoded - a) ** 2).sum(-1)).mean()
        self._update(["delta"], enc_loss)  # the decoder gets gradients here but is not stepped
        with torch.no_grad():
            for k in t:
                for tp, p in zip(t[k].parameters(), n[k].parameters()):
                    tp.mul_(1 - cfg.tau).add_(cfg.tau * p)
        logged = (v_loss, q_loss, vc_loss, qc_loss, vae_loss, recon_err.mean(), kl.mean(), enc_loss, w_r.mean(),
                  (w_r >= cfg.max_weight).float().mean(), w_c.mean(), (w_c >= cfg.max_weight).float().mean(),
                  (w_c == 0).float().mean(), q_t.mean(), v.mean(), qc_t.mean(), vc.mean())
        return {name: value.item() for name, value in zip(METRIC_NAMES, logged)}


def random_batches(count: int, cfg: TrainConfig, state_dim: int, action_dim: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    n = cfg.batch_size
    return [{"observations": torch.randn(n, state_dim, generator=g).to(device),
             "actions": (torch.rand(n, action_dim, generator=g) * 2 - 1).to(device),
             "rewards": torch.randn(n, generator=g).to(device), "costs": (torch.rand(n, generator=g) < 0.2).float().to(device),
             "next_observations": torch.randn(n, state_dim, generator=g).to(device),
             "dones": (torch.rand(n, generator=g) < 0.01).float().to(device)} for _ in range(count)]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--task", default="OfflineBallRun-v0",
                        help="the task whose observation and action sizes are used (default: OfflineBallRun-v0)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating measurement rounds of each trainer (default: 5)")
    parser.add_argument("--steps", type=int, default=50, help="steps per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="our step with torch.compile (TrainConfig.compile)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="measure stacked steps of these numbers of seeds (train_lspc_iql.StackedLSPC) against "
                             "our single-seed step instead, all in the same alternating rounds: per-seed "
                             "throughput (and, on a GPU, each one's peak memory)")
    parser.add_argument("--batch_size", type=int, nargs="+", default=None,
                        help="transitions per step (default: the config's); with --seeds, several sizes are "
                             "measured in the same rounds")
    parser.add_argument("--launches", action="store_true",
                        help="with --seeds: count kernel launches per seed-step on the virtual GPU "
                             "(lspc/device_emulation.py, eager) instead of timing")
    parser.add_argument("--memory", action="store_true",
                        help="with --seeds: the tensor storage a stacked run holds (its one data buffer, its "
                             "models with gradients and Adam moments) against N separate runs, instead of timing")
    parser.add_argument("--dataset_size", type=int, default=None,
                        help="with --memory: transitions in the data buffer (default: 100000)")
    parser.add_argument("--csv", default=None,
                        help="with --seeds: also write the rows to this CSV file (this command and the machine's "
                             "load in its header)")
    args = parser.parse_args(argv)
    count = "--launches" if args.launches else "--memory" if args.memory else None
    for flag, value in (("--launches", args.launches), ("--memory", args.memory), ("--csv", args.csv)):
        if value and args.seeds is None:
            parser.error(f"{flag} goes with --seeds")
    if args.launches and args.memory:
        parser.error("--launches and --memory are two runs: give one of them")
    if args.dataset_size is not None and not args.memory:
        parser.error("--dataset_size goes with --memory")
    if len(args.batch_size or []) > 1 and (args.seeds is None or count):
        parser.error(f"{count or 'without --seeds'}: give one --batch_size")
    if count and args.compile:
        parser.error(f"{count} counts the eager step: drop --compile")
    if args.launches and args.device != "cpu":
        parser.error("--launches counts on the virtual GPU, which runs on the CPU: add --device cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = TrainConfig(task=args.task, **TASK_OVERRIDES[args.task], compile=args.compile)
    if args.seeds is None:
        if args.batch_size:
            cfg = dataclasses.replace(cfg, batch_size=args.batch_size[0])
        return bench_single(args, cfg, device)
    if args.launches:
        rows, what = count_launches(args, cfg)
    elif args.memory:
        rows, what = count_memory(args, cfg, device)
    else:
        rows, what = bench_stacked(args, cfg, device)
    for row in rows:
        print(json.dumps(row))
    if args.csv:
        write_csv(args.csv, rows, what, argv if argv is not None else sys.argv[1:])


def bench_single(args: argparse.Namespace, cfg: TrainConfig, device: torch.device) -> None:
    state_dim, action_dim = TASK_SPACES[args.task]  # no simulator needed
    torch.manual_seed(0)
    ours, plain = LSPC(state_dim, action_dim, 1.0, cfg, device), PlainStep(state_dim, action_dim, 1.0, cfg, device)
    plain.load_from(ours)
    window = MetricsWindow(device)
    batches = random_batches(args.steps, cfg, state_dim, action_dim, device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the benchmarked GPU, which need not be the current one

    def ours_round() -> None:
        for i, batch in enumerate(batches):
            window.add(ours.train(batch), i)
        window.means()  # the loop reads metrics once per log_every steps

    def plain_round() -> None:
        for batch in batches:
            plain.train(batch)

    rates = {"ours": [], "plain": []}
    for warm_up in (ours_round, plain_round):
        warm_up()
    for _ in range(args.rounds):
        for name, fn in (("ours", ours_round), ("plain", plain_round)):
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            rates[name].append(args.steps / (time.perf_counter() - start))
    ours_rate, plain_rate = statistics.median(rates["ours"]), statistics.median(rates["plain"])
    print(json.dumps({"task": args.task, "device": str(device), "threads": torch.get_num_threads(), "compile": args.compile,
                      "torch": torch.__version__, "batch_size": cfg.batch_size,
                      "ours_it_per_s": round(ours_rate, 2), "plain_it_per_s": round(plain_rate, 2),
                      "ratio": round(ours_rate / plain_rate, 3),
                      **({"peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
                         if device.type == "cuda" else {})}))


def stacked_step(seeds: int, cfg: TrainConfig, state_dim: int, action_dim: int, device: torch.device):
    """A StackedLSPC of ``seeds`` seeds, seed k initialised as --seed k."""
    from lspc.training import default_generator_copy
    from train_lspc_iql import StackedLSPC

    agents, noise = [], []
    for seed in range(seeds):
        torch.manual_seed(seed)
        agents.append(LSPC(state_dim, action_dim, 1.0, cfg, device))
        noise.append(default_generator_copy(device))
    return StackedLSPC(agents, noise)


def stacked_batches(count: int, seeds: int, cfg: TrainConfig, state_dim: int, action_dim: int, device: torch.device):
    batches = random_batches(count * seeds, cfg, state_dim, action_dim, device)
    return [{key: torch.stack([b[key] for b in batches[i * seeds:(i + 1) * seeds]]) for key in batches[0]}
            for i in range(count)]


def launches_per_step(make_agent, make_batch) -> int:
    """Kernel launches of one training step (after a warm-up step) on the virtual GPU."""
    from lspc.device_emulation import VirtualCuda

    with VirtualCuda() as cuda:
        agent, batch = make_agent(torch.device("cuda")), make_batch(torch.device("cuda"))
        agent.train(batch)
        cuda.reset_counts()
        agent.train(batch)
        return sum(cuda.launches.values())


def bench_stacked(args: argparse.Namespace, cfg: TrainConfig, device: torch.device) -> Tuple[List[dict], str]:
    """Per-seed steps per second of each stack and of the single-seed step, at each batch size, all timed in
    the same alternating rounds (so that a load change on a shared machine hits every one alike)."""
    state_dim, action_dim = TASK_SPACES[args.task]
    batch_sizes = args.batch_size or [cfg.batch_size]
    if args.compile:  # each stack compiles its two losses anew (static parameter shapes): room for all of them
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit,
                                                    2 * len(batch_sizes) * (len(args.seeds) + 1))
    load_before = os.getloadavg()[0]
    trainers = {}  # (batch size, seeds or None for the single-seed step) -> (agent, batches, metrics window)
    peaks = {}
    for batch_size in batch_sizes:
        sized = dataclasses.replace(cfg, batch_size=batch_size)
        for seeds in (None, *args.seeds):
            batches = stacked_batches(args.steps, seeds or 1, sized, state_dim, action_dim, device)
            if seeds is None:
                batches = [{key: value[0] for key, value in batch.items()} for batch in batches]
            if device.type == "cuda":  # this trainer's own peak: its models, optimizer states and activations
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            if seeds is None:
                torch.manual_seed(0)
                agent = LSPC(state_dim, action_dim, 1.0, sized, device)
            else:
                agent = stacked_step(seeds, sized, state_dim, action_dim, device)
            trainers[batch_size, seeds] = (agent, batches, MetricsWindow(device, seeds or 1))
            timed_round(device, *trainers[batch_size, seeds])  # warm-up (and compilation)
            if device.type == "cuda":
                peaks[batch_size, seeds] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    rates = {key: [] for key in trainers}
    for _ in range(args.rounds):
        for key, trainer in trainers.items():
            rates[key].append(args.steps / timed_round(device, *trainer))
    rows = []
    for (batch_size, seeds), rate in rates.items():
        if seeds is None:
            continue
        per_seed, single = statistics.median(rate) * seeds, statistics.median(rates[batch_size, None])
        rows.append({"batch_size": batch_size, "seeds": seeds, "per_seed_it_per_s": round(per_seed, 2),
                     "single_it_per_s": round(single, 2), "speedup_per_seed": round(per_seed / single, 3)})
        if device.type == "cuda":
            rows[-1].update(peak_gpu_memory_mb=round(peaks[batch_size, seeds], 1),
                            single_peak_gpu_memory_mb=round(peaks[batch_size, None], 1))
    what = (f"training steps per second per seed of the stacked step (StackedLSPC, N seeds) and of the single-seed "
            f"step (LSPC.train), timed in the same alternating rounds in one process, median of {args.rounds} rounds "
            f"of {args.steps} steps; random batches (no sampler), metrics read once per round; {args.task}'s sizes, "
            f"hidden {cfg.hidden_dim}; {device_words(device)}{', --compile' if args.compile else ''}")
    if device.type == "cpu":
        what += (f"; load average (1 min, this benchmark's own threads included) {load_before:.1f} before and "
                 f"{os.getloadavg()[0]:.1f} after")
    return rows, what


def timed_round(device: torch.device, agent, batches: List[dict], window: MetricsWindow) -> float:
    """Seconds of one round: every batch trained on, the metrics read once at its end (as the loop reads them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the benchmarked GPU, which need not be the current one
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        window.add(agent.train(batch), i)
    window.seed_means()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def count_launches(args: argparse.Namespace, cfg: TrainConfig) -> Tuple[List[dict], str]:
    state_dim, action_dim = TASK_SPACES[args.task]
    cfg = dataclasses.replace(cfg, batch_size=(args.batch_size or [cfg.batch_size])[0])
    single = launches_per_step(lambda d: LSPC(state_dim, action_dim, 1.0, cfg, d),
                               lambda d: random_batches(1, cfg, state_dim, action_dim, d)[0])
    rows = [{"step": "single seed (LSPC.train)", "seeds": 1, "launches_per_step": single,
             "launches_per_seed_step": single, "share_of_single": 1.0}]
    for seeds in args.seeds:
        total = launches_per_step(lambda d: stacked_step(seeds, cfg, state_dim, action_dim, d),
                                  lambda d: stacked_batches(1, seeds, cfg, state_dim, action_dim, d)[0])
        rows.append({"step": "stacked (StackedLSPC.train)", "seeds": seeds, "launches_per_step": total,
                     "launches_per_seed_step": round(total / seeds, 2), "share_of_single": round(total / seeds / single, 3)})
    what = ("kernel launches of one training step, counted on the virtual GPU (lspc/device_emulation.py: every aten op "
            "a GPU runs as a kernel or a copy; a fused or foreach op once), after a warm-up step, the batch sampler "
            f"excluded, eager; {args.task}'s sizes, hidden {cfg.hidden_dim}, batch {cfg.batch_size}")
    return rows, what


def count_memory(args: argparse.Namespace, cfg: TrainConfig, device: torch.device) -> Tuple[List[dict], str]:
    """The bytes a stacked run holds between steps, each tensor storage counted once: its data buffer (made
    as training makes it, LSPCMethod.make_sampler) and its models (parameters, target networks, gradients,
    Adam moments, and each seed's LSPC, whose parameters are views into the stack)."""
    from train_lspc_iql import LSPCMethod

    state_dim, action_dim = TASK_SPACES[args.task]
    cfg = dataclasses.replace(cfg, batch_size=(args.batch_size or [cfg.batch_size])[0])
    size = args.dataset_size or 100_000
    data = random_dataset(size, state_dim, action_dim)

    def held(seeds: Optional[int]) -> Tuple[float, float]:
        method = LSPCMethod(dataclasses.replace(cfg, seeds=None if seeds is None else list(range(seeds))))
        sampler = method.make_sampler(data, device)
        if seeds is None:
            torch.manual_seed(0)
            agent = LSPC(state_dim, action_dim, 1.0, cfg, device)
        else:
            agent = stacked_step(seeds, cfg, state_dim, action_dim, device)
        agent.train(sampler.sample(cfg.batch_size))  # gradients and Adam moments exist after a step
        return storage_mib(vars(sampler).values()), storage_mib(model_tensors(agent))

    single_data, single_model = held(None)
    rows = [{"run": "single seed", "seeds": 1, "data_mib": round(single_data, 2), "models_mib": round(single_model, 2),
             "total_mib": round(single_data + single_model, 2), "separate_runs_mib": round(single_data + single_model, 2)}]
    for seeds in args.seeds:
        data_mib, models_mib = held(seeds)
        rows.append({"run": "stacked", "seeds": seeds, "data_mib": round(data_mib, 2), "models_mib": round(models_mib, 2),
                     "total_mib": round(data_mib + models_mib, 2),
                     "separate_runs_mib": round(seeds * (single_data + single_model), 2)})
    what = (f"MiB of tensor storage held between training steps, each storage counted once: the data buffer "
            f"({size} random transitions of {args.task}'s sizes, as LSPCMethod.make_sampler holds them) "
            f"and the models (parameters, target networks, gradients, Adam moments), after one step; hidden "
            f"{cfg.hidden_dim}, batch {cfg.batch_size}. separate_runs_mib: N times the single-seed run's measured "
            f"total. Activations live only during a step (the GPU check reports peak GPU memory with them)")
    return rows, what


def random_dataset(size: int, state_dim: int, action_dim: int) -> Dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    return {"observations": g.standard_normal((size, state_dim), np.float32),
            "actions": g.uniform(-1, 1, (size, action_dim)).astype(np.float32),
            "rewards": g.standard_normal(size, np.float32), "costs": (g.random(size) < 0.2).astype(np.float32),
            "next_observations": g.standard_normal((size, state_dim), np.float32),
            "terminals": np.zeros(size), "timeouts": np.zeros(size)}


def model_tensors(agent) -> List[torch.Tensor]:
    """Every tensor an agent (LSPC or StackedLSPC) keeps: its networks' (each seed's LSPC's, for a stack),
    the parameters it trains, their gradients, and its optimizers' states."""
    stacked = hasattr(agent, "members")
    modules = [module for member in (agent.members if stacked else [agent]) for module in vars(member).values()
               if isinstance(module, nn.Module)]
    params = list(agent.params.values()) if stacked else [p for module in modules for p in module.parameters()]
    tensors = [t for module in modules for t in module.state_dict().values()]
    tensors += params + [p.grad for p in params if p.grad is not None]
    tensors += [v for opt in agent.optimizers.values() for state in opt.state.values() for v in state.values()
                if isinstance(v, torch.Tensor)]
    return tensors


def storage_mib(tensors) -> float:
    """MiB of the distinct storages behind ``tensors`` (views of one storage count once)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in tensors if isinstance(t, torch.Tensor)}
    return sum(storages.values()) / 2**20


def device_words(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"CPU, {os.cpu_count()} cores shared with other jobs, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")


def write_csv(path: str, rows: List[dict], what: str, argv: List[str]) -> None:
    with open(path, "w", newline="") as f:
        f.write(f"# command: python tools/bench/bench_train.py {' '.join(argv)}\n# what: {what}\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
