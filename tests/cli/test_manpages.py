"""What ships besides the code: the man pages (netmgr.cli.manpage) rendered by the real man(1),
the wheel that installs them into share/man/man1, and the shell completion scripts
(netmgr.cli.completion) run by a real bash.

The tree is walked here with click alone, so a command the generator missed is a failure.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile

import click
import pytest

from netmgr import __version__
from netmgr.cli import app, completion, manpage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tree(command=app.cli, path=("netmgr",)):
    """``(path, command)`` of every visible command, walked with click's own API."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from tree(sub, path + (name,))


def option_names(command):
    return [name for p in command.params if isinstance(p, click.Option) and not p.hidden
            for name in p.opts + p.secondary_opts]


COMMANDS = dict(tree())


@pytest.fixture(scope="module")
def man():
    """man(1); a CI machine must have it (.ci/run installs man-db and groff-base)."""
    found = shutil.which("man")
    if found is None:
        reason = "man(1) is missing: apt-get install man-db groff-base"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("man1")
    manpage.write(str(outdir), date="2024-01-02")
    return outdir


def render(man, page):
    """``man -l page`` as a user reads it at 80 columns: (plain text, whitespace collapsed; stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAN_KEEP_FORMATTING", "MANPAGER", "PAGER")}
    env.update(MANWIDTH="80", LC_ALL="C.UTF-8")
    proc = subprocess.run([man, "--warnings", "-l", str(page)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    # groff may render \- as U+2212 or U+2010; a reader searching for "--admin" types ASCII
    text = proc.stdout.replace("\u2212", "-").replace("\u2010", "-")
    return " ".join(text.split()), proc.stderr


# ------------------------------------------------------------------------------- the pages

@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_each_command_has_a_page_that_renders_without_warnings(man, pages, path):
    text, stderr = render(man, pages / f"{'-'.join(path)}.1")
    assert stderr == ""
    command = COMMANDS[path]
    assert f"{'-'.join(path)} - " in text  # NAME
    assert f"SYNOPSIS {' '.join(path)} " in text
    for name in option_names(command) + ["--help"]:
        assert f" {name}" in text, name


def test_no_page_without_a_command(pages):
    assert sorted(p.name for p in pages.iterdir()) == sorted(f"{'-'.join(path)}.1" for path in COMMANDS)


def test_netmgr_1_lists_every_command_and_subcommand(man, pages):
    text, _ = render(man, pages / "netmgr.1")
    for path in COMMANDS:
        if len(path) > 1:
            assert f" {' '.join(path)} " in text, path
            assert f"See {'-'.join(path)}(1)" in text, path


def test_netmgr_1_has_the_exit_statuses_files_and_environment(man, pages):
    text, _ = render(man, pages / "netmgr.1")
    statuses = text.split("EXIT STATUS ")[1].split(" ENVIRONMENT ")[0]
    assert [word for word in statuses.split() if word.isdigit()][:4] == ["0", "1", "2", "130"]
    assert "Ctrl-C" in statuses
    assert "FILES /etc/netmgr/netmgr.conf " in text
    environment = re.findall(r"[A-Z_]+", text.split(" ENVIRONMENT ")[1].split(" FILES ")[0])
    for name in ("NETMGR_CONFIG", "NETMGR_DEBUG", "NETMGR_HOME", "NETMGR_PORT", "MSL_NETWORK_HOME"):
        assert name in environment, name
    assert f"netmgr {__version__} 2024-01-02 NETMGR(1)" in text


GROUPS = [path for path, command in COMMANDS.items() if len(path) > 1 and isinstance(command, click.Group)]


@pytest.mark.parametrize("path", GROUPS, ids=" ".join)
def test_a_group_page_lists_its_subcommands_with_their_options(man, pages, path):
    """``man netmgr-user`` is enough to use ``netmgr user add``."""
    text, _ = render(man, pages / f"{'-'.join(path)}.1")
    commands = text.split(" COMMANDS ")[1]
    subs = [p for p in COMMANDS if p[:len(path)] == path and len(p) > len(path)]
    assert subs
    for sub in subs:
        section = commands.split(f" {' '.join(sub)} ")[1]
        for name in option_names(COMMANDS[sub]):
            assert f" {name}" in section, (sub, name)


def test_roff_escaping():
    assert manpage.escape("a-b \\n") == "a\\-b \\en"
    assert manpage.escape(".TH x\n'br\nok. 'quoted'") == "\\&.TH x\n\\&'br\nok. 'quoted'"


def test_text_that_looks_like_roff_is_printed_as_written(man, tmp_path):
    """A help text with leading dots and apostrophes, backslashes and hyphens: no request runs."""
    @click.command(help=".SH NOT A SECTION\n\n'br and .\\\" not a comment\n\nC:\\new\\table -x --y")
    @click.option("--name-with-dashes", metavar="A\\B", help=".TP 'quoted' \\fBnot bold\\fR")
    def tricky(name_with_dashes):
        pass

    ctx = click.Context(tricky, info_name="tricky")
    page = tmp_path / "netmgr-tricky.1"
    page.write_text(manpage.render(("netmgr", "tricky"), tricky, ctx, date="2024-01-02"))
    text, stderr = render(man, page)
    assert stderr == ""
    for shown in (".SH NOT A SECTION", "'br and .\\\" not a comment", "C:\\new\\table -x --y",
                  "--name-with-dashes A\\B", ".TP 'quoted' \\fBnot bold\\fR"):
        assert shown in text, shown


def test_python_m_entry_point(tmp_path):
    out = tmp_path / "man"
    proc = subprocess.run([sys.executable, "-m", "netmgr.cli.manpage", str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(out / name) for name in sorted(os.listdir(out))]
    assert (out / "netmgr.1").exists()
    usage = subprocess.run([sys.executable, "-m", "netmgr.cli.manpage"], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_the_wheel_installs_the_man_pages(tmp_path):
    """setup.py's build hook: the pages are made at build time and land in share/man/man1."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".venv", "bench", "tests"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True,
                          timeout=300)
    # setuptools < 70.1 needs the wheel package for this (pip install -e '.[test]' installs it)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("netmgr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    man1 = f"netmgr-{__version__}.data/data/share/man/man1/"
    assert sorted(n[len(man1):] for n in names if n.startswith(man1)) == \
        sorted(f"{'-'.join(path)}.1" for path in COMMANDS)
    assert f"netmgr-{__version__}.data/data/share/netmgr/netmgr.conf" in names  # setup.cfg's still there


# --------------------------------------------------------------------------- shell completion

@pytest.fixture
def netmgr_on_path(tmp_path):
    """A PATH whose ``netmgr`` runs this checkout through the console script's entry point."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "netmgr"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c '
                       f'"import sys; from netmgr.launcher import main; sys.exit(main())" "$@"\n')
    program.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=ROOT)


def test_completion_scripts():
    assert "complete -o nosort -F _netmgr_completion netmgr" in completion.script("bash")
    assert completion.script("zsh").startswith("#compdef netmgr")
    assert "_NETMGR_COMPLETE=zsh_complete" in completion.script("zsh")
    with pytest.raises(ValueError):
        completion.script("tcsh")


def bash(script_text, commands, env, tmp_path):
    script = tmp_path / "netmgr.bash"
    script.write_text(script_text)
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {script} && {commands}"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_bash_script_registers_netmgr(tmp_path, netmgr_on_path):
    out = bash(completion.script("bash"), "complete -p netmgr", netmgr_on_path, tmp_path)
    assert out.strip() == "complete -o nosort -F _netmgr_completion netmgr"


@pytest.mark.parametrize("words, cword, expected", [
    ("netmgr us", 1, ["user"]),
    ("netmgr user a", 2, ["add"]),
    ("netmgr keygen ", 2, ["rsa", "dsa", "ecc"]),
])
def test_bash_completes_through_the_program(tmp_path, netmgr_on_path, words, cword, expected):
    """The function the script registers, called as bash-completion calls it."""
    words_array = " ".join(f"'{w}'" for w in words.split(" "))
    out = bash(completion.script("bash"),
               f"COMP_WORDS=({words_array}); COMP_CWORD={cword}; _netmgr_completion netmgr; "
               'printf "%s\\n" "${COMPREPLY[@]}"', netmgr_on_path, tmp_path)
    assert out.split() == expected


@pytest.mark.parametrize("program", ["launcher", "console script"])
def test_the_completion_protocol(netmgr_on_path, program):
    """``COMP_WORDS='netmgr us' COMP_CWORD=1 _NETMGR_COMPLETE=bash_complete netmgr`` -> ``user``:
    click's protocol through NetmgrGroup.main, as the installed ``netmgr`` runs it."""
    env = netmgr_on_path
    if program == "console script":
        found = shutil.which("netmgr", path=os.environ["PATH"])
        if found is None:
            pytest.skip("no netmgr console script on PATH (pip install -e . installs it)")
        env = dict(os.environ)
    else:
        found = shutil.which("netmgr", path=env["PATH"])
    for var, expected in (("bash_complete", "plain,user"), ("zsh_complete", "plain\nuser\n")):
        proc = subprocess.run([found], capture_output=True, text=True, timeout=60, env=dict(
            env, COMP_WORDS="netmgr us", COMP_CWORD="1", _NETMGR_COMPLETE=var))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(expected), (var, proc.stdout)
