"""Seed sketch 3, "real-time recommendation system": a process receives
``("event", user_id, interaction)`` messages and updates that user's recommendations as each
one arrives, then reports them.

The seed's sketch prepends the interaction to a list. Here the recommendations are real:
item-to-item co-occurrence counts ("people who watched X also watched Y") learned from a
small synthetic history of sessions, updated online by every new event, and each user gets
the items that co-occur most with what they interacted with, never an item they have seen.
The article also names fraud detection; the same shape (one process, per-key state updated
per event) applies.

Run it::

    .venv/bin/python examples/seed/recommendation_system.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter, defaultdict

from corral import Actor, ChildSpec, Node

CATALOGUE = {  # item -> genre; the history below is drawn genre by genre
    "Alien": "scifi", "Aliens": "scifi", "The Matrix": "scifi", "Blade Runner": "scifi",
    "Arrival": "scifi", "Heat": "crime", "The Godfather": "crime", "Goodfellas": "crime",
    "Fargo": "crime", "Casino": "crime", "Amelie": "romance", "Notting Hill": "romance",
    "Before Sunrise": "romance", "Roman Holiday": "romance", "Casablanca": "romance",
}  # fmt: skip
WEIGHTS = {"view": 1, "like": 3, "purchase": 5}  # how much an interaction counts
TOP_K = 3


def history(sessions: int, seed: int) -> list[list[str]]:
    """Synthetic past sessions: mostly one genre each, with a stray item now and then."""
    rng = random.Random(seed)
    items = sorted(CATALOGUE)
    by_genre: defaultdict[str, list[str]] = defaultdict(list)
    for item in items:
        by_genre[CATALOGUE[item]].append(item)
    genres = sorted(by_genre)
    out = []
    for _ in range(sessions):
        session = rng.sample(by_genre[rng.choice(genres)], 3)
        if rng.random() < 0.2:
            session.append(rng.choice(items))
        out.append(sorted(set(session)))
    return out


class Recommender(Actor):
    """One process for every user's recommendations; events arrive with ``pid.send``."""

    def __init__(self, sessions: list[list[str]]) -> None:
        self.co: defaultdict[str, Counter[str]] = defaultdict(Counter)  # item -> co-items
        for session in sessions:
            self._count_together(session)
        self.seen: defaultdict[str, Counter[str]] = defaultdict(Counter)  # user -> weights
        self.recommendations: dict[str, list[str]] = {}

    def _count_together(self, items: list[str], weight: int = 1) -> None:
        for a in items:
            for b in items:
                if a != b:
                    self.co[a][b] += weight

    def handle_info(self, msg: object) -> None:
        match msg:
            case ("event", str(user), {"kind": str(kind), "item": str(item)}):
                weight = WEIGHTS[kind]
                earlier = list(self.seen[user])
                self.seen[user][item] += weight
                for other in earlier:  # online update: this session's items co-occur
                    self._count_together([item, other], weight)
                self.recommendations[user] = self._recommend(user)
                print(f"event {user} {kind} {item!r} -> {self.recommendations[user]}")
            case _:
                raise ValueError(f"Recommender: unknown message {msg!r}")

    def _recommend(self, user: str) -> list[str]:
        scores: Counter[str] = Counter()
        for item, weight in self.seen[user].items():
            for other, count in self.co[item].items():
                scores[other] += weight * count
        for item in self.seen[user]:  # never recommend what the user has already seen
            del scores[item]
        return [item for item, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))][:TOP_K]

    def handle_call(self, msg: object) -> object:
        if msg == "report":
            return {u: (sorted(self.seen[u]), self.recommendations[u]) for u in sorted(self.seen)}
        raise ValueError(f"Recommender: unknown call {msg!r}")


EVENTS = [
    ("ana", "view", "Alien"),
    ("bo", "like", "Heat"),
    ("ana", "like", "Aliens"),
    ("cy", "view", "Amelie"),
    ("bo", "view", "Fargo"),
    ("ana", "purchase", "The Matrix"),
    ("cy", "like", "Casablanca"),
    ("bo", "purchase", "The Godfather"),
    ("cy", "view", "Heat"),
    ("ana", "view", "Blade Runner"),
]


async def run(sessions: int) -> int:
    past = history(sessions, seed=3)
    spec = ChildSpec(id="recommender", start=lambda: Recommender(past), name="recommender")
    async with Node([spec]) as node:
        recommender = node.lookup("recommender")
        for user, kind, item in EVENTS:  # a live stream of interactions
            recommender.send(("event", user, {"kind": kind, "item": item}))
        report = await recommender.call("report")  # queued behind every event: all applied
        assert isinstance(report, dict)
        for user, (seen, recommended) in report.items():
            print(f"final {user}: seen={seen} recommended={recommended}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's real-time recommender on corral.")
    parser.add_argument("--quick", action="store_true", help="a shorter history")
    args = parser.parse_args(argv)
    return asyncio.run(run(200 if args.quick else 2000))


if __name__ == "__main__":
    sys.exit(main())
