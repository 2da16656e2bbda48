"""Every `--flag` that a message, help text or docstring in medfactory/, plugins/ or eval/ names is an
option of some `medfactory` command (or, in a short list below, of the outside tool it is passed to).

Issue 14 found errors advising `--patient-id-column` and `--note-id-column`, which no command has: the
flag was built as ``"--" + column + "-column"``. So flags are also never built from pieces: each is
written out whole, where this test can check it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

REPO_ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("medfactory", "plugins", "eval")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# A literal that ends in "--" (or holds "--{" / "--%s") before the rest of a flag is added at run time.
PARTIAL_FLAG = re.compile(r"(?:^|[^\w-])--$")
TEMPLATED_FLAG = re.compile(r"(?<![\w-])--(?:\{|%[sr(])")
# Options of the commands medfactory runs or tells the user to run, not of medfactory itself.
EXTERNAL_FLAGS = {
    "--no-deps": "pip download --no-deps: fetching the mistral-common wheel (medfactory/recipes/tokens.py)",
    "--porcelain": "git status --porcelain: the run card's dirty-tree check (medfactory/run/card.py)",
    "--local-dir": "hf download --local-dir: fetching an encoder on a machine with hub access (medfactory/corpus/deid/encoder.py)",
    "--served-model-name": "vllm serve --served-model-name: the name a generation command's --model sends (medfactory/generate/endpoint_options.py)",
}
BUILT_IN = {"--help"}  # click adds it to every command; it is not among a command's params


def _walk_options(command, found: set[str]) -> None:
    # Duck-typed: typer vendors its own click, so click's classes are not the ones used here.
    for param in command.params:
        found.update(opt for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if opt.startswith("--"))
    for sub in getattr(command, "commands", {}).values():
        _walk_options(sub, found)


@pytest.fixture(scope="module")
def medfactory_options() -> set[str]:
    """Every long option of every `medfactory` command and subcommand, the `prepare` plugins included."""
    from medfactory.cli import app

    found: set[str] = set()
    _walk_options(typer.main.get_command(app), found)
    return found


def _declarations(tree: ast.AST) -> set[int]:
    """ids of the string arguments of ``typer.Option("--name", ...)`` calls: they declare an option, they do not advise one."""
    declared = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("Option", "Argument"):
            declared.update(id(arg) for arg in node.args if isinstance(arg, ast.Constant))
    return declared


def _strings(tree: ast.AST) -> Iterator[ast.Constant]:
    declared = _declarations(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in declared:
            yield node


def named_flags(source: str) -> list[tuple[int, str]]:
    """(line, flag) for every `--flag` written in a string literal of ``source`` (f-string parts included)."""
    return [(node.lineno, flag) for node in _strings(ast.parse(source)) for flag in FLAG.findall(node.value)]


def _rightmost(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.BinOp):
        node = node.right
    return node


def built_flags(source: str) -> list[int]:
    """Lines where a flag is built from pieces: ``"--" + name``, ``f"--{name}"``, ``"--%s" % name``, ``"--{}".format``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            pairs = zip(node.values, node.values[1:])
            if any(isinstance(a, ast.Constant) and PARTIAL_FLAG.search(a.value) and isinstance(b, ast.FormattedValue) for a, b in pairs):
                lines.append(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = _rightmost(node.left), node.right
            # "--" + anything but a literal that cannot go on a flag ("|---" tables: "--" + "-")
            completes = not isinstance(right, ast.Constant) or str(right.value)[:1].isalpha()
            if isinstance(left, ast.Constant) and isinstance(left.value, str) and PARTIAL_FLAG.search(left.value) and completes:
                lines.append(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and TEMPLATED_FLAG.search(node.value):
            lines.append(node.lineno)
    return lines


def _sources() -> Iterator[tuple[str, str]]:
    for folder in SCANNED:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            yield path.relative_to(REPO_ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_the_options_are_collected_from_every_command(medfactory_options: set[str]) -> None:
    # Top level, nested groups (eval, likert, recipes) and the prepare plugins found through entry points.
    assert {"--base-model", "--chat-template", "--study", "--prepared", "--jpg-root", "--text-column", "--on-error"} <= medfactory_options
    assert not EXTERNAL_FLAGS.keys() & medfactory_options  # an allowed outside flag that became ours: drop it from the list


def test_the_scanner_finds_flags_and_flags_built_from_pieces() -> None:
    source = (
        'raise CorpusError("no column: pass --patient-id-column")\n'
        'x = f"use --note-id-column={value} or --text-column"\n'
        'y = typer.Option("--declared-here", help="see --also-this")\n'
        'z = "--" + name.replace("_", "-") + "-column"\n'
        'w = f"pass --{name}-column"\n'
        'v = "--%s-column" % name\n'
        'table = "|---|---|" + "--" + "-"\n'
    )
    assert named_flags(source) == [(1, "--patient-id-column"), (2, "--note-id-column"), (2, "--text-column"), (3, "--also-this")]
    assert sorted(built_flags(source)) == [4, 5, 6]


def test_every_flag_named_in_a_message_is_a_real_option(medfactory_options: set[str]) -> None:
    known = medfactory_options | EXTERNAL_FLAGS.keys() | BUILT_IN
    unknown = [f"{path}:{line}: {flag}" for path, source in _sources() for line, flag in named_flags(source) if flag not in known]
    assert not unknown, "flags no medfactory command has (fix the message, or add the option):\n" + "\n".join(unknown)


def test_no_flag_is_built_from_pieces() -> None:
    built = [f"{path}:{line}" for path, source in _sources() for line in built_flags(source)]
    assert not built, "write each flag out whole, so that it can be checked:\n" + "\n".join(built)
