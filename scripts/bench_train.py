"""Training-step throughput: our trainer against a plain eager step of the same math.

    python scripts/bench_train.py [--device cpu|cuda] [--task OfflineBallRun-v0] [--rounds 5] [--steps 50]

    python scripts/bench_train.py --seeds N [--batch_size B] ...  # N seeds stacked (--seeds) against one

(a) ``LSPC.train`` as the training loop calls it (metrics summed on the device, read rarely);
(b) the same losses written straightforwardly here: separate Q networks, one Adam per network
(PyTorch's default implementation), every logged value pulled to the host each step.
Same batch size, network sizes and data (random batches of the task's shapes). The two are
measured in alternating rounds in one process, and the median round rate of each is reported
as one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    parser.add_argument("--seeds", type=int, default=None,
                        help="measure the stacked step of this many seeds (train_lspc_iql.StackedLSPC) against "
                             "our single-seed step instead: per-seed throughput, and kernel launches per seed-step "
                             "counted on the virtual GPU (lspc/device_emulation.py)")
    parser.add_argument("--batch_size", type=int, default=None, help="transitions per step (default: the config's)")
    args = parser.parse_args(argv)
    if args.seeds is not None:
        return bench_stacked(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    state_dim, action_dim = TASK_SPACES[args.task]  # no simulator needed
    cfg = TrainConfig(task=args.task, **TASK_OVERRIDES[args.task], compile=args.compile)
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
    """A StackedLSPC of ``seeds`` seeds (seed k initialised as --seed k) and its batches' sampler."""
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


def bench_stacked(args: argparse.Namespace) -> None:
    device, seeds = torch.device(args.device), args.seeds
    env = make_env(args.task)
    state_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    cfg = TrainConfig(task=args.task, **TASK_OVERRIDES[args.task], compile=args.compile)
    if args.batch_size is not None:
        cfg = dataclasses.replace(cfg, batch_size=args.batch_size)
    stack = stacked_step(seeds, cfg, state_dim, action_dim, device)
    torch.manual_seed(0)
    single = LSPC(state_dim, action_dim, 1.0, cfg, device)
    batches = stacked_batches(args.steps, seeds, cfg, state_dim, action_dim, device)
    single_batches = [{key: value[0] for key, value in batch.items()} for batch in batches]
    windows = {"stacked": MetricsWindow(device, seeds), "single": MetricsWindow(device)}

    def round_of(name: str) -> None:
        agent, data = (stack, batches) if name == "stacked" else (single, single_batches)
        for i, batch in enumerate(data):
            windows[name].add(agent.train(batch), i)
        windows[name].seed_means()

    rates = {"stacked": [], "single": []}
    for name in rates:
        round_of(name)
    for _ in range(args.rounds):
        for name in rates:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            round_of(name)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates[name].append(args.steps / (time.perf_counter() - start))
    stacked_rate, single_rate = statistics.median(rates["stacked"]), statistics.median(rates["single"])
    small = dataclasses.replace(cfg, compile=False)
    launches = launches_per_step(lambda d: stacked_step(seeds, small, state_dim, action_dim, d),
                                 lambda d: stacked_batches(1, seeds, small, state_dim, action_dim, d)[0])
    single_launches = launches_per_step(lambda d: LSPC(state_dim, action_dim, 1.0, small, d),
                                        lambda d: random_batches(1, small, state_dim, action_dim, d)[0])
    print(json.dumps({"task": args.task, "device": str(device), "threads": torch.get_num_threads(),
                      "compile": args.compile, "torch": torch.__version__, "batch_size": cfg.batch_size, "seeds": seeds,
                      "per_seed_it_per_s": round(stacked_rate * seeds, 2), "single_it_per_s": round(single_rate, 2),
                      "speedup_per_seed": round(stacked_rate * seeds / single_rate, 3),
                      "launches_per_seed_step": round(launches / seeds, 1), "single_launches_per_step": single_launches,
                      **({"peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
                         if device.type == "cuda" else {})}))


if __name__ == "__main__":
    main()
