"""What the feedback links cost the assembled emails (issue 13): the same digests of the seed
papers (tests/test_render_equivalence.py's readers; every other one with a "Recommended for
you" section) joined with and without each reader's "More like this" / "Not for me" links and
"Your likes" footer link. Timed in CPU seconds of this process, best of --repeat passes after a
first pass that finishes every block and layout (what a run pays once).

    .venv/bin/python bench/link_cost.py --readers 120
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_render_equivalence import SENDER, _digests, _papers, _recommended

from digest.assemble import Renderer
from digest.feedback_links import ReaderLinks

PUBLIC = "https://digest.example.org"
SECRET = "bench-secret-0123456789abcdef"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    papers = _papers()
    digests = _recommended(_digests(papers, args.readers), papers)
    shown = sum(len(d.entries) for d in digests) / len(digests)
    results = {}
    for with_links in (False, True):
        renderer = Renderer(sender=SENDER, budget=95_000, verify_every=10**9)
        renderer.prepare(digests, links=with_links)

        def one_pass(renderer: Renderer = renderer, with_links: bool = with_links) -> float:
            started = time.process_time()
            for digest in digests:
                links = (
                    ReaderLinks.make(PUBLIC, SECRET, digest.subscriber.key) if with_links else None
                )
                renderer.render(digest, f"{PUBLIC}/unsubscribe/x", links)
            return time.process_time() - started

        one_pass()  # layouts made and verified once
        best = min(one_pass() for _ in range(args.repeat))
        assert renderer.assembled == renderer.count, "some emails were not assembled"
        results[with_links] = best / len(digests) * 1000
        print(f"links {'on ' if with_links else 'off'}: {results[with_links]:.2f} ms per email")
    extra = results[True] - results[False]
    print(
        f"{len(digests)} emails, {shown:.0f} papers each on average: the links add "
        f"{extra:.2f} ms per email, {extra / shown * 1000:.0f} us per paper"
    )


if __name__ == "__main__":
    main()
