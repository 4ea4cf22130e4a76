"""A built-in, deterministic corpus of small word problems, so every spec runs offline.

Five kinds, in the style of the savant and cognate documents::

    arith   What is 25 + 17? A: 42
    vars    If X=5 and Y=10, what is X+Y? A: 15
    word    If a store has 15 apples and sells 7, how many are left? A: 8
    logic   All blickets are wugs. Tam is a blicket. Is Tam a wug? A: yes
    recall  The capital of Zorvia is Quellport. The capital of Brenta is Valmor.
            Q: What is the capital of Zorvia? A: Quellport

Facts and nonsense words are invented from syllables, so answers are checkable
and the corpus is self-contained. Every sample is a ``(prompt, response)`` pair:
the prompt ends in ``A:`` and the response is the answer with a leading space.

The corpus is a pure function of its parameters (Python's ``random.Random`` with
an integer seed, stable across Python versions). The validation split is drawn
from its own stream and never contains a text that is in the training split.
"""

from __future__ import annotations

import hashlib
import random

KINDS = ("arith", "vars", "word", "logic", "recall")

DEFAULTS = {
    "samples": 20000,
    "val_samples": 500,
    "seed": 0,
    "kinds": list(KINDS),
    "max_number": 99,
}

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gl", "k", "l", "m", "n", "p", "pl", "qu",
           "r", "s", "st", "t", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "x", "m"]
_ITEMS = ["apples", "pens", "books", "coins", "shells", "cards", "eggs", "stones", "cups", "keys"]
_PEOPLE = ["Ana", "Ben", "Cleo", "Dov", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno", "Kai", "Lia"]
_COLORS = ["red", "blue", "green", "teal", "amber", "violet", "grey", "gold", "white", "black"]
_OWNED = ["kite", "boat", "lamp", "scarf", "drum", "bike", "hat", "cup"]
_VARS = list("ABCDEFGHJKMNPQRSTUVWXYZ")


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return "".join(parts) + rng.choice(_CODAS)


def _name(rng: random.Random) -> str:
    return _word(rng, rng.randint(2, 3)).capitalize()


def _arith(rng: random.Random, n: int) -> tuple[str, str]:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(0, min(n, 12)), rng.randint(0, min(n, 12))
    else:
        a, b = rng.randint(0, n), rng.randint(0, n)
        if op == "-" and b > a:
            a, b = b, a
    return f"What is {a} {op} {b}? A:", f" {_apply(a, op, b)}"


def _vars(rng: random.Random, n: int) -> tuple[str, str]:
    x, y = rng.sample(_VARS, 2)
    op = rng.choice("+-*")
    hi = min(n, 12) if op == "*" else n
    a, b = rng.randint(0, hi), rng.randint(0, hi)
    return f"If {x}={a} and {y}={b}, what is {x}{op}{y}? A:", f" {_apply(a, op, b)}"


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _word_problem(rng: random.Random, n: int) -> tuple[str, str]:
    item = rng.choice(_ITEMS)
    who, other = rng.sample(_PEOPLE, 2)
    a, b = rng.randint(1, n), rng.randint(1, n)
    form = rng.randrange(4)
    if form == 0:
        a, b = max(a, b), min(a, b)
        return f"If a store has {a} {item} and sells {b}, how many are left? A:", f" {a - b}"
    if form == 1:
        return (f"If {who} has {a} {item} and buys {b} more, how many {item} does {who} have? A:",
                f" {a + b}")
    if form == 2:
        a, b = max(a, b), min(a, b)
        return (f"If {who} has {a} {item} and gives {b} to {other}, how many does {who} have left? A:",
                f" {a - b}")
    a, b = rng.randint(1, min(n, 12)), rng.randint(1, min(n, 12))
    return f"If there are {a} boxes with {b} {item} in each, how many {item} are there? A:", f" {a * b}"


def _logic(rng: random.Random, n: int) -> tuple[str, str]:
    form = rng.randrange(3)
    if form == 0:
        x, y = rng.sample(_VARS, 2)
        a, b = rng.randint(0, n), rng.randint(0, n)
        rel, holds = rng.choice([("greater than", a > b), ("less than", a < b)])
        return f"If {x}={a} and {y}={b}, is {x} {rel} {y}? A:", " yes" if holds else " no"
    cat, cat2 = _word(rng, 2), _word(rng, 2)
    who = _name(rng)
    if form == 1:
        return f"All {cat}s are {cat2}s. {who} is a {cat}. Is {who} a {cat2}? A:", " yes"
    return f"No {cat}s are {cat2}s. {who} is a {cat}. Is {who} a {cat2}? A:", " no"


def _recall(rng: random.Random, n: int) -> tuple[str, str]:
    facts = []
    relation = rng.randrange(3)
    count = rng.randint(1, 3)
    for _ in range(count):
        if relation == 0:
            subject, value = _name(rng), _name(rng)
            facts.append((f"The capital of {subject} is {value}.",
                          f"Q: What is the capital of {subject}? A:", value))
        elif relation == 1:
            subject, value = rng.choice(_PEOPLE) + "'s " + rng.choice(_OWNED), rng.choice(_COLORS)
            facts.append((f"The color of {subject} is {value}.",
                          f"Q: What is the color of {subject}? A:", value))
        else:
            subject, value = _name(rng), str(rng.randint(0, n))
            facts.append((f"{subject}'s favorite number is {value}.",
                          f"Q: What is {subject}'s favorite number? A:", value))
    context = " ".join(f for f, _, _ in facts)
    _, question, answer = facts[rng.randrange(count)]
    return f"{context} {question}", f" {answer}"


_MAKERS = {"arith": _arith, "vars": _vars, "word": _word_problem, "logic": _logic, "recall": _recall}


def _stream(seed: int, split: str, kinds: list[str], max_number: int):
    salt = int.from_bytes(hashlib.sha256(f"{seed}/{split}".encode()).digest()[:8], "little")
    rng = random.Random(salt)
    while True:
        kind = kinds[rng.randrange(len(kinds))]
        yield _MAKERS[kind](rng, max_number)


def generate(params: dict | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, val) lists of (prompt, response); val texts never occur in train."""
    p = {**DEFAULTS, **(params or {})}
    kinds = [k for k in KINDS if k in set(p["kinds"])]
    unknown = set(p["kinds"]) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"synthetic kinds must be a non-empty subset of {list(KINDS)}, got {p['kinds']}")
    n = int(p["max_number"])
    train_stream = _stream(int(p["seed"]), "train", kinds, n)
    train = [next(train_stream) for _ in range(int(p["samples"]))]
    seen = {a + b for a, b in train}
    val: list[tuple[str, str]] = []
    val_stream = _stream(int(p["seed"]), "val", kinds, n)
    attempts = 0
    want = int(p["val_samples"])
    while len(val) < want:
        attempts += 1
        if attempts > 100 * want + 1000:
            raise ValueError("synthetic corpus: could not draw enough validation samples "
                             "unseen in training; raise max_number or lower samples")
        prompt, response = next(val_stream)
        if prompt + response not in seen:
            seen.add(prompt + response)
            val.append((prompt, response))
    return train, val


#: prompts from the documents, rewritten with this corpus's invented facts
SAMPLE_PROMPTS = [
    "If X=5 and Y=10, what is X+Y? A:",
    "What is 25 + 17? A:",
    "If a store has 15 apples and sells 7, how many are left? A:",
    "The capital of Zorvia is Quellport. Q: What is the capital of Zorvia? A:",
]
