"""Benchmark data: M papers varied from the real seed papers, N subscribers with research phrases.

Papers: the real titles and abstracts of ../shared/seeds/ (the three "Daily Papers" READMEs,
parsed by tests/fixtures/make_papers.py, and the trending-papers page), with made-up but
deterministic authors and categories (make_papers.synthesize). Past the ~200 real ones, each
further paper is a variation of a real one: a reworded title and the abstract's sentences
rotated, with a new id, so it still matches the same phrases. Without the seeds folder the
repository's tests/fixtures/papers.json (made from the same seeds) is used.

Keywords, by workload profile (PROFILES):
- "narrow": PHRASES are research phrases that occur in the seed papers; those that match
  between MIN_SHARE and MAX_SHARE of the papers (by the digest's own FTS5 porter phrase match)
  become the keyword list (~120), so an email carries roughly 10-40 papers at 250 papers a day.
- "broad": BROAD_PHRASES, 20 of the commonest phrases of the seed papers ("reasoning",
  "benchmark", "agent", "large language model", "evaluation", ...), over one day of the seed
  papers (156): an email carries 60-130 papers (mean ~105), past the HTML budget, so it ends with
  the compact list, and the same paper is tagged with different keywords for different readers.
Each subscriber follows 3-5 of the profile's keywords.
"""

from __future__ import annotations

import csv
import random
import re
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import make_papers  # noqa: E402  (tests/fixtures: the seed parser)
from standins import Paper, load_papers, paper_from_fixture  # noqa: E402

from digest.match import fts_phrase  # noqa: E402

MIN_SHARE, MAX_SHARE = 0.01, 0.08  # of the papers a usable keyword matches

PHRASES = [
    # reward models and alignment
    "reward model",
    "process reward model",
    "outcome reward",
    "reward hacking",
    "reward shaping",
    "reward signal",
    "verifiable rewards",
    "preference optimization",
    "direct preference optimization",
    "human feedback",
    "human preferences",
    "preference data",
    "preference learning",
    "alignment",
    "safety alignment",
    "reinforcement learning from human feedback",
    "policy optimization",
    "group relative policy optimization",
    "proximal policy optimization",
    "value function",
    "critic",
    "advantage estimation",
    "rejection sampling",
    "best-of-n",
    "reward modeling",
    "generative reward model",
    "LLM-as-a-judge",
    "judge",
    "red teaming",
    "jailbreak",
    # reasoning
    "chain of thought",
    "chain-of-thought reasoning",
    "mathematical reasoning",
    "math reasoning",
    "multi-step reasoning",
    "logical reasoning",
    "commonsense reasoning",
    "spatial reasoning",
    "visual reasoning",
    "temporal reasoning",
    "causal reasoning",
    "long chain-of-thought",
    "reasoning trace",
    "reasoning length",
    "overthinking",
    "test-time scaling",
    "test-time compute",
    "inference-time",
    "self-consistency",
    "self-reflection",
    "self-correction",
    "self-verification",
    "tree search",
    "monte carlo tree search",
    "planning",
    "search",
    "backtracking",
    "step-by-step",
    "reasoning models",
    "large reasoning models",
    "slow thinking",
    "thinking tokens",
    "reasoning efficiency",
    "token budget",
    "early exit",
    # models and training
    "large language model",
    "language models",
    "small language models",
    "multimodal large language model",
    "vision-language model",
    "vision-language-action",
    "diffusion model",
    "mixture of experts",
    "transformer",
    "supervised fine-tuning",
    "fine-tuning",
    "instruction tuning",
    "distillation",
    "knowledge distillation",
    "curriculum learning",
    "data selection",
    "synthetic data",
    "data efficiency",
    "pretraining",
    "post-training",
    "scaling law",
    "reinforcement learning",
    "offline reinforcement learning",
    "exploration",
    "entropy",
    "sample efficiency",
    "policy gradient",
    "on-policy",
    "off-policy",
    "rollouts",
    "credit assignment",
    "knowledge graph",
    "graph neural network",
    "retrieval-augmented generation",
    "retrieval",
    "agents",
    "multi-agent",
    "tool use",
    "web agents",
    "embodied",
    "autonomous driving",
    "robotics",
    "code generation",
    "program synthesis",
    "theorem proving",
    "formal verification",
    "question answering",
    "benchmark",
    "evaluation",
    "hallucination",
    "uncertainty",
    "calibration",
    "interpretability",
    "robustness",
    "generalization",
    "out-of-distribution",
    "long context",
    "memory",
    "latent reasoning",
    "world model",
    "video understanding",
    "image generation",
    "speech",
    "medical",
    "clinical",
    "education",
    "recommendation",
    "finance",
    "legal",
    "low-resource languages",
    "multilingual",
    "translation",
    "summarization",
    "dialogue",
    "emotion",
    "creativity",
    "diversity",
    "math",
    "coding",
    "competition-level",
    "olympiad",
    "GRPO",
    "PPO",
    "DPO",
    "RLHF",
    "RLVR",
    # frequent in the seed abstracts
    "reward function",
    "reasoning paths",
    "multimodal reasoning",
    "reasoning trajectories",
    "reasoning chains",
    "model alignment",
    "human values",
    "answer accuracy",
    "exploration and exploitation",
    "reward design",
    "inference-time scaling",
    "preference alignment",
    "foundation models",
    "uncertainty quantification",
    "data augmentation",
    "reasoning tokens",
    "multimodal reward",
    "rule-based rewards",
    "preference pairs",
    "training dynamics",
    "user preferences",
    "latent space",
    "instruction following",
    "epistemic uncertainty",
    "reinforcement fine-tuning",
    "adaptive reasoning",
    "world knowledge",
    "multi-hop reasoning",
    "structured reasoning",
    "data filtering",
    "reasoning depth",
    "task difficulty",
    "intermediate steps",
    "final answer",
    "two-stage training",
    "human cognition",
    "computational efficiency",
    "non-reasoning models",
    "theoretical analysis",
    "success rate",
    "math benchmarks",
]


# The commonest phrases of the seed papers (counted over the 156 papers of one seed day:
# reasoning 114, large language model 86, benchmark 78, evaluation 65, alignment 43, code 43,
# fine-tuning 41, preference 35, inference 34, robustness 33, feedback 30, math 28, tokens 28,
# reasoning models 27, chain-of-thought 24, multimodal 19, agent 17, test-time 17, search 12,
# safety 6).
BROAD_PHRASES = [
    "reasoning",
    "benchmark",
    "agent",
    "large language model",
    "evaluation",
    "multimodal",
    "inference",
    "preference",
    "math",
    "robustness",
    "feedback",
    "test-time",
    "tokens",
    "reasoning models",
    "fine-tuning",
    "chain-of-thought",
    "alignment",
    "code",
    "safety",
    "search",
]

# profile -> (default number of papers, what it is)
PROFILES = {
    "narrow": (250, "3-5 of ~120 narrower research phrases each (~25 papers per email)"),
    "broad": (156, "3-5 of 20 common phrases each (60-130 papers per email, HTML budget)"),
}


def profile_keywords(profile: str, papers: Sequence[dict[str, Any]]) -> list[str]:
    """The keywords subscribers of `profile` draw theirs from (each matching some paper)."""
    if profile == "narrow":
        return [k for k, _ in usable_keywords(papers)]
    if profile == "broad":
        return [k for k, n in phrase_counts(papers, BROAD_PHRASES) if n]
    raise ValueError(f"unknown profile {profile!r}")


def find_seeds(given: Path | None) -> Path | None:
    """The seeds folder: `given`, else ../shared/seeds (or ../../shared/seeds) of the repo."""
    candidates = [given] if given else [ROOT.parent / "shared" / "seeds"]
    if not given:
        candidates.append(ROOT.parent.parent / "shared" / "seeds")
    for path in candidates:
        if path and any(path.glob("000_*.txt")):
            return path
    if given:
        raise SystemExit(f"--seeds {given}: no 000_*.txt seed file there")
    return None


_AUTHORS_LINE = re.compile(r"^\s*•\s*\d+ authors?\s*$")


def trending_seed(text: str) -> list[dict[str, str]]:
    """(title, abstract) of each paper on the trending-papers page (003_*.txt): the two
    non-empty lines before each '• N authors' line."""
    lines = [line.strip() for line in text.splitlines()]
    out = []
    for i, line in enumerate(lines):
        if _AUTHORS_LINE.match(line):
            before = [text for text in lines[max(0, i - 8) : i] if text]
            if len(before) >= 2 and len(before[-1]) > 200:
                out.append({"title": before[-2], "abstract": before[-1]})
    return out


def base_papers(seeds: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The real papers (papers.json-shaped dicts) and where they came from."""
    if seeds is None:
        return load_papers(), "tests/fixtures/papers.json (../shared/seeds not found)"
    papers = make_papers.build(seeds)
    titles = {p["title"].casefold() for p in papers}
    extra = []
    for path in seeds.glob("003_*.txt"):
        for i, row in enumerate(trending_seed(path.read_text(encoding="utf-8"))):
            if row["title"].casefold() in titles:
                continue
            titles.add(row["title"].casefold())
            fake_id = f"2510.{90000 + i:05d}"
            extra.append({"id": f"{fake_id}v1", **row, "comment": ""})
            extra[-1].update(make_papers.synthesize(fake_id))
    return papers + extra, f"{seeds} ({len(papers)} README papers + {len(extra)} trending)"


_TITLE_FORMS = [
    "{t}",
    "Revisiting {t}",
    "{t}: A Closer Look",
    "Towards {t}",
    "{t} at Scale",
    "On {t}",
    "{t} Revisited",
    "Rethinking {t}",
]


def vary(paper: dict[str, Any], k: int, new_id: str) -> dict[str, Any]:
    """The k-th variation of a real paper: reworded title, abstract sentences rotated."""
    title = (
        paper["title"] if k == 0 else _TITLE_FORMS[k % len(_TITLE_FORMS)].format(t=paper["title"])
    )
    abstract = paper["abstract"]
    if k:
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", abstract)
        turn = k % max(1, len(sentences))
        abstract = " ".join(sentences[turn:] + sentences[:turn])
    out = dict(paper, id=f"{new_id}v1", title=title, abstract=abstract)
    out.update(make_papers.synthesize(new_id))
    return out


def make_papers_list(
    base: Sequence[dict[str, Any]], count: int, window_hours: float
) -> list[Paper]:
    """`count` papers, newest first, published within the last `window_hours` (so all new)."""
    out = []
    for i in range(count):
        real = base[i % len(base)]
        out.append(vary(real, i // len(base), f"2611.{10000 + i:05d}"))
    now, step = (
        datetime.now(UTC) - timedelta(minutes=5),
        timedelta(hours=window_hours / max(1, count)),
    )
    return [paper_from_fixture(p, now - step * (i + 1)) for i, p in enumerate(out)]


def usable_keywords(
    papers: Sequence[dict[str, Any]], phrases: Sequence[str] = PHRASES
) -> list[tuple[str, int]]:
    """(phrase, papers it matches) for the phrases matching MIN_SHARE..MAX_SHARE of the papers,
    by the digest's own matching (SQLite FTS5, porter tokenizer, one quoted phrase)."""
    total = len(papers)
    return [
        (phrase, n)
        for phrase, n in phrase_counts(papers, phrases)
        if MIN_SHARE * total <= n <= MAX_SHARE * total
    ]


def phrase_counts(
    papers: Iterable[dict[str, Any]], phrases: Sequence[str]
) -> list[tuple[str, int]]:
    """(phrase, papers it matches) by SQLite FTS5 with the porter tokenizer, one quoted phrase
    (as the digest matches: `fts_phrase`), for each distinct phrase."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE p USING fts5(title, abstract, tokenize='porter')")
    rows = [(p["title"], p["abstract"]) for p in papers]
    conn.executemany("INSERT INTO p VALUES (?, ?)", rows)
    out = []
    for phrase in dict.fromkeys(phrases):
        query = fts_phrase(phrase)
        if query is None:
            continue
        (n,) = conn.execute("SELECT count(*) FROM p WHERE p MATCH ?", [query]).fetchone()
        out.append((phrase, n))
    return out


def subscriber_rows(count: int, keywords: Sequence[str], seed: int = 6) -> list[dict[str, str]]:
    """`count` subscribers, each with 3-5 distinct keywords drawn from `keywords`."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        chosen = rng.sample(list(keywords), rng.randint(3, 5))
        rows.append(
            {
                "email": f"reader{i:06d}@example.org",
                "name": f"Reader {i}",
                "keywords": "; ".join(chosen),
            }
        )
    return rows


def covering_rows(count: int, keywords: Sequence[str]) -> list[dict[str, str]]:
    """`count` subscribers who together follow exactly `keywords`, in the same order of first
    appearance (consecutive slices), so the run asks arXiv for the same keywords in the same
    order as a run for the subscribers those keywords came from."""
    rows = []
    size = -(-len(keywords) // count)
    for i in range(count):
        mine = list(keywords[i * size : (i + 1) * size])
        if not mine:
            break
        rows.append(
            {"email": f"few{i:03d}@example.org", "name": f"Few {i}", "keywords": "; ".join(mine)}
        )
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
