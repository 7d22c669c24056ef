"""CLI subcommands, discovered automatically.

Each module here defines ``register(subparsers)``, which adds one or more subcommands and sets
``func`` on each parser to a handler ``(args) -> int``. Modules must import only the standard
library at top level (heavy imports inside handlers) so that ``delphi plan`` starts instantly.
"""
