"""A small, non-recursive context-free grammar over English words.

One object serves both directions, so the corpus and the fluency ground truth can never drift
apart:

* ``expand`` writes a sentence (a list of word tokens) from a nonterminal with a seeded
  ``random.Random``; callers may *bind* nonterminals, e.g. ``{"COUNTRY": "Vorland"}`` (a literal)
  or ``{"ASPECT": "ASPECT_HOTEL"}`` (another nonterminal), to keep a document coherent.
* ``matches`` decides whether a token list is a complete production of a symbol, and
  ``viable_prefix`` whether it can still be completed into one (for a sentence cut off by a
  generation limit).

Rules are plain data: ``{"NT": ["alternative one", "alternative two", ...]}``. Inside an
alternative, tokens written in capitals (``[A-Z][A-Z0-9_]+``) are nonterminals; everything else is
literal text, split into word tokens by :func:`words`. Recognition is case-insensitive. The grammar
must be acyclic (checked), so recognition is a memoised descent over token positions and the
language is finite-state in effect.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

_NONTERMINAL = re.compile(r"[A-Z][A-Z0-9_]+")
# Word tokens: alphanumeric runs, a possessive "'s", or any single other visible character.
_WORD = re.compile(r"[A-Za-z0-9]+|'s\b|[^\sA-Za-z0-9]")
# Sentinel end position meaning "the input ran out inside this symbol" (prefix mode only).
_PARTIAL = -1


def words(text: str) -> list[str]:
    """Split text into the grammar's word tokens, case preserved: "Vorland's" -> [Vorland, 's]."""
    return _WORD.findall(text)


def is_nonterminal(token: str) -> bool:
    return _NONTERMINAL.fullmatch(token) is not None


_NO_SPACE_BEFORE = {".", ",", "?", "!", ":", ";", "'s", "]"}
_NO_SPACE_AFTER = {"["}
_SENTENCE_END = {".", "?", "!"}


def render(tokens: Sequence[str]) -> str:
    """Join word tokens into text: "the capital of Vorland is Brellin [ 1 ] ." ->
    "The capital of Vorland is Brellin [1]." (sentence starts and the pronoun "i" capitalised)."""
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if tok == "i":
            tok = "I"
        elif i == 0 or tokens[i - 1] in _SENTENCE_END:
            tok = tok[:1].upper() + tok[1:]
        if out and tok not in _NO_SPACE_BEFORE and tokens[i - 1] not in _NO_SPACE_AFTER:
            out.append(" ")
        out.append(tok)
    return "".join(out)


@dataclass(frozen=True)
class Grammar:
    """Rules keyed by nonterminal; each alternative is a tuple of symbols (see module doc)."""

    rules: Mapping[str, tuple[tuple[str, ...], ...]]

    @classmethod
    def from_text(cls, rules: Mapping[str, Sequence[str]]) -> Grammar:
        """Build from ``{"NT": ["alt text", ...]}``; literal text is split with :func:`words`."""
        parsed: dict[str, tuple[tuple[str, ...], ...]] = {}
        for name, alts in rules.items():
            if not is_nonterminal(name):
                raise ValueError(f"rule name {name!r} is not a nonterminal (CAPITALS_ONLY)")
            if not alts:
                raise ValueError(f"rule {name} has no alternatives")
            parsed[name] = tuple(tuple(_symbols(alt)) for alt in alts)
        grammar = cls(parsed)
        grammar._check()
        return grammar

    def _check(self) -> None:
        """Every nonterminal is defined and the rules are acyclic (no recursion)."""
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError("recursive grammar: " + " -> ".join((*path, name)))
            state[name] = 1
            for alt in self.rules[name]:
                for sym in alt:
                    if is_nonterminal(sym):
                        if sym not in self.rules:
                            raise ValueError(f"{name} uses undefined nonterminal {sym}")
                        visit(sym, (*path, name))
            state[name] = 2

        for name in self.rules:
            visit(name, ())

    @cached_property
    def _word_classes(self) -> dict[str, frozenset[str]]:
        """Nonterminals whose alternatives are all single literal words, as lowercase sets
        (a fast path: most lexicon rules are like this)."""
        out = {}
        for name, alts in self.rules.items():
            if all(len(a) == 1 and not is_nonterminal(a[0]) for a in alts):
                out[name] = frozenset(a[0].lower() for a in alts)
        return out

    # ----------------------------------------------------------------- generation
    def expand(
        self, symbol: str, rng: random.Random, bind: Mapping[str, str] | None = None
    ) -> list[str]:
        """Expand ``symbol`` into word tokens, choosing alternatives uniformly with ``rng``.

        ``bind`` maps a nonterminal to a replacement: another nonterminal (expanded instead) or
        literal text (used verbatim), wherever the nonterminal occurs in the derivation."""
        bind = bind or {}
        if symbol in bind:
            target = bind[symbol]
            if is_nonterminal(target) and target != symbol:
                return self.expand(target, rng, bind)
            if not is_nonterminal(target):
                return words(target)
        if not is_nonterminal(symbol):
            return [symbol]
        alt = self.rules[symbol][rng.randrange(len(self.rules[symbol]))]
        out: list[str] = []
        for sym in alt:
            out.extend(self.expand(sym, rng, bind) if is_nonterminal(sym) else [sym])
        return out

    def expand_text(
        self, alt: str, rng: random.Random, bind: Mapping[str, str] | None = None
    ) -> list[str]:
        """Expand an ad-hoc alternative written like a rule's ("only PRED_ONLY would ...")."""
        out: list[str] = []
        for sym in _symbols(alt):
            out.extend(self.expand(sym, rng, bind))
        return out

    def sentence(
        self, symbol: str, rng: random.Random, bind: Mapping[str, str] | None = None
    ) -> str:
        """``expand`` and ``render`` in one step."""
        return render(self.expand(symbol, rng, bind))

    # ---------------------------------------------------------------- recognition
    def matches(self, symbol: str, tokens: Sequence[str]) -> bool:
        """True when ``tokens`` (case-insensitive) is a complete production of ``symbol``."""
        toks = tuple(t.lower() for t in tokens)
        return len(toks) in self._ends(symbol, toks, 0, False, {})

    def viable_prefix(self, symbol: str, tokens: Sequence[str]) -> bool:
        """True when ``tokens`` is a production of ``symbol`` or can be extended into one."""
        toks = tuple(t.lower() for t in tokens)
        ends = self._ends(symbol, toks, 0, True, {})
        return len(toks) in ends or _PARTIAL in ends

    def _ends(
        self, sym: str, toks: tuple[str, ...], i: int, prefix: bool, memo: dict
    ) -> frozenset[int]:
        """End positions j such that ``toks[i:j]`` derives from ``sym``; in prefix mode also
        ``_PARTIAL`` when the input is exhausted part-way through ``sym``."""
        n = len(toks)
        if not is_nonterminal(sym):
            lit = sym.lower()
            if i < n and toks[i] == lit:
                return frozenset((i + 1,))
            return frozenset((_PARTIAL,)) if prefix and i == n else frozenset()
        key = (sym, i)
        if key in memo:
            return memo[key]
        if prefix and i == n:
            result = frozenset((_PARTIAL,))
        elif sym in self._word_classes:
            hit = i < n and toks[i] in self._word_classes[sym]
            result = frozenset((i + 1,)) if hit else frozenset()
        else:
            found: set[int] = set()
            for alt in self.rules[sym]:
                found |= self._seq_ends(alt, toks, i, prefix, memo)
            result = frozenset(found)
        memo[key] = result
        return result

    def _seq_ends(
        self, alt: tuple[str, ...], toks: tuple[str, ...], i: int, prefix: bool, memo: dict
    ) -> set[int]:
        positions = {i}
        for sym in alt:
            nxt: set[int] = set()
            for p in positions:
                if p == _PARTIAL:
                    nxt.add(_PARTIAL)  # already ran out of input: the rest may follow later
                else:
                    nxt |= self._ends(sym, toks, p, prefix, memo)
            positions = nxt
            if not positions:
                break
        return positions


def _symbols(alt: str) -> list[str]:
    """Split an alternative into symbols: nonterminal names stay whole, literals become words."""
    out: list[str] = []
    for chunk in alt.split():
        out.extend([chunk] if is_nonterminal(chunk) else words(chunk))  # "COUNTRY's" -> 2 symbols
    return out
