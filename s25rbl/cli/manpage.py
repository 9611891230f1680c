"""The man page and the bash completion, both made from the one argparse definition: walking
the parser at run time, so every command and option it has (whoever added them) is in both.

``s25rbl man`` prints the page (roff, section 1); ``s25rbl completion bash`` prints the
completion script. Neither reads the configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from s25rbl import __version__

SHELLS = ("bash",)


@dataclass(frozen=True)
class Command:
    """One command of the tree: its words (``("entries", "add")``), its parser and its help."""

    words: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str


def subparsers_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[Command]:
    """Every command below ``parser``, depth first, with the help its parent gives it."""
    action = subparsers_of(parser)
    if action is None:
        return
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    for name, sub in action.choices.items():
        path = (*words, name)
        yield Command(path, sub, helps.get(name, ""))
        yield from walk(sub, path)


def options(parser: argparse.ArgumentParser, *, inherited: bool = True) -> list[argparse.Action]:
    """The optional arguments a parser documents (help suppressed ones left out); without
    ``inherited``, not the global ones every command repeats (--help, --config)."""
    return [
        a
        for a in parser._actions
        if a.option_strings
        and a.help != argparse.SUPPRESS
        and (inherited or a.dest not in ("help", "config"))
    ]


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


# --- the man page ------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no line starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"\s+", " ", text).strip()
    return "\\&" + text if text.startswith((".", "'")) else text


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def _option_text(action: argparse.Action) -> str:
    value = _metavar(action)
    forms = [
        f"\\fB{_roff(o)}\\fR" + (f" \\fI{_roff(value)}\\fR" if value else "") for o in action.option_strings
    ]
    return ", ".join(forms)


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % {"default": action.default, "prog": "s25rbl", "choices": action.choices}
    if action.choices is not None and not action.option_strings and action.metavar is None:
        text = (text + " " if text else "") + "One of: " + ", ".join(str(c) for c in action.choices) + "."
    return text


def _synopsis(words: tuple[str, ...], parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().strip()
    usage = re.sub(r"^usage:\s*", "", usage)
    return re.sub(r"\s+", " ", usage)


def man_page(parser: argparse.ArgumentParser, today: date | None = None) -> str:
    """The ``s25rbl(1)`` page: name, synopsis, description, global options, then each
    command with its arguments and options, then the environment and the files."""
    day = (today or date.today()).isoformat()
    out = [
        f'.TH S25RBL 1 "{day}" "s25rbl {__version__}" "User Commands"',
        ".SH NAME",
        "s25rbl \\- " + _roff(parser.description or "S25R reputation service"),
        ".SH SYNOPSIS",
        ".B s25rbl",
        "[\\fIglobal options\\fR] \\fICOMMAND\\fR [\\fIoptions\\fR] [\\fIarguments\\fR]",
        ".SH DESCRIPTION",
        _roff(parser.description or ""),
        ".PP",
        "Global options may be given before or after the command's name.",
        ".SH GLOBAL OPTIONS",
    ]
    for action in options(parser):
        out += [".TP", _option_text(action), _roff(_help(action))]
    out.append(".SH COMMANDS")
    for command in walk(parser):
        out += [".SS " + _roff(" ".join(command.words)), _roff(command.help)]
        if command.parser.description:
            out += [".PP", _roff(command.parser.description)]
        out += [".PP", "Usage: \\fB" + _roff(_synopsis(command.words, command.parser)) + "\\fR"]
        for action in positionals(command.parser):
            out += [".TP", f"\\fI{_roff(_metavar(action) or action.dest)}\\fR", _roff(_help(action))]
        for action in options(command.parser, inherited=False):
            out += [".TP", _option_text(action), _roff(_help(action))]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBS25RBL_CONFIG\\fR",
        "The configuration file when \\fB\\-\\-config\\fR is not given.",
        ".TP",
        "\\fBS25RBL_\\fISECTION\\fB__\\fIKEY\\fR",
        _roff("Overrides one configuration key, e.g. S25RBL_DNS__ZONE=bl.example.org."),
        ".TP",
        "\\fBS25RBL_API_URL\\fR, \\fBS25RBL_API_TOKEN\\fR",
        _roff("The API and token for --api and --token."),
        ".SH FILES",
        ".TP",
        "\\fI/etc/s25rbl/s25rbl.toml\\fR",
        _roff(
            "The configuration read when neither --config nor S25RBL_CONFIG names one (the file of "
            "the systemd units); without it, the built-in defaults."
        ),
        ".SH EXIT STATUS",
        _roff(
            "0 done; 1 the operation failed (duplicate, not found, store missing or unavailable, bad "
            "list file); 2 bad usage or configuration."
        ),
        ".SH SEE ALSO",
        _roff("The README (/usr/share/doc/s25rbl/README.md) and the API's openapi.yaml."),
    ]
    return "\n".join(out) + "\n"


# --- bash completion ---------------------------------------------------------------------


def _words(values: list[str]) -> str:
    return " ".join(v for v in values if re.fullmatch(r"[A-Za-z0-9_.:,/@+=-]+", v))


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion function for ``s25rbl``: commands, then each command's options, and
    the choices of options and arguments that have a fixed set."""
    cases: list[str] = []
    top = [c.words[0] for c in walk(parser) if len(c.words) == 1]
    tree: dict[str, list[str]] = {"": top}
    flags: dict[str, list[str]] = {"": [o for a in options(parser) for o in a.option_strings]}
    choices: dict[str, dict[str, list[str]]] = {}
    fixed: dict[str, list[str]] = {}
    for command in walk(parser):
        key = " ".join(command.words)
        action = subparsers_of(command.parser)
        tree[key] = list(action.choices) if action is not None else []
        flags[key] = [o for a in options(command.parser) for o in a.option_strings]
        choices[key] = {
            o: [str(c) for c in a.choices]
            for a in options(command.parser)
            if a.choices is not None
            for o in a.option_strings
        }
        fixed[key] = [str(c) for a in positionals(command.parser) if a.choices is not None for c in a.choices]
    for key in tree:
        lines = [f'        "{key}")']
        lines.append(
            f'            subs="{_words(tree[key])}"; args="{_words(fixed.get(key, []))}"; '
            f'opts="{_words(flags[key])}"'
        )
        for option, values in choices.get(key, {}).items():
            lines.append(f'            [[ $prev == "{option}" ]] && values="{_words(values)}"')
        lines.append("            ;;")
        cases.append("\n".join(lines))
    body = "\n".join(cases)
    return f"""# bash completion for s25rbl {__version__}; made from its argument parser by
# `s25rbl completion bash`. Install: s25rbl completion bash > /etc/bash_completion.d/s25rbl
_s25rbl() {{
    local cur prev path="" word i subs args opts values=""
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD-1]}}
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        [[ $word == -* ]] && continue
        case "${{COMP_WORDS[i-1]}}" in --config|-c) continue ;; esac
        _s25rbl_level "$path"
        [[ " $subs " == *" $word "* ]] || continue
        path=${{path:+$path }}$word
    done
    _s25rbl_level "$path"
    if [[ -n $values ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ $prev == --config || $prev == -c || $prev == --state ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -n $subs ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    elif [[ -n $args ]]; then
        COMPREPLY=($(compgen -W "$args" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
_s25rbl_level() {{
    subs=""; args=""; opts=""; values=""
    case "$1" in
{body}
    esac
}}
complete -F _s25rbl s25rbl
"""


# --- the commands ------------------------------------------------------------------------


def add_parsers(sub: Any, root: argparse.ArgumentParser) -> None:
    """Add ``man`` and ``completion`` to the CLI's commands (``root``: the whole parser)."""
    p = sub.add_parser(
        "man",
        help="print the man page (roff): s25rbl man > /usr/local/share/man/man1/s25rbl.1",
    )
    p.set_defaults(func=cmd_man, root=root, settings_free=True)
    p = sub.add_parser(
        "completion",
        help="print the shell completion script: s25rbl completion bash > /etc/bash_completion.d/s25rbl",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell")
    p.set_defaults(func=cmd_completion, root=root, settings_free=True)


def cmd_man(settings: object, args: argparse.Namespace) -> int:
    print(man_page(args.root), end="")
    return 0


def cmd_completion(settings: object, args: argparse.Namespace) -> int:
    print(bash_completion(args.root), end="")
    return 0
