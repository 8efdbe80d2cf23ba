"""The program netmgr.service runs: a virtual environment of its own, and what its sandbox hides.

By default the program is a venv whose root is ``/opt/netmgr`` (:data:`VENV`): ExecStart= runs
``/opt/netmgr/bin/netmgr`` (:data:`DEFAULT_EXECUTABLE`). :func:`install_venv` installs netmgr
there from a wheel of the running netmgr (:func:`find_wheel`: the wheel it was installed from,
named by its ``direct_url.json``; one built from its source checkout; one in ``find_links``;
or ``wheel=``), and its dependencies from the index pip is configured with, or only from
``find_links`` (offline). A wheel of the same content as the installed one
(:func:`wheel_digest`, kept in ``/opt/netmgr/.netmgr-wheel``) changes nothing.

The unit's sandbox hides some directories from the service (:data:`HIDDEN`): an ExecStart=
program there, or one whose link target, ``#!`` interpreter or venv's Python (``home`` of its
``pyvenv.cfg``) is there, is refused (:func:`why_hidden`, :func:`check_executable`): the
service could never start.

Steps are returned as :class:`Action`; :func:`run` and :func:`write` are the two primitives
(a command, a file) that :mod:`netmgr.cli.install` uses for its own steps too. Commands run
and files are written only as :func:`install_venv`'s caller asks (``dry_run``).
"""
import contextlib
import dataclasses
import glob
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile

from netmgr import __version__
from netmgr.errors import InstallError

#: the virtual environment install-service makes (its root: bin/netmgr, lib/, share/man/)
VENV = "/opt/netmgr"
DEFAULT_EXECUTABLE = VENV + "/bin/netmgr"
#: (directory, the setting of systemd/netmgr.service that hides it from the service)
HIDDEN = (("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"),
          ("/run/user", "ProtectHome=yes"), ("/tmp", "PrivateTmp=yes"),
          ("/var/tmp", "PrivateTmp=yes"), ("/dev/shm", "PrivateDevices=yes"))
#: the PATH systemd gives a service: what ``#!/usr/bin/env python3`` finds
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WHEEL_STAMP = ".netmgr-wheel"
PIP_TIMEOUT = 900  # seconds: pip may download and build the dependencies
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the netmgr package
_NOT_BUILT = (".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".tox",
              ".venv")


@dataclasses.dataclass(frozen=True)
class Action:
    """One step: ``verb`` is write, link, unchanged, keep, run, skip or warn."""

    verb: str
    target: str
    why: str = ""

    def __str__(self):
        return f"{self.verb:<9} {self.target}" + (f"  ({self.why})" if self.why else "")


# ------------------------------------------------------------------------- what the sandbox hides

def why_hidden(path):
    """Why netmgr.service could not run `path`, as text that follows the path, or None.

    The path, its link target, its ``#!`` interpreter or the Python its venv was made from
    lies in a directory that the unit hides (:data:`HIDDEN`)."""
    for how, seen in _what_runs(path):
        for top, setting in HIDDEN:
            if seen == top or seen.startswith(top + "/"):
                return (f" ({how} {seen})" if how else "") + f": {setting} hides {top} " \
                       "from the service"
    return None


def check_executable(executable):
    """Raise :class:`InstallError` if the service could not run `executable`."""
    why = why_hidden(executable)
    if why:
        raise InstallError(f"refusing ExecStart={executable}{why}; install into {VENV} "
                           "(the default) or /usr/local")


def _what_runs(path):
    """(how, path): `path` and what running it needs, each also with its links resolved."""
    interpreter = _shebang(os.path.realpath(path))
    for how, each in (("", path), ("run by", interpreter)):
        if not each:
            continue
        yield how, each
        yield how or "a link to", os.path.realpath(each)
        home = _venv_python(each)
        if home:
            yield "a venv of", home
            yield "a venv of", os.path.realpath(home)


def _shebang(path):
    """The interpreter of a ``#!`` script (``env``'s argument found on systemd's PATH), or None."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    if words and os.path.basename(words[0]) == "env" and len(words) > 1:
        return shutil.which(words[1], path=SERVICE_PATH)
    return words[0] if words else None


def _venv_python(path):
    """``home`` of the ``pyvenv.cfg`` of the venv whose ``bin/`` holds `path`, or None."""
    try:
        with open(os.path.join(os.path.dirname(os.path.dirname(path)), "pyvenv.cfg")) as f:
            found = re.search(r"^home\s*=\s*(.+?)\s*$", f.read(), re.MULTILINE)
    except OSError:
        return None
    return found.group(1) if found else None


def base_python(python=None):
    """The Python that makes the venv: `python`, else the one running netmgr, else the
    system's ``python3``; the service must see it (a venv keeps using its files)."""
    if python:
        why = why_hidden(python)
        if why:
            raise InstallError(f"refusing --python {python}{why}")
        return python
    running = getattr(sys, "_base_executable", "") or sys.executable
    for candidate in (running, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK) and why_hidden(candidate) is None:
            return candidate
    raise InstallError(f"no Python the service can see to make {VENV} with ({running}"
                       f"{why_hidden(running)}): install python3 and python3-venv, or give "
                       "--python PATH")


# ------------------------------------------------------------------------------ the wheel

def find_wheel(find_links=None, source=None, distribution=None):
    """The wheel of the running netmgr: ``("build", source tree)``, ``("file", wheel)`` or None.

    A source checkout (an editable install, a run from the tree) is built; an install from a
    wheel file, or from a source tree (``pip install .``), names it in its ``direct_url.json``;
    else `find_links` may hold the wheel.
    `source` and `distribution` (the installed one's metadata) are for tests."""
    source = os.path.dirname(_HERE) if source is None else source
    if _is_source(source):
        return "build", source
    installed_from = _installed_from(distribution)
    if installed_from and installed_from.endswith(".whl"):
        return "file", installed_from
    if installed_from and _is_source(installed_from):  # ``pip install /path/to/checkout``
        return "build", installed_from
    if find_links:
        pattern = os.path.join(glob.escape(find_links), f"netmgr-{__version__}-*.whl")
        found = sorted(glob.glob(pattern))
        if found:
            return "file", found[-1]
    return None


def _is_source(path):
    return os.path.isfile(os.path.join(path, "setup.cfg")) and os.path.isfile(
        os.path.join(path, "netmgr", "__init__.py"))


def _installed_from(distribution=None):
    """The wheel file or source tree named by the installed netmgr's ``direct_url.json``, if it
    still exists."""
    try:
        distribution = distribution or importlib.metadata.distribution("netmgr")
        url = json.loads(distribution.read_text("direct_url.json") or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    parsed = urllib.parse.urlparse(url)
    path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else ""
    return path if os.path.isfile(path) or os.path.isdir(path) else None


def build_wheel(source, into, find_links=None):
    """Build netmgr's wheel from the tree `source` into the directory `into`; its path.

    A copy is built, so that no ``build/`` or ``*.egg-info`` is left in the checkout."""
    copy = os.path.join(into, "src")
    shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_BUILT))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
         "--no-deps", *_index(find_links), "-w", into, copy], True, False, PIP_TIMEOUT)
    wheels = glob.glob(os.path.join(glob.escape(into), "netmgr-*.whl"))
    if len(wheels) != 1:
        raise InstallError(f"pip wheel {source} made no netmgr wheel")
    return wheels[0]


def wheel_digest(path):
    """sha256 of a wheel's files (names and bytes), not of the zip: two builds of the same tree,
    with other timestamps and another RECORD, have the same digest."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as wheel:
            for name in sorted(wheel.namelist()):
                if not name.endswith(".dist-info/RECORD"):
                    digest.update(name.encode() + b"\0" + hashlib.sha256(wheel.read(name)).digest())
    except (OSError, zipfile.BadZipFile) as exc:
        raise InstallError(f"{path}: not a readable wheel ({exc})") from None
    return digest.hexdigest()


def _index(find_links):
    return ["--no-index", "--find-links", find_links] if find_links else []


# ------------------------------------------------------------------------------ the venv

def install_venv(venv=VENV, wheel=None, find_links=None, python=None, dry_run=False):
    """Make the venv `venv` hold netmgr from `wheel` (default: :func:`find_wheel`) and its
    dependencies; return the list of :class:`Action`. `python` makes a missing venv (default:
    :func:`base_python`; a given one is not checked). Nothing runs when `venv` holds a wheel of
    the same content."""
    with tempfile.TemporaryDirectory(prefix="netmgr-wheel-") as tmp:
        actions, wheel = _the_wheel(venv, wheel, find_links, tmp)
        if wheel is None:
            return actions
        name = os.path.basename(wheel)
        if not re.fullmatch(r"netmgr-[^-]+-.+\.whl", name):
            raise InstallError(f"{wheel}: not a wheel of netmgr (netmgr-VERSION-...whl)")
        stamp = f"sha256:{wheel_digest(wheel)} {name}\n"
        if _installed_stamp(venv, name) == stamp:
            return actions + [Action("unchanged", venv, f"netmgr from {name}")]
        with _umask(0o022):  # the service's user reads the venv, whatever root's umask
            return actions + _pip_install(venv, wheel, find_links, python, stamp, dry_run)


def _the_wheel(venv, wheel, find_links, tmp):
    """(actions, the wheel to install or None)."""
    if wheel:
        return [], os.path.abspath(wheel)
    found = find_wheel(find_links)
    if found is None:
        if os.path.realpath(sys.prefix) == os.path.realpath(venv):
            return [Action("keep", venv, f"netmgr {__version__} runs from it")], None
        raise InstallError(f"cannot find a wheel of netmgr {__version__}: give --wheel PATH "
                           "(or --find-links DIR that holds it), or --executable PATH to run an "
                           "installed netmgr")
    kind, path = found
    if kind == "file":
        return [], path
    wheel = build_wheel(path, tmp, find_links)
    return [Action("run", f"pip wheel {path}", f"built {os.path.basename(wheel)}")], wheel


def _installed_stamp(venv, wheel_name):
    """The stamp of the wheel `venv` was made from, if its netmgr of that version is there."""
    version = wheel_name.split("-")[1]
    site = os.path.join(glob.escape(venv), "lib", "python3*", "site-packages")
    if not (os.access(os.path.join(venv, "bin", "netmgr"), os.X_OK)
            and glob.glob(os.path.join(site, f"netmgr-{version}.dist-info"))):
        return None
    try:
        with open(os.path.join(venv, WHEEL_STAMP), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _pip_install(venv, wheel, find_links, python, stamp, dry_run):
    actions = []
    venv_python = os.path.join(venv, "bin", "python")
    if not os.access(venv_python, os.X_OK):
        actions.append(run([python or base_python(), "-m", "venv", venv], True, dry_run))
    pip = [venv_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           *_index(find_links)]
    # the wheel and its dependencies; then the wheel alone again, since pip keeps an installed
    # netmgr of the same version, and a rebuilt checkout keeps its version
    actions.append(run(pip + [wheel], True, dry_run, PIP_TIMEOUT))
    actions.append(run(pip + ["--no-deps", "--force-reinstall", wheel], True, dry_run,
                       PIP_TIMEOUT))
    actions.append(write(os.path.join(venv, WHEEL_STAMP), stamp, 0o644, dry_run))
    return actions


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ the primitives

def write(path, text, mode, dry_run):
    """`path` made to hold `text` (mode `mode`), replaced whole; unchanged if it holds it."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return Action("unchanged", path)
    except FileNotFoundError:
        pass
    if not dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.netmgr-new"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)  # never a half-written unit
    return Action("write", path)


def run(command, run_commands, dry_run, timeout=120):
    """`command` run (unless `dry_run`); skipped unless `run_commands`; its failure an error."""
    shown = " ".join(command)
    if not run_commands:
        return Action("skip", shown, "not installing into the live system")
    if not dry_run:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{shown}: {exc}") from None
        if result.returncode:
            raise InstallError(f"{shown} failed: {(result.stderr or result.stdout).strip()}")
    return Action("run", shown)
