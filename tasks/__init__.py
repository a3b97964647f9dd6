"""Task suites. Each module holds one suite; BUILTIN_TASKS lists them explicitly.

Third-party tasks register through the `steerbench.tasks` entry point group instead.
"""

BUILTIN_TASKS = ()
