"""MNIST series batches (docs/experiments.md#series-rules, ipeis/UG-VAE ``datasets.py`` MnistSeries).

A *series* is a sequence of 256 members following a rule (even 2n, odd 2n + 1, Fibonacci 0, 1, 1, 2, ...,
primes 2, 3, 5, ...). Its members are written in decimal and their digits concatenated; the stream is cut
to its first 256 digits. A batch takes one rule uniformly, a uniform start in the stream and 128
consecutive digits (wrapping modulo 256), and draws each digit as a random MNIST image of that class.
The reference draws each class's images in file order and never resets those iterators; here they are
drawn at random (docs/experiments.md#series-rules). The reference's optional per-member offset/scale is not implemented.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import VaelabError

RULES = ("even", "odd", "fibonacci", "primes")
MEMBERS = 256  # members per sequence (ipeis/UG-VAE)
STREAM_LENGTH = 256  # digits kept of the concatenated stream (ipeis/UG-VAE)


def _primes(n: int) -> list[int]:
    out: list[int] = []
    k = 2
    while len(out) < n:
        if all(k % p for p in out if p * p <= k):
            out.append(k)
        k += 1
    return out


def series_members(rule: str, n: int = MEMBERS) -> list[int]:
    """The first ``n`` members of a rule."""
    if rule == "even":
        return [2 * i for i in range(n)]
    if rule == "odd":
        return [2 * i + 1 for i in range(n)]
    if rule == "fibonacci":
        out, a, b = [], 0, 1
        for _ in range(n):
            out.append(a)
            a, b = b, a + b
        return out
    if rule == "primes":
        return _primes(n)
    raise VaelabError(f"unknown series rule {rule!r}; choose from {', '.join(RULES)}")


@lru_cache(maxsize=None)
def _stream(rule: str, length: int) -> tuple[int, ...]:
    digits = "".join(str(m) for m in series_members(rule, MEMBERS))
    if len(digits) < length:
        raise VaelabError(f"the {rule} stream has only {len(digits)} digits, fewer than {length}")
    return tuple(int(c) for c in digits[:length])


def digit_stream(rule: str, length: int = STREAM_LENGTH) -> np.ndarray:
    """The rule's members in decimal, digits concatenated, cut to the first ``length`` digits."""
    return np.array(_stream(rule, int(length)), dtype=np.int64)


class SeriesSampler:
    """Draws series batches from a labelled digit dataset (``labels``: one digit 0-9 per image)."""

    def __init__(self, labels, rules=RULES, batch_size: int = 128, stream_length: int = STREAM_LENGTH):
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.rules = tuple(rules)
        for r in self.rules:
            series_members(r, 1)  # validates the name
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise VaelabError(f"series batch size must be at least 1, got {batch_size}")
        self.streams = {r: digit_stream(r, stream_length) for r in self.rules}
        self.by_digit = [np.flatnonzero(labels == d) for d in range(10)]
        needed = sorted({int(d) for s in self.streams.values() for d in np.unique(s)})
        missing = [d for d in needed if len(self.by_digit[d]) == 0]
        if missing:
            raise VaelabError(f"the dataset has no image of digit(s) {missing}: MNIST series need every digit")

    def batch(self, rng: np.random.Generator, rule: str | None = None,
              start: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """One series batch: (image indices, digits, rule). ``rule`` / ``start`` None: drawn uniformly."""
        if rule is None:
            rule = self.rules[int(rng.integers(len(self.rules)))]
        elif rule not in self.streams:
            raise VaelabError(f"rule {rule!r} is not one of this sampler's rules {self.rules}")
        stream = self.streams[rule]
        start = int(rng.integers(len(stream))) if start is None else int(start) % len(stream)
        digits = stream[(start + np.arange(self.batch_size)) % len(stream)]
        idx = np.empty(self.batch_size, dtype=np.int64)
        for d in np.unique(digits):
            pos = np.flatnonzero(digits == d)
            pool = self.by_digit[d]
            idx[pos] = pool[rng.integers(len(pool), size=len(pos))]
        return idx, digits, rule

    def batches(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``n`` series batches: indices n×B, digits n×B, rules (list of n names)."""
        out = [self.batch(rng) for _ in range(int(n))]
        if not out:
            return (np.zeros((0, self.batch_size), np.int64), np.zeros((0, self.batch_size), np.int64), [])
        return (np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), [o[2] for o in out])
