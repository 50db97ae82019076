"""What DKIM signing costs per email: python bench/dkim_cost.py [--repeat N] [--size KB].

Builds a real email as `digest send` would (the fixture's real papers, a broad subscriber,
render.Renderer, mailer.message_bytes) whose size is about --size KB (default 130: a digest at
the default HTML budget), signs it with a fresh 2048-bit RSA key both ways and prints the median
ms per email of each:

- dkimpy: `dkim.sign` on the whole message (what `Signer.sign_with_dkimpy` calls);
- ours: `Signer.sign` (body hash with C regexes + the header block canonicalized in one pass +
  OpenSSL RSA), and its parts (body hash; the header alone);
- the send path's: `canonical_body_hash` (the body's own sha256: message_bytes writes bodies in
  relaxed canonical form; build.Builder makes it) and `Signer.seal` given it;
- for scale: building the same email's bytes with message_bytes.

Both signatures are checked with dkim.verify and for being byte for byte the same. Not a test:
the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from test_render_equivalence import KEYWORDS, _digests, _papers  # noqa: E402

from digest import mailer  # noqa: E402
from digest.assemble import Renderer  # noqa: E402
from digest.dkim import Signer, body_hash, canonical_body_hash, split_message  # noqa: E402

SENDER = "arXiv digest <digest@example.org>"
URL = "https://digest.example.org/u/token"


def email_of_size(kb: int) -> tuple[bytes, Callable[[], bytes]]:
    """A real email of about `kb` KB (the broadest digest, budget chosen to reach the size)."""
    digest = max(_digests(_papers(), 40), key=lambda d: len(d.entries))
    assert len(digest.subscriber.keywords) >= 3, KEYWORDS

    def build(budget: int) -> Callable[[], bytes]:
        rendered = Renderer(sender=SENDER, budget=budget).render(digest, URL)
        return lambda: mailer.message_bytes(
            rendered,
            sender=SENDER,
            to=digest.subscriber.email,
            message_id=mailer.new_message_id(SENDER),
            when=datetime.now(UTC),
            unsubscribe_url=URL,
        )

    low, high = 10_000, 400_000
    while high - low > 1000:  # the budget whose email is closest to the size asked for
        mid = (low + high) // 2
        low, high = (mid, high) if len(build(mid)()) < kb * 1000 else (low, mid)
    maker = build(low)
    return maker(), maker


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--size", type=int, default=130, help="email size in KB")
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = Signer(pem, "digest", "example.org")
    message, build = email_of_size(args.size)
    head, body = split_message(message)
    record = signer.dns_record().encode("ascii")

    reference = signer.sign_with_dkimpy(message)
    at = int(dkim.util.parse_tag_value(reference.split(b":", 1)[1].strip())[b"t"])
    ours = signer.sign(message, timestamp=at)
    assert ours == reference + message, "the two paths differ"
    assert dkim.verify(ours, dnsfunc=lambda name, timeout=5: record)
    assert canonical_body_hash(message) == body_hash(body), "the body is not canonical"
    sealed = signer.seal(message, canonical_body_hash(message))
    assert dkim.verify(sealed, dnsfunc=lambda name, timeout=5: record)

    rows = [
        (
            "dkimpy dkim.sign (whole message)",
            median_ms(lambda: signer.sign_with_dkimpy(message), args.repeat),
        ),
        ("ours Signer.sign (whole message)", median_ms(lambda: signer.sign(message), args.repeat)),
        ("  of which body_hash(body)", median_ms(lambda: body_hash(body), args.repeat)),
        ("  of which header(head, bh)", median_ms(lambda: signer.header(head, b"x"), args.repeat)),
        (
            "send path: canonical_body_hash",
            median_ms(lambda: canonical_body_hash(message), args.repeat),
        ),
        (
            "send path: Signer.seal(message, bh)",
            median_ms(lambda: signer.seal(message, b"x"), args.repeat),
        ),
        ("for scale: message_bytes (build)", median_ms(build, args.repeat)),
    ]
    print(
        f"email: {len(message):,} bytes ({len(body):,} body), 2048-bit RSA, median of {args.repeat}"
    )
    for name, ms in rows:
        print(f"{name:<36} {ms:8.2f} ms")
    print(f"speed-up of ours over dkimpy: {rows[0][1] / rows[1][1]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
