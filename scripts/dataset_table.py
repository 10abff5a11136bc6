"""The statistics table of collected datasets (docs/data.md), from their cards, with what each
card lacks against the coverage bar of a dataset made here.

    python scripts/dataset_table.py ~/.lspc/datasets/*.card.json [--out table.md] [--refresh]

--refresh first recomputes each card's statistics and scatter from its dataset file (cards written
before a change of the card's format), keeping what the collection recorded.

The bar (issue 13): at least 300 trajectories (200 for Safety-Gymnasium navigation and MetaDrive),
at least 10% of them with cost at or below the task's lowest threshold and 10% above its highest,
and a reward range covering at least half of DSRL's reference range (returns outside it do not
count). Exit status 1 when a card falls short, so a script can tell.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.data.dataset_card import refresh_card  # noqa: E402
from lspc.envs import check_task  # noqa: E402

MIN_EPISODES = {"bullet": 300, "velocity": 300, "safety_gymnasium": 200, "metadrive": 200}
MIN_FRACTION_EACH_SIDE = 0.10
MIN_REWARD_RANGE_VS_DSRL = 0.5
CARD_FIELDS = {"episodes", "transitions", "reward_return", "fraction_cost_at_most", "fraction_cost_above",
               "reward_range_vs_dsrl", "dsrl_reference", "collection_seconds"}


def read_card(path: str) -> Dict:
    try:
        with open(path, encoding="utf-8") as f:
            card = json.load(f)
        check_task(card["task"])
        missing = sorted(CARD_FIELDS - card.keys())
        if missing:
            raise KeyError(", ".join(missing))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise LSPCError(f"{path} is not a dataset card of this version ({type(err).__name__}: {err}); "
                        "recompute it from its dataset file with --refresh, or remake it with scripts/collect_dataset.py") from None
    return card


def shortfalls(card: Dict) -> List[str]:
    """What the card lacks against the bar, empty when it meets it."""
    lacking = []
    need = MIN_EPISODES[check_task(card["task"])]
    if card["episodes"] < need:
        lacking.append(f"{card['episodes']} < {need} trajectories")
    low, safe = next(iter(card["fraction_cost_at_most"].items()))
    (high, unsafe), = card["fraction_cost_above"].items()
    if safe < MIN_FRACTION_EACH_SIDE:
        lacking.append(f"{safe:.0%} with cost <= {low}")
    if unsafe < MIN_FRACTION_EACH_SIDE:
        lacking.append(f"{unsafe:.0%} with cost > {high}")
    if card["reward_range_vs_dsrl"] < MIN_REWARD_RANGE_VS_DSRL:
        lacking.append(f"reward range covers {card['reward_range_vs_dsrl']:.0%} of DSRL's")
    return lacking


def _agents(card: Dict) -> str:
    agents = card.get("agents")
    if not agents:
        return card.get("behaviour", "")
    limits = "/".join(f"{a['cost_limit']:g}" for a in agents)
    steps = {a["training_steps"] for a in agents}
    name = {"fsrl.agent.PPOLagAgent": "PPO-L", "fsrl.agent.SACLagAgent": "SAC-L"}[agents[0]["agent"]]
    return f"{name} {limits} x {'/'.join(f'{s // 1000}k' for s in sorted(steps))}"


def table(cards: List[Dict]) -> str:
    rows = ["| task | behaviour | episodes | transitions | cost <= thresholds | cost > top | reward range "
            "| DSRL reward range | covered | time | meets the bar |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for card in cards:
        ref, reward = card["dsrl_reference"], card["reward_return"]
        at_most = " / ".join(f"{v:.2f}" for v in card["fraction_cost_at_most"].values())
        (high, unsafe), = card["fraction_cost_above"].items()
        minutes = (card["collection_seconds"] + card.get("agent_training_seconds", 0)
                   - card.get("training_seconds", 0)) / 60  # agents' own training time, wherever it ran
        lacking = shortfalls(card)
        rows.append(f"| {card['task']} | {_agents(card)} | {card['episodes']} | {card['transitions']:,} | {at_most} "
                    f"| {unsafe:.2f} (> {high}) | {reward['min']:.0f} – {reward['max']:.0f} "
                    f"| {ref['min_episode_reward']:.0f} – {ref['max_episode_reward']:.0f} "
                    f"| {card['reward_range_vs_dsrl']:.2f} | {minutes:.0f} min | {'; '.join(lacking) or 'yes'} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cards", nargs="+", help="<dataset>.card.json files")
    parser.add_argument("--out", default=None, help="also write the table here")
    parser.add_argument("--refresh", action="store_true", help="recompute the cards from their dataset files")
    args = parser.parse_args()
    try:
        if args.refresh:
            for path in args.cards:
                refresh_card(f"{path.removesuffix('.card.json')}.hdf5")
        cards = [read_card(path) for path in args.cards]
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    text = table(cards)
    print(text, end="")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    sys.exit(1 if any(shortfalls(card) for card in cards) else 0)


if __name__ == "__main__":
    main()
