"""Man pages made from the click tree: ``netmgr.1`` and one ``netmgr-<command>.1`` per command.

``python -m netmgr.cli.manpage OUTDIR`` writes them; setup.py runs it at build time, so a wheel
installs them into ``<prefix>/share/man/man1``. The pages come from walking
:data:`netmgr.cli.app.cli` -- nothing here names a command -- so a new command has its page
without an edit here. A group's page (``netmgr-user.1``) lists its subcommands with their
options, and each subcommand has a page of its own too (``netmgr-user-add.1``), as git's do.

Only :func:`write` touches the file system; the rest builds text.
"""
import datetime
import inspect
import os
import re
import sys

import click

from netmgr import __version__, config
from netmgr.cli import app

#: ``netmgr``'s exit statuses (:func:`netmgr.cli.app.run`)
EXIT_STATUSES = (
    ("0", "Success."),
    ("1", "An error; one line on stderr says what (the traceback too with NETMGR_DEBUG=1)."),
    ("2", "A usage error: an unknown command or option, or a bad option value; "
          "also netmgr start when the Manager cannot start."),
    ("130", "Interrupted by Ctrl-C."),
)


# ---------------------------------------------------------------------------------- roff text

def escape(text):
    """Roff body text: ``\\`` and ``-`` escaped, and no line that roff would read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _quoted(text):
    """A macro argument: one double-quoted word."""
    return '"' + escape(text).replace('"', "\\(dq") + '"'


def _bold(text):
    return f"\\fB{escape(text)}\\fR"


def _italic(text):
    return f"\\fI{escape(text)}\\fR"


def _usage(text):
    """``[OPTIONS] USERNAME`` with the metavars in italics."""
    parts = re.split(r"([A-Z][A-Z0-9_]*(?:-[A-Z0-9_]+)*)", text)
    return "".join(_italic(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def _term(opts):
    """``-p, --port INTEGER`` (click's help record): option names in bold, metavars in italics."""
    words = re.split(r"(, | / | )", opts)
    return "".join(escape(w) if w in (", ", " / ", " ") else _bold(w) if w.startswith("-")
                   else _italic(w) for w in words if w)


def _paragraphs(command):
    """The help's paragraphs: ``(text, True)``, or ``(lines, False)`` for click's ``\\b`` blocks."""
    text = inspect.cleandoc(command.help or "").split("\f")[0]
    for block in re.split(r"\n\s*\n", text):
        if block.startswith("\b"):
            yield block.split("\n")[1:], False
        elif block.strip():
            yield " ".join(line.strip() for line in block.split("\n")), True


def _short(command, name=None):
    """The first sentence of the help, without its full stop (nor a leading ``name:``)."""
    text = command.get_short_help_str(limit=1000).rstrip(".")
    return text[len(name) + 2:] if name and text.startswith(name + ": ") else text


# ------------------------------------------------------------------------------------ the tree

def walk(command=None, ctx=None, path=("netmgr",)):
    """Each visible command of the tree, the group first: ``(path, command, ctx)``, e.g.
    ``(("netmgr", "user", "add"), <Command add>, <Context>)``."""
    command = app.cli if command is None else command
    if ctx is None:
        ctx = click.Context(command, info_name=path[-1], **command.context_settings)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                sub_ctx = click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)
                yield from walk(sub, sub_ctx, path + (name,))


def page_name(path):
    """``("netmgr", "user", "add")`` -> ``netmgr-user-add`` (the page is ``netmgr-user-add.1``)."""
    return "-".join(path)


def _synopsis(path, command, ctx):
    return [f".B {escape(' '.join(path))}", _usage(" ".join(command.collect_usage_pieces(ctx)))]


def _options(command, ctx):
    lines = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            lines += [".TP", _term(record[0]), escape(" ".join(record[1].split())) or "\\&"]
    return lines


def _section(title, lines):
    return [f".SH {title}", *lines] if lines else []


def _description(command):
    lines = []
    for text, fill in _paragraphs(command):
        lines += [".PP"] if lines else []
        lines += [escape(text)] if fill else [".nf", *map(escape, text), ".fi"]
    return lines


def _subcommands(path, command, ctx, detail):
    """The commands below `command` (every depth): a line each, or (`detail`) their options too."""
    lines = []
    for sub_path, sub, sub_ctx in list(walk(command, ctx, path))[1:]:
        heading = " ".join(sub_path)
        if detail:
            lines += [f".SS {_quoted(heading)}", *_synopsis(sub_path, sub, sub_ctx), ".PP",
                      escape(_short(sub) + "."), *_options(sub, sub_ctx)]
        else:
            lines += [".TP", _bold(heading), escape(_short(sub) + ". See ")
                      + f"{_bold(page_name(sub_path))}(1)."]
    return lines


def _top_sections():
    """netmgr.1's EXIT STATUS, ENVIRONMENT and FILES."""
    exits = [line for code, text in EXIT_STATUSES for line in (".TP", _bold(code), escape(text))]
    keys = ", ".join(config.env_name(key) for key in config.KEYS)
    env = [".TP", _bold(config.CONFIG_ENV),
           escape(f"The config file to read instead of {config.SYSTEM_CONFIG}; /dev/null for none."),
           ".TP", _bold(app.DEBUG_ENV), escape("Set to 1 to print the traceback of an error."),
           ".TP", _bold(config.ENV_PREFIX + "<KEY>"),
           escape("Each setting of the config file, overriding the file (a flag overrides both): "
                  f"{keys}. An empty value is the same as unset."),
           ".TP", _bold("MSL_NETWORK_HOME"), escape("msl-network 1.0's name for NETMGR_HOME.")]
    files = [".TP", _bold(config.SYSTEM_CONFIG),
             escape("The config file read when neither --config nor NETMGR_CONFIG names one."),
             ".TP", _italic("HOME") + escape("/manager.sqlite3, ") + _italic("HOME") + escape("/certs, ")
             + _italic("HOME") + escape("/keys, ") + _italic("HOME") + escape("/logs"),
             escape("The database, certificates, keys and logs. HOME is the home setting, "
                    "by default ~/.msl/network as msl-network 1.0's.")]
    return (_section("EXIT STATUS", exits) + _section("ENVIRONMENT", env)
            + _section("FILES", files))


def render(path, command, ctx, date=None):
    """The roff text of the page of `command`, at `path` in the tree."""
    name = page_name(path)
    top = len(path) == 1
    group = isinstance(command, click.Group)
    header = (f".TH {_quoted(name.upper())} 1 {_quoted(date or _date())} "
              f"{_quoted('netmgr ' + __version__)} {_quoted('netmgr Manual')}")
    lines = ['.\\" Generated by netmgr.cli.manpage from the click tree: edit the commands, not this.',
             header, ".nh", ".ad l",  # no hyphenation, ragged right: option names stay whole
             ".SH NAME", f"{escape(name)} \\- {escape(_short(command, path[-1]))}",
             *_section("SYNOPSIS", _synopsis(path, command, ctx)),
             *_section("DESCRIPTION", _description(command)),
             *_section("OPTIONS", _options(command, ctx))]
    if group:
        lines += _section("COMMANDS", _subcommands(path, command, ctx, detail=not top))
    if top:
        lines += _top_sections()
    see = ", ".join(f"{_bold(page_name(p))}(1)" for p in _see_also(path, command, ctx))
    lines += _section("SEE ALSO", [see])
    return "\n".join(lines) + "\n"


def _see_also(path, command, ctx):
    """The pages above this one, and the pages of the commands just below it."""
    below = [p for p, _, _ in walk(command, ctx, path) if len(p) == len(path) + 1]
    return [path[:i] for i in range(1, len(path))] + below


def _date():
    """Today, or $SOURCE_DATE_EPOCH's day for a reproducible build."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else \
        datetime.datetime.now(datetime.timezone.utc)
    return when.strftime("%Y-%m-%d")


def pages(date=None):
    """``{file name: roff text}`` for every command of the tree."""
    return {page_name(path) + ".1": render(path, command, ctx, date) for path, command, ctx in walk()}


def write(outdir, date=None):
    """Write every page into `outdir` (made if missing); return their paths."""
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for name, text in sorted(pages(date).items()):
        paths.append(os.path.join(outdir, name))
        with open(paths[-1], "w", encoding="utf-8") as f:
            f.write(text)
    return paths


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m netmgr.cli.manpage OUTDIR", file=sys.stderr)
        return 2
    for path in write(argv[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
