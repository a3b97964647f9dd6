"""steerbench core: subjects, steering mechanics, methods/tasks interfaces, runner and CLI.

Nothing in this package knows about a particular method or task; those live in `methods/`
and `tasks/` and reach the core only through the registries.
"""

__version__ = "0.1.0"
