"""EVERY use of digest's internals by the benchmark, in one place (the rest drives the CLI).

The whole-run figures (messages/s of the `digest send` process, the bare client, the ratio,
wall time, peak memory, match time from `runs.timings`) need none of this. Only the build
figures do: for a sample of the run's digests, the straightforward path (render_reference +
build_message(...).as_bytes()) against the fast one (one Renderer per run + message_bytes),
timed in this process, and the match replay when `runs.timings` has no match_s.

>>> RE-POINT HERE when digest's modules move: `_digest_api()` is the only function that imports
>>> from `digest`; it returns the few callables the rest of this file uses, by role.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _digest_api() -> SimpleNamespace:
    """The digest internals the build figures need (raises ImportError when they moved)."""
    from digest import assemble, mailer, render, store, subscribers
    from digest.config import Settings
    from digest.match import distinct_keywords, plan_digest
    from digest.plan import match_keywords
    from digest.tokens import unsubscribe_url

    return SimpleNamespace(
        Settings=Settings,  # Settings.from_env(env, db_path=, subscribers_path=)
        load_subscribers=subscribers.load,  # path -> (people, problems)
        open_db=store.open_db,  # path -> sqlite_utils.Database
        distinct_keywords=distinct_keywords,  # people -> keywords
        match_keywords=match_keywords,  # (db, keywords, since) -> (hits, papers)
        plan_digest=plan_digest,  # (person, hits, papers, delivered, day, since=) -> Digest
        Renderer=assemble.Renderer,  # Renderer(sender=, budget=); .prepare(digests); .render()
        render_reference=render.render_reference,  # (digest, sender=, budget=, unsubscribe_url=)
        build_message=mailer.build_message,  # (rendered, unsubscribe_url=, sender=, to=, ...)
        message_bytes=getattr(mailer, "message_bytes", None),  # same arguments -> bytes
        new_message_id=mailer.new_message_id,  # sender -> "<...>"
        unsubscribe_url=unsubscribe_url,  # (public_url, secret, key) -> url
    )


@dataclass
class BuildFigures:
    """What the sample of digests measured in this process."""

    sample: int = 0
    equal_renders: int = 0
    build_ms_ours: float = 0.0
    build_ms_reference: float = 0.0
    renderer_setup_ms: float = 0.0
    build_source: str = ""
    match_replay_s: float = 0.0
    papers_per_email: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def build_ratio(self) -> float:
        return self.build_ms_reference / self.build_ms_ours if self.build_ms_ours else 0.0


def features() -> list[str]:
    """What of the fast paths the checked-out digest has (printed at the top)."""
    try:
        api = _digest_api()
    except ImportError as exc:
        return [f"digest internals: NOT FOUND ({exc}): re-point bench/internals.py"]
    lines = []
    if api.message_bytes is None:
        lines.append("message_bytes: ABSENT -> 'ours' builds with build_message(...).as_bytes()")
    else:
        lines.append("message_bytes: present -> 'ours' builds with it")
    connections = "present" if hasattr(api.Settings(), "smtp_connections") else "ABSENT"
    lines.append(f"Settings.smtp_connections: {connections} (DIGEST_SMTP_CONNECTIONS is passed)")
    return lines


def build_figures(
    env: Mapping[str, str],
    db_path: Path,
    csv_path: Path,
    sample: int,
    sender: str,
    public_url: str,
    secret: str,
) -> BuildFigures:
    """The build figures on a sample of the digests of the run that just finished (replanned
    from its database as if nothing had been delivered)."""
    figures = BuildFigures()
    try:
        api = _digest_api()
    except ImportError as exc:
        figures.notes.append(f"build figures skipped: digest internals moved ({exc})")
        return figures
    settings = api.Settings.from_env(env, db_path=db_path, subscribers_path=csv_path)
    digests, figures.match_replay_s = _plan_all(api, settings, sample)
    figures.papers_per_email = statistics.mean(len(d.entries) for d in digests) if digests else 0
    if digests:
        _measure_build(api, figures, settings, digests, sender, public_url, secret)
    return figures


def _plan_all(api: SimpleNamespace, settings: Any, sample: int) -> tuple[list[Any], float]:
    """Every subscriber's digest as the run planned it (matched against the papers in the
    database, nothing counted as delivered), timed; returns an evenly spread sample of them."""
    people, _ = api.load_subscribers(settings.subscribers_path)
    db = api.open_db(settings.db_path)
    now = datetime.now(UTC)
    since = now - timedelta(days=settings.lookback_days)
    day = now.astimezone(settings.tz).date().isoformat()
    every = max(1, len(people) // sample) if sample else len(people) + 1
    kept = []
    started = time.perf_counter()
    hits, papers = api.match_keywords(db, api.distinct_keywords(people), since)
    memo: dict[Any, Any] = {}  # entries shared between readers, as the run's planning does
    for i, person in enumerate(people):
        digest = api.plan_digest(person, hits, papers, set(), day, since=since, memo=memo)
        if i % every == 0 and digest.entries and len(kept) < sample:
            kept.append(digest)
    return kept, time.perf_counter() - started


def _measure_build(
    api: SimpleNamespace,
    figures: BuildFigures,
    settings: Any,
    digests: Sequence[Any],
    sender: str,
    public_url: str,
    secret: str,
) -> None:
    """Median ms per email of the reference path and ours on the same digests, alternating
    which goes first; counts the renders equal to the reference."""
    now = datetime.now(UTC)
    budget = settings.html_budget
    fast_bytes = api.message_bytes
    setup = time.perf_counter()
    renderer = api.Renderer(sender=sender, budget=budget)
    # As `digest send` does for each batch of subscribers: finish their paper blocks first.
    prepare = getattr(renderer, "prepare", None)
    if prepare is not None:
        prepare(digests)
    figures.renderer_setup_ms = (time.perf_counter() - setup) * 1000
    ours_ms: list[float] = []
    reference_ms: list[float] = []
    for i, digest in enumerate(digests):
        link = api.unsubscribe_url(public_url, secret, digest.subscriber.key)
        headers = {
            "sender": sender,
            "to": digest.subscriber.email,
            "message_id": api.new_message_id(sender),
            "when": now,
        }

        def reference(digest: Any = digest, link: str = link, headers: Any = headers) -> Any:
            r = api.render_reference(digest, sender=sender, budget=budget, unsubscribe_url=link)
            return r, api.build_message(r, unsubscribe_url=link, **headers).as_bytes()

        def ours(digest: Any = digest, link: str = link, headers: Any = headers) -> Any:
            r = renderer.render(digest, link)
            if fast_bytes is not None:
                return r, fast_bytes(r, unsubscribe_url=link, **headers)
            return r, api.build_message(r, unsubscribe_url=link, **headers).as_bytes()

        order: list[tuple[Callable[[], Any], list[float]]] = [
            (reference, reference_ms),
            (ours, ours_ms),
        ]
        results = []
        for fn, times in order if i % 2 else order[::-1]:
            started = time.perf_counter()
            results.append(fn())
            times.append((time.perf_counter() - started) * 1000)
        (r1, _), (r2, _) = results if i % 2 else results[::-1]
        figures.equal_renders += r1 == r2
    figures.sample = len(digests)
    figures.build_ms_ours = statistics.median(ours_ms)
    figures.build_ms_reference = statistics.median(reference_ms)
    figures.build_source = "message_bytes" if fast_bytes else "build_message().as_bytes()"
