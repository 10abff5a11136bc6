"""Collect a DSRL-layout dataset from the real simulator, with its dataset card.

    python scripts/collect_dataset.py --task OfflineCarCircle-v0 --episodes 600 --out data.hdf5 [--seed 0] [--workers 2]

Writes data.hdf5 (loadable by dsrl's get_dataset(h5path=...) and by train_lspc_iql.py
--dataset_path), data.card.json (statistics) and data.card.png (reward-vs-cost scatter).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.collect import CONTROLLERS, collect, default_cost_cap, write_dsrl_hdf5  # noqa: E402
from lspc.dataset_card import write_card  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=sorted(CONTROLLERS))
    parser.add_argument("--episodes", type=int, default=600, help="episodes to keep (after the cost filter)")
    parser.add_argument("--out", required=True, help="output .hdf5 file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_cost", type=float, default=None,
                        help="drop episodes costing more (default: DSRL's max episode cost, at least 2x the top threshold)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="simulator processes")
    args = parser.parse_args()
    try:
        if not args.out.endswith(".hdf5"):
            raise LSPCError(f"--out must end in .hdf5, got {args.out!r}")
        if args.workers <= 0:
            raise LSPCError(f"--workers must be positive, got {args.workers}")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        start = time.perf_counter()
        cost_cap = default_cost_cap(args.task) if args.max_cost is None else args.max_cost
        data = collect(args.task, args.episodes, args.seed, args.workers, cost_cap)
        seconds = time.perf_counter() - start
        provenance = {"task": args.task, "seed": args.seed, "behaviour": CONTROLLERS[args.task].__name__,
                      "cost_filter": f"episode cost <= {cost_cap:g}"}
        write_dsrl_hdf5(args.out, data, provenance)
        stem = write_card(args.out, args.task, data, {**provenance, "collection_seconds": round(seconds, 1),
                                                       "workers": args.workers,
                                                       "episodes_attempted": int(data["episodes_attempted"])})
    except LSPCError as err:
        sys.exit(f"error: {err}")
    with open(f"{stem}.card.json") as f:
        card = json.load(f)
    print(json.dumps({k: card[k] for k in ("task", "episodes", "transitions", "reward_return", "cost_return",
                                           "fraction_cost_at_most", "collection_seconds")}))
    print(f"wrote {args.out}, {stem}.card.json, {stem}.card.png")


if __name__ == "__main__":
    main()
