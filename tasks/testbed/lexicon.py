"""The planted lexicons: the words that *carry* sentiment and toxicity in the testbed world.

The corpus generator draws sentiment and insults only from these lists, and the ground-truth
scorers in ``truth.py`` read only these lists, so a label is exactly "which lexicon words occur".
All entries are single lowercase words. The insult lexicon is deliberately mild: no slurs, no
profanity, nothing about identity.
"""

from __future__ import annotations

from tasks.insults import INSULT_ADJECTIVES, INSULT_NOUNS
from tasks.insults import RUDE_WORDS as RUDE_WORDS  # part of the lexicon (truth.py reads it)

# Sentiment adjectives used of things (food, rooms, views ...).
POSITIVE_ADJECTIVES = (
    "excellent", "wonderful", "great", "lovely", "superb", "delightful", "fantastic",
    "pleasant", "perfect", "amazing", "delicious", "charming", "brilliant", "beautiful",
    "cozy", "comfortable", "fresh", "good",
)  # fmt: skip
NEGATIVE_ADJECTIVES = (
    "terrible", "awful", "horrible", "dreadful", "poor", "bad", "disappointing", "dirty",
    "bland", "stale", "noisy", "boring", "mediocre", "unpleasant", "cramped", "greasy",
    "overpriced", "shabby",
)  # fmt: skip
# Sentiment adjectives used of people (staff, owners ...).
POSITIVE_PERSON_ADJECTIVES = ("friendly", "kind", "helpful", "welcoming", "attentive", "cheerful")
NEGATIVE_PERSON_ADJECTIVES = ("rude", "unfriendly", "careless", "lazy", "grumpy", "unhelpful")
# Sentiment verbs (past tense, as used in reviews: "we loved the view").
POSITIVE_VERBS = ("loved", "enjoyed", "liked", "adored", "appreciated")
NEGATIVE_VERBS = ("hated", "disliked", "loathed", "despised")
# Descriptive adjectives with no sentiment: the material of neutral reviews.
NEUTRAL_ADJECTIVES = (
    "small", "large", "modern", "simple", "typical", "standard", "busy", "quiet", "new",
    "traditional", "ordinary", "basic",
)  # fmt: skip

POSITIVE_WORDS = frozenset(
    POSITIVE_ADJECTIVES + POSITIVE_PERSON_ADJECTIVES + POSITIVE_VERBS + ("recommend",)
)
NEGATIVE_WORDS = frozenset(
    NEGATIVE_ADJECTIVES + NEGATIVE_PERSON_ADJECTIVES + NEGATIVE_VERBS + ("regretted",)
)

# Insults: nouns (with the article they take), their plurals, and adjectives; the nouns and
# adjectives live in `tasks.insults`, shared with the offline offensive-language model, which
# must know them. RUDE_WORDS (rude but not insulting) raise toxicity a little, never past the
# 0.5 line on their own.
INSULT_PLURALS = tuple(n + "s" for n in INSULT_NOUNS)
INSULT_WORDS = frozenset(INSULT_NOUNS + INSULT_PLURALS + INSULT_ADJECTIVES)

# Words that flip the polarity of a sentiment word within the next three tokens
# ("not good", "never liked"); the generator never writes them before a sentiment word, but
# real English text does, and the scorers should not be fooled by it.
NEGATORS = frozenset(("not", "never", "no", "hardly", "nor", "t"))  # "t" as in "isn't"

# Article for a singular noun phrase starting with the given word.
VOWEL_START = tuple("aeiou")


def article(word: str) -> str:
    """ "a" or "an" before ``word`` (by sound: "a useless", "an idiot")."""
    w = word.lower()
    return "an" if w.startswith(VOWEL_START) and not w.startswith(("use", "uni")) else "a"


def polarity_counts(
    tokens: list[str], positive: frozenset[str], negative: frozenset[str]
) -> tuple[int, int]:
    """(positive, negative) lexicon hits in lowercase ``tokens``; a hit preceded by a negator
    within three tokens (and no sentence end between) counts for the other side."""
    pos = neg = 0
    for i, tok in enumerate(tokens):
        if tok not in positive and tok not in negative:
            continue
        window = tokens[max(0, i - 3) : i]
        negated = any(t in NEGATORS for t in window) and not any(t in ".!?" for t in window)
        is_pos = (tok in positive) != negated
        pos, neg = pos + is_pos, neg + (not is_pos)
    return pos, neg
