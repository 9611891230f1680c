"""The man page and the bash completion are made from the parser: every command and option
is in both, the page renders without warnings, and bash completes commands, options and
choices with the real script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from s25rbl.cli import main
from s25rbl.cli.manpage import bash_completion, man_page, options, positionals, walk
from s25rbl.cli.parser import build_parser


def _roff(text: str) -> str:
    return text.replace("-", "\\-")


def test_every_command_and_option_is_in_the_man_page() -> None:
    parser = build_parser()
    page = man_page(parser)
    commands = list(walk(parser))
    assert {" ".join(c.words) for c in commands} >= {"serve", "migrate", "entries add", "token create", "man"}
    for command in commands:
        assert f".SS {_roff(' '.join(command.words))}\n" in page
        for action in options(command.parser):
            for option in action.option_strings:
                assert f"\\fB{_roff(option)}\\fR" in page, (command.words, option)
    for action in options(parser):
        for option in action.option_strings:
            assert f"\\fB{_roff(option)}\\fR" in page


def test_every_command_and_option_is_in_the_completion() -> None:
    parser = build_parser()
    script = bash_completion(parser)
    for command in walk(parser):
        key = " ".join(command.words)
        assert f'"{key}")' in script, key
        case = script.split(f'"{key}")', 1)[1].split(";;", 1)[0]
        for action in options(command.parser):
            for option in action.option_strings:
                assert option in case, (key, option)
        for action in positionals(command.parser):
            for choice in action.choices or ():
                assert str(choice) in case, (key, choice)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_the_man_page_renders_without_warnings(tmp_path: Path) -> None:
    page = tmp_path / "s25rbl.1"
    page.write_text(man_page(build_parser()))
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "80"}
    groff = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True, env=env
    )
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    if shutil.which("man") is not None:
        shown = subprocess.run(
            ["man", "--warnings", "-l", str(page)], capture_output=True, text=True, env=env, timeout=60
        )
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        flat = " ".join(shown.stdout.split())
        assert "s25rbl migrate [-h] [--revision REV] [--config FILE]" in flat


def _complete(script: Path, line: str) -> list[str]:
    """What bash completes for ``line`` (the cursor at its end) with the generated script."""
    words = line.split(" ")
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_s25rbl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(w for w in result.stdout.splitlines() if w)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "s25rbl"
    script.write_text(bash_completion(build_parser()))
    assert "serve" in _complete(script, "s25rbl se") and "entries" in _complete(script, "s25rbl ")
    assert _complete(script, "s25rbl entries a") == ["add"]
    assert _complete(script, "s25rbl --config x.toml entries a") == ["add"]
    assert _complete(script, "s25rbl entries add ") == sorted(
        ["white", "black", "ip", "cidr", "hostname", "domain", "regex", "rule"]
    )
    assert "--dns-only" in _complete(script, "s25rbl serve --")
    assert _complete(script, "s25rbl export --format ") == ["csv", "json", "postfix", "rbldnsd"]
    assert _complete(script, "s25rbl completion ") == ["bash"]


def test_man_and_completion_need_no_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S25RBL_CONFIG", "/nonexistent/s25rbl.toml")  # would stop any other command
    assert main(["man"]) == 0
    assert capsys.readouterr().out.startswith(".TH S25RBL 1 ")
    assert main(["completion", "bash"]) == 0
    assert "complete -F _s25rbl s25rbl" in capsys.readouterr().out
