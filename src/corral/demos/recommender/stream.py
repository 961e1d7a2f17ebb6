"""The live half of the demo: events, the pipeline that handles them, per-user state.

An event is what a broker would carry: string fields ``seq``, ``user``, ``item``,
``rating``, ``timestamp`` (raw MovieLens ids) and ``sent`` (when it entered the source, on
this process's monotonic clock). For each event the pipeline's processors

1. validate and normalize it (``parse_event``): malformed events (missing fields, unknown
   user or item, not a number) and outliers (a rating outside 1-5, a timestamp outside the
   data's time range) fail at once, not retried, and are counted;
2. extract numerical and categorical features (``features``), kept on the message as the
   seed's ``MLPipeline`` does;
and route it to the ``recommend`` batcher, whose batch processors, for each batch

3. send its events to the ``RecommendationSystem`` process (the seed's
   ``recommendation_system``), which answers for each event with what the model needs (the
   user and all they have seen so far) and the popularity baseline's top 10, then records
   the item as seen;
4. ask the serving (port partitions) for each event's top 10 — one request per event, all at
   once, which the serving cuts into its own batches — and hand each recommendation to the
   ``Report`` (the client), which scores it against the item the user actually rated.

``partition_by`` sends every event of one user to the same processor and the same batch
processor, so a user's events are handled in order. (Per event, a user's next event would
wait for the model's answer to the last one; MovieLens users rate in bursts, so a batch
carries a user's burst through the model at once.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from corral.demos.recommender.data import MovieLens
from corral.demos.recommender.model import TOP, encode_request
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.runtime import Actor, Node
from corral.serving import Serving

__all__ = [
    "Catalogue",
    "DemoContext",
    "Event",
    "InvalidEvent",
    "RecommendationSystem",
    "RecommenderPipeline",
    "Report",
    "Scored",
    "features",
    "make_events",
    "parse_event",
]

FIELDS = ("seq", "user", "item", "rating", "timestamp", "sent")


class InvalidEvent(ValueError):
    """An event that cannot be used; ``kind`` is ``"malformed"`` or ``"outlier"``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind


class Event(NamedTuple):
    """A validated, normalized event."""

    seq: int
    user: int  # dense index
    item: int
    rating: float  # normalized to [-1, 1]
    timestamp: int
    sent: float


@dataclass(frozen=True)
class Catalogue:
    """What validation and features need to know about users and items."""

    users: Mapping[str, int]  # raw id -> dense index
    items: Mapping[str, int]
    first_time: int
    last_time: int
    ages: Sequence[int]  # per user index
    genders: Sequence[str]
    occupations: Sequence[str]
    genres: Sequence[tuple[str, ...]]  # per item index
    years: Sequence[str]

    @classmethod
    def of(cls, data: MovieLens) -> Catalogue:
        return cls(
            users={uid: k for k, uid in enumerate(data.user_ids)},
            items={iid: k for k, iid in enumerate(data.item_ids)},
            first_time=int(data.timestamp[0]),
            last_time=int(data.timestamp[-1]),
            ages=[data.ages.get(uid, 0) for uid in data.user_ids],
            genders=[data.genders.get(uid, "?") for uid in data.user_ids],
            occupations=[data.occupations.get(uid, "?") for uid in data.user_ids],
            genres=data.genres,
            years=data.years,
        )


def make_events(
    data: MovieLens, start: int, stop: int, *, bad_every: int, seed: int
) -> list[dict[str, str]]:
    """Ratings ``start:stop`` as source events, plus one injected bad event (malformed or an
    outlier, alternating) after every ``bad_every`` good ones (0: none)."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, str]] = []
    for k in range(start, stop):
        events.append(
            {
                "user": data.user_ids[data.user[k]],
                "item": data.item_ids[data.item[k]],
                "rating": str(int(data.rating[k])),
                "timestamp": str(int(data.timestamp[k])),
            }
        )
        if bad_every and (k - start + 1) % bad_every == 0:
            bad = dict(events[-1])
            choice = int(rng.integers(0, 4))
            if choice == 0:
                del bad["item"]
            elif choice == 1:
                bad["item"] = "999999"
            elif choice == 2:
                bad["rating"] = str(int(rng.choice([0, 9, 42])))
            else:
                bad["timestamp"] = str(int(data.timestamp[-1]) + 10 * 365 * 86400)
            events.append(bad)
    for seq, event in enumerate(events):
        event["seq"] = str(seq)
    return events


def _text(fields: Mapping[object, object], name: str) -> str:
    value = fields.get(name, fields.get(name.encode()))
    if value is None:
        raise InvalidEvent("malformed", f"missing field {name!r}")
    return value.decode() if isinstance(value, bytes) else str(value)


def source_fields(data: object) -> Mapping[object, object] | None:
    """An event's fields as the source gave them: a mapping (memory, Redis), or a JSON
    object in bytes (a Kafka record's value); None when it is neither."""
    if isinstance(data, Mapping):
        return data
    if isinstance(data, bytes):
        try:
            decoded = json.loads(data)
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def parse_event(fields: Mapping[object, object], catalogue: Catalogue) -> Event:
    """Validate and normalize one source event (str or bytes keys and values)."""
    seq = _text(fields, "seq")
    user = catalogue.users.get(_text(fields, "user"))
    if user is None:
        raise InvalidEvent("malformed", f"unknown user {_text(fields, 'user')!r}")
    item = catalogue.items.get(_text(fields, "item"))
    if item is None:
        raise InvalidEvent("malformed", f"unknown item {_text(fields, 'item')!r}")
    try:
        rating = float(_text(fields, "rating"))
        timestamp = int(_text(fields, "timestamp"))
        sent = float(_text(fields, "sent"))
        number = int(seq)
    except ValueError as exc:
        raise InvalidEvent("malformed", f"not a number: {exc}") from None
    if not 1.0 <= rating <= 5.0:
        raise InvalidEvent("outlier", f"rating {rating:g} outside 1-5")
    if not catalogue.first_time <= timestamp <= catalogue.last_time:
        raise InvalidEvent("outlier", f"timestamp {timestamp} outside the data's time range")
    return Event(number, user, item, (rating - 3.0) / 2.0, timestamp, sent)


def features(event: Event, catalogue: Catalogue) -> dict[str, object]:
    """Numerical and categorical features of an event (as the seed's pipeline extracts)."""
    when = datetime.fromtimestamp(event.timestamp, tz=UTC)
    year = catalogue.years[event.item]
    return {
        "numerical": {
            "rating": event.rating,
            "hour": when.hour,
            "weekday": when.weekday(),
            "age": catalogue.ages[event.user],
            "release_year": int(year) if year.isdigit() else 0,
        },
        "categorical": {
            "gender": catalogue.genders[event.user],
            "occupation": catalogue.occupations[event.user],
            "genres": catalogue.genres[event.item],
        },
    }


class RecommendationSystem(Actor):
    """Per-user state: everything each user has seen (training ratings and live events) and
    their latest recommendations. ``("events", [(seq, user, item), ...])`` -> one
    ``(request, popular)`` per event, in order, each seeing the state the events before it
    left; asking again for the same ``seq`` (a retried message) gets the same answer."""

    def __init__(self, seen: npt.NDArray[np.bool_], popularity: npt.NDArray[np.float64]) -> None:
        self.seen = seen
        self.popular_order = np.argsort(-popularity, kind="stable")
        self.latest: dict[int, npt.NDArray[np.int32]] = {}
        self._pending: dict[int, tuple[npt.NDArray[np.uint8], list[int]]] = {}
        self._last_seq: dict[int, int] = {}
        self.out_of_order = 0  # events that came after a later event of the same user

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("events", list(events)):
                return [self._event(*event) for event in events]
            case ("latest", int(user)):
                return self.latest.get(user)
            case ("out_of_order",):
                return self.out_of_order
        raise ValueError(f"RecommendationSystem: unknown call {msg!r}")

    def handle_cast(self, msg: object) -> None:
        match msg:
            case ("recommended", list(recommended)):
                for seq, user, top in recommended:
                    self._pending.pop(seq, None)
                    self.latest[user] = top
            case _:
                raise ValueError(f"RecommendationSystem: unknown cast {msg!r}")

    def _event(self, seq: int, user: int, item: int) -> tuple[npt.NDArray[np.uint8], list[int]]:
        """The ``{event, UserId, Interaction}`` of the seed: answer with the state before
        it, then record the item as seen."""
        if seq in self._pending:
            return self._pending[seq]
        if self._last_seq.get(user, -1) > seq:
            self.out_of_order += 1
        self._last_seq[user] = seq
        seen = self.seen[user]
        answer = (encode_request(user, seen), self._popular(seen))
        seen[item] = True
        self._pending[seq] = answer
        return answer

    def _popular(self, seen: npt.NDArray[np.bool_]) -> list[int]:
        top: list[int] = []
        for item in self.popular_order:
            if not seen[item]:
                top.append(int(item))
                if len(top) == TOP:
                    break
        return top


class Parsed(NamedTuple):
    """A message's data between ``handle_message`` and ``handle_batch``."""

    original: Mapping[object, object]
    event: Event
    features: dict[str, object]


class Scored(NamedTuple):
    """What the pipeline attaches to a handled message (the seed's original / processed /
    features / prediction)."""

    original: Mapping[object, object]
    event: Event
    features: dict[str, object]
    recommended: npt.NDArray[np.int32]
    version: str


def _gain(top: Sequence[int] | npt.NDArray[np.int32], item: int) -> tuple[int, float]:
    for rank, candidate in enumerate(top):
        if int(candidate) == item:
            return 1, 1.0 / float(np.log2(rank + 2))
    return 0, 0.0


@dataclass
class Report:
    """The client: scores each recommendation as it arrives and keeps the counts."""

    window: asyncio.Semaphore
    swap_at: int = 0
    swap_due: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    handled: set[int] = field(default_factory=set)
    duplicates: int = 0
    hits: int = 0
    ndcg: float = 0.0
    popular_hits: int = 0
    popular_ndcg: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    example: tuple[Event, list[int]] | None = None

    def recommended(
        self, event: Event, top: npt.NDArray[np.int32], popular: list[int], version: str
    ) -> bool:
        """Score one recommendation; False for a duplicate delivery (already scored)."""
        if event.seq in self.handled:
            self.duplicates += 1
            return False
        self.handled.add(event.seq)
        self.versions[version] = self.versions.get(version, 0) + 1
        self.latencies.append(time.monotonic() - event.sent)
        hit, gain = _gain(top, event.item)
        self.hits += hit
        self.ndcg += gain
        popular_hit, popular_gain = _gain(popular, event.item)
        self.popular_hits += popular_hit
        self.popular_ndcg += popular_gain
        if self.example is None and hit:
            self.example = (event, [int(i) for i in top])
        self._ended()
        return True

    def dropped_event(self, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self._ended()

    def failed_event(self, reason: str) -> None:
        self.failed.append(reason)
        self._ended()

    @property
    def ended(self) -> int:
        return len(self.handled) + sum(self.dropped.values()) + len(self.failed)

    def _ended(self) -> None:
        self.window.release()
        if self.ended >= self.swap_at:
            self.swap_due.set()

    @property
    def scored(self) -> int:
        return len(self.handled)


@dataclass
class DemoContext:
    """What every pipeline hook gets as ``context``."""

    catalogue: Catalogue
    node: Node
    serving: Serving
    report: Report
    deadline: float | None = None


class RecommenderPipeline(Pipeline):
    """Validate, featurize, recommend (see the module doc)."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        assert isinstance(context, DemoContext)
        fields = source_fields(message.data)
        if fields is None:
            return message.mark_failed(InvalidEvent("malformed", "not a mapping"), retry=False)
        try:
            event = parse_event(fields, context.catalogue)
        except InvalidEvent as exc:
            return message.mark_failed(exc, retry=False)
        feats = features(event, context.catalogue)
        return message.put_data(Parsed(fields, event, feats)).put_batcher("recommend")

    async def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> list[Message]:
        assert isinstance(context, DemoContext)
        parsed = [m.data for m in messages if isinstance(m.data, Parsed)]
        events = [p.event for p in parsed]
        recsys = context.node.lookup("recommendation_system")
        answers = await recsys.call(("events", [(e.seq, e.user, e.item) for e in events]))
        assert isinstance(answers, list)
        results = await asyncio.gather(
            *[context.serving.run(request, deadline=context.deadline) for request, _ in answers],
            return_exceptions=True,
        )
        out: list[Message] = []
        recommended = []
        for message, item, (_, popular), result in zip(
            messages, parsed, answers, results, strict=True
        ):
            event = item.event
            if isinstance(result, BaseException):
                out.append(message.mark_failed(result))
                continue
            top = np.asarray(result.output)
            recommended.append((event.seq, event.user, top))
            context.report.recommended(event, top, popular, result.version)
            scored = Scored(item.original, event, item.features, top, result.version)
            out.append(message.put_data(scored))
        recsys.cast(("recommended", recommended))
        return out

    def handle_failed(self, messages: list[Message], context: object) -> list[Message]:
        assert isinstance(context, DemoContext)
        for message in messages:
            failure = message.failure
            reason = failure.reason if failure is not None else None
            if isinstance(reason, InvalidEvent):
                context.report.dropped_event(reason.kind)
            else:
                context.report.failed_event(repr(reason))
        return messages


def partition_by_user(message: Message) -> int:
    """Every event of one user goes to the same processor and the same batch processor
    (``partition_by`` sees the source's fields before ``handle_message``, ``Parsed`` after)."""
    data: object = message.data
    if isinstance(data, Parsed):
        data = data.original
    data = source_fields(data)
    if data is not None:
        user = data.get("user", data.get(b"user", b""))
        text = user.decode() if isinstance(user, bytes) else str(user)
        return int(text) if text.isdigit() else 0
    return 0
