"""The stand-ins behave like the real services, as seen by the real arxiv client and smtplib."""

import re
import smtplib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import arxiv as arxiv_lib
import pytest
from standins import ArxivStandin, Fault, Paper, SmtpStandin, paper_from_fixture, recent

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/arxiv-api-response.xml"
NS = {
    "a": "http://www.w3.org/2005/Atom",
    "ax": "http://arxiv.org/schemas/atom",
    "os": "http://a9.com/-/spec/opensearch/1.1/",
}
EVERYTHING = "cat:cs.* OR cat:stat.ML"


def client(standin: ArxivStandin, page_size: int = 100, num_retries: int = 0) -> arxiv_lib.Client:
    c = arxiv_lib.Client(page_size=page_size, delay_seconds=0, num_retries=num_retries)
    c.query_url_format = standin.url + "?{}"
    return c


def by_date(order: arxiv_lib.SortOrder = arxiv_lib.SortOrder.Descending) -> arxiv_lib.Search:
    """Every paper, newest (or oldest) first."""
    by = arxiv_lib.SortCriterion.SubmittedDate
    return arxiv_lib.Search(EVERYTHING, max_results=None, sort_by=by, sort_order=order)


def get(url: str, **headers: str) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def squash(text: str | None) -> str:
    return " ".join((text or "").split())


# --- fixture data ---------------------------------------------------------------------------


def test_papers_fixture_is_complete(papers_fixture: list[Paper]) -> None:
    assert 100 <= len(papers_fixture) <= 130
    assert len({re.sub(r"v\d+$", "", p["id"]) for p in papers_fixture}) == len(papers_fixture)
    for p in papers_fixture:
        assert re.fullmatch(r"\d{4}\.\d{5}v\d+", p["id"])
        assert p["title"] and p["abstract"] and isinstance(p["comment"], str)
        assert 1 <= len(p["authors"]) <= 9 and p["keywords"]
        assert p["primary_category"] == p["categories"][0] and len(p["categories"]) <= 3
        datetime.strptime(p["date"], "%Y-%m-%d")
    assert any("Mart Kartašev" in p["authors"] for p in papers_fixture)
    comments = [p["comment"] for p in papers_fixture]
    assert "" in comments and any(comments)


def test_recent_redates_newest_first(papers_fixture: list[Paper]) -> None:
    now = datetime(2025, 6, 18, 6, 30, tzinfo=UTC)
    papers = recent(papers_fixture, now=now)
    published = [p["published"] for p in papers]
    assert published == sorted(published, reverse=True) and len(set(published)) == len(papers)
    assert now - timedelta(days=7) < published[-1] and published[0] < now
    assert [p["date"] for p in papers] == sorted((p["date"] for p in papers), reverse=True)
    assert all(p["updated"] == p["published"] for p in papers)
    v3 = paper_from_fixture(papers[0], now, now + timedelta(hours=1), version=3)
    assert v3["id"].endswith("v3") and v3["updated"] - v3["published"] == timedelta(hours=1)


# --- arXiv: feed shape and parsing ----------------------------------------------------------


def _reference_paper(entry: ET.Element) -> Paper:
    def text(path: str) -> str:
        return squash(entry.findtext(path, namespaces=NS))

    def when(path: str) -> datetime:
        return datetime.fromisoformat(text(path).replace("Z", "+00:00"))

    primary = entry.find("ax:primary_category", NS)
    d = {
        "id": text("a:id").rsplit("/", 1)[1],
        "title": text("a:title"),
        "abstract": text("a:summary"),
        "comment": text("ax:comment"),
        "authors": [squash(a.text) for a in entry.iterfind("a:author/a:name", NS)],
        "categories": [c.get("term") for c in entry.iterfind("a:category", NS)],
        "primary_category": primary.get("term") if primary is not None else "",
    }
    return paper_from_fixture(d, when("a:published"), when("a:updated"))


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not available")
def test_feed_is_the_reference_response_byte_for_byte() -> None:
    reference = REFERENCE.read_text(encoding="utf-8")
    papers = [_reference_paper(e) for e in ET.fromstring(reference).findall("a:entry", NS)]
    query = "cat:cs.CV OR cat:cs.AI OR cat:cs.LG OR cat:cs.CL OR cat:cs.NE OR cat:stat.ML"
    params = {"search_query": query, "id_list": "", "start": 1, "max_results": 100}
    with ArxivStandin([dict(papers[0], id="1809.00001v1"), *papers]) as standin:  # start=1 skips it
        ours = get(f"{standin.url}?{urllib.parse.urlencode(params)}")[2].decode()
    assert mask(ours) == mask(reference)


def mask(feed: str) -> str:
    """Blank what differs between runs: the feed's <updated> (today) and totalResults."""
    feed = re.sub(r"<updated>[^<]*T00:00:00-0[45]:00<", "<updated>X<", feed, count=1)
    return re.sub(r"<(opensearch:totalResults[^>]*)>\d+<", r"<\1>N<", feed)


def test_feed_folds_text_like_arxiv(arxiv: ArxivStandin) -> None:
    _, headers, body = get(arxiv.url + "?search_query=all:reward&max_results=200")
    assert headers["Content-Type"] == "application/atom+xml; charset=UTF-8"
    entries = ET.fromstring(body).findall("a:entry", NS)
    assert entries
    by_url = {f"http://arxiv.org/abs/{p['id']}": p for p in arxiv.papers}
    for entry in entries:
        paper = by_url[entry.findtext("a:id", namespaces=NS) or ""]
        title = entry.findtext("a:title", namespaces=NS) or ""
        summary = entry.findtext("a:summary", namespaces=NS) or ""
        assert all(len(line) <= 72 or " " not in line.strip() for line in title.split("\n"))
        assert "\n" not in title or "\n  " in title
        assert summary.startswith("  ") and summary.endswith("\n") and "\n" in summary.strip()
        assert all(len(line) <= 79 or " " not in line.strip() for line in summary.split("\n"))
        has_comment = entry.find("ax:comment", NS) is not None
        assert has_comment == bool(paper["comment"])


def test_arxiv_client_round_trips_every_field(arxiv: ArxivStandin) -> None:
    results = list(client(arxiv).results(arxiv_lib.Search(EVERYTHING, max_results=None)))
    assert [r.get_short_id() for r in results] == [p["id"] for p in arxiv.papers]
    for r, p in zip(results, arxiv.papers, strict=True):
        assert r.entry_id == f"http://arxiv.org/abs/{p['id']}"
        assert r.title == p["title"]
        assert squash(r.summary) == squash(p["abstract"])  # arXiv hard-wraps summaries
        assert [a.name for a in r.authors] == p["authors"]
        assert squash(r.comment) == p["comment"] and (r.comment is None) == (not p["comment"])
        assert (r.categories, r.primary_category) == (p["categories"], p["primary_category"])
        assert (r.published, r.updated) == (p["published"], p["updated"])
        assert r.pdf_url == f"http://arxiv.org/pdf/{p['id']}"


def test_pagination_returns_every_paper_once_in_date_order(arxiv: ArxivStandin) -> None:
    arxiv.papers.reverse()  # list order must not matter when sorting by date
    newest_first = sorted(arxiv.papers, key=lambda p: p["published"], reverse=True)
    results = list(client(arxiv, page_size=25).results(by_date()))
    assert [r.get_short_id() for r in results] == [p["id"] for p in newest_first]
    assert [r.params["start"] for r in arxiv.requests] == ["0", "25", "50", "75", "100"]
    assert {r.params["max_results"] for r in arxiv.requests} == {"25"}
    oldest_first = client(arxiv, page_size=50).results(by_date(arxiv_lib.SortOrder.Ascending))
    assert [r.get_short_id() for r in oldest_first] == [p["id"] for p in reversed(newest_first)]


def test_phrase_query_matches_stemmed_words(arxiv: ArxivStandin) -> None:
    query = '(ti:"reasoning" OR abs:"reasoning")'
    got = {r.get_short_id() for r in client(arxiv).results(arxiv_lib.Search(query))}
    text = {p["id"]: f"{p['title']} {p['abstract']}".lower() for p in arxiv.papers}
    assert got == {i for i, t in text.items() if re.search(r"\breason", t)}
    assert 0 < len(got) < len(arxiv.papers)


def _paper(
    n: int, title: str, abstract: str = "", author: str = "Ann Example", *cats: str
) -> Paper:
    categories = list(cats or ["cs.LG"])
    d = {"id": f"2501.0000{n}v1", "title": title, "abstract": abstract, "comment": ""}
    d |= {"authors": [author], "categories": categories, "primary_category": categories[0]}
    return paper_from_fixture(d, published=datetime(2025, 1, n, 10, tzinfo=UTC))


SMALL = [
    _paper(1, "Rewarding modelers for fun"),
    _paper(2, "A reward for nothing", "", "Ann Example", "cs.CV"),
    _paper(3, "World models", "We train a reward model.", "Mart Kartašev", "stat.ML", "cs.AI"),
    _paper(4, "Unrelated", "", "Siobhán O'Brien", "cs.CL"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('ti:"reward model"', {1}),
        ('(ti:"reward model" OR abs:"reward model")', {1, 3}),
        ('all:"reward model" AND cat:stat.ML', {3}),
        ("all:reward ANDNOT cat:cs.CV", {1, 3}),
        ("cat:stat.*", {3}),
        ("cat:cs.*", {1, 2, 3, 4}),
        ("au:kartasev", {3}),
        ('au:"o\'brien" OR ti:world', {3, 4}),
        ("submittedDate:[202501020000 TO 202501031200]", {2, 3}),
        ("(ti:reward OR", {1, 2}),  # unparsable: its terms OR-ed
        ("()", {1, 2, 3, 4}),  # no terms: everything
    ],
)
def test_query_language(query: str, expected: set[int]) -> None:
    with ArxivStandin(SMALL) as standin:
        got = {r.get_short_id() for r in client(standin).results(arxiv_lib.Search(query))}
    assert got == {f"2501.0000{n}v1" for n in expected}


def test_id_list_keeps_its_order() -> None:
    with ArxivStandin(SMALL) as standin:
        results = client(standin).results(arxiv_lib.Search(id_list=["2501.00003", "2501.00001v1"]))
        assert [r.get_short_id() for r in results] == ["2501.00003v1", "2501.00001v1"]


def test_requests_are_recorded_with_user_agent(arxiv: ArxivStandin) -> None:
    list(client(arxiv).results(arxiv_lib.Search('ti:"reward model"', max_results=3)))
    get(arxiv.url + "?search_query=all:x", **{"User-Agent": "digest/0.1 (mailto:a@example.org)"})
    first, second = arxiv.requests
    assert first.user_agent == first.headers["User-Agent"] == f"arxiv.py/{arxiv_lib.__version__}"
    assert first.params["search_query"] == 'ti:"reward model"' and first.params["start"] == "0"
    assert second.user_agent == "digest/0.1 (mailto:a@example.org)" and second.fault is None


def test_empty_query_is_a_400_error_feed(arxiv: ArxivStandin) -> None:
    status, _, body = get(arxiv.url + "?search_query=&id_list=&start=0&max_results=10")
    feed = ET.fromstring(body)
    (entry,) = feed.findall("a:entry", NS)
    assert status == 400 and entry.findtext("a:title", namespaces=NS) == "Error"
    assert feed.findtext("os:totalResults", namespaces=NS) == "1"
    with pytest.raises(arxiv_lib.HTTPError) as info:
        list(client(arxiv).results(arxiv_lib.Search("")))
    assert info.value.status == 400


# --- arXiv: faults --------------------------------------------------------------------------


def test_http_faults_are_used_in_order_then_service_recovers(arxiv: ArxivStandin) -> None:
    faults = [Fault.http(503, retry_after=2), Fault.http(429)]
    arxiv.faults += faults
    url = arxiv.url + "?search_query=all:reward&max_results=1"
    (s1, h1, _), (s2, h2, _), (s3, _, body) = get(url), get(url), get(url)
    assert (s1, h1["Retry-After"], s2, h2["Retry-After"], s3) == (503, "2", 429, None, 200)
    assert len(ET.fromstring(body).findall("a:entry", NS)) == 1
    assert [r.fault for r in arxiv.requests] == [*faults, None]
    arxiv.faults.append(Fault.http(503))
    with pytest.raises(arxiv_lib.HTTPError):
        list(client(arxiv).results(by_date()))
    arxiv.faults.append(Fault.http(503))
    assert len(list(client(arxiv, num_retries=1).results(by_date()))) == len(arxiv.papers)


def test_html_page_is_a_200_that_the_client_reads_as_no_results(arxiv: ArxivStandin) -> None:
    arxiv.faults += [Fault.html_page(), Fault.html_page()]
    status, headers, body = get(arxiv.url + "?search_query=all:reward")
    assert (status, headers["Content-Type"]) == (200, "text/html") and b"<html>" in body
    assert list(client(arxiv).results(by_date())) == []  # silently nothing: digest must notice


def test_empty_feed_claims_results_it_does_not_have(arxiv: ArxivStandin) -> None:
    arxiv.faults.append(Fault.empty_feed(total_results=50))
    status, _, body = get(arxiv.url + "?search_query=all:reward&start=0&max_results=10")
    feed = ET.fromstring(body)
    assert status == 200 and feed.findall("a:entry", NS) == []
    assert feed.findtext("os:totalResults", namespaces=NS) == "50"


def test_fault_on_page_empties_a_middle_page(arxiv: ArxivStandin) -> None:
    arxiv.fault_on_page(25, Fault.empty_feed(total_results=len(arxiv.papers)))
    with pytest.raises(arxiv_lib.UnexpectedEmptyPageError):
        list(client(arxiv, page_size=25).results(by_date()))
    arxiv.requests.clear()
    arxiv.fault_on_page(25, Fault.empty_feed(total_results=len(arxiv.papers)))
    results = list(client(arxiv, page_size=25, num_retries=1).results(by_date()))
    assert len({r.entry_id for r in results}) == len(results) == len(arxiv.papers)
    assert [r.params["start"] for r in arxiv.requests] == ["0", "25", "25", "50", "75", "100"]


def test_malformed_is_a_truncated_feed(arxiv: ArxivStandin) -> None:
    arxiv.faults.append(Fault.malformed())
    status, headers, body = get(arxiv.url + "?search_query=all:reward")
    assert status == 200 and body.startswith(b"<?xml")
    assert int(headers["Content-Length"]) == len(body)
    with pytest.raises(ET.ParseError):
        ET.fromstring(body)


def test_hang_delays_the_normal_answer(arxiv: ArxivStandin) -> None:
    arxiv.faults.append(Fault.hang(0.3))
    start = time.monotonic()
    status, _, body = get(arxiv.url + "?search_query=all:reward")
    assert time.monotonic() - start >= 0.3 and status == 200 and b"<entry>" in body


def test_close_cuts_a_hang_short(arxiv: ArxivStandin) -> None:
    arxiv.faults.append(Fault.hang(60))
    outcome: list[object] = []

    def fetch() -> None:
        try:
            outcome.append(get(arxiv.url + "?search_query=all:reward"))
        except Exception as e:  # the connection is dropped unanswered
            outcome.append(e)

    thread = threading.Thread(target=fetch)
    thread.start()
    deadline = time.monotonic() + 5
    while not arxiv.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    arxiv.close()
    thread.join(5)
    assert time.monotonic() - start < 2 and not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionError)


# --- SMTP -----------------------------------------------------------------------------------


def message(to: str = "reader@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "digest@example.org", to, "3 new papers: Kartašev"
    msg.set_content("Plain ✓\n")
    msg.add_alternative("<p>HTML &amp; ✓</p>\n", subtype="html")
    return msg


def connect(server: SmtpStandin) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=5)


def test_smtp_receives_and_parses(smtp: SmtpStandin) -> None:
    with connect(smtp) as client:
        client.send_message(message())
    (got,) = smtp.messages
    assert got.mail_from == "digest@example.org" and got.rcpt_tos == ["reader@example.com"]
    assert got.login is None
    assert got.message["Subject"] == "3 new papers: Kartašev" and b"Subject: " in got.raw
    assert got.message.get_body(("plain",)).get_content() == "Plain ✓\n"
    assert got.message.get_body(("html",)).get_content() == "<p>HTML &amp; ✓</p>\n"


def test_smtp_rejected_recipient_leaves_the_session_usable(smtp: SmtpStandin) -> None:
    smtp.reject_rcpt["Gone@Example.com"] = (550, "5.1.1 No such user")
    refusal = {"gone@example.com": (550, b"5.1.1 No such user")}
    with connect(smtp) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            client.send_message(message("gone@example.com"))
        assert info.value.recipients == refusal
        client.send_message(message())
        partly = client.send_message(message(), to_addrs=["gone@example.com", "x@example.com"])
        assert partly == refusal
    assert [m.rcpt_tos for m in smtp.messages] == [["reader@example.com"], ["x@example.com"]]


def test_smtp_reject_data_can_change_while_running(smtp: SmtpStandin) -> None:
    smtp.reject_data["trap@example.com"] = (554, "5.7.1 Message rejected")
    with connect(smtp) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.send_message(message("trap@example.com"))
        assert info.value.smtp_code == 554
        smtp.reject_data.clear()
        client.send_message(message("trap@example.com"))
    assert [m.rcpt_tos for m in smtp.messages] == [["trap@example.com"]]


def test_smtp_auth_accepts_only_its_credentials() -> None:
    with SmtpStandin(auth=("digest", "s3cret")) as server:
        with connect(server) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.send_message(message())
            start = time.monotonic()
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                client.login("digest", "wrong")
            assert time.monotonic() - start < 2  # a refusal, not a hang
            assert (refused.value.smtp_code, info.value.smtp_code) == (530, 535)
            client.login("digest", "s3cret")  # AUTH PLAIN
            client.send_message(message())
        with connect(server) as client:
            client.ehlo()
            client.user, client.password = "digest", "s3cret"
            assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235
    assert [m.login for m in server.messages] == ["digest"]


def test_smtp_fail_message_answers_once(smtp: SmtpStandin) -> None:
    smtp.fail_message(1, "451 4.3.0 Temporary failure")
    with connect(smtp) as client:
        client.send_message(message("a@example.com"))
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.send_message(message("b@example.com"))
        assert (info.value.smtp_code, info.value.smtp_error) == (451, b"4.3.0 Temporary failure")
        client.send_message(message("b@example.com"))
    assert [m.rcpt_tos for m in smtp.messages] == [["a@example.com"], ["b@example.com"]]


def test_smtp_fail_message_421_also_hangs_up(smtp: SmtpStandin) -> None:
    smtp.fail_message(0, "421 4.3.0 Try again later")
    client = connect(smtp)
    client.ehlo()
    client.mail("digest@example.org")
    client.rcpt("a@example.com")
    assert client.data(b"Subject: hi\r\n\r\nhello\r\n") == (421, b"4.3.0 Try again later")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()
    with connect(smtp) as again:
        again.send_message(message())
    assert len(smtp.messages) == 1


def test_smtp_drop_after_hangs_up_without_a_reply(smtp: SmtpStandin) -> None:
    smtp.drop_after(1)
    with connect(smtp) as client:
        client.send_message(message("a@example.com"))
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.send_message(message("b@example.com"))
    with connect(smtp) as client:
        client.send_message(message("b@example.com"))
    assert [m.rcpt_tos for m in smtp.messages] == [["a@example.com"], ["b@example.com"]]
