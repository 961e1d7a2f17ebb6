"""The demo's closing table."""

from __future__ import annotations

from corral.demos.recommender.demo import DemoOptions, DemoResult

__all__ = ["render"]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render(result: DemoResult, options: DemoOptions) -> str:
    """The table printed at the end of ``corral demo``."""
    rows = [
        ("", "corral (MF, averaged)", "popularity"),
        ("hit rate @10", f"{result.hit_rate:.4f}", f"{result.popular_hit_rate:.4f}"),
        ("NDCG @10", f"{result.ndcg:.4f}", f"{result.popular_ndcg:.4f}"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{a:<{width}}{b:<24}{c}".rstrip() for a, b, c in rows]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.dropped.items())) or "none"
    source = "memory" if options.source == "memory" else "a Redis stream"
    if options.source.startswith("kafka://"):
        source = "a Kafka topic"
    lines += [
        f"{'events/s':<{width}}{result.events_per_second:,.0f} "
        f"({result.stream:,} events from {source}, {options.batchers} batch processors, "
        f"{options.partitions} port partitions)",
        f"{'latency':<{width}}p50 {_ms(result.latency_p50)}, p99 {_ms(result.latency_p99)} "
        f"(source to client, {options.window} events in flight)",
        f"{'training':<{width}}{result.trained_on:,} ratings, {options.workers} workers x "
        f"{options.rounds} rounds, {result.train_seconds:.1f} s",
        f"{'events':<{width}}{result.valid:,} valid: {result.scored:,} recommended, "
        f"{result.lost} lost; injected bad events dropped: {dropped}",
    ]
    if result.failed:
        lines.append(
            f"{'failed':<{width}}{len(result.failed)} events failed after retries; "
            f"the first: {result.failed[0]}"
        )
    if options.chaos:
        lines.append(
            f"{'chaos':<{width}}{result.kills} model workers SIGKILLed, "
            f"{result.retried_batches} batches retried, {len(result.failed)} requests failed"
        )
    if len(result.versions) > 1 or options.swap:
        served = ", ".join(f"v{k}: {v:,}" for k, v in sorted(result.versions.items()))
        if result.swap_at is not None:
            served += f" (v2 took over after event {result.swap_at:,} of {result.stream:,})"
        lines.append(f"{'versions':<{width}}{served}")
    if result.out_of_order:
        lines.append(
            f"{'order':<{width}}{result.out_of_order} events reached a user's state out of order"
        )
    if result.duplicates:
        lines.append(f"{'redelivered':<{width}}{result.duplicates} (scored once)")
    lines += result.notes
    if result.example is not None:
        lines.append(f"for example: {result.example}")
    verdict = "beats" if result.hit_rate > result.popular_hit_rate else "does NOT beat"
    lines.append(
        f"the model {verdict} the popularity baseline "
        f"({result.hit_rate / max(result.popular_hit_rate, 1e-12):.2f}x its hit rate); "
        f"{'no event lost' if result.lost == 0 else f'{result.lost} EVENTS LOST'}"
    )
    return "\n".join(lines)
