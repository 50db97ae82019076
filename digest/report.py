"""What a run tells the people and programs watching it: one `Outcome` per subscriber, the
`RunReport` of the whole run, and the `Timings` of its stages (stored in `runs.timings`)."""

from __future__ import annotations

import json
import resource
import statistics
import time
from array import array
from dataclasses import dataclass, field

SENT = "sent"
OWED = ("failed", "deferred", "pending")  # outcomes that leave an email owed


@dataclass(frozen=True)
class Outcome:
    email: str
    # sent | failed | deferred | pending | previewed | nothing-new | suspended | not-due |
    # unsubscribed
    status: str
    papers: int = 0
    size: int = 0  # bytes of the whole message
    detail: str = ""
    resumed: bool = False  # a pending email of an earlier run, sent again as it was


@dataclass
class RunReport:
    run_id: int | None = None
    dry_run: bool = False
    papers_fetched: int = 0
    arxiv_requests: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each, for standard error
    warnings: list[str] = field(default_factory=list)  # suspicious but not a failure
    subscribers: int = 0  # valid subscribers this run was for
    stopped: bool = False  # asked to stop (should_stop) before every subscriber was done
    left: int = 0  # when stopped: subscribers not served

    @property
    def sent(self) -> int:
        return sum(1 for o in self.outcomes if o.status == SENT)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in OWED]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed

    def counts(self) -> dict[str, object]:
        """The columns of the run's row."""
        return {
            "papers_fetched": self.papers_fetched,
            "arxiv_requests": self.arxiv_requests,
            "emails_sent": self.sent,
            "emails_failed": len(self.failed),
            "warning": "; ".join(self.warnings) or None,
        }


@dataclass
class Timings:
    """How long the stages of one run took; stored as JSON in `runs.timings` (bench/ reads
    these exact keys)."""

    fetch_s: float = 0.0  # the arXiv fetch and storing its papers
    match_s: float = 0.0  # the keyword queries plus every subscriber's planning
    build: array = field(default_factory=lambda: array("d"))  # ms per email: render + bytes
    send_started: float | None = None  # when the first email was handed to the senders
    send_ended: float | None = None  # when the last result came back
    emails: int = 0  # emails the mail server accepted
    email_bytes: int = 0  # bytes of every email built
    built: int = 0
    blocks_s: float = 0.0  # finishing the papers' blocks for each batch (Renderer.prepare)
    assembled: int = 0  # emails joined from finished pieces
    rendered_in_full: int = 0  # emails the renderer had to render the slow way
    trips: int = 0  # trips through MJML and premailer (blocks, prototype, layouts)
    recommend_s: float = 0.0  # readers' models: prepared, sections reordered, recommendations

    def started_sending(self) -> None:
        if self.send_started is None:
            self.send_started = time.perf_counter()

    def as_json(self) -> str:
        send_s = (
            self.send_ended - self.send_started
            if self.send_started is not None and self.send_ended is not None
            else 0.0
        )
        return json.dumps(
            {
                "fetch_s": round(self.fetch_s, 4),
                "match_s": round(self.match_s, 4),
                "build_ms_median": round(statistics.median(self.build), 4) if self.build else 0.0,
                "send_s": round(send_s, 4),
                "emails": self.emails,
                "messages_per_s": round(self.emails / send_s, 2) if send_s > 0 else 0.0,
                "avg_email_bytes": round(self.email_bytes / self.built) if self.built else 0,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "blocks_s": round(self.blocks_s, 4),
                "assembled": self.assembled,
                "rendered_in_full": self.rendered_in_full,
                "mjml_trips": self.trips,
                "recommend_s": round(self.recommend_s, 4),
            }
        )
