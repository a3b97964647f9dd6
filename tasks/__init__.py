"""Task suites. Each module holds one suite; BUILTIN_TASKS lists them explicitly.

Third-party tasks register through the `steerbench.tasks` entry point group instead.
"""

from tasks.fact import FactInjection
from tasks.preference import HHRLHF, WebGPT
from tasks.sentiment import Sentiment
from tasks.toxicity import Toxicity

BUILTIN_TASKS = (Toxicity, Sentiment, FactInjection, HHRLHF, WebGPT)
