"""The argument parser of the project's commands (search, demo, datasets, converters, export; training parses its
settings with `HfArgumentParser`, which behaves the same way):

- every flag is accepted as `--foo-bar` and as `--foo_bar`;
- an abbreviated or misspelt flag is an error naming it, with the closest real flag, never silently another flag;
- `--help` shows the default each option really takes;
- a mistake in the user's input is one line `error: ...` (`user_errors`), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
from collections.abc import Iterator


def _shows_default(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.default not in (None, False, argparse.SUPPRESS)


class _DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        help_text = action.help or ""
        if _shows_default(action) and "default" not in help_text.lower():
            help_text = f"{help_text} (default: %(default)s)".strip()
        return help_text


class CommandParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with both flag spellings, no abbreviations and the defaults in `--help`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def _respell(self, token: str) -> str:
        name, equals, value = token.partition("=")
        if name in self._option_string_actions:
            return token
        for spelling in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
            if spelling in self._option_string_actions:
                return spelling + equals + value
        return token

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        if "--" in args:
            split = args.index("--")
            args = [self._respell(a) if a.startswith("--") else a for a in args[:split]] + args[split:]
        else:
            args = [self._respell(a) if a.startswith("--") else a for a in args]
        return super().parse_known_args(args, namespace)

    def format_help(self):
        for action in self._actions:
            if action.help is None and _shows_default(action):
                action.help = "(default: %(default)s)"
        return super().format_help()

    def _all_flags(self) -> set[str]:
        flags = {option for option in self._option_string_actions if option.startswith("--")}
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for command in action.choices.values():
                    flags |= command._all_flags() if isinstance(command, CommandParser) else set()
        return flags

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            flags = sorted(self._all_flags())
            for token in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(token.partition("=")[0].replace("_", "-"), flags, n=1, cutoff=0.6)
                if token.startswith("--") and close:
                    message += f" (did you mean {close[0]}?)"
                    break
        super().error(message)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a mistake in the user's input (a missing or unreadable file, a bad value: `OSError`, `ValueError`) into one
    line `error: ...` on stderr and exit status 2, as argparse does for a bad flag."""
    try:
        yield
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["CommandParser", "user_errors"]
