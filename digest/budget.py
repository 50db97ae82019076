"""How many papers an email shows, in full and at all, under the HTML budget (DIGEST_HTML_BUDGET).

`fit` searches the choices by their size (the reference rendering measures whole renderings,
digest/render.py; the fast path, digest/assemble.py, finds the same answer by growing its sums
of finished pieces until over the budget, then `largest` below), `fit_holds` checks a choice at
its edges (the sampled emails' safety net). All assume what is true of the emails: showing more
papers, or more of them in full, never makes the HTML smaller.
"""

from __future__ import annotations

from collections.abc import Callable

# All in full is a choice of its own kind: without the compact list's own markup (its section,
# heading and list: ~2.0 KB in our layouts) it can fit where the email with the last paper or
# two compact does not. `LIST_MARKUP` is at most what that markup weighs: papers in full that
# add more than that over their compact forms settle it (all in full cannot fit either).
LIST_MARKUP = 4096
WHOLE_REACH = 4  # `fit_holds` asks all in full when at most this many papers are not in full


def fit(
    size: Callable[[int, int], int],
    total: int,
    budget: int,
    guess: Callable[[], int] | None = None,
) -> tuple[int, int]:
    """How many of `total` papers to show in full and how many at all, given the HTML `size`
    of each choice: all in full if that fits, else as many in full as fit with the rest
    compact, else (none in full) as many compact ones as fit. `guess`: where the number in
    full probably is (the answer is the same, found with fewer sizes when the guess is near)."""
    if size(total, total) <= budget:
        return total, total
    full = largest(lambda n: size(n, total) <= budget, total, guess() if guess else None)
    if full > 0 or size(0, total) <= budget:
        return full, total
    return 0, largest(lambda n: size(0, n) <= budget, total)


def largest(fits: Callable[[int], bool], upper: int, guess: int | None = None) -> int:
    """The largest n in [0, upper] with fits(n), assuming fits is monotone and fits(0) or n=0.
    From a `guess`: steps of 1, 2, 4... away from it until the answer is bracketed, then the
    same halving (the same answer as without a guess)."""
    low, high = 0, upper  # every n above `high` does not fit; `low` fits, or is 0
    if guess is not None and upper > 0:
        probe, step = min(max(guess, 0), upper), 1
        if fits(probe):
            low = probe
            while low < high:
                probe = min(low + step, high)
                if not fits(probe):
                    high = probe - 1
                    break
                low, step = probe, step * 2
        else:
            high = probe - 1
            while low < high:
                probe = max(high - step + 1, low + 1)
                if fits(probe):
                    low = probe
                    break
                high, step = probe - 1, step * 2
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def fit_holds(
    size: Callable[[int, int], int],
    total: int,
    budget: int,
    full: int,
    shown: int,
    known: dict[tuple[int, int], int] | None = None,
) -> bool:
    """Whether `fit(size, total, budget)` gives (`full`, `shown`), asking `size` at most
    four times: at the edges of the choice (a choice's size grows with its papers in full or
    shown, which `fit`'s binary search assumes too, so the largest that fits is the one just
    below the first that does not), and everything in full when it can matter. `known`:
    sizes already measured, by (full, shown).

    Everything in full (`fit`'s first question) can fit where fewer in full with the rest
    compact do not (`LIST_MARKUP`): it is asked when at most `WHOLE_REACH` papers are not in
    full; past that, their full forms are taken to outweigh the list's markup (the renderer's
    own search reasons the same way, from the pieces' sizes)."""
    memo: dict[tuple[int, int], int] = dict(known or {})

    def fits(f: int, s: int) -> bool:
        if (f, s) not in memo:
            memo[f, s] = size(f, s)
        return memo[f, s] <= budget

    if total == 0 or (full, shown) == (total, total):
        return (full, shown) == (0, 0) if total == 0 else fits(total, total)
    if total - full <= WHOLE_REACH and fits(total, total):
        return False
    if shown == total:  # as many in full as fit, the rest compact (so not all in full)
        return fits(full, total) and not fits(full + 1, total)
    # None in full, and as many compact ones as fit (so not all of them, even compact).
    return (
        full == 0
        and not fits(0, total)
        and (shown == 0 or fits(0, shown))  # (the search ends at none when none fits)
        and not fits(0, shown + 1)
    )
