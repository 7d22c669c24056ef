"""The `delphi` command line: a thin layer over the package's functions.

Subcommands live in `delphi.commands.*` and are discovered at start-up: each module there registers
its own commands, so adding one touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from delphi import __version__
from delphi.errors import DelphiError


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2 (argparse prints the whole usage)."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="delphi",
        description="Delphi scaling-law laboratory: plan, train, fit, forecast, check, report.",
    )
    parser.add_argument("--version", action="version", version=f"delphi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    import delphi.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"delphi.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DelphiError as e:
        print(f"delphi {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"delphi {args.command}: interrupted; completed work is kept and a re-run resumes it.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
