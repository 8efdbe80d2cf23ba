"""Every ``netmgr …`` command line of README.md and docs/*.md parses against the click tree.

A line is taken from a fenced code block (not python, ini, json…) or from an inline code span
that starts with ``netmgr ``. ``$ ``, ``sudo`` and ``VAR=value`` prefixes are stripped, ``\\``
continuations joined, and the line is cut at a shell operator (``|``, ``&&``, ``;``, ``>``) or a
``#`` comment. Synopsis notation is understood: ``[…]`` optional parts, ``a|b`` alternatives (each
word alternative is checked), ``...``, and placeholders (``<name>``, ``CAPS``), which become a
value the option or argument accepts.

For each command line the command path must exist (its ``--help`` runs through
:data:`netmgr.cli.app.cli`), and its words must parse: ``make_context`` without invoking, so an
unknown option, a missing option value or a bad value fails, naming the doc line.
"""
import itertools
import os
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from netmgr.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                              if name.endswith(".md"))

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
NOT_SHELL = {"python", "py", "pycon", "ini", "json", "toml", "yaml", "cfg", "conf", "diff", "text"}
SPAN = re.compile(r"(`+)(.+?)\1")
PROMPT = re.compile(r"^\s*(?:\$\s+)?(?:sudo\s+(?:-[ugCD]\s+\S+\s+|-\S+\s+)*)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
                    r"(?=netmgr(?:\s|$))")
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "&>"}
PLACEHOLDER = re.compile(r"^(?:<[^>]*>|[A-Z][A-Z0-9_]*(?:[-:][A-Z0-9_]+)*)$")
ELLIPSIS = ("...", "\u2026")


# ------------------------------------------------------------------------ finding the lines

def doc_lines(relpath):
    """``(line number, [(command text, inline), ...])`` of each doc line with ``netmgr`` commands."""
    found, fence, pending = {}, None, None
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        lines = f.read().split("\n")
    for number, line in enumerate(lines + [""], 1):
        marker = FENCE.match(line)
        in_shell = fence is not None and fence[1] not in NOT_SHELL and not marker
        if pending is not None and in_shell and (pending[1].endswith("\\") or _continues(line)):
            pending[1] = pending[1].rstrip("\\").rstrip() + " " + line.strip()
            continue
        if pending is not None:
            found.setdefault(pending[0], []).append((pending[1], False))
            pending = None
        if marker and (fence is None or marker.group(1)[0] == fence[0][0]):
            fence = None if fence is not None else (marker.group(1), marker.group(2).lower())
        elif in_shell and PROMPT.match(line):
            pending = [number, line.strip()]
        elif fence is None:
            for span in SPAN.finditer(line):
                text = span.group(2).strip()
                if text == "netmgr" or text.startswith("netmgr "):
                    found.setdefault(number, []).append((text, True))
    return sorted(found.items())


def _continues(line):
    """A synopsis wrapped onto an indented line: ``             [-d DATABASE] [-H HOST]``."""
    return line[:1].isspace() and line.strip().startswith(("[", "-"))


CASES = [(relpath, number, commands) for relpath in DOCS for number, commands in doc_lines(relpath)]


# ------------------------------------------------------------------- from text to argv

def words(text):
    """The words after ``netmgr``: prefixes stripped, cut at an operator or comment, brackets gone."""
    tokens = shlex.split(PROMPT.sub("", text), comments=True)[1:]
    out, depth = [], 0
    for token in tokens:
        if token in OPERATORS or token.startswith((">", "2>")):
            if depth == 0:
                break
            continue  # `a | b` inside [...]: alternatives, all kept
        depth += token.count("[") + token.count("{") - token.count("]") - token.count("}")
        token = token.strip("[]{}")
        for mark in ELLIPSIS:
            token = token.replace(mark, "")
        if token:
            out.append(token)
    return out


def variants(tokens):
    """``add|insert`` -> one argv per word alternative; ``-a|--admin`` -> both options."""
    choices = []
    for token in tokens:
        parts = [p for p in token.split("|") if p] if "|" in token else [token]
        if all(p.startswith("-") for p in parts):
            choices.append([parts])
        else:
            choices.append([[p] for p in parts])
    return [[word for group in combo for word in group] for combo in itertools.product(*choices)]


def is_placeholder(word):
    return bool(PLACEHOLDER.match(word))


def dummy(param):
    """A value `param` accepts, for a placeholder."""
    kind = param.type if param is not None else click.STRING
    if isinstance(kind, click.Choice):
        return str(kind.choices[0])
    if isinstance(kind, (click.IntRange, click.FloatRange)):
        if kind.min is not None:
            return str(kind.min + (1 if kind.min_open else 0))
        return str(kind.max if kind.max is not None else 1)
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return "1"
    if isinstance(kind, click.types.BoolParamType):
        return "yes"
    return "x"


def takes_value(param):
    return isinstance(param, click.Option) and not param.is_flag and not param.count


def fill(command, argv):
    """`argv` with each placeholder replaced by a value for the option or argument it feeds."""
    options = {name: p for p in command.params if isinstance(p, click.Option)
               for name in p.opts + p.secondary_opts}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    out, i, position = [], 0, 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("-") and len(word) > 1:
            name, eq, value = word.partition("=")
            param = options.get(name)
            out.append(f"{name}={dummy(param)}" if eq and is_placeholder(value) else word)
            if takes_value(param) and not eq and i + 1 < len(argv):
                i += 1
                out.append(dummy(param) if is_placeholder(argv[i]) else argv[i])
        else:
            param = arguments[position] if position < len(arguments) else None
            out.append(dummy(param) if is_placeholder(word) else word)
            position += param is not None and param.nargs != -1
        i += 1
    return out


# ---------------------------------------------------------------------------- the check

def resolve(argv):
    """``(path, command, parent context, its words)``: down the groups while a word names a subcommand."""
    command, ctx, path, i = app.cli, None, ["netmgr"], 0
    while isinstance(command, click.Group):
        start = i
        while i < len(argv) and argv[i].startswith("-"):  # the group's own options
            param = next((p for p in command.params if argv[i] in getattr(p, "opts", ())), None)
            i += 2 if takes_value(param) else 1
        ctx = command.make_context(path[-1], fill(command, argv[start:i]), parent=ctx) if i > start else \
            click.Context(command, info_name=path[-1], parent=ctx, **command.context_settings)
        if i == len(argv) or is_placeholder(argv[i]):
            return path, command, ctx, []
        sub = command.get_command(ctx, argv[i])
        if sub is None:
            raise click.UsageError(f"No such command {argv[i]!r} in '{' '.join(path)}'")
        command, path, i = sub, path + [argv[i]], i + 1
    return path, command, ctx, argv[i:]


def check(text, inline=False):
    """The problems of one doc command line, as text ([] if none). An `inline` code span may name
    a command without its required arguments (``see `netmgr certdump```)."""
    try:
        argvs = variants(words(text))
    except ValueError as exc:  # shlex: an unbalanced quote
        return [f"{text}: {exc}"]
    problems = []
    for argv in argvs:
        try:
            path, command, ctx, rest = resolve(app.join_words(argv))
            result = CliRunner().invoke(app.cli, path[1:] + ["--help"])
            if result.exit_code != 0 or not result.output.startswith(f"Usage: {' '.join(path)}"):
                problems.append(f"{' '.join(path)} --help: {result.output}")
            if not isinstance(command, click.Group):
                command.make_context(path[-1], fill(command, rest), parent=ctx)
        except click.exceptions.Exit:  # --help or --version among the words: it exists
            pass
        except click.MissingParameter as exc:
            if not inline:
                problems.append(f"netmgr {' '.join(argv)}: {exc.format_message()}")
        except click.ClickException as exc:
            problems.append(f"netmgr {' '.join(argv)}: {exc.format_message()}")
    return problems


@pytest.fixture(autouse=True)
def paths_need_not_exist(monkeypatch):
    """``--config-template /etc/...`` in a doc: the file is on the reader's machine, not here."""
    for command in _tree(app.cli):
        for param in command.params:
            if isinstance(param.type, click.Path):
                monkeypatch.setattr(param.type, "exists", False)


def _tree(command):
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _tree(sub)


def test_the_docs_have_command_lines():
    assert len(CASES) > 50
    assert any(relpath == "README.md" for relpath, _, _ in CASES)


@pytest.mark.parametrize("relpath, number, commands", CASES, ids=[f"{r}:{n}" for r, n, _ in CASES])
def test_doc_command_line_parses(relpath, number, commands):
    problems = [problem for text, inline in commands for problem in check(text, inline)]
    assert not problems, f"{relpath}:{number}: " + "; ".join(problems)


# --------------------------------------------------------------------- the reader itself

def test_words_and_variants():
    assert words("$ sudo -u netmgr NETMGR_HOME=/x netmgr user add a --admin  # comment") == \
        ["user", "add", "a", "--admin"]
    assert words("netmgr status --json | jq .peers && echo ok") == ["status", "--json"]
    assert words("netmgr start [--auth-hostname | --auth-login | -P PASSWORD...] [-c CERT]") == \
        ["start", "--auth-hostname", "--auth-login", "-P", "PASSWORD", "-c", "CERT"]
    assert variants(["user", "add|insert", "-a|--admin"]) == \
        [["user", "add", "-a", "--admin"], ["user", "insert", "-a", "--admin"]]


def test_placeholders_take_a_value_the_option_accepts():
    start = app.cli.commands["start"]
    filled = fill(start, ["-p", "PORT", "--max-connections", "N", "--handshake-timeout=S", "-G", "WARNING"])
    assert filled == ["-p", "x", "--max-connections", "1", "--handshake-timeout=0.1", "-G", "x"]
    start.make_context("start", filled)


def test_a_wrong_line_is_found():
    assert check("netmgr user add alice --no-such-option")
    assert check("netmgr no-such-command")
    assert check("netmgr start --max-connections 0")
    assert check("netmgr user add|frobnicate USERNAME")
    assert not check("netmgr user add|insert USERNAME [-p PASSWORD... | --password-file F] [-a|--admin]")
    assert not check("netmgr [-V|--version] [-h|--help] COMMAND [ARGS]...")


def test_the_reader_finds_spans_and_wrapped_lines_in_shell_blocks(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("Run `netmgr user list` or `pip list`.\n\n"
                   "```\n$ sudo netmgr start -p 1 \\\n    --disable-tls\n"
                   "netmgr status [-H HOST]\n       [--json]\n"
                   "```\n\n```python\nnetmgr = connect()\n```\n")
    assert doc_lines(str(doc)) == [(1, [("netmgr user list", True)]),
                                   (4, [("$ sudo netmgr start -p 1 --disable-tls", False)]),
                                   (6, [("netmgr status [-H HOST] [--json]", False)])]


# ------------------------------------------------------------------ installing from what exists

INDEX_INSTALL = re.compile(r"pip3? install(?: -[-\w]+)* netmgr\b(?![-\w./*])")


def test_no_doc_installs_netmgr_from_a_package_index():
    """netmgr is not on an index: every install names the tree or a wheel built from it. A line
    may mention the index command only to say that it finds nothing."""
    found = []
    for relpath in DOCS:
        with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if INDEX_INSTALL.search(line) and "finds nothing" not in line:
                    found.append(f"{relpath}:{number}: {line.strip()}")
    assert found == []
    assert INDEX_INSTALL.search("sudo pip install netmgr") and not INDEX_INSTALL.search(
        "pip install netmgr-0.1.0-py3-none-any.whl")


def test_the_license_is_the_one_setup_cfg_names():
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as f:
        assert f.readline().strip() == "MIT License"
    with open(os.path.join(ROOT, "setup.cfg"), encoding="utf-8") as f:
        assert re.search(r"^license = MIT$", f.read(), re.MULTILINE)
