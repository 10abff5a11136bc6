"""TraC: offline safe RL by trajectory classification (Gong, Kumar and Varakantham, AAAI 2025).

TraC never learns a critic. It labels fixed-length segments of the dataset's trajectories and
trains a policy whose segment score (how much more likely the policy makes a segment than a frozen
behaviour-cloned reference does) separates the two labels:
  1. labelled segments: L = int(episode_len * seg_ratio) steps, drawn uniformly inside the
     trajectories. A segment is safe when its cost sum is <= cost_limit * L / episode_len. Safe
     segments are ranked by reward sum: the top ``safe_top_perc`` are desirable with weight
     (1 - k) * r + k (r the reward sum min-max normalized over the safe segments), the bottom
     ``safe_bottom_perc`` undesirable with weight (1 - k) * (1 - r) + k, the rest are dropped;
     every unsafe segment is undesirable with weight 1;
  2. ``bc_steps`` updates of behaviour cloning on all labelled segments (Adam, lr ``bc_lr``), with
     log pi(a|s) = -||pi(s) - a||^2 of a deterministic tanh actor; that actor is then copied into
     the frozen reference pi_ref;
  3. the classification loss on segment scores alpha * sum_t gamma^t (log pi - log pi_ref):
     desirable ones pushed up, undesirable ones down, each weighted by its segment weight and the
     undesirable ones also by eta * #desirable / #undesirable of the batch; a fresh Adam whose lr
     warms up linearly from 0 to ``trac_lr`` over ``warmup_steps`` updates.
The threshold changes the labels, so there is one policy per (task, seed, threshold). A budget of
max_timesteps <= bc_steps is refused (``check_config``): it would be plain behaviour cloning.

Facts from the authors' code (github.com/zgong11/TraC: ``research/datasets/feedback_buffer.py``,
``research/algs/trac.py``, ``configs/trac_*.yaml``, ``scripts/run_*.sh``); what differs, and why:
  * Segments are (start index) rows into the dataset's transition arrays, gathered per batch;
    TraC materializes every segment as float64 arrays (about 40 GB of observations for
    PointButton1 at seg_ratio 0.75). Only observations and actions are kept, as float32.
  * L and the safe test use the task's episode length (``cfg.episode_len``), where TraC takes the
    dataset's longest trajectory; on DSRL's data the two are the same.
  * Batches are drawn uniformly with replacement from one seeded ``torch.Generator`` (the state the
    shared loop checkpoints); TraC iterates over shuffled epochs through DataLoader workers, which
    no seed reproduces.
  * Ties in the reward ranking are broken by segment order (a stable sort; TraC's quicksort
    order is arbitrary). When all safe segments have the same reward sum TraC's weights are
    NaN (0 / 0); here r = 1 for all of them.
  * The lr schedule is a function of the update counter; TraC's LambdaLR gives the same values
    (its first classification update runs at trac_lr / warmup_steps, as here).
  * TraC evaluates the (randomly initialized) reference during BC and discards the result; it is
    not computed here (it draws no random numbers, so training is unchanged). Its unused options
    (bc_coeff 0, bc_data "all" in every config) are left out.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from lspc import LSPCError
from lspc.data.dataset import trajectory_bounds
from lspc.envs import SUITES, check_task

# ---------------------------------------------------------------------------------------------
# Per-task segment ratio and per-suite defaults
# ---------------------------------------------------------------------------------------------
# TraC's README runs one task per suite, each with its seg_ratio: BallRun 1.0 (run_bulletgym.sh),
# PointButton1 0.75 (run_safetygym.sh), MetaDrive easydense 0.25 (run_metadrive.sh). For the other
# tasks we use their suite's published value (our choice: within a suite the scripts share every
# other hyperparameter, and the episode lengths agree: Bullet's short 100-500-step episodes are
# classified whole; Safety-Gymnasium's 500- and 1,000-step ones in 3/4-length segments, the
# velocity tasks included since TraC runs them with the Safety-Gymnasium script; MetaDrive's
# 1,000-step episodes, which often end early in a crash or at the goal, in short segments that
# keep those trajectories eligible).
_SUITE_SEG_RATIO = {"bullet": 1.0, "safety_gymnasium": 0.75, "velocity": 0.75, "metadrive": 0.25}
SEG_RATIOS: Dict[str, float] = {task: _SUITE_SEG_RATIO[suite] for suite, tasks in SUITES.items() for task in tasks}

# scripts/run_{bulletgym,safetygym,metadrive}.sh and configs/trac_*.yaml; k is TraC's --kappa
# (renamed: kappa is the cost threshold in this project)
_SUITE_HPARAMS = {
    "bullet": dict(alpha=0.2, gamma=0.99, eta=0.25, k=0.7, safe_top_perc=0.5, safe_bottom_perc=0.0, bc_steps=30_000),
    "safety_gymnasium": dict(alpha=0.1, gamma=0.99, eta=0.5, k=0.7, safe_top_perc=0.5, safe_bottom_perc=0.5,
                             bc_steps=30_000),
    "metadrive": dict(alpha=0.2, gamma=1.0, eta=0.25, k=0.7, safe_top_perc=0.25, safe_bottom_perc=0.0,
                      bc_steps=60_000),
}
_SUITE_HPARAMS["velocity"] = _SUITE_HPARAMS["safety_gymnasium"]
# total updates and evaluation period (trainer_kwargs of configs/trac_*.yaml); 20 episodes each
_SUITE_SCHEDULE = {"bullet": (100_000, 1_000), "safety_gymnasium": (100_000, 1_000), "velocity": (100_000, 1_000),
                   "metadrive": (200_000, 2_000)}
BATCH_SIZE = 96  # segments per batch
EVAL_EPISODES = 20
# TraC's number of segments: (episode_len - L) // 6 per trajectory when seg_ratio < 1 (one per full-length
# trajectory when it is 1), at most a million
SEGMENT_SPACING = 6
MAX_SEGMENTS = 1_000_000
ACTION_EPS = 1e-5  # dataset actions are clipped to +-(1 - ACTION_EPS), inside tanh's range
LOG_PROB_FLOOR = 1e-6  # the sigmoid probabilities are clamped to this before the log


def default_hparams(task: str) -> Dict[str, Any]:
    """TraC's hyperparameters for ``task`` (its suite's, and the task's seg_ratio)."""
    suite = check_task(task)
    return {
        "seg_ratio": SEG_RATIOS[task],
        "num_segments": None,  # None: TraC's rule (SEGMENT_SPACING); a number: that many
        **_SUITE_HPARAMS[suite],
        "bc_lr": 1e-4,
        "trac_lr": 1e-5,  # TraC: lr 1e-4 times the warm-up's multiplier 0.1
        "warmup_steps": 10_000,
        "a_hidden_sizes": [256, 256],
        "dropout": 0.25,
    }


def default_schedule(task: str) -> Dict[str, int]:
    """TraC's schedule: total updates (BC included), batch of 96 segments, evaluation period and episodes."""
    max_timesteps, eval_every = _SUITE_SCHEDULE[check_task(task)]
    return {"max_timesteps": max_timesteps, "batch_size": BATCH_SIZE, "eval_every": eval_every,
            "eval_episodes": EVAL_EPISODES}


def check_hparams(task: str, hparams: Dict[str, Any]) -> None:
    """Raise a one-line LSPCError for hyperparameters TraC cannot train with."""
    expected = set(default_hparams(task))
    unknown, missing = sorted(set(hparams) - expected), sorted(expected - set(hparams))
    if unknown or missing:
        raise LSPCError(f"trac: unknown hyperparameters {unknown}, missing {missing}; expected {sorted(expected)}")
    h = hparams

    def number(name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
        value = h[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise LSPCError(f"trac: {name} must be a number in {interval}, got {value!r}")

    number("seg_ratio", 0.0, 1.0, low_open=True)
    number("alpha", 0.0, math.inf, low_open=True, high_open=True)
    number("gamma", 0.0, 1.0, low_open=True)
    number("eta", 0.0, math.inf, low_open=True, high_open=True)
    number("k", 0.0, 1.0)
    number("safe_top_perc", 0.0, 1.0, low_open=True)  # TraC's slice [-ceil(0):] would keep every segment
    number("safe_bottom_perc", 0.0, 1.0, high_open=True)
    number("bc_lr", 0.0, math.inf, low_open=True, high_open=True)
    number("trac_lr", 0.0, math.inf, low_open=True, high_open=True)
    number("dropout", 0.0, 1.0, high_open=True)
    for name in ("bc_steps", "warmup_steps"):
        if not isinstance(h[name], int) or isinstance(h[name], bool) or h[name] < 1:
            raise LSPCError(f"trac: {name} must be a positive integer, got {h[name]!r}")
    n = h["num_segments"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise LSPCError(f"trac: num_segments must be null (TraC's rule) or a positive integer, got {n!r}")
    sizes = h["a_hidden_sizes"]
    if (not isinstance(sizes, list) or not sizes
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise LSPCError(f"trac: a_hidden_sizes must be a non-empty list of positive integers, got {sizes!r}")


def check_config(cfg: Any) -> None:
    """A one-line LSPCError for a run config TraC cannot train with (before anything is written),
    a budget with no classification step among them: that run would be plain behaviour cloning."""
    check_hparams(cfg.task, cfg.hparams)
    segment_length(cfg.episode_len, cfg.hparams["seg_ratio"])
    bc_steps = cfg.hparams["bc_steps"]
    if cfg.max_timesteps <= bc_steps:
        raise LSPCError(f"trac: max_timesteps {cfg.max_timesteps} <= bc_steps {bc_steps} would train behaviour cloning "
                        f"only (TraC classifies after bc_steps); raise --max_timesteps or lower --hparam bc_steps=N")


def segment_length(episode_len: int, seg_ratio: float) -> int:
    """L = int(episode_len * seg_ratio), at least one step."""
    length = int(episode_len * seg_ratio)
    if length < 1:
        raise LSPCError(f"trac: seg_ratio {seg_ratio:g} of a {episode_len}-step episode gives segments of 0 steps")
    return length


# ---------------------------------------------------------------------------------------------
# 1. Labelled segments
# ---------------------------------------------------------------------------------------------
def draw_segments(starts: np.ndarray, ends: np.ndarray, length: int, count: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``count`` segment starts: a trajectory drawn uniformly (with replacement) among those of at
    least ``length`` steps, then a start uniform among its ``end - start - length + 1`` positions."""
    eligible = np.flatnonzero(ends - starts >= length)
    traj = eligible[rng.integers(len(eligible), size=count)]
    return rng.integers(starts[traj], ends[traj] - length + 1)


def window_sums(values: np.ndarray, seg_starts: np.ndarray, length: int) -> np.ndarray:
    """The sum of ``values`` over each segment, from one float64 running sum (no per-segment copy)."""
    running = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return running[seg_starts + length] - running[seg_starts]


def label_segments(reward_sums: np.ndarray, cost_sums: np.ndarray, cost_threshold: float, k: float,
                   top_perc: float, bottom_perc: float) -> Tuple[np.ndarray, np.ndarray]:
    """TraC's labels and weights: ``label`` 1 desirable, 0 undesirable, -1 dropped (a safe segment
    neither in the top nor in the bottom share), and the weight of each labelled segment.

    A segment in both shares (ceil rounding when the shares sum to 1) ends undesirable, as in
    TraC's code, which assigns the bottom share last."""
    count = len(reward_sums)
    label = np.zeros(count, dtype=np.int8)  # unsafe: undesirable
    weight = np.ones(count, dtype=np.float64)  # unsafe: weight 1
    safe = np.flatnonzero(cost_sums <= cost_threshold)
    if len(safe):
        rewards = reward_sums[safe]
        span = rewards.max() - rewards.min()
        ranked = (rewards - rewards.min()) / span if span > 0 else np.ones_like(rewards)
        order = np.argsort(rewards, kind="stable")
        top = order[len(order) - math.ceil(len(order) * top_perc):]
        bottom = order[:math.ceil(len(order) * bottom_perc)]
        label[safe] = -1
        label[safe[top]], weight[safe[top]] = 1, (1 - k) * ranked[top] + k
        label[safe[bottom]], weight[safe[bottom]] = 0, (1 - k) * (1 - ranked[bottom]) + k
    return label, weight


@dataclass
class SegmentCounts:
    """What the labelling kept, for the run's log line."""

    drawn: int
    desirable: int
    undesirable: int
    unsafe: int
    skipped_trajectories: int  # shorter than L: no segment is drawn from them


class SegmentSampler:
    """Labelled segments as start indices into the transitions; a batch gathers its windows."""

    def __init__(self, observations: torch.Tensor, actions: torch.Tensor, seg_starts: np.ndarray,
                 desirable: np.ndarray, weight: np.ndarray, length: int, seed: int, counts: SegmentCounts) -> None:
        device = observations.device
        self.observations, self.actions = observations, actions
        self.starts = torch.as_tensor(seg_starts, dtype=torch.int64, device=device)
        self.desirable = torch.as_tensor(desirable, dtype=torch.bool, device=device)
        self.weight = torch.as_tensor(weight, dtype=torch.float32, device=device)
        self.segment_length = length
        self.window = torch.arange(length, device=device)
        self.counts = counts
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.starts)

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]:
        """``batch_size`` labelled segments drawn uniformly with replacement."""
        idx = torch.randint(len(self), (batch_size,), generator=self.generator, device=self.starts.device)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Segments ``idx``: observations (B, L, obs_dim), actions (B, L, act_dim), desirable (B,) bool, weight (B,)."""
        rows = self.starts[idx, None] + self.window
        return {"observations": self.observations[rows], "actions": self.actions[rows],
                "desirable": self.desirable[idx], "weight": self.weight[idx]}

    def index_nbytes(self) -> int:
        """Bytes of the per-segment arrays (start, label, weight): all that grows with the number of segments."""
        return sum(t.element_size() * t.numel() for t in (self.starts, self.desirable, self.weight))

    def nbytes(self) -> int:
        """Bytes of every tensor the sampler holds (the transitions' observations and actions included)."""
        return self.index_nbytes() + sum(t.element_size() * t.numel()
                                         for t in (self.observations, self.actions, self.window))


def make_sampler(cfg: Any, data: Dict[str, np.ndarray], device: torch.device) -> SegmentSampler:
    """TraC's labelled segments of ``data`` for ``cfg.cost_limit``, drawn with numpy's generator seeded
    by ``cfg.seed`` (the same seed gives the same segments); batches from a torch generator seeded alike."""
    h = cfg.hparams
    check_hparams(cfg.task, h)
    length = segment_length(cfg.episode_len, h["seg_ratio"])
    bounds = np.asarray(trajectory_bounds(data), dtype=np.int64).reshape(-1, 2)
    starts, ends = bounds[:, 0], bounds[:, 1]
    long_enough = int(np.count_nonzero(ends - starts >= length))
    if long_enough == 0:
        raise LSPCError(f"trac: every trajectory is shorter than the segment length L = {length} "
                        f"(episode_len {cfg.episode_len} x seg_ratio {h['seg_ratio']:g}, longest trajectory "
                        f"{int((ends - starts).max())} steps); lower seg_ratio")
    if h["num_segments"] is not None:
        count = h["num_segments"]
    elif h["seg_ratio"] < 1.0:
        count = min((cfg.episode_len - length) // SEGMENT_SPACING * len(starts), MAX_SEGMENTS)
    else:
        count = min(long_enough, MAX_SEGMENTS)
    if count == 0:
        raise LSPCError(f"trac: TraC's rule draws (episode_len - L) // {SEGMENT_SPACING} = 0 segments per trajectory "
                        f"at L = {length}; set --hparam num_segments=N")
    seg_starts = draw_segments(starts, ends, length, count, np.random.default_rng(cfg.seed))
    threshold = cfg.cost_limit * length / cfg.episode_len
    cost_sums = window_sums(data["costs"], seg_starts, length)
    label, weight = label_segments(window_sums(data["rewards"], seg_starts, length), cost_sums, threshold,
                                   h["k"], h["safe_top_perc"], h["safe_bottom_perc"])
    counts = SegmentCounts(drawn=count, desirable=int(np.count_nonzero(label == 1)),
                           undesirable=int(np.count_nonzero(label == 0)),
                           unsafe=int(np.count_nonzero(cost_sums > threshold)),
                           skipped_trajectories=len(starts) - long_enough)
    if counts.desirable == 0 or counts.undesirable == 0:
        missing = "desirable (no segment is safe)" if counts.desirable == 0 else "undesirable"
        raise LSPCError(f"trac: no {missing} segment among {count} segments of {length} steps at cost limit "
                        f"{cfg.cost_limit:g} (a segment is safe when its cost sum <= {threshold:g}; {counts.unsafe} "
                        f"are unsafe); the classifier needs both labels")
    keep = label >= 0
    print(f"data: trac classifies {int(keep.sum())} of {count} segments of {length} steps: {counts.desirable} "
          f"desirable, {counts.undesirable} undesirable ({counts.unsafe} unsafe); {counts.skipped_trajectories} "
          "trajectories shorter than L skipped", flush=True)
    observations = torch.as_tensor(np.asarray(data["observations"], dtype=np.float32), device=device)
    actions = torch.as_tensor(np.clip(np.asarray(data["actions"], dtype=np.float32), -1 + ACTION_EPS, 1 - ACTION_EPS),
                              device=device)
    return SegmentSampler(observations, actions, seg_starts[keep], label[keep] == 1, weight[keep], length, cfg.seed,
                          counts)


# ---------------------------------------------------------------------------------------------
# 2. Policy and losses
# ---------------------------------------------------------------------------------------------
class Actor(nn.Module):
    """TraC's deterministic actor: Linear, Dropout, ReLU per hidden layer, then Linear and tanh;
    orthogonal weights (gain 1), zero biases."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        last = obs_dim
        for width in hidden_sizes:
            layers += [nn.Linear(last, width), nn.Dropout(dropout), nn.ReLU()]
            last = width
        layers += [nn.Linear(last, act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def log_prob(actor: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """TraC's log pi(a|s) = -||pi(s) - a||^2 (a unit-variance Gaussian up to constants), per step: (B, L)."""
    return -(actor(obs) - actions).square().sum(-1)


def segment_scores(log_pi: torch.Tensor, log_pi_ref: torch.Tensor, alpha: float,
                   discounts: torch.Tensor) -> torch.Tensor:
    """alpha * sum_t gamma^t (log pi - log pi_ref) of each segment: (B, L) -> (B,)."""
    return alpha * (discounts * (log_pi - log_pi_ref)).sum(-1)


def classification_loss(scores: torch.Tensor, desirable: torch.Tensor, weight: torch.Tensor,
                        eta: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """TraC's weighted logistic loss and the batch's accuracy.

    loss = -mean_i lambda_i w_i [y_i log sigmoid(s_i) + (1 - y_i) log(1 - sigmoid(s_i))], the
    probabilities clamped to >= 1e-6 first; lambda = 1 for desirable segments and eta * #desirable /
    #undesirable (of the batch) for undesirable ones."""
    y = desirable.to(scores.dtype)
    n_undesirable = (1 - y).sum()
    undesirable_coef = eta * y.sum() / n_undesirable.clamp(min=1)  # unused when the batch has no undesirable segment
    coef = torch.where(desirable, torch.ones_like(scores), undesirable_coef)
    p = torch.sigmoid(scores)
    log_lik = y * p.clamp(min=LOG_PROB_FLOOR).log() + (1 - y) * (1 - p).clamp(min=LOG_PROB_FLOOR).log()
    loss = -(coef * weight * log_lik).mean()
    accuracy = ((p > 0.5) == desirable).to(scores.dtype).mean()
    return loss, accuracy


# ---------------------------------------------------------------------------------------------
# 3. The agent
# ---------------------------------------------------------------------------------------------
class TraC:
    """One TraC policy: ``train`` is one update (BC for the first ``bc_steps``, then classification)."""

    def __init__(self, cfg: Any, env: gym.Env, device: torch.device,
                 data: Optional[Dict[str, np.ndarray]] = None) -> None:
        # ``data`` is not needed: the segments live in the sampler, L comes from the config
        check_hparams(cfg.task, cfg.hparams)
        h = cfg.hparams
        self.cfg, self.device = cfg, device
        self.alpha, self.eta = float(h["alpha"]), float(h["eta"])
        self.bc_steps, self.warmup_steps = h["bc_steps"], h["warmup_steps"]
        self.bc_lr, self.trac_lr = float(h["bc_lr"]), float(h["trac_lr"])
        length = segment_length(cfg.episode_len, h["seg_ratio"])
        self.discounts = (float(h["gamma"]) ** torch.arange(length, dtype=torch.float64)).to(torch.float32).to(device)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        self.actor = Actor(obs_dim, act_dim, h["a_hidden_sizes"], float(h["dropout"])).to(device)
        self.reference = copy.deepcopy(self.actor).eval()  # overwritten with the BC policy at the switch
        self.reference.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=self.bc_lr)
        self.low = torch.as_tensor(env.action_space.low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(env.action_space.high, dtype=torch.float32, device=device)
        self.step = 0  # updates done

    def lr(self) -> float:
        """The learning rate of the next update: bc_lr during BC, then the linear warm-up to trac_lr."""
        if self.step < self.bc_steps:
            return self.bc_lr
        return self.trac_lr * min(1.0, (self.step - self.bc_steps + 1) / self.warmup_steps)

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One update on a batch of segments. Metrics (0-dim tensors on the device), the same in both phases:
        bc_loss (mean -log pi over the batch's steps; the BC objective, reported after BC too),
        trac_loss and accuracy (the classifier's, 0 during BC, when there is no reference yet),
        lr, and trac_phase (0 during BC, 1 after)."""
        obs, actions = batch["observations"], batch["actions"]
        classifying = self.step >= self.bc_steps
        lr = self.lr()
        self.actor.train()
        log_pi = log_prob(self.actor, obs, actions)
        bc_loss = -log_pi.mean()
        if classifying:
            with torch.no_grad():
                log_pi_ref = log_prob(self.reference, obs, actions)
            scores = segment_scores(log_pi, log_pi_ref, self.alpha, self.discounts)
            trac_loss, accuracy = classification_loss(scores, batch["desirable"], batch["weight"], self.eta)
            loss = trac_loss
        else:
            trac_loss = accuracy = torch.zeros((), device=self.device)  # a fill, no host-to-device copy
            loss = bc_loss
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        if self.step == self.bc_steps:
            self._freeze_reference()
        return {"bc_loss": bc_loss.detach(), "trac_loss": trac_loss.detach(), "accuracy": accuracy,
                "lr": torch.full((), lr, device=self.device),
                "trac_phase": torch.full((), float(classifying), device=self.device)}

    def _freeze_reference(self) -> None:
        """The BC policy becomes pi_ref; classification starts with a fresh Adam, as in TraC."""
        self.reference.load_state_dict(self.actor.state_dict())
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=0.0)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Deterministic actions of the policy (dropout off) for a batch of observations; draws nothing."""
        self.actor.eval()
        return self.actor(obs).clamp(self.low, self.high)

    def policy_at(self, kappa: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
        """The policy scored at ``kappa``: the one trained for cfg.cost_limit."""
        return self.act

    def training_policies(self) -> Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]]:
        return {"trac": self.act}

    def evaluation_policies(self, thresholds: Sequence[float]) -> List[Tuple[str, Callable, List[float], Dict]]:
        """(name, policy, thresholds it is scored at, what to record) for eval_lspc.py."""
        return [("trac", self.act, list(thresholds), {})]

    def state_dict(self) -> Dict[str, Any]:
        """Everything training continues from; the lr schedule is a function of ``step``."""
        return {"actor": self.actor.state_dict(), "reference": self.reference.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.reference.load_state_dict(state["reference"])
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])  # BC's or classification's Adam: the same parameters

