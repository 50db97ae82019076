"""How many papers a broad digest shows in full at an HTML budget:
python bench/papers_in_full.py [--budget BYTES].

A subscriber following every keyword of tests/test_render_equivalence.py gets nearly all of the
fixture's real papers (more than fit); the email is rendered the reference way
(render.render_reference) at the budget (default: the default DIGEST_HTML_BUDGET) and the
script prints how many papers are shown in full, compact and deferred, the HTML's size (decoded
and as quoted-printable in the message), and the share of it in inline style attributes.
Deterministic: the same templates give the same figures.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_render_equivalence import DAY, KEYWORDS, _hits, _papers  # noqa: E402

from digest.config import Settings  # noqa: E402
from digest.mailer import quoted_printable  # noqa: E402
from digest.match import plan_digest  # noqa: E402
from digest.models import Subscriber  # noqa: E402
from digest.render import render_reference  # noqa: E402

SENDER = "arXiv digest <digest@example.org>"
URL = "https://digest.example.org/u/token"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=Settings().html_budget)
    args = parser.parse_args()
    papers = _papers()
    person = Subscriber(email="reader@example.org", keywords=tuple(KEYWORDS))
    digest = plan_digest(person, _hits(papers, KEYWORDS), {p.id: p for p in papers}, set(), DAY)
    upvotes = {p.id: 3 + i for i, p in enumerate(papers[:5])}
    digest = replace(digest, upvotes=upvotes)
    email = render_reference(digest, sender=SENDER, budget=args.budget, unsubscribe_url=URL)
    html = email.html.encode()
    styles = sum(len(m.group(0)) for m in re.finditer(rb' style="[^"]*"', html))
    shown = len(email.paper_ids)
    print(f"budget {args.budget:,} bytes; {len(digest.entries)} papers owed")
    print(
        f"in full: {email.full_entries}, compact: {shown - email.full_entries}, "
        f"deferred: {len(email.deferred)}"
    )
    print(
        f"HTML: {len(html):,} bytes decoded, {len(quoted_printable(email.html)):,} as "
        f"quoted-printable; inline style attributes {styles / len(html):.0%} of it"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
