"""Method adapters. Each module holds one method; BUILTIN_METHODS lists them explicitly.

Third-party methods register through the `steerbench.methods` entry point group instead.
"""

from methods.memory import MemoryAdd, MemoryXAttn
from methods.prefix import PrefixController
from methods.prompting import Prompting
from methods.selfcontrol import SelfControl
from methods.vectors import CAA, PCA, ActAdd

BUILTIN_METHODS = (
    Prompting,
    ActAdd,
    CAA,
    PCA,
    MemoryAdd,
    MemoryXAttn,
    SelfControl,
    PrefixController,
)
