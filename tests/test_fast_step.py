"""The trainer's fast step (twin-critic ensembles, one backward and one fused Adam for losses 1-5,
foreach target update) against the plain step of tools/bench/bench_train.py: the same parameters after
several steps from the same initialisation, batches and noise."""
import dataclasses
import shutil
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from bench_train import PlainStep, random_batches  # noqa: E402
from lspc import LSPCError  # noqa: E402
from lspc.device_emulation import VirtualCuda  # noqa: E402
from lspc_iql_configs import TrainConfig  # noqa: E402
from train_lspc_iql import LSPC  # noqa: E402

STATE_DIM, ACTION_DIM = 6, 2


def plain_parameters(plain: PlainStep) -> dict:
    """The plain step's parameters in the agent's layout (ensembles stacked), to compare one to one."""
    def stacked(nets, prefix):
        linears = [[m for m in nets[f"{prefix}{head}"] if isinstance(m, torch.nn.Linear)] for head in (1, 2)]
        weights = [torch.stack([head[i].weight.T for head in linears]) for i in range(3)]
        biases = [torch.stack([head[i].bias[None] for head in linears]) for i in range(3)]
        return weights + biases

    params = {"q": stacked(plain.nets, "q"), "cost_q": stacked(plain.nets, "qc"),
              "q_target": stacked(plain.targets, "q"), "cost_q_target": stacked(plain.targets, "qc")}
    for name, key in (("value", "v"), ("cost_value", "vc"), ("safety_encoder", "delta")):
        params[name] = list(plain.nets[key].parameters())
    params["cvae"] = list(plain.nets["enc"].parameters()) + list(plain.nets["dec"].parameters())
    return params


def agent_parameters(agent: LSPC) -> dict:
    def ensemble(twin):
        return list(twin.heads.weights) + list(twin.heads.biases)

    params = {name: ensemble(getattr(agent, name)) for name in ("q", "cost_q", "q_target", "cost_q_target")}
    for name in ("value", "cost_value", "safety_encoder", "cvae"):
        params[name] = list(getattr(agent, name).parameters())
    return params


def run_both(steps: int, **overrides):
    cfg = TrainConfig(hidden_dim=64, latent_dim=8, batch_size=256, learning_rate=1e-3, tau=0.05, **overrides)
    torch.manual_seed(0)
    agent = LSPC(STATE_DIM, ACTION_DIM, 1.0, cfg, torch.device("cpu"))
    plain = PlainStep(STATE_DIM, ACTION_DIM, 1.0, cfg, torch.device("cpu"))
    plain.load_from(agent)
    start = {name: [p.detach().clone() for p in params] for name, params in agent_parameters(agent).items()}
    for name, params in plain_parameters(plain).items():
        for ours, theirs in zip(start[name], params):
            assert torch.equal(ours, theirs), name  # load_from copies exactly
    metrics = []
    for i, batch in enumerate(random_batches(steps, cfg, STATE_DIM, ACTION_DIM, torch.device("cpu"))):
        torch.manual_seed(100 + i)  # the same CVAE and latent-encoder noise for both
        ours = {k: v.item() for k, v in agent.train(batch).items()}
        torch.manual_seed(100 + i)
        metrics.append((ours, plain.train(batch)))
    return agent, plain, start, metrics


@pytest.mark.parametrize("overrides", [{}, {"safe_qc_vc_threshold": 0.05, "beta_cost": 4.0}])
def test_fast_step_matches_plain_step(overrides):
    agent, plain, start, metrics = run_both(steps=6, **overrides)
    theirs = plain_parameters(plain)
    for name, params in agent_parameters(agent).items():
        for i, (ours, reference, before) in enumerate(zip(params, theirs[name], start[name])):
            assert (ours - before).abs().max() > 1e-4, f"{name}[{i}] did not move"
            assert torch.allclose(ours, reference, rtol=0, atol=1e-5), \
                f"{name}[{i}] differs by {(ours - reference).abs().max().item():.2e}"
    for ours, reference in metrics:  # every logged value agrees too, step by step
        for key, value in reference.items():
            assert ours[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    if overrides:  # the safety mask was active in this batch set, so it is compared, not skipped
        assert any(0 < ours["cost_weight_masked"] < 1 for ours, _ in metrics)


def test_a_changed_loss_is_detected():
    """The comparison can fail: a plain step with another expectile drifts beyond the tolerance."""
    cfg = TrainConfig(hidden_dim=64, latent_dim=8, batch_size=256, learning_rate=1e-3)
    torch.manual_seed(0)
    agent = LSPC(STATE_DIM, ACTION_DIM, 1.0, cfg, torch.device("cpu"))
    plain = PlainStep(STATE_DIM, ACTION_DIM, 1.0, TrainConfig(**{**cfg.__dict__, "iql_tau": 0.69}), torch.device("cpu"))
    plain.load_from(agent)
    for i, batch in enumerate(random_batches(3, cfg, STATE_DIM, ACTION_DIM, torch.device("cpu"))):
        torch.manual_seed(i)
        agent.train(batch)
        torch.manual_seed(i)
        plain.train(batch)
    value_ours = agent_parameters(agent)["value"]
    value_plain = plain_parameters(plain)["value"]
    assert max((a - b).abs().max().item() for a, b in zip(value_ours, value_plain)) > 1e-5


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_step_matches_eager(monkeypatch):
    """--compile (the CUDA-graph path on a GPU) compiles here on the CPU and gives the eager step's
    parameters. Inductor draws its own random numbers unless told to fall back to eager's."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)
    cfg = TrainConfig(hidden_dim=32, latent_dim=4, batch_size=64, tau=0.05, learning_rate=1e-3)
    agents = []
    for compile_step in (False, True):
        torch.manual_seed(0)
        agents.append(LSPC(STATE_DIM, ACTION_DIM, 1.0, dataclasses.replace(cfg, compile=compile_step),
                           torch.device("cpu")))
    eager, compiled = agents
    for i, batch in enumerate(random_batches(3, cfg, STATE_DIM, ACTION_DIM, torch.device("cpu"))):
        torch.manual_seed(i)
        eager_metrics = eager.train(batch)
        torch.manual_seed(i)
        compiled_metrics = compiled.train(batch)
        for key, value in eager_metrics.items():
            assert compiled_metrics[key].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-5), key
    for name, params in agent_parameters(eager).items():
        for ours, reference in zip(agent_parameters(compiled)[name], params):
            assert torch.allclose(ours, reference, rtol=0, atol=1e-5), name


@pytest.mark.parametrize("device, compile_step, mode, marks", [
    ("cpu", True, "default", 0), ("cuda", True, "reduce-overhead", 2), ("cuda", False, None, 0)])
def test_cuda_graphs_only_for_a_compiled_step_on_a_gpu(monkeypatch, device, compile_step, mode, marks):
    """--compile on CUDA: "reduce-overhead" (each graph replayed as a CUDA graph), and each step tells the CUDA
    graph tree that the previous step's outputs are consumed; elsewhere torch's default mode and no marks."""
    modes, marked = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: modes.append(mode) or fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marked.append(1))
    cfg = TrainConfig(hidden_dim=8, batch_size=16, compile=compile_step)
    with VirtualCuda(device_count=1):
        agent = LSPC(STATE_DIM, ACTION_DIM, 1.0, cfg, torch.device(device))
        for batch in random_batches(2, cfg, STATE_DIM, ACTION_DIM, torch.device(device)):
            agent.train(batch)
    assert modes == ([mode, mode] if compile_step else []) and len(marked) == marks


def test_for_env_sizes_the_agent_from_the_spaces():
    class Spaces(gym.Env):
        observation_space = gym.spaces.Box(-10, 10, (7,))
        action_space = gym.spaces.Box(-0.5, 0.5, (3,))

    agent = LSPC.for_env(Spaces(), TrainConfig(hidden_dim=8), torch.device("cpu"))
    assert agent.cvae.encoder[0].in_features == 7 + 3 and agent.cvae.decoder[-2].out_features == 3
    assert agent.cvae.max_action == 0.5
    for low, high in (([-0.5, -0.5, -0.5], [0.5, 0.7, 0.5]), ([0.0, -0.5, -0.5], [0.5, 0.5, 0.5])):
        Spaces.action_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        with pytest.raises(LSPCError, match=r"LSPC acts in a box \[-m, m\] in every dimension"):
            LSPC.for_env(Spaces(), TrainConfig(hidden_dim=8), torch.device("cpu"))
