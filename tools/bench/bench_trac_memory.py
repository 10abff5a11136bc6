"""Memory of TraC's labelled segments on a dataset the size of Safety-Gymnasium's PointButton1.

    python tools/bench/bench_trac_memory.py [--trajectories 2268] [--episode_len 1000] [--seg_ratio 0.75]
                                        [--cost_limit 20] [--device cpu]

Synthetic data of PointButton1's shape (2,268 trajectories x 1,000 steps, 76-dim observations,
2-dim actions): standard-normal observations, actions and rewards, and per trajectory a cost rate
drawn from [0, 0.05], so that both safe and unsafe segments occur. Only what ``lspc.methods.trac.make_sampler``
reads is generated (observations, actions, rewards, costs, terminals, timeouts; no
next_observations), all float32. It then builds TraC's segments with the default number of them
(TraC's rule: (episode_len - L) // 6 per trajectory) and reports, as one JSON line:
  data_mb: the generated arrays (what any method holds for this dataset);
  rss_before_mb: the process's peak resident memory after the data was generated (Python, torch, data);
  rss_peak_mb: the process's peak resident memory after building the segments and sampling batches;
  sampler_mb / index_mb: what the sampler holds (on the CPU its observations and actions are the
    dataset's arrays, not copies; actions are clipped into a copy) / the per-segment arrays alone;
  tracs_buffer_gb: what TraC's own buffer would allocate (float64 copies of every segment's steps);
  build_s, sample_ms: time to label the segments, and to gather one batch of 96.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the repository

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lspc.methods import trac  # noqa: E402
from lspc.methods.baselines import BaselineConfig  # noqa: E402

TASK = "OfflinePointButton1Gymnasium-v0"
OBS_DIM, ACT_DIM = 76, 2


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_data(trajectories: int, episode_len: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = trajectories * episode_len
    observations = np.empty((n, OBS_DIM), np.float32)
    rng.standard_normal(dtype=np.float32, out=observations)  # float32 throughout: no float64 intermediate
    rate = np.repeat(rng.uniform(0.0, 0.05, trajectories).astype(np.float32), episode_len)
    timeouts = np.zeros(n, bool)
    timeouts[episode_len - 1::episode_len] = True
    return {"observations": observations,
            "actions": rng.uniform(-1, 1, (n, ACT_DIM)).astype(np.float32),
            "rewards": rng.standard_normal(n, dtype=np.float32),
            "costs": (rng.random(n, dtype=np.float32) < rate).astype(np.float32),
            "terminals": np.zeros(n, bool), "timeouts": timeouts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectories", type=int, default=2268,
                        help="synthetic trajectories (default: PointButton1's 2268)")
    parser.add_argument("--episode_len", type=int, default=1000, help="steps per trajectory (default: 1000)")
    parser.add_argument("--seg_ratio", type=float, default=trac.SEG_RATIOS[TASK],
                        help="TraC's segment length over the episode length (default: its value for PointButton1)")
    parser.add_argument("--cost_limit", type=float, default=20.0,
                        help="the threshold that labels segments safe or unsafe (default: 20)")
    parser.add_argument("--device", default="cpu", help="where the sampler holds its data, cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the synthetic data and the sampler (default: 0)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = synthetic_data(args.trajectories, args.episode_len, args.seed)
    data_mb = sum(value.nbytes for value in data.values()) / 2**20
    rss_before = peak_rss_mb()
    cfg = BaselineConfig(algo="trac", task=TASK, episode_len=args.episode_len, seed=args.seed,
                         cost_limit=args.cost_limit, hparams={**trac.default_hparams(TASK), "seg_ratio": args.seg_ratio})
    device = torch.device(args.device)
    start = time.perf_counter()
    sampler = trac.make_sampler(cfg, data, device)
    build_s = time.perf_counter() - start
    sampler.sample(96)
    start = time.perf_counter()
    for _ in range(10):
        batch = sampler.sample(96)
    batch["observations"].sum().item()  # waits for the device
    sample_ms = (time.perf_counter() - start) / 10 * 1000
    length = sampler.segment_length
    print(json.dumps({
        "transitions": len(data["rewards"]), "segment_length": length, "segments_drawn": sampler.counts.drawn,
        "segments_labelled": len(sampler), "desirable": sampler.counts.desirable,
        "undesirable": sampler.counts.undesirable, "data_mb": round(data_mb, 1),
        "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(peak_rss_mb(), 1),
        "sampler_mb": round(sampler.nbytes() / 2**20, 1), "index_mb": round(sampler.index_nbytes() / 2**20, 2),
        "tracs_buffer_gb": round(sampler.counts.drawn * length * (OBS_DIM + ACT_DIM) * 8 / 2**30, 1),
        "build_s": round(build_s, 2), "sample_ms": round(sample_ms, 2),
    }))


if __name__ == "__main__":
    main()
