"""CDT (osrl-lib's model and trainer) through our sampler, agent and policy, checked independently.

osrl's CDT network is the thing under test only through our wiring: its forward pass is used as is,
but the windows it trains on, the losses of one ``train()`` call (osrl/algorithms/cdt.py
CDTTrainer.train_one_step: Gaussian negative log-likelihood minus the temperature times the entropy,
the 0/1 cost classification weighted 0.02, the state prediction weighted 0), the update (AdamW under
gradient clipping at 0.25, a linear warm-up of the learning rate over 500 steps, the entropy
temperature's own Adam step), and the actions of the prompted policy (osrl's CDTTrainer.rollout:
dropout off, the Gaussian's mean clamped to the box, the last seq_len steps, return-to-go and
cost-to-go that start at the prompt and fall by each observed reward and cost) are recomputed here.
"""
import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lspc import LSPCError
from lspc.methods.baselines import BaselineConfig, default_hparams, make_agent, make_sampler, sequence_sampler
from lspc.methods.cdt import max_reward_warning

STATE_DIM, ACTION_DIM, MAX_ACTION = 3, 2, 1.0
SEQ_LEN, EPISODE_LEN, BATCH = 3, 12, 16
LEARNING_RATE = 0.05  # large, so the warm-up's first step (lr / 500) is visible on float32 weights
SEED = 99
TASK = "OfflineBallRun-v0"  # prompts (500, 10), (500, 20), (700, 40); reward_scale 0.1, cost_scale 1


class BoxEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, (ACTION_DIM,), np.float32)


def sequence_data(episodes=10, seed=0):
    """Episodes of 4-12 steps (some shorter than the window), 0/1 costs, distinct observations."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, EPISODE_LEN + 1, episodes)
    n = int(lengths.sum())
    ends = np.cumsum(lengths) - 1
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[ends[::2]] = True
    timeouts[ends[1::2]] = True
    return {"observations": rng.normal(size=(n, STATE_DIM)).astype(np.float32),
            "next_observations": rng.normal(size=(n, STATE_DIM)).astype(np.float32),
            "actions": rng.uniform(-0.9, 0.9, (n, ACTION_DIM)).astype(np.float32),
            "rewards": rng.uniform(0, 3, n).astype(np.float32),
            "costs": (rng.uniform(size=n) < 0.4).astype(np.float32),
            "terminals": terminals, "timeouts": timeouts}


def make(**hparams):
    h = default_hparams("cdt", TASK)
    # tiny transformer; no Pareto augmentation on ten trajectories
    h.update(embedding_dim=8, num_layers=1, num_heads=1, seq_len=SEQ_LEN, augment_percent=0.0,
             learning_rate=LEARNING_RATE, **hparams)
    cfg = BaselineConfig(algo="cdt", task=TASK, episode_len=EPISODE_LEN, cost_limit=10.0, batch_size=BATCH, hparams=h)
    data = sequence_data()
    torch.manual_seed(0)
    agent = make_agent(cfg, BoxEnv(), torch.device("cpu"), data)
    return agent, make_sampler(cfg, data, torch.device("cpu")), data, h


def expected_windows(batch, data, reward_scale, cost_scale):
    """Each window read from the raw data: from its first state's step, seq_len steps, zero past the
    episode's end; return-to-go and cost-to-go (undiscounted sums to the episode's end) scaled;
    the position in the episode as the time step; the episode's cost return."""
    obs = torch.as_tensor(data["observations"])
    first = torch.cdist(batch["states"][:, 0], obs).argmin(1).numpy()
    done = data["terminals"] | data["timeouts"]
    episode = np.cumsum(np.r_[0, done[:-1]])
    out = {k: np.zeros(v.shape, np.float64) for k, v in batch.items()}
    for row, i in enumerate(first):
        members = np.flatnonzero(episode == episode[i])
        start, end = members[0], members[-1] + 1
        out["episode_cost"][row] = data["costs"][start:end].sum() * cost_scale
        for k in range(SEQ_LEN):
            t = i + k
            out["time_steps"][row, k] = t - start
            if t < end:
                out["states"][row, k] = data["observations"][t]
                out["actions"][row, k] = data["actions"][t]
                out["returns"][row, k] = data["rewards"][t:end].sum() * reward_scale
                out["costs_return"][row, k] = data["costs"][t:end].sum() * cost_scale
                out["costs"][row, k] = data["costs"][t]
                out["mask"][row, k] = 1
    return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in out.items()}


def test_sampler_windows_are_the_datas():
    agent, sampler, data, h = make()
    batch = sampler.sample(256)
    expected = expected_windows(batch, data, h["reward_scale"], h["cost_scale"])
    assert (batch["mask"] == 0).any() and (batch["mask"] == 1).all(1).any()  # windows past an end, and whole ones
    for key, value in expected.items():
        torch.testing.assert_close(batch[key].float(), value, rtol=1e-5, atol=1e-5, msg=key)


def test_cdt_one_step():
    agent, sampler, data, h = make()
    batch = sampler.sample(BATCH)
    model = agent.model
    model.eval()  # as after an evaluation: training must switch dropout back on
    before = copy.deepcopy(model)
    torch.manual_seed(SEED)
    stats = agent.train(batch)
    mask = batch["mask"]
    assert (mask == 0).any()

    torch.manual_seed(SEED)  # the same dropout masks
    before.train()
    dist, cost_log_probs, state_preds = before(batch["states"], batch["actions"], batch["returns"],
                                               batch["costs_return"], batch["time_steps"], ~mask.bool(),
                                               batch["episode_cost"])
    mu, std = dist.loc, dist.scale
    valid = mask > 0
    actions = batch["actions"]
    log_likelihood = (-((actions - mu) ** 2) / (2 * std ** 2) - torch.log(std) - 0.5 * math.log(2 * math.pi))[valid]
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(std))[valid]
    temperature = math.exp(math.log(h["init_temperature"]))
    act_loss = -(log_likelihood.mean() + temperature * entropy.mean())
    # the cost head classifies each step's cost as 0 or 1; padded steps count in the mean as zeros
    picked = cost_log_probs.gather(-1, batch["costs"].long()[..., None])[..., 0]
    cost_loss = (-picked * mask).mean()
    accuracy = ((cost_log_probs.argmax(-1) == batch["costs"].long()) & valid).sum() / mask.sum()
    state_loss = (((state_preds[:, :-1] - batch["states"][:, 1:]) ** 2) * mask[:, :-1, None]).mean()
    loss = act_loss + h["loss_cost_weight"] * cost_loss + h["loss_state_weight"] * state_loss
    warm_up = [LEARNING_RATE * min(step / h["lr_warmup_steps"], 1) for step in (1, 2)]
    expected = {"nll": -log_likelihood.mean(), "ent": entropy.mean(), "ent_reg": temperature, "act_loss": act_loss,
                "cost_loss": cost_loss, "cost_acc": accuracy, "state_loss": state_loss, "all_loss": loss,
                "train_lr": warm_up[1]}
    for key, value in expected.items():
        assert float(stats[key]) == pytest.approx(float(torch.as_tensor(value).detach()), rel=1e-4, abs=1e-6), key

    # AdamW's first step on the clipped gradient at the warm-up's first learning rate
    names = [name for name, _ in before.named_parameters()]
    gradients = torch.autograd.grad(loss, list(before.parameters()), allow_unused=True)
    gradients = [torch.zeros_like(p) if g is None else g for p, g in zip(before.parameters(), gradients)]
    norm = torch.sqrt(sum((g ** 2).sum() for g in gradients))
    assert norm > h["clip_grad"]  # the clip is active
    lr, decay, moved = warm_up[0], h["weight_decay"], 0
    after = dict(model.named_parameters())
    for name, p0, g in zip(names, before.parameters(), gradients):
        g = g * h["clip_grad"] / (norm + 1e-6)
        expected_p = p0.detach() * (1 - lr * decay) - lr * g / (g.abs() + 1e-8)
        clear = g.abs() > 1e-6
        torch.testing.assert_close(after[name].detach()[clear], expected_p[clear], rtol=0, atol=lr * 1e-2, msg=name)
        moved += int(clear.sum())
    assert moved > 0
    assert agent.trainer.optim.param_groups[0]["lr"] == pytest.approx(warm_up[1])
    # the temperature: Adam (lr 1e-4) on temperature * (entropy - target entropy), target -action_dim
    direction = math.copysign(1.0, float(entropy.mean().detach()) + ACTION_DIM)
    assert float(model.log_temperature.detach()) == pytest.approx(math.log(h["init_temperature"]) - 1e-4 * direction, abs=1e-7)


def window(history, t):
    return history[:, max(0, t + 1 - SEQ_LEN):t + 1]


@pytest.mark.parametrize("kappa,prompt", [(10.0, (500.0, 10.0)), (40.0, (700.0, 40.0))])
def test_cdt_acts_with_the_prompted_mean_without_dropout(kappa, prompt):
    agent, _, _, h = make()
    model = agent.model
    with torch.no_grad():  # weights far from osrl's 0.02-std init, so every input of the window matters
        for p in model.parameters():
            p.normal_(0, 0.5)
        model.action_head.mu.weight.mul_(0.3)
        model.action_head.mu.bias.copy_(torch.tensor([4.0, 0.0]))  # the first mean beyond the box: the clamp acts
    model.train()
    policy = agent.policy_at(kappa)
    n = 4
    policy.reset(n)
    rng = np.random.default_rng(1)
    states = torch.zeros(n, EPISODE_LEN, STATE_DIM)
    actions = torch.zeros(n, EPISODE_LEN, ACTION_DIM)
    returns = torch.zeros(n, EPISODE_LEN)
    costs = torch.zeros(n, EPISODE_LEN)
    returns[:, 0] = prompt[0] * h["reward_scale"]  # the threshold's prompt, scaled as the training returns
    costs[:, 0] = prompt[1] * h["cost_scale"]
    time_steps = torch.arange(EPISODE_LEN).expand(n, -1)
    clamped, inside = False, 0.0
    for t in range(6):
        obs = torch.as_tensor(rng.normal(size=(n, STATE_DIM)), dtype=torch.float32)
        states[:, t] = obs
        action = policy(obs, torch.Generator().manual_seed(t))
        reference = copy.deepcopy(model).eval()
        with torch.no_grad():
            dist, _, _ = reference(window(states, t), window(actions, t), window(returns, t), window(costs, t),
                                   window(time_steps, t), None, torch.full((n,), prompt[1] * h["cost_scale"]))
        expected = dist.loc[:, -1].clamp(-MAX_ACTION, MAX_ACTION)
        clamped |= bool((expected.abs() == MAX_ACTION).any())
        inside += (expected.abs() < MAX_ACTION).float().mean() / 6
        torch.testing.assert_close(action, expected)
        actions[:, t] = expected
        reward, cost = rng.uniform(0, 3, n), (rng.uniform(size=n) < 0.5).astype(np.float64)
        policy.observe(reward, cost)
        returns[:, t + 1] = returns[:, t] - torch.as_tensor(reward, dtype=torch.float32) * h["reward_scale"]
        costs[:, t + 1] = costs[:, t] - torch.as_tensor(cost, dtype=torch.float32) * h["cost_scale"]
    assert clamped and inside > 0.3  # the clamp acts, and most actions still show the history they came from
    assert not model.training  # acting switched dropout off


def test_the_threshold_reaches_cdts_prompt():
    agent, _, _, h = make()
    policies = agent.evaluation_policies([10.0, 20.0, 40.0])
    assert [(kappas, extra["prompt"]) for _, _, kappas, extra in policies] == \
        [([10.0], [500.0, 10.0]), ([20.0], [500.0, 20.0]), ([40.0], [700.0, 40.0])]
    for (_, policy, _, _), target in zip(policies, [(500.0, 10.0), (500.0, 20.0), (700.0, 40.0)]):
        policy.reset(2)
        assert torch.equal(policy.returns[:, 0], torch.full((2,), target[0] * h["reward_scale"]))
        assert torch.equal(policy.costs[:, 0], torch.full((2,), target[1] * h["cost_scale"]))
    assert agent.training_policies()["cdt"].prompt == (500.0, 10.0)  # cost_limit 10


def test_a_return_above_max_reward_gets_one_warning_line(capsys):
    data = sequence_data()
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    largest = max(data["rewards"][s:e + 1].astype(np.float64).sum() for s, e in zip(np.r_[0, ends[:-1] + 1], ends))
    assert max_reward_warning(data, largest + 1.0) is None
    assert max_reward_warning(data, largest) is None
    message = max_reward_warning(data, largest - 1.0)
    assert message.startswith("warning: cdt: ") and "\n" not in message
    assert f"largest episode return {largest:g} exceeds max_reward {largest - 1:g}" in message
    # through the sampler, when the augmentation is on (it is what max_reward bounds)
    cfg = BaselineConfig(algo="cdt", task=TASK, episode_len=EPISODE_LEN, hparams={
        **default_hparams("cdt", TASK), "max_reward": float(largest) - 1.0, "augment_percent": 0.0})
    capsys.readouterr()
    sequence_sampler(cfg, data, torch.device("cpu"))
    assert "warning" not in capsys.readouterr().out  # no augmentation: max_reward unused
    cfg.hparams["augment_percent"] = 0.2
    with pytest.raises(LSPCError, match="augmentation failed"):  # ten trajectories are too few for it; warned first
        sequence_sampler(cfg, data, torch.device("cpu"))
    out = capsys.readouterr().out
    assert out.count("warning: cdt: ") == 1 and out.splitlines()[0] == message
