"""`digest subscribers ...` on a real subscribers.csv, through the real CLI in a subprocess.

Edits must leave every row they do not touch byte for byte as it was (order, other columns,
quoting, line endings, a BOM), refuse a file that changed since it was read, and `check` must
name the line of every bad row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Digest
from standins import ArxivStandin, SmtpStandin

from digest import roster
from digest.errors import DigestError

BOM = "\ufeff"


@pytest.fixture
def digest(tmp_path: Path, arxiv: ArxivStandin, smtp: SmtpStandin) -> Digest:
    return Digest(tmp_path, arxiv, smtp, {})


def write(digest: Digest, text: str) -> None:
    digest.csv_path.write_bytes(text.encode("utf-8"))


def read(digest: Digest) -> str:
    return digest.csv_path.read_bytes().decode("utf-8")


# A file as people keep them: a BOM (Excel), CRLF line ends, a column of our own ("team"), a
# quoted cell with a comma, odd spacing, and a last row without a line end.
ORIGINAL = (
    BOM + "email,name,keywords,team\r\n"
    'ada@example.org,"Lovelace, Ada",reward model; reasoning,"core, infra"\r\n'
    "grace@example.org,Grace,graph neural network;C++,  compilers \r\n"
    "alan@example.org,Alan,chain of thought,theory"
)


def test_edits_keep_order_other_columns_quoting_and_bom(digest: Digest) -> None:
    write(digest, ORIGINAL)

    steps = [
        ("keywords", "add", "grace@example.org", "program synthesis"),
        ("add", "edsger@example.org", "--keyword", "formal methods", "-k", "proofs", "--name", "E"),
        ("keywords", "remove", "ADA@Example.ORG", "reasoning"),
        ("keywords", "set", "alan@example.org", "computability", "halting problem"),
    ]
    for step in steps:
        result = digest.run("subscribers", *step)
        assert result.returncode == 0, (step, result.stderr)

    assert read(digest) == (
        BOM + "email,name,keywords,team\r\n"
        'ada@example.org,"Lovelace, Ada",reward model,"core, infra"\r\n'
        "grace@example.org,Grace,graph neural network; C++; program synthesis,  compilers \r\n"
        "alan@example.org,Alan,computability; halting problem,theory\r\n"
        "edsger@example.org,E,formal methods; proofs,\r\n"
    )

    removed = digest.run("subscribers", "remove", " Grace@EXAMPLE.org ")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "Removed grace@example.org.\n"
    assert read(digest) == (
        BOM + "email,name,keywords,team\r\n"
        'ada@example.org,"Lovelace, Ada",reward model,"core, infra"\r\n'
        "alan@example.org,Alan,computability; halting problem,theory\r\n"
        "edsger@example.org,E,formal methods; proofs,\r\n"
    )
    # No temporary file is left beside it: only the lock file every writer takes.
    assert sorted(p.name for p in digest.home.iterdir()) == [
        ".subscribers.csv.lock",
        "subscribers.csv",
    ]


def test_a_file_quoted_throughout_stays_quoted_and_new_columns_are_added_at_the_end(
    digest: Digest,
) -> None:
    write(
        digest,
        '"email","keywords"\n"ada@example.org","reward model"\n"grace@example.org","graphs"\n',
    )

    result = digest.run(
        "subscribers", "set", "ada@example.org", "--categories", "cs.CL;cs.*",
        "--frequency", "weekly:mon",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert read(digest) == (
        '"email","keywords","categories","frequency"\n'
        '"ada@example.org","reward model","cs.CL; cs.*","weekly:mon"\n'
        '"grace@example.org","graphs"\n'
    )
    assert digest.run("subscribers", "check").returncode == 0


def test_a_file_changed_since_it_was_read_is_not_overwritten(digest: Digest) -> None:
    write(digest, ORIGINAL)
    document = roster.Document.read(digest.csv_path)
    document.set(document.find("alan@example.org"), "keywords", "lambda calculus")
    # Someone saves the file in an editor meanwhile.
    theirs = ORIGINAL + "\r\nedsger@example.org,E,formal methods,\r\n"
    write(digest, theirs)

    with pytest.raises(DigestError, match="changed since it was read"):
        document.write()

    assert read(digest) == theirs
    assert [p.name for p in digest.home.iterdir() if p.name != ".subscribers.csv.lock"] == [
        "subscribers.csv"
    ]
    # Read again, the same edit goes through and keeps their row.
    roster.change_keywords(digest.csv_path, "alan@example.org", "set", ["lambda calculus"])
    assert "alan@example.org,Alan,lambda calculus,theory\r\n" in read(digest)
    assert read(digest).endswith("edsger@example.org,E,formal methods,\r\n")


def test_edits_that_would_break_the_file_are_refused_and_change_nothing(digest: Digest) -> None:
    write(digest, ORIGINAL)
    cases = [
        (
            ("add", "Ada@EXAMPLE.org", "-k", "x"),
            "Error: Ada@example.org is already listed at subscribers.csv:2\n",
        ),
        (
            ("add", "not-an-address", "-k", "x"),
            "Error: 'not-an-address' is not an email address: An email address must have an "
            "@-sign.\n",
        ),
        (
            ("keywords", "remove", "alan@example.org", "chain of thought"),
            "Error: that would leave alan@example.org without a keyword; use `digest "
            "subscribers remove` to remove the subscriber\n",
        ),
        (
            ("keywords", "remove", "alan@example.org", "quantum"),
            "Error: alan@example.org has no keyword 'quantum'; their keywords are: "
            "chain of thought\n",
        ),
        (
            ("remove", "nobody@example.org"),
            "Error: nobody@example.org is not in subscribers.csv; see `digest subscribers list`\n",
        ),
        (
            ("set", "ada@example.org", "--categories", "cs.CL OR au:x"),
            "Error: category 'cs.CL OR au:x' of ada@example.org is not an arXiv category; "
            "write e.g. 'cs.CL; cs.LG' or 'cs.*'; nothing was written\n",
        ),
        (
            ("set", "ada@example.org", "--frequency", "weekly"),
            "Error: frequency of ada@example.org: 'weekly' needs a weekday, e.g. 'weekly:mon'; "
            "use 'daily' or 'weekly:DAY' with DAY one of mon, tue, wed, thu, fri, sat, sun; "
            "nothing was written\n",
        ),
    ]
    for args, error in cases:
        result = digest.run("subscribers", *args)
        assert (result.returncode, result.stderr) == (1, error), args
        assert read(digest) == ORIGINAL, args


def test_check_names_the_line_of_every_bad_row(digest: Digest) -> None:
    write(
        digest,
        "email,name,keywords,categories,frequency\n"
        "ada@example.org,Ada,reward model,,\n"  # line 2: fine
        "grace-at-example.org,Grace,graphs,,\n"  # 3: bad address
        "\n"  # 4: blank lines are allowed
        "alan@example.org,Alan, ; ,,\n"  # 5: no keyword
        " ADA@Example.org ,Ada again,reasoning,,\n"  # 6: duplicate of line 2
        "edsger@example.org,E,proofs,computer science,\n"  # 7: not a category
        "barbara@example.org,B,abstraction,cs.PL,fortnightly\n"  # 8: unknown frequency
        '"donald@example.org",D,"typesetting\nliterate programming",,weekly:tue\n'  # 9-10: fine
        "ken@example.org,K,unix,,weekly:funday\n",  # 11: bad weekday
    )

    result = digest.run("subscribers", "check")

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: subscribers.csv:3: 'grace-at-example.org' is not an email address: "
        "An email address must have an @-sign.",
        "Error: subscribers.csv:5: alan@example.org has no keyword; list phrases separated "
        "by ';' in 'keywords'",
        "Error: subscribers.csv:6: ADA@example.org is already listed on line 2; keep one row "
        "per address",
        "Error: subscribers.csv:7: category 'computer science' of edsger@example.org is not an "
        "arXiv category; write e.g. 'cs.CL; cs.LG' or 'cs.*'",
        "Error: subscribers.csv:8: frequency of barbara@example.org: 'fortnightly' is not a "
        "frequency; use 'daily' or 'weekly:DAY' with DAY one of mon, tue, wed, thu, fri, sat, "
        "sun",
        "Error: subscribers.csv:11: frequency of ken@example.org: 'weekly:funday' is not a "
        "frequency; use 'daily' or 'weekly:DAY' with DAY one of mon, tue, wed, thu, fri, sat, "
        "sun",
    ]

    write(digest, ORIGINAL)
    clean = digest.run("subscribers", "check")
    assert (clean.returncode, clean.stdout, clean.stderr) == (
        0,
        "subscribers.csv: no problems.\n",
        "",
    )


def test_list_shows_every_subscriber_with_status(digest: Digest) -> None:
    write(digest, ORIGINAL)
    set_ = digest.run(
        "subscribers", "set", "alan@example.org", "--authors", "Zoë Lefèvre",
        "--frequency", "weekly:fri", "--exclude", "survey",
    )  # fmt: skip
    assert set_.returncode == 0, set_.stderr

    result = digest.run("subscribers", "list")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["EMAIL", "NAME", "KEYWORDS", "STATUS"]
    assert [line.split("  ")[0] for line in lines[1:]] == [
        "ada@example.org",
        "grace@example.org",
        "alan@example.org",
    ]
    assert "Lovelace, Ada" in lines[1] and "reward model; reasoning" in lines[1]
    assert lines[1].endswith("active, daily")
    assert lines[3].endswith("active, weekly:fri, exclude: survey, authors: Zoë Lefèvre"), lines[3]

    # Only an unsubscribed address can be resubscribed.
    again = digest.run("subscribers", "resubscribe", "ada@example.org")
    assert (again.returncode, again.stderr) == (
        1,
        "Error: ada@example.org is not unsubscribed; nothing to do\n",
    )
