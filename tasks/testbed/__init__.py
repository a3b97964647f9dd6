"""The built-in testbed: a planted-attribute world and a small GPT-2 trained on it.

Public API (see each module's docstring for details):

- ``ensure_testbed(seed=0, cache_dir=None, progress=True) -> Path``: the model directory
  (``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` load it), built on first use.
- ``testbed_records(suite, seed=0) -> {"fit": [...], "select": [...], "test": [...]}`` in the
  real data sets' schemas (``records.py``).
- ``truth``: ground-truth scorers (sentiment, toxicity, facts, grammar, preferences).
- ``formats``: the text layouts the model was trained on (suffix questions, instructions, ...).
- ``texts``: each suite's texts for the model in those layouts (found through a suite's source).
- ``vital_signs(model_dir)`` / ``format_vital_signs``: the model's health check.
"""

from . import formats, truth
from .build import DEFAULT_RECIPE, build_testbed, ensure_testbed, testbed_dir
from .check import format_vital_signs, vital_signs
from .records import SUITES, testbed_records
from .train import Recipe
from .world import GENERATOR_VERSION, generate_corpus, world

__all__ = [
    "DEFAULT_RECIPE", "GENERATOR_VERSION", "SUITES", "Recipe", "build_testbed", "ensure_testbed",
    "format_vital_signs", "formats", "generate_corpus", "testbed_dir", "testbed_records",
    "truth", "vital_signs", "world",
]  # fmt: skip
