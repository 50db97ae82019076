"""Loopback stand-ins for the services digest talks to: the arXiv API and an SMTP server.

Plain Python (no pytest), so benchmarks and scripts can import it too::

    with ArxivStandin(recent(load_papers())) as arxiv, SmtpStandin() as smtp:
        run_digest(arxiv_url=arxiv.url, smtp_host=smtp.host, smtp_port=smtp.port)
        assert smtp.messages

Papers are dicts shaped like tests/fixtures/papers.json entries (id with version, title,
abstract, comment, authors, categories, primary_category, ...) plus ``published`` and ``updated``
as timezone-aware UTC ``datetime`` objects (see ``paper_from_fixture`` and ``recent``).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import email
import email.policy
import hashlib
import json
import re
import socket
import textwrap
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from fnmatch import fnmatchcase
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Paper = dict[str, Any]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "papers.json"
ATOM = "application/atom+xml; charset=UTF-8"


# --- papers ---------------------------------------------------------------------------------


def load_papers(path: Path = FIXTURE) -> list[Paper]:
    """The papers.json fixture: a fresh list of fresh dicts on every call."""
    return json.loads(path.read_text(encoding="utf-8"))


def base_id(arxiv_id: str) -> str:
    """'2506.13741v2' -> '2506.13741'."""
    return re.sub(r"v\d+$", "", arxiv_id)


def paper_from_fixture(
    d: Mapping[str, Any],
    published: datetime,
    updated: datetime | None = None,
    version: int | None = None,
) -> Paper:
    """A copy of fixture paper ``d`` dated ``published`` / ``updated`` (default: published),
    both tz-aware, stored in UTC and, like arXiv's, in whole seconds; ``version`` replaces the
    id's vN."""
    if published.tzinfo is None or (updated is not None and updated.tzinfo is None):
        raise ValueError("published/updated must be timezone-aware")
    paper = copy.deepcopy(dict(d))
    if version is not None:
        paper["id"] = f"{base_id(paper['id'])}v{version}"
    paper["published"] = published.astimezone(UTC).replace(microsecond=0)
    paper["updated"] = (updated or published).astimezone(UTC).replace(microsecond=0)
    return paper


def recent(
    papers: Iterable[Mapping[str, Any]], now: datetime | None = None, spacing_hours: float = 1.0
) -> list[Paper]:
    """Copies of ``papers`` re-dated to look new: ordered newest first by their own date (ties keep
    their order), the i-th published ``(i + 1) * spacing_hours`` before ``now`` (default: current
    UTC time), updated = published. 118 fixture papers at 1 h span about 5 days."""
    now = now or datetime.now(UTC)
    ordered = sorted(papers, key=lambda p: _when(p, "published"), reverse=True)
    step = timedelta(hours=spacing_hours)
    return [paper_from_fixture(p, now - step * (i + 1)) for i, p in enumerate(ordered)]


def _when(p: Mapping[str, Any], key: str) -> datetime:
    """``published``/``updated`` of a paper; tolerates ISO strings and bare fixture ``date``s."""
    value = p.get(key) or p.get("published") or p["date"]
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)


# --- Atom rendering -------------------------------------------------------------------------

_OS = 'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"'
_AX = 'xmlns:arxiv="http://arxiv.org/schemas/atom"'
_SCHEME = 'scheme="http://arxiv.org/schemas/atom"'
try:
    _EASTERN: Any = ZoneInfo("America/New_York")
except Exception:  # no tz database: good enough
    _EASTERN = UTC


def _fold(text: str, width: int, indent: str, first: str = "") -> str:
    """Hard-wrap like arXiv: break at spaces only; the first line starts with ``first``, the
    others with ``indent``."""
    words = " ".join(text.split())
    wrapper = textwrap.TextWrapper(width, first, break_long_words=False, break_on_hyphens=False)
    lines = wrapper.wrap(words)
    return f"\n{indent}".join(lines)


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_entry(p: Mapping[str, Any]) -> str:
    """One ``<entry>`` exactly as the arXiv API writes it (titles and comments folded at 72
    columns with a two-space continuation, the summary folded at 79 with two leading spaces).
    Only ``id`` is required; other missing fields render empty."""
    abs_url, pdf_url = (f"http://arxiv.org/{kind}/{p['id']}" for kind in ("abs", "pdf"))
    summary = _fold(p.get("abstract", ""), 79, "", first="  ")
    categories = p.get("categories") or []
    primary = p.get("primary_category") or (categories[0] if categories else "")
    out = [
        "  <entry>",
        f"    <id>{escape(abs_url)}</id>",
        f"    <updated>{_ts(_when(p, 'updated'))}</updated>",
        f"    <published>{_ts(_when(p, 'published'))}</published>",
        f"    <title>{escape(_fold(p.get('title', ''), 72, '  '))}</title>",
        f"    <summary>{escape(summary)}\n</summary>",
    ]
    for name in p.get("authors", []):
        out += ["    <author>", f"      <name>{escape(name)}</name>", "    </author>"]
    if p.get("comment"):
        out.append(
            f"    <arxiv:comment {_AX}>{escape(_fold(p['comment'], 72, '  '))}</arxiv:comment>"
        )
    out += [
        f'    <link href={quoteattr(abs_url)} rel="alternate" type="text/html"/>',
        f'    <link title="pdf" href={quoteattr(pdf_url)} rel="related" type="application/pdf"/>',
        f"    <arxiv:primary_category {_AX} term={quoteattr(primary)} {_SCHEME}/>",
        *(f"    <category term={quoteattr(c)} {_SCHEME}/>" for c in categories),
        "  </entry>",
    ]
    return "\n".join(out)


def render_feed(
    params: Mapping[str, str], entries: Iterable[str], total: int, start: int, per_page: int
) -> bytes:
    """A whole response: the header arXiv writes for this request, then the rendered entries."""
    query = (
        f"search_query={params.get('search_query', '')}&id_list={params.get('id_list', '')}"
        f"&start={start}&max_results={per_page}"
    )
    feed_id = base64.b64encode(hashlib.sha1(query.encode()).digest()).decode()[:27]
    midnight = datetime.now(_EASTERN).replace(hour=0, minute=0, second=0, microsecond=0)
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"  <link href={quoteattr('http://arxiv.org/api/query?' + quote(query, safe=''))}"
        ' rel="self" type="application/atom+xml"/>',
        f'  <title type="html">ArXiv Query: {escape(query)}</title>',
        f"  <id>http://arxiv.org/api/{feed_id}</id>",
        f"  <updated>{midnight.isoformat()}</updated>",
        f"  <opensearch:totalResults {_OS}>{total}</opensearch:totalResults>",
        f"  <opensearch:startIndex {_OS}>{start}</opensearch:startIndex>",
        f"  <opensearch:itemsPerPage {_OS}>{per_page}</opensearch:itemsPerPage>",
    ]
    return "\n".join([*head, *entries, "</feed>\n"]).encode()


def render_error_feed(params: Mapping[str, str], message: str) -> bytes:
    """arXiv's error answer (sent with HTTP 400): a feed whose single entry is titled Error."""
    url = "http://arxiv.org/api/errors#" + re.sub(r"\W+", "_", message)
    entry = [
        "  <entry>",
        f"    <id>{escape(url)}</id>",
        "    <title>Error</title>",
        f"    <summary>{escape(message)}</summary>",
        f"    <updated>{datetime.now(_EASTERN).replace(microsecond=0).isoformat()}</updated>",
        f'    <link href={quoteattr(url)} rel="alternate" type="text/html"/>',
        "    <author>",
        "      <name>arXiv api core</name>",
        "    </author>",
        "  </entry>",
    ]
    return render_feed(params, ["\n".join(entry)], total=1, start=0, per_page=1)


# --- arXiv query matching -------------------------------------------------------------------

Predicate = Callable[[Paper], bool]
_TOKEN = re.compile(
    r"\s*(?:(?P<paren>[()])|(?P<op>ANDNOT|AND|OR)(?=[\s()]|$)"
    r'|(?:(?P<field>[A-Za-z]+):)?(?:"(?P<phrase>[^"]*)"|\[(?P<range>[^\]]*)\]|(?P<word>[^\s()"]+)))'
)
_SUFFIXES = ("ing", "ers", "er", "es", "s", "ed")
_TEXT_FIELDS = {"ti": ("title",), "abs": ("abstract",), "co": ("comment",)}


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=65536)
def _stems(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in re.findall(r"\w+", text.lower()))


def _plain(text: str) -> str:
    """Lowercase without accents: 'Kartašev' -> 'kartasev'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _atom(fld: str | None, text: str, is_range: bool) -> Predicate:
    fld = (fld or "all").lower()
    if is_range or fld in ("submitteddate", "lastupdateddate"):
        lo, hi = (
            datetime.strptime(s, "%Y%m%d%H%M").replace(tzinfo=UTC) for s in text.split(" TO ")
        )
        key = "updated" if fld == "lastupdateddate" else "published"
        return lambda p: lo <= _when(p, key) < hi + timedelta(minutes=1)
    if fld == "cat":
        return lambda p: any(fnmatchcase(c.lower(), text.lower()) for c in p.get("categories", []))
    if fld == "au":
        needle = _plain(text.replace("_", " "))
        return lambda p: any(needle in _plain(a) for a in p.get("authors", []))
    if fld == "id":
        return lambda p: p["id"] == text or base_id(p["id"]) == text
    words = [_stem(w) for w in re.findall(r"\w+", text.lower())]
    keys = _TEXT_FIELDS.get(fld, ("title", "abstract", "comment"))

    def match(p: Paper) -> bool:
        stems = frozenset().union(*(_stems(p.get(k) or "") for k in keys))
        return all(any(s.startswith(w) for s in stems) for w in words)

    return match


def _tokens(query: str) -> tuple[list[tuple[str, Any]], bool]:
    """Tokens of an arXiv query and whether every character was understood."""
    out: list[tuple[str, Any]] = []
    pos, clean = 0, True
    while pos < len(query.rstrip()):
        m = _TOKEN.match(query, pos)
        if not m or m.end() == pos:
            pos, clean = pos + 1, False
            continue
        pos = m.end()
        if m["paren"] or m["op"]:
            out.append((m["paren"] or m["op"], None))
        else:
            text = next(t for t in (m["phrase"], m["range"], m["word"]) if t is not None)
            try:
                out.append(("atom", _atom(m["field"], text.strip(), m["range"] is not None)))
            except ValueError:
                clean = False
    return out, clean


def compile_query(query: str) -> Predicate:
    """arXiv ``search_query`` -> predicate. AND / OR / ANDNOT bind left to right, parentheses
    group, juxtaposed terms are OR-ed. Phrases match when each word, crudely stemmed, starts some
    word of the field (``ti``, ``abs``, ``co``; otherwise title + abstract + comment), in any
    order. ``cat:`` takes wildcards, ``au:`` is an accent-blind substring of an author, and
    ``submittedDate:[YYYYMMDDHHMM TO YYYYMMDDHHMM]`` / ``lastUpdatedDate:[..]`` filter by date.
    A query that does not parse falls back to OR over its terms; no terms at all match all."""
    tokens, clean = _tokens(query)
    atoms = [t for kind, t in tokens if kind == "atom"]
    pos = 0

    def unary() -> Predicate:
        nonlocal pos
        kind, pred = tokens[pos]
        pos += 1
        if kind == "atom":
            return pred
        if kind != "(":
            raise ValueError(kind)
        inner = expr()
        if tokens[pos][0] != ")":
            raise ValueError("unbalanced")
        pos += 1
        return inner

    def expr() -> Predicate:
        nonlocal pos
        left = unary()
        while pos < len(tokens) and tokens[pos][0] != ")":
            op = tokens[pos][0]
            if op in ("AND", "OR", "ANDNOT"):
                pos += 1
            else:
                op = "OR"  # juxtaposed terms
            left = _combine(op, left, unary())
        return left

    try:
        if clean and tokens:
            pred = expr()
            if pos == len(tokens):
                return pred
    except (IndexError, ValueError):
        pass
    return (lambda p: any(a(p) for a in atoms)) if atoms else (lambda p: True)


def _combine(op: str, a: Predicate, b: Predicate) -> Predicate:
    if op == "AND":
        return lambda p: a(p) and b(p)
    if op == "ANDNOT":
        return lambda p: a(p) and not b(p)
    return lambda p: a(p) or b(p)


# --- arXiv stand-in -------------------------------------------------------------------------

Body = bytes | Callable[[dict[str, str]], bytes] | None


def _html(title: str, text: str) -> bytes:
    page = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1>"
    return f"{page}<p>{text}</p></body></html>\n".encode()


_UNAVAILABLE = _html("503 Service Unavailable", "Please try again later.")


@dataclass
class Fault:
    """One misbehaviour of an HTTP stand-in (arXiv, trending), used up by one request.

    ``body`` is bytes, a function of the request's query params, or None for "the normal answer"
    (its own status and type; ``status``/``content_type`` are then ignored). The answer waits
    ``delay`` seconds first (cut short by ``close()``, which drops the connection unanswered) and,
    with ``truncate_at``, only that fraction of the body is sent (Content-Length matches)."""

    status: int = 503
    body: Body = _UNAVAILABLE
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "text/html"
    truncate_at: float | None = None

    @classmethod
    def http(cls, status: int, retry_after: float | None = None) -> Fault:
        """An HTTP error page with ``status`` (e.g. 503, 429), optionally with Retry-After."""
        phrase = f"{status} {HTTPStatus(status).phrase}"
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status, _html(phrase, "Please try again later."), headers)

    @classmethod
    def html_page(cls) -> Fault:
        """200 OK with an HTML error page instead of a feed."""
        return cls(200, _html("arXiv is busy", "We are experiencing high load. Try later."))

    @classmethod
    def empty_feed(cls, total_results: int = 1) -> Fault:
        """200 OK, a valid feed with no entries that claims ``total_results`` (arXiv's glitch)."""

        def body(params: dict[str, str]) -> bytes:
            start, per_page = (_int(params, k, d) for k, d in (("start", 0), ("max_results", 10)))
            return render_feed(params, [], total_results, start or 0, per_page or 0)

        return cls(200, body, content_type=ATOM)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (interruptible by close()), then answer normally."""
        return cls(body=None, delay=seconds)

    @classmethod
    def malformed(cls) -> Fault:
        """200 OK with the normal feed cut off halfway: truncated XML."""
        return cls(body=None, truncate_at=0.5)


@dataclass
class RecordedRequest:
    """A request the arXiv stand-in received. Header names are Title-Cased ('User-Agent')."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    fault: Fault | None = None

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("User-Agent")


def _int(params: Mapping[str, str], key: str, default: int) -> int | None:
    try:
        value = int(params.get(key) or default)
    except ValueError:
        return None
    return value if value >= 0 else None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: _HttpStandin


class _HttpHandler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        standin, url = self.server.standin, urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        fault = standin._record(url.path, params, {k.title(): v for k, v in self.headers.items()})
        if fault and fault.delay and standin._closing.wait(fault.delay):
            self.close_connection = True  # closed while hanging: hang up without an answer
            return
        if fault and fault.body is not None:
            body = fault.body(params) if callable(fault.body) else fault.body
            status, content_type = fault.status, fault.content_type
        else:
            status, content_type, body = standin._answer(url.path, params)
        if fault and fault.truncate_at is not None:
            body = body[: int(len(body) * fault.truncate_at)]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (fault.headers if fault else {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _HttpStandin:
    """What the arXiv and trending stand-ins share: an HTTP server at ``url`` (``host``, a free
    port, ``path``) answering every GET with ``_answer`` unless a ``Fault`` says otherwise.
    ``faults`` are used up one per request, in order (a subclass's ``_next_fault`` may pick from
    queues of its own first); ``requests`` records every request. Starts on construction;
    ``close()`` stops it, interrupting hanging answers."""

    def __init__(self, host: str, path: str) -> None:
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _HttpServer((host, 0), _HttpHandler)
        self._server.standin = self
        self.host, self.port = host, self._server.server_address[1]
        self.url = f"http://{host}:{self.port}{path}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving (interrupting hang faults) and join the server thread. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Fault | None:
        with self._lock:
            fault = self._next_fault(params)
            self.requests.append(RecordedRequest(path, params, headers, fault))
        return fault

    def _next_fault(self, params: dict[str, str]) -> Fault | None:
        """The fault this request gets, taken off its queue (called holding the lock)."""
        return self.faults.pop(0) if self.faults else None

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        """The normal answer: (status, content type, body)."""
        raise NotImplementedError


_SORT_KEYS = {"submittedDate": "published", "lastUpdatedDate": "updated"}  # else list order


class ArxivStandin(_HttpStandin):
    """The arXiv API on 127.0.0.1, serving ``papers`` at ``url``; starts on construction.

    Answers ``GET /api/query`` like export.arxiv.org: search_query (see ``compile_query``) and/or
    id_list, sortBy relevance (= list order) / submittedDate / lastUpdatedDate, sortOrder,
    start / max_results paging with a true totalResults; a 400 error feed when both search_query
    and id_list are empty or start / max_results are not non-negative integers. Faults queued
    with ``fault_on_page`` (for that ``start``) go before those in ``faults``; each is used once.
    ``papers``, ``faults`` and ``requests`` may be read and changed between requests."""

    def __init__(self, papers: Iterable[Mapping[str, Any]] = (), host: str = "127.0.0.1") -> None:
        self.papers: list[Paper] = [dict(p) for p in papers]
        self._page_faults: dict[int, list[Fault]] = {}
        super().__init__(host, "/api/query")

    def fault_on_page(self, start: int, fault: Fault) -> None:
        """Queue ``fault`` for the next request whose ``start`` param equals ``start``."""
        with self._lock:
            self._page_faults.setdefault(start, []).append(fault)

    def _next_fault(self, params: dict[str, str]) -> Fault | None:
        page = self._page_faults.get(_int(params, "start", 0) or 0)
        return page.pop(0) if page else super()._next_fault(params)

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        if path != "/api/query":
            return 404, "text/html", _html("404 Not Found", f"No such page: {path}")
        start, per_page = _int(params, "start", 0), _int(params, "max_results", 10)
        query, id_list = params.get("search_query", ""), params.get("id_list", "")
        for bad, message in (
            (start is None, "start must be an integer greater than or equal to 0"),
            (per_page is None, "max_results must be an integer greater than or equal to 0"),
            (not query.strip() and not id_list.strip(), "search_query or id_list is required"),
        ):
            if bad:
                return 400, ATOM, render_error_feed(params, message)
        assert start is not None and per_page is not None
        papers = list(self.papers)
        if id_list.strip():
            wanted = [i.strip() for i in id_list.split(",") if i.strip()]
            papers = [p for w in wanted for p in papers if w in (p["id"], base_id(p["id"]))]
        if query.strip():
            papers = list(filter(compile_query(query), papers))
        key = _SORT_KEYS.get(params.get("sortBy", "relevance"))
        if key:
            descending = params.get("sortOrder", "descending") != "ascending"
            papers.sort(key=lambda p: _when(p, key), reverse=descending)
        page = [render_entry(p) for p in papers[start : start + per_page]]
        return 200, ATOM, render_feed(params, page, len(papers), start, per_page)


# --- SMTP stand-in --------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (aiosmtpd 1.4.6 cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ReceivedMessage:
    """A message the SMTP stand-in accepted (250 after DATA). ``message`` is ``raw`` parsed
    (``email.policy.default``) after turning CRLF into LF, so contents compare with '\\n' text."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes  # as received, after dot-unstuffing
    login: str | None = None  # the AUTH user of the session, if any
    message: EmailMessage = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lf = self.raw.replace(b"\r\n", b"\n")  # the email package's line ending convention
        self.message = email.message_from_bytes(lf, policy=email.policy.default)


def _reply(table: Mapping[str, tuple[int, str]], address: str) -> str | None:
    for key, (code, text) in list(table.items()):
        if key.lower() == address.lower():
            return f"{code} {text}"
    return None


async def _hang_up(server: SMTP, reply: str | None) -> str:
    """Close the session's connection (after sending ``reply``, if any); never returns."""
    assert server.transport is not None
    if reply is None:
        server.transport.abort()
    else:
        await server.push(reply)
        server.transport.close()
    await asyncio.Event().wait()  # aiosmtpd cancels the session once the connection is gone
    return reply or ""


class _SmtpHandler:
    def __init__(self, standin: SmtpStandin) -> None:
        self.s = standin

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.s.pipelining:  # as Postfix and most servers offer it (aiosmtpd takes it)
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.s.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := _reply(self.s.reject_rcpt, address):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        s = self.s
        if s.data_gate is not None:  # hold the message "in flight" until the test says so
            s.data_waiting.set()
            await asyncio.get_running_loop().run_in_executor(None, s.data_gate.wait)
        with s._lock:
            n = len(s.messages)
            faulty, fault = n in s._data_faults, s._data_faults.pop(n, None)
        if faulty:
            if fault is None or fault.startswith("421"):
                return await _hang_up(server, fault)
            return fault
        for rcpt in envelope.rcpt_tos:
            if reply := _reply(s.reject_data, rcpt):
                return reply
        auth = session.auth_data
        login = auth.login.decode(errors="replace") if isinstance(auth, LoginPassword) else None
        raw = bytes(envelope.original_content or b"")
        received = ReceivedMessage(envelope.mail_from or "", list(envelope.rcpt_tos), raw, login)
        with s._lock:
            s.messages.append(received)
        return "250 OK"


class SmtpStandin:
    """A real SMTP server (aiosmtpd) on ``host``:``port``; ``start()`` or ``with`` starts it.

    ``reject_rcpt`` / ``reject_data`` map addresses (case-insensitive) to ``(code, text)`` replies
    for RCPT / end of DATA. With ``auth=(user, password)`` MAIL needs AUTH PLAIN or LOGIN (no TLS)
    with exactly those; without it AUTH is optional and anything goes. It offers PIPELINING
    unless ``pipelining=False``. All of these may be changed while the server runs; ``messages``
    lists what was accepted."""

    def __init__(
        self,
        auth: tuple[str, str] | None = None,
        reject_rcpt: Mapping[str, tuple[int, str]] | None = None,
        reject_data: Mapping[str, tuple[int, str]] | None = None,
        host: str = "127.0.0.1",
        pipelining: bool = True,
    ) -> None:
        self.host, self.port = host, free_port(host)
        self.auth = auth
        self.pipelining = pipelining
        self.reject_rcpt: dict[str, tuple[int, str]] = dict(reject_rcpt or {})
        self.reject_data: dict[str, tuple[int, str]] = dict(reject_data or {})
        self.messages: list[ReceivedMessage] = []
        self._data_faults: dict[int, str | None] = {}
        self._lock = threading.Lock()
        # Set ``data_gate`` to an Event to hold every message after DATA until it is set;
        # ``data_waiting`` is set once a message is being held.
        self.data_gate: threading.Event | None = None
        self.data_waiting = threading.Event()
        self._controller: Controller | None = None

    def fail_message(self, n: int, reply: str) -> None:
        """Answer ``reply`` (e.g. '451 4.3.0 Try later') to the DATA that arrives when ``n``
        messages have been accepted, once; a 421 reply also closes the connection."""
        with self._lock:
            self._data_faults[n] = reply

    def drop_after(self, n: int) -> None:
        """Close the connection without a reply once DATA arrives when ``n`` messages have been
        accepted (the message is then not stored); once."""
        with self._lock:
            self._data_faults[n] = None

    def start(self) -> SmtpStandin:
        """Start serving (no-op if running); returns self."""
        if self._controller is None:
            self._controller = Controller(
                _SmtpHandler(self),
                hostname=self.host,
                port=self.port,
                server_hostname="smtp.standin.test",  # skips a slow getfqdn()
                ready_timeout=5.0,
                authenticator=self._authenticate,
                auth_require_tls=False,
                enable_SMTPUTF8=True,
            )
            self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the server thread (no-op if stopped)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            given = (data.login.decode(errors="replace"), data.password.decode(errors="replace"))
            if self.auth is None or given == tuple(self.auth):
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)  # -> 535; handled=True would hang clients


# --- Hugging Face daily papers stand-in -----------------------------------------------------


def daily_paper(paper: Mapping[str, Any], upvotes: int, comments: int = 0) -> dict[str, Any]:
    """One entry of the Hugging Face daily papers API for an arXiv paper (a papers.json-shaped
    dict), in the API's shape: the paper (id without version, upvotes, ...) inside a wrapper."""
    arxiv_id = base_id(paper["id"])
    when = _when(paper, "published").strftime("%Y-%m-%dT%H:%M:%S.000Z")
    digest = hashlib.sha1(arxiv_id.encode()).hexdigest()
    authors = [
        {"_id": digest[:24], "name": name, "hidden": False} for name in paper.get("authors", [])
    ]
    return {
        "paper": {
            "id": arxiv_id,
            "authors": authors,
            "publishedAt": when,
            "submittedOnDailyAt": when,
            "title": paper["title"],
            "summary": paper.get("abstract", ""),
            "upvotes": upvotes,
            "discussionId": digest[:24],
            "ai_keywords": [],
        },
        "publishedAt": when,
        "title": paper["title"],
        "summary": paper.get("abstract", ""),
        "thumbnail": f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv_id}.png",
        "numComments": comments,
        "submittedBy": {"_id": digest[-24:], "fullname": "AK", "name": "akhaliq", "type": "user"},
        "isAuthorParticipating": False,
    }


class TrendingStandin(_HttpStandin):
    """Hugging Face's daily papers API on 127.0.0.1: ``GET /api/daily_papers`` answers
    ``entries`` (a JSON list shaped like the real one; see ``daily_paper``) whatever the query.

    ``faults`` (the arXiv stand-in's ``Fault``: ``Fault.http(429, retry_after=0)``,
    ``Fault.hang(30)``, or a custom body) are used up one per request, in order; ``requests``
    records every request. Starts on construction; ``close()`` interrupts hanging answers."""

    def __init__(self, entries: Iterable[Mapping[str, Any]] = (), host: str = "127.0.0.1") -> None:
        self.entries: list[dict[str, Any]] = [dict(e) for e in entries]
        super().__init__(host, "/api/daily_papers")

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        if path != "/api/daily_papers":
            body = b'{"error":"Sorry, we can\'t find the page you are looking for."}'
            return 404, "application/json", body
        return 200, "application/json; charset=utf-8", json.dumps(self.entries).encode()
