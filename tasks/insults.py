"""Mild English insults and rude words: vocabulary that two parts of the project share.

The testbed plants exactly these words as its insult lexicon (`tasks.testbed.lexicon`: its
corpus insults with them and its ground truth looks for them), and the offline offensive-language
model (`tasks.offensive`) trains on them among many more, so that the fallback scorer knows every
insult the testbed's model can write. All entries are single lowercase words: no slurs, no
profanity, nothing about identity.
"""

from __future__ import annotations

# Nouns that take an article ("an idiot"); their plurals are the lexicon's to derive.
INSULT_NOUNS = ("idiot", "moron", "loser", "fool", "clown", "jerk", "dimwit", "buffoon")
INSULT_ADJECTIVES = ("stupid", "dumb", "pathetic", "clueless", "brainless", "ignorant", "useless")
# Rude but not insulting.
RUDE_WORDS = frozenset(("ridiculous", "nonsense", "garbage", "absurd", "shut"))
