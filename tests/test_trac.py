"""TraC (lspc/methods/trac.py): segment labels and weights, the classification loss, the frozen reference,
index-only segments, seeding, and complete checkpoints."""
import io
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from lspc import LSPCError
from lspc.methods import trac
from lspc.methods.baselines import BaselineConfig
from lspc.envs import ALL_TASKS, check_task

TASK = "OfflineBallRun-v0"
K = 0.7


@pytest.fixture(scope="module")
def env(ballrun_env):
    return ballrun_env


def make_cfg(seed: int = 0, cost_limit: float = 10.0, episode_len: int = 100, **hparams) -> BaselineConfig:
    h = {**trac.default_hparams(TASK), "a_hidden_sizes": [32, 32], **hparams}
    return BaselineConfig(algo="trac", task=TASK, episode_len=episode_len, seed=seed, cost_limit=cost_limit,
                          batch_size=8, hparams=h)


def trajectories(*columns):
    """A dataset from (rewards, costs) per trajectory; observations count the transitions (obs[i] = i)."""
    rewards = np.concatenate([np.asarray(r, np.float32) for r, _ in columns])
    costs = np.concatenate([np.asarray(c, np.float32) for _, c in columns])
    n = len(rewards)
    ends = np.cumsum([len(r) for r, _ in columns]) - 1
    timeouts = np.zeros(n, bool)
    timeouts[ends] = True
    obs = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)
    return {"observations": obs, "actions": np.full((n, 2), 0.5, np.float32), "rewards": rewards, "costs": costs,
            "terminals": np.zeros(n, bool), "timeouts": timeouts}


# ---------------------------------------------------------------------------------------------
# labels and weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 0.05])  # the normalized rewards do not depend on the span's size
def test_labels_and_weights_by_hand(scale):
    # safe (cost <= 2): 0 (reward 10), 1 (4), 3 (1), 5 (5); normalized over [1, 10]: 1, 1/3, 0, 4/9
    # top half of the safe ones desirable: 5 and 0; bottom half undesirable: 3 and 1; unsafe 2 and 4 weight 1
    label, weight = trac.label_segments(scale * np.array([10.0, 4, 7, 1, 9, 5]), np.array([0.0, 0, 3, 1, 6, 2]),
                                        cost_threshold=2.0, k=K, top_perc=0.5, bottom_perc=0.5)
    np.testing.assert_array_equal(label, [1, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(weight, [0.3 * 1 + K, 0.3 * (2 / 3) + K, 1, 0.3 * 1 + K, 1, 0.3 * (4 / 9) + K])


def test_labels_drop_the_middle_and_ignore_reward_of_unsafe():
    # five safe segments, top ceil(2.5) = 3 desirable, no bottom share: the two lowest are dropped (-1);
    # the unsafe one has the highest reward and is still undesirable with weight 1
    label, weight = trac.label_segments(np.array([5.0, 1, 4, 2, 3, 9]), np.array([0.0, 0, 0, 0, 0, 5]),
                                        cost_threshold=1.0, k=K, top_perc=0.5, bottom_perc=0.0)
    np.testing.assert_array_equal(label, [1, -1, 1, -1, 1, 0])
    kept = label >= 0
    np.testing.assert_allclose(weight[kept], [1.0, 0.3 * 0.75 + K, 0.3 * 0.5 + K, 1.0])


def test_labels_overlap_ends_undesirable_and_ties():
    # three safe segments, top and bottom ceil(1.5) = 2 each: the middle one is in both and ends undesirable
    # with the reversed weight, as in TraC's code
    label, weight = trac.label_segments(np.array([3.0, 1, 2]), np.zeros(3), 0.0, K, 0.5, 0.5)
    np.testing.assert_array_equal(label, [1, 0, 0])
    np.testing.assert_allclose(weight, [1.0, 1.0, 0.3 * 0.5 + K])
    # equal rewards (TraC: 0 / 0): all rank 1, desirable weight 1
    label, weight = trac.label_segments(np.full(2, 4.0), np.zeros(2), 0.0, K, 1.0, 0.0)
    np.testing.assert_array_equal(label, [1, 1])
    np.testing.assert_allclose(weight, [1.0, 1.0])


def test_sampler_labels_a_constructed_dataset(capsys):
    # episode_len 10, seg_ratio 0.5: L = 5, safe when the cost sum <= cost_limit 1 * 5 / 10 = 0.5
    data = trajectories(
        (np.full(10, 1.0), np.zeros(10)),  # every segment: reward 5, cost 0
        (np.full(10, 2.0), np.ones(10)),  # cost 5: unsafe
        (np.full(10, 0.5), np.zeros(10)),  # reward 2.5, cost 0
        (np.full(10, 3.0), np.eye(1, 10)[0]),  # from its first step: cost 1 (unsafe); the others: reward 15
        (np.full(3, 9.0), np.zeros(3)),  # shorter than L: never drawn
    )
    cfg = make_cfg(cost_limit=1.0, episode_len=10, seg_ratio=0.5, num_segments=400, safe_top_perc=1.0)
    sampler = trac.make_sampler(cfg, data, torch.device("cpu"))
    assert "400 segments of 5 steps" in capsys.readouterr().out
    traj_starts = np.array([0, 10, 20, 30])
    starts = sampler.starts.numpy()
    traj = np.searchsorted(traj_starts, starts, side="right") - 1
    offset = starts - traj_starts[traj]
    assert len(sampler) == 400 and (offset >= 0).all() and (offset <= 10 - 5).all() and (starts < 40).all()
    assert set(traj) == {0, 1, 2, 3} and set(offset) == set(range(6))  # uniform inside: every start occurs
    # safe rewards 2.5 .. 15: normalized 0.2 (trajectory 0), 0 (2), 1 (3 past its first step); all desirable
    unsafe = (traj == 1) | ((traj == 3) & (offset == 0))
    expected_weight = np.select([unsafe, traj == 0, traj == 2, traj == 3], [1.0, 0.3 * 0.2 + K, K, 1.0])
    np.testing.assert_array_equal(sampler.desirable.numpy(), ~unsafe)
    np.testing.assert_allclose(sampler.weight.numpy(), expected_weight, rtol=1e-6)
    assert sampler.counts == trac.SegmentCounts(drawn=400, desirable=int((~unsafe).sum()),
                                                undesirable=int(unsafe.sum()), unsafe=int(unsafe.sum()),
                                                skipped_trajectories=1)


def test_number_of_segments_follows_tracs_rule(ballrun_data):
    # seg_ratio 1: one per full-length trajectory (12); 0.5: (100 - 50) // 6 = 8 per trajectory
    assert trac.make_sampler(make_cfg(), ballrun_data, torch.device("cpu")).counts.drawn == 12
    assert trac.make_sampler(make_cfg(seg_ratio=0.5), ballrun_data, torch.device("cpu")).counts.drawn == 8 * 12


# ---------------------------------------------------------------------------------------------
# segments are indices
# ---------------------------------------------------------------------------------------------
def test_batches_are_gathered_from_indices(ballrun_data):
    cfg = make_cfg(seg_ratio=0.5, num_segments=300)
    sampler = trac.make_sampler(cfg, ballrun_data, torch.device("cpu"))
    # the transitions are the dataset's own float32 arrays, not copies; actions are clipped once
    assert sampler.observations.data_ptr() == ballrun_data["observations"].ctypes.data
    assert sampler.actions.shape == ballrun_data["actions"].shape
    generator = torch.Generator().manual_seed(0)
    generator.set_state(sampler.generator.get_state())
    idx = torch.randint(len(sampler), (16,), generator=generator).numpy()
    batch = sampler.sample(16)
    rows = sampler.starts.numpy()[idx][:, None] + np.arange(50)
    np.testing.assert_array_equal(batch["observations"].numpy(), ballrun_data["observations"][rows])
    lim = np.float32(1 - 1e-5)  # TraC's research/datasets/feedback_buffer.py: action_eps = 1e-5
    assert np.abs(ballrun_data["actions"][rows]).max() > lim  # saturated actions, so the clip shows
    np.testing.assert_array_equal(batch["actions"].numpy(), np.clip(ballrun_data["actions"][rows], -lim, lim))
    np.testing.assert_array_equal(batch["desirable"].numpy(), sampler.desirable.numpy()[idx])
    np.testing.assert_array_equal(batch["weight"].numpy(), sampler.weight.numpy()[idx])
    assert batch["observations"].shape == (16, 50, 7) and batch["desirable"].dtype == torch.bool


def test_memory_grows_only_by_the_index_arrays(ballrun_data):
    small = trac.make_sampler(make_cfg(seg_ratio=0.5, num_segments=100), ballrun_data, torch.device("cpu"))
    large = trac.make_sampler(make_cfg(seg_ratio=0.5, num_segments=10_000), ballrun_data, torch.device("cpu"))
    per_segment = 8 + 1 + 4  # int64 start, bool label, float32 weight
    assert large.nbytes() - small.nbytes() == (len(large) - len(small)) * per_segment
    assert large.index_nbytes() == len(large) * per_segment
    tensors = [value for value in vars(large).values() if isinstance(value, torch.Tensor)]
    assert sum(t.numel() * t.element_size() for t in tensors) == large.nbytes()


def test_same_seed_same_segments_and_batches(ballrun_data):
    def draw(seed):
        sampler = trac.make_sampler(make_cfg(seed=seed, seg_ratio=0.5), ballrun_data, torch.device("cpu"))
        return sampler.starts.clone(), sampler.desirable.clone(), [sampler.sample(8) for _ in range(3)]

    (starts_a, labels_a, batches_a), (starts_b, labels_b, batches_b) = draw(1), draw(1)
    assert torch.equal(starts_a, starts_b) and torch.equal(labels_a, labels_b)
    for a, b in zip(batches_a, batches_b):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(draw(2)[0], starts_a)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_classification_loss_by_hand():
    scores = torch.tensor([0.0, math.log(3), -math.log(3), 2.0])
    desirable = torch.tensor([True, True, False, False])
    weight = torch.tensor([1.0, 0.5, 1.0, 2.0])
    loss, accuracy = trac.classification_loss(scores, desirable, weight, eta=0.5)
    # undesirable coefficient 0.5 * 2 / 2; sigmoid: 0.5, 0.75, 0.25, 1 / (1 + e^-2)
    p3 = 1 / (1 + math.exp(-2))
    terms = [math.log(0.5), 0.5 * math.log(0.75), 0.5 * math.log(0.75), 0.5 * 2 * math.log(1 - p3)]
    assert loss.item() == pytest.approx(-sum(terms) / 4, rel=1e-6)
    assert accuracy.item() == 0.5  # sigmoid(0) = 0.5 is not above 0.5
    # probabilities clamped at 1e-6; one desirable, three undesirable: coefficient eta * 1 / 3
    loss, _ = trac.classification_loss(torch.tensor([0.0, 100.0, 0.0, 0.0]), torch.tensor([True, False, False, False]),
                                       torch.ones(4), eta=1.5)
    assert loss.item() == pytest.approx(-(math.log(0.5) + 0.5 * (math.log(1e-6) + 2 * math.log(0.5))) / 4, rel=1e-6)
    # two desirable, one undesirable: its coefficient is eta * 2 / 1; all-desirable: no undesirable term at all
    loss, _ = trac.classification_loss(torch.zeros(3), torch.tensor([True, True, False]), torch.ones(3), eta=0.5)
    assert loss.item() == pytest.approx(-(2 * math.log(0.5) + 0.5 * 2 * math.log(0.5)) / 3, rel=1e-6)
    loss, _ = trac.classification_loss(torch.zeros(2), torch.tensor([True, True]), torch.ones(2), eta=0.5)
    assert loss.item() == pytest.approx(-math.log(0.5), rel=1e-6)


def test_segment_scores_by_hand():
    log_pi = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    log_ref = torch.tensor([[-1.0, -1.0, -2.0], [1.0, 1.0, 1.0]])
    scores = trac.segment_scores(log_pi, log_ref, 0.2, 0.5 ** torch.arange(3.0))
    torch.testing.assert_close(scores, torch.tensor([0.2 * (1 + 0.5 * 2 + 0.25 * 4), 0.0]))
    obs, act = torch.zeros(1, 2, 3), torch.tensor([[[0.5, -0.5], [0.0, 1.0]]])
    actor = lambda o: torch.zeros(*o.shape[:-1], 2)  # noqa: E731
    torch.testing.assert_close(trac.log_prob(actor, obs, act), torch.tensor([[-0.5, -1.0]]))


# ---------------------------------------------------------------------------------------------
# the agent
# ---------------------------------------------------------------------------------------------
def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_bc_then_frozen_reference_and_warmup(ballrun_data, env):
    cfg = make_cfg(bc_steps=3, warmup_steps=4, dropout=0.0)
    sampler = trac.make_sampler(cfg, ballrun_data, torch.device("cpu"))
    torch.manual_seed(0)
    agent = trac.TraC(cfg, env, torch.device("cpu"))
    names = None
    for step in range(3):
        metrics = agent.train(sampler.sample(8))
        names = names or list(metrics)
        assert list(metrics) == names and all(m.dim() == 0 for m in metrics.values())
        assert metrics["trac_loss"].item() == 0.0 and metrics["trac_phase"].item() == 0.0
        assert metrics["lr"].item() == pytest.approx(1e-4) and metrics["bc_loss"].item() > 0
    # the switch: the reference is the BC policy, and a fresh optimizer starts
    assert all(torch.equal(a, b) for a, b in zip(params(agent.actor), params(agent.reference)))
    assert len(agent.optimizer.state) == 0
    reference = params(agent.reference)
    for i in range(1, 7):
        batch = sampler.sample(8)
        with torch.no_grad():  # the loss the update is about to take (no dropout)
            scores = trac.segment_scores(trac.log_prob(agent.actor, batch["observations"], batch["actions"]),
                                         trac.log_prob(agent.reference, batch["observations"], batch["actions"]),
                                         0.2, 0.99 ** torch.arange(100.0))
            expected, _ = trac.classification_loss(scores, batch["desirable"], batch["weight"], 0.25)
        metrics = agent.train(batch)
        assert list(metrics) == names and metrics["trac_phase"].item() == 1.0
        assert metrics["lr"].item() == pytest.approx(1e-5 * min(1.0, i / 4))
        assert metrics["trac_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(params(agent.reference), reference))
    assert all(not p.requires_grad and p.grad is None for p in agent.reference.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(params(agent.actor), reference))


def test_act_is_deterministic_and_draws_nothing(ballrun_data, env):
    cfg = make_cfg()
    agent = trac.TraC(cfg, env, torch.device("cpu"))
    agent.train(trac.make_sampler(cfg, ballrun_data, torch.device("cpu")).sample(8))
    obs = torch.as_tensor(ballrun_data["observations"][:5])
    state = torch.get_rng_state()
    generator = torch.Generator().manual_seed(3)
    first, second = agent.act(obs, generator), agent.act(obs, generator)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(first, second) and first.shape == (5, 2)
    assert not first.requires_grad  # acting builds no graph (the evaluation turns actions into numpy)
    assert agent.policy_at(20.0) == agent.act and agent.training_policies() == {"trac": agent.act}
    assert agent.evaluation_policies((10.0, 20.0)) == [("trac", agent.act, [10.0, 20.0], {})]


@pytest.mark.parametrize("saved_at", [2, 3, 5])  # during BC, at the switch, during classification
def test_checkpoint_resumes_bit_exactly(ballrun_data, env, saved_at):
    cfg = make_cfg(bc_steps=3, warmup_steps=4)
    sampler = trac.make_sampler(cfg, ballrun_data, torch.device("cpu"))
    batches = [sampler.sample(8) for _ in range(saved_at + 3)]
    torch.manual_seed(0)
    agent = trac.TraC(cfg, env, torch.device("cpu"), ballrun_data)
    for batch in batches[:saved_at]:
        agent.train(batch)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    resumed = trac.TraC(cfg, env, torch.device("cpu"))  # no data: a checkpoint is loaded
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    obs = batches[0]["observations"][:, 0]
    assert torch.equal(agent.act(obs, None), resumed.act(obs, None))
    rng = torch.get_rng_state()
    for batch in batches[saved_at:]:
        torch.set_rng_state(rng)  # dropout draws from the global generator, which the loop restores
        a = agent.train(batch)
        torch.set_rng_state(rng)
        b = resumed.train(batch)
        rng = torch.get_rng_state()
        assert all(torch.equal(a[key], b[key]) for key in a)
    for one, other in ((agent.actor, resumed.actor), (agent.reference, resumed.reference)):
        assert all(torch.equal(x, y) for x, y in zip(params(one), params(other)))
    assert resumed.step == agent.step == saved_at + 3


# ---------------------------------------------------------------------------------------------
# defaults and bad input
# ---------------------------------------------------------------------------------------------
def test_defaults_per_suite():
    assert set(trac.SEG_RATIOS) == set(ALL_TASKS)
    assert trac.SEG_RATIOS["OfflineBallRun-v0"] == 1.0
    assert trac.SEG_RATIOS["OfflinePointButton1Gymnasium-v0"] == 0.75
    assert trac.SEG_RATIOS["OfflineMetadrive-easydense-v0"] == 0.25
    safety_gym = (0.1, 0.99, 0.5, 0.5, 0.5, 30_000, 100_000)
    expected = {"bullet": (0.2, 0.99, 0.25, 0.5, 0.0, 30_000, 100_000), "safety_gymnasium": safety_gym,
                "velocity": safety_gym,
                "metadrive": (0.2, 1.0, 0.25, 0.25, 0.0, 60_000, 200_000)}
    for task in ALL_TASKS:
        h, schedule = trac.default_hparams(task), trac.default_schedule(task)
        got = (h["alpha"], h["gamma"], h["eta"], h["safe_top_perc"], h["safe_bottom_perc"], h["bc_steps"],
               schedule["max_timesteps"])
        assert got == expected[check_task(task)] and h["k"] == 0.7 and schedule["batch_size"] == 96
        trac.check_hparams(task, h)


def test_bad_hparams_and_data(ballrun_data, env):
    cpu = torch.device("cpu")
    with pytest.raises(LSPCError, match="unknown hyperparameters \\['kappa'\\]"):
        trac.TraC(make_cfg(kappa=0.7), env, cpu)
    for name, value in (("safe_top_perc", 0.0), ("gamma", 1.5), ("bc_steps", 0), ("a_hidden_sizes", [])):
        with pytest.raises(LSPCError, match=name):
            trac.make_sampler(make_cfg(**{name: value}), ballrun_data, cpu)
    with pytest.raises(LSPCError, match="no desirable"):
        trac.make_sampler(make_cfg(cost_limit=-1.0), ballrun_data, cpu)
    with pytest.raises(LSPCError, match="no undesirable"):
        trac.make_sampler(make_cfg(cost_limit=1000.0), ballrun_data, cpu)
    with pytest.raises(LSPCError, match=r"shorter than the segment length L = 200 \(episode_len 200 x seg_ratio 1, "
                                        r"longest trajectory 100 steps\)"):
        trac.make_sampler(make_cfg(episode_len=200), ballrun_data, cpu)
    with pytest.raises(LSPCError, match="num_segments"):
        trac.make_sampler(make_cfg(seg_ratio=0.95), ballrun_data, cpu)  # (100 - 95) // 6 = 0


# Each range of check_hparams at its edges: the edge value is accepted, the first value past it, a boolean, NaN and
# text are refused with the range written as an interval.
RANGES = {"seg_ratio": "(0, 1]", "alpha": "(0, inf)", "gamma": "(0, 1]", "eta": "(0, inf)", "k": "[0, 1]",
          "safe_top_perc": "(0, 1]", "safe_bottom_perc": "[0, 1)", "bc_lr": "(0, inf)", "trac_lr": "(0, inf)",
          "dropout": "[0, 1)"}
EDGES = {"(0, 1]": ([1.0, 1e-9], [0.0, 1.001]), "(0, inf)": ([1e-9, 1e9], [0.0, math.inf]),
         "[0, 1]": ([0.0, 1.0], [-0.001, 1.001]), "[0, 1)": ([0.0, 0.999], [-0.001, 1.0])}


def check(**hparams):
    trac.check_hparams(TASK, {**trac.default_hparams(TASK), **hparams})


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_at_its_edges(name):
    accepted, refused = EDGES[RANGES[name]]
    for value in accepted:
        check(**{name: value})
    for value in [*refused, True, math.nan, "0.5"]:
        with pytest.raises(LSPCError, match=f"^trac: {name} must be a number in {re.escape(RANGES[name])}, got"):
            check(**{name: value})


def test_counts_and_widths_at_their_edges():
    check(bc_steps=1, warmup_steps=1, num_segments=1, a_hidden_sizes=[1])
    check(num_segments=None)
    for name, bad in (("bc_steps", 0), ("bc_steps", True), ("bc_steps", 2.0), ("warmup_steps", 0),
                      ("num_segments", 0), ("num_segments", True), ("num_segments", 5.0),
                      ("a_hidden_sizes", []), ("a_hidden_sizes", [0]), ("a_hidden_sizes", [True]), ("a_hidden_sizes", (4,))):
        with pytest.raises(LSPCError, match=f"^trac: {name} must be"):
            check(**{name: bad})


def test_segment_length_of_one_step_is_the_shortest():
    assert trac.segment_length(100, 0.01) == 1 and trac.segment_length(100, 0.5) == 50
    with pytest.raises(LSPCError, match="seg_ratio 0.009 of a 100-step episode gives segments of 0 steps"):
        trac.segment_length(100, 0.009)



def test_segments_at_the_threshold_are_safe_and_counted_so(capsys):
    # episode_len 8, seg_ratio 0.5: L = 4, safe when the cost sum <= 1 * 4 / 8 = 0.5, and 4 x 0.125 is exactly 0.5
    data = trajectories((np.full(8, 1.0), np.full(8, 0.125)), (np.full(8, 2.0), np.ones(8)))
    cfg = make_cfg(cost_limit=1.0, episode_len=8, seg_ratio=0.5, num_segments=50, safe_top_perc=1.0,
                   safe_bottom_perc=0.0)
    sampler = trac.make_sampler(cfg, data, torch.device("cpu"))
    on_the_edge = sampler.starts.numpy() < 8  # from the first trajectory
    assert 0 < on_the_edge.sum() < 50
    np.testing.assert_array_equal(sampler.desirable.numpy(), on_the_edge)
    assert sampler.counts == trac.SegmentCounts(drawn=50, desirable=int(on_the_edge.sum()),
                                                undesirable=int((~on_the_edge).sum()),
                                                unsafe=int((~on_the_edge).sum()), skipped_trajectories=0)


def test_saturated_actions_are_clipped_inside_tanhs_range_on_both_sides():
    data = trajectories((np.full(10, 1.0), np.zeros(10)), (np.full(10, 2.0), np.ones(10)))
    data["actions"] = np.tile(np.array([[-1.0, 1.0], [0.25, -0.5]], np.float32), (10, 1))
    cfg = make_cfg(cost_limit=1.0, episode_len=10, seg_ratio=0.5, num_segments=20)
    sampler = trac.make_sampler(cfg, data, torch.device("cpu"))
    lim = np.float32(1 - 1e-5)  # TraC's research/datasets/feedback_buffer.py: action_eps = 1e-5
    expected = np.tile(np.array([[-lim, lim], [0.25, -0.5]], np.float32), (10, 1))
    np.testing.assert_array_equal(sampler.actions.numpy(), expected)


def test_sampler_keeps_everything_on_the_datas_device():
    """On a (virtual) GPU the indices, labels, weights and every batch stay on the GPU with the transitions."""
    from lspc.device_emulation import VirtualCuda

    counts = trac.SegmentCounts(drawn=2, desirable=1, undesirable=1, unsafe=0, skipped_trajectories=0)
    with VirtualCuda(device_count=1):
        obs, act = torch.zeros(20, 3, device="cuda"), torch.zeros(20, 2, device="cuda")
        sampler = trac.SegmentSampler(obs, act, np.array([0, 5]), np.array([True, False]), np.array([1.0, 0.5]),
                                      4, 0, counts)
        assert sampler.segment_length == 4  # tools/bench/bench_trac_memory.py reads it
        tensors = [sampler.starts, sampler.desirable, sampler.weight, sampler.window, *sampler.sample(3).values()]
        assert all(t.device.type == "cuda" for t in tensors)


# The sweep's side of the budget guard (tests/test_reference_trac.py checks check_config): last in this file,
# as it starts a process (scripts/mutation.py runs these tests per mutant and stops at the first failure)
def sweep(*flags):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), "--tasks", TASK, "--seeds", "0", "--methods",
           "trac", "--dry_run", *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_sweep_refuses_a_trac_budget_of_bc_steps_and_says_the_split(tmp_path):
    refused = sweep("--logdir", str(tmp_path), "--max_timesteps", "20")
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr
    assert "max_timesteps 20 <= bc_steps 30000 would train behaviour cloning only" in errors[0]
    assert not os.path.exists(tmp_path / "submitit")
    planned = sweep("--logdir", str(tmp_path), "--max_timesteps", "20", "--method_extra", "trac=--hparam bc_steps=15")
    assert planned.returncode == 0, planned.stderr
    assert (f"trac on {TASK}: 15 behaviour-cloning steps, then 5 classification steps (a budget of at most bc_steps "
            "is refused, not scaled)") in planned.stdout
