"""Install netmgr as a systemd service: its program, user, directories, units and configuration.

:func:`install_service` is idempotent and returns what it did (or, with ``dry_run``, what it
would do) as a list of :class:`Action`. It never overwrites a configuration file that exists
(``/etc/netmgr/netmgr.conf``, ``/etc/logrotate.d/netmgr``): the administrator's edits win.
Units and completion scripts are ours and are replaced when they differ (local changes belong
in drop-ins, ``systemctl edit netmgr``). Commands (``python3 -m venv``, ``pip``,
``systemd-sysusers``, ``systemd-tmpfiles``, ``systemctl daemon-reload``) run only when
installing into the live system (``prefix="/"``); with another prefix (a package build, a test)
files are written only.

The program, by default, is a virtual environment of its own whose root is ``/opt/netmgr``
(:data:`VENV`): ExecStart= runs ``/opt/netmgr/bin/netmgr`` and ``/usr/local/bin/netmgr`` links
to it. :func:`install_venv` installs netmgr there from a wheel of the running netmgr
(:func:`find_wheel`: the wheel it was installed from, one built from its source checkout, or
``wheel=``), and its dependencies from the index pip is configured with, or only from
``find_links`` (offline). A wheel of the same content as the installed one
(:func:`wheel_digest`, kept in ``/opt/netmgr/.netmgr-wheel``) changes nothing.
``executable=`` names an installed netmgr instead and makes no venv.

The unit's sandbox hides some directories from the service (:data:`HIDDEN`): an ExecStart=
program there, or one whose link target, interpreter or venv's Python is there, is refused
(:func:`why_hidden`): the service could never start.

Root's administration commands (``netmgr user add``) find the service's database through
``home`` in ``/etc/netmgr/netmgr.conf``, and give what they create to the service's user
(:func:`netmgr.cli.actions.adopt_owner`; SQLite, as root, gives its ``-wal`` and ``-shm`` files
the database's owner itself).
"""
import contextlib
import dataclasses
import glob
import grp
import hashlib
import importlib.metadata
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile

from netmgr import __version__
from netmgr.errors import InstallError

SERVICE_USER = "netmgr"
#: the settings the service's config must have, whatever the template says
SERVICE_SETTINGS = {"home": "/var/lib/netmgr", "log_file": "/var/log/netmgr/manager.log"}
#: ExecStart= of systemd/netmgr.service names this path; it is replaced by the real executable
TEMPLATE_EXECUTABLE = "/usr/local/bin/netmgr"
#: the virtual environment install-service makes (its root: bin/netmgr, lib/, share/man/)
VENV = "/opt/netmgr"
DEFAULT_EXECUTABLE = VENV + "/bin/netmgr"
#: (file in the data directory, where it is installed, mode)
UNIT_FILES = (
    ("netmgr.sysusers", "etc/sysusers.d/netmgr.conf", 0o644),
    ("netmgr.tmpfiles", "etc/tmpfiles.d/netmgr.conf", 0o644),
    ("netmgr.service", "etc/systemd/system/netmgr.service", 0o644),
    ("netmgr.socket", "etc/systemd/system/netmgr.socket", 0o644),
)
CONFIG_PATH = "etc/netmgr/netmgr.conf"
LOGROTATE_PATH = "etc/logrotate.d/netmgr"
COMPLETIONS = (("bash", "usr/share/bash-completion/completions/netmgr"),
               ("zsh", "usr/share/zsh/vendor-completions/_netmgr"))
COMMAND_LINK = "usr/local/bin/netmgr"
MAN_DIR = "usr/local/share/man/man1"
#: (directory, the setting of systemd/netmgr.service that hides it from the service)
HIDDEN = (("/home", "ProtectHome=yes"), ("/root", "ProtectHome=yes"),
          ("/run/user", "ProtectHome=yes"), ("/tmp", "PrivateTmp=yes"),
          ("/var/tmp", "PrivateTmp=yes"), ("/dev/shm", "PrivateDevices=yes"))
#: the PATH systemd gives a service: what ``#!/usr/bin/env python3`` finds
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WHEEL_STAMP = ".netmgr-wheel"
PIP_TIMEOUT = 900  # seconds: pip may download and build the dependencies
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the netmgr package
_FALLBACK_CONFIG = "[netmgr]\n"
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


# ------------------------------------------------------------------------------ where things are

def _shipped(in_wheel, in_checkout):
    """The wheel's copy (``<venv>/share/netmgr/<in_wheel>``) or the checkout's, or None."""
    for candidate in (os.path.join(sys.prefix, "share", "netmgr", in_wheel),
                      os.path.join(os.path.dirname(_HERE), in_checkout)):
        if os.path.isfile(candidate):
            return candidate
    return None


def data_dir():
    """The unit files: ``<venv>/share/netmgr/systemd`` from a wheel, ``systemd/`` in a checkout."""
    service = _shipped("systemd/netmgr.service", "systemd/netmgr.service")
    if service is None:
        raise InstallError("cannot find netmgr.service: reinstall netmgr from its wheel or source")
    return os.path.dirname(service)


def default_config_template():
    """``etc/netmgr/netmgr.conf`` of the checkout or the wheel's copy, or None."""
    return _shipped("netmgr.conf", "etc/netmgr/netmgr.conf")


def logrotate_template():
    """``etc/logrotate.d/netmgr`` of the checkout or the wheel's copy, or None."""
    return _shipped("logrotate.d/netmgr", "etc/logrotate.d/netmgr")


def _target(prefix, path):
    return os.path.join(prefix, path.lstrip("/"))


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
    wheel file names that file in its ``direct_url.json``; else `find_links` may hold it.
    `source` and `distribution` (the installed one's metadata) are for tests."""
    source = os.path.dirname(_HERE) if source is None else source
    if os.path.isfile(os.path.join(source, "setup.cfg")) and os.path.isfile(
            os.path.join(source, "netmgr", "__init__.py")):
        return "build", source
    installed_from = _installed_from(distribution)
    if installed_from:
        return "file", installed_from
    if find_links:
        pattern = os.path.join(glob.escape(find_links), f"netmgr-{__version__}-*.whl")
        found = sorted(glob.glob(pattern))
        if found:
            return "file", found[-1]
    return None


def _installed_from(distribution=None):
    """The wheel file named by the installed netmgr's ``direct_url.json``, if it still exists."""
    try:
        distribution = distribution or importlib.metadata.distribution("netmgr")
        url = json.loads(distribution.read_text("direct_url.json") or "{}").get("url", "")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    parsed = urllib.parse.urlparse(url)
    path = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else ""
    return path if path.endswith(".whl") and os.path.isfile(path) else None


def build_wheel(source, into, find_links=None):
    """Build netmgr's wheel from the tree `source` into the directory `into`; its path.

    A copy is built, so that no ``build/`` or ``*.egg-info`` is left in the checkout."""
    copy = os.path.join(into, "src")
    shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_BUILT))
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
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
        actions.append(_run([python or base_python(), "-m", "venv", venv], True, dry_run))
    pip = [venv_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           *_index(find_links)]
    # the wheel and its dependencies; then the wheel alone again, since pip keeps an installed
    # netmgr of the same version, and a rebuilt checkout keeps its version
    actions.append(_run(pip + [wheel], True, dry_run, PIP_TIMEOUT))
    actions.append(_run(pip + ["--no-deps", "--force-reinstall", wheel], True, dry_run,
                        PIP_TIMEOUT))
    actions.append(_write(os.path.join(venv, WHEEL_STAMP), stamp, 0o644, dry_run))
    return actions


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------ rendering

def render_service(text, executable):
    """The unit with ``ExecStart=`` naming `executable` (quoted if it has spaces)."""
    if any(c.isspace() for c in executable):
        executable = '"' + executable.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text.replace(f"ExecStart={TEMPLATE_EXECUTABLE} ", f"ExecStart={executable} ")


def render_config(template_text, settings=None):
    """The template with each of `settings` set: a ``key =`` line (or ``# key =``) is replaced,
    a missing key is added to the ``[netmgr]`` section."""
    settings = SERVICE_SETTINGS if settings is None else settings
    text = template_text if "[netmgr]" in template_text else "[netmgr]\n" + template_text
    for key, value in settings.items():
        line = re.compile(rf"^[#;]?[ \t]*{re.escape(key)}[ \t]*[=:].*$", re.MULTILINE)
        if line.search(text):
            text = line.sub(lambda _: f"{key} = {value}", text, count=1)
        else:
            text = text.replace("[netmgr]\n", f"[netmgr]\n{key} = {value}\n", 1)
    return text


def completion_script(shell):
    """The completion script for `shell` (bash, zsh), ending with a newline."""
    from netmgr.cli import completion  # the command tree: imported only when needed

    text = completion.script(shell)
    return text if text.endswith("\n") else text + "\n"


# ------------------------------------------------------------------------------ the steps

def install_service(prefix="/", config_template=None, dry_run=False, executable=None,
                    run_commands=None, wheel=None, find_links=None, python=None):
    """Install the service under `prefix`; return the list of :class:`Action`.

    `config_template`: the file copied to ``/etc/netmgr/netmgr.conf`` when that is absent
    (default: the shipped ``netmgr.conf``). `executable`: an installed ``netmgr`` for ExecStart=
    (default: :data:`VENV`, made by :func:`install_venv` from `wheel`, `find_links` and
    `python`). `run_commands`: run python/pip, systemd-sysusers, systemd-tmpfiles and systemctl
    (default: only when `prefix` is ``/``).
    """
    prefix = os.path.abspath(prefix)
    run_commands = prefix == "/" if run_commands is None else run_commands
    if executable and (wheel or find_links or python):
        raise InstallError("--executable runs an installed netmgr, --wheel, --find-links and "
                           f"--python make {VENV}: give one or the other")
    if executable:
        executable = os.path.abspath(executable)
        check_executable(executable)
        actions = []
    elif run_commands:
        executable = DEFAULT_EXECUTABLE
        python = python and base_python(python)  # refused before anything is done
        actions = install_venv(VENV, wheel, find_links, python, dry_run)
        if not dry_run:
            check_executable(executable)
    else:
        executable = DEFAULT_EXECUTABLE
        actions = [Action("skip", f"venv {VENV}", "not installing into the live system")]
    actions += _systemd_files(prefix, executable, run_commands, dry_run)
    actions.append(_install_config(prefix, config_template, run_commands, dry_run))
    actions.append(_install_logrotate(prefix, dry_run))
    for shell, relative in COMPLETIONS:
        actions.append(_write(_target(prefix, relative), completion_script(shell), 0o644, dry_run))
    if executable == DEFAULT_EXECUTABLE:  # put on root's PATH (docs/admin.md)
        actions.append(_link(_target(prefix, COMMAND_LINK), executable, dry_run))
    actions += _man_pages(prefix, executable, dry_run)
    if run_commands and not os.path.isdir("/run/systemd/system"):
        actions.append(Action("skip", "systemctl daemon-reload", "systemd is not running"))
    else:
        actions.append(_run(["systemctl", "daemon-reload"], run_commands, dry_run))
    return actions


def _systemd_files(prefix, executable, run_commands, dry_run):
    """The units, the user (sysusers.d) and the directories (tmpfiles.d)."""
    source = data_dir()
    actions = []
    for name, relative, mode in UNIT_FILES:
        with open(os.path.join(source, name), encoding="utf-8") as f:
            text = f.read()
        if name == "netmgr.service":
            text = render_service(text, executable)
        actions.append(_write(_target(prefix, relative), text, mode, dry_run))
        if name == "netmgr.sysusers":
            actions.append(_create_user(prefix, relative, run_commands, dry_run))
        elif name == "netmgr.tmpfiles":
            actions.append(_run(["systemd-tmpfiles", "--create", "/" + relative],
                                run_commands, dry_run))
    return actions


def _write(path, text, mode, dry_run):
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


def _link(path, target, dry_run):
    """`path` made a symbolic link to `target`; a file there that is no link is kept."""
    if os.path.islink(path) and os.readlink(path) == target:
        return Action("unchanged", path)
    if os.path.lexists(path) and not os.path.islink(path):
        return Action("keep", path, f"exists and is not a link; {target} is not linked")
    if not dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.netmgr-new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os.symlink(target, temporary)
        os.replace(temporary, path)
    return Action("link", path, f"to {target}")


def _man_pages(prefix, executable, dry_run):
    """Links in /usr/local/share/man/man1 to the ``netmgr*.1`` pages of `executable`'s venv."""
    pages = os.path.join(os.path.dirname(os.path.dirname(executable)), "share", "man", "man1")
    if os.path.realpath(_target(prefix, pages)) == os.path.realpath(_target(prefix, MAN_DIR)):
        return []
    found = sorted(glob.glob(os.path.join(glob.escape(_target(prefix, pages)), "netmgr*.1")))
    return [_link(_target(prefix, os.path.join(MAN_DIR, os.path.basename(page))),
                  os.path.join(pages, os.path.basename(page)), dry_run) for page in found]


def _create_user(prefix, sysusers_relative, run_commands, dry_run):
    if not run_commands:
        return Action("skip", f"user {SERVICE_USER}", "not installing into the live system")
    if _user_exists():
        return Action("keep", f"user {SERVICE_USER}", "exists")
    if shutil.which("systemd-sysusers"):
        command = ["systemd-sysusers", os.path.join(prefix, sysusers_relative)]
    else:  # a system without systemd-sysusers: the same user, by shadow-utils
        command = ["useradd", "--system", "--user-group", "--home-dir", SERVICE_SETTINGS["home"],
                   "--no-create-home", "--shell", "/usr/sbin/nologin", "--comment",
                   "netmgr Network Manager", SERVICE_USER]
    return _run(command, True, dry_run)


def _user_exists():
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return False
    return True


def _install_config(prefix, config_template, run_commands, dry_run):
    path = _target(prefix, CONFIG_PATH)
    if os.path.exists(path):
        return Action("keep", path, "exists; edits are never overwritten")
    template = config_template or default_config_template()
    if template is None:
        text = _FALLBACK_CONFIG
    else:
        with open(template, encoding="utf-8") as f:
            text = f.read()
    if not dry_run:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # 0640 root:netmgr: it may hold auth_password; the service reads it through its group
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with open(fd, "w", encoding="utf-8") as f:
            f.write(render_config(text))
        if run_commands and os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                os.chown(path, 0, grp.getgrnam(SERVICE_USER).gr_gid)
    return Action("write", path, f"from {template or 'built-in defaults'}")


def _install_logrotate(prefix, dry_run):
    """/etc/logrotate.d/netmgr, written only where there is none (it is configuration)."""
    path = _target(prefix, LOGROTATE_PATH)
    template = logrotate_template()
    if template is None:
        return Action("skip", path, "this netmgr ships no logrotate.d/netmgr")
    with open(template, encoding="utf-8") as f:
        text = f.read()
    if not os.path.exists(path):
        return _write(path, text, 0o644, dry_run)
    with open(path, encoding="utf-8") as f:
        same = f.read() == text
    return Action("unchanged", path) if same else Action("keep", path, "exists; edits are "
                                                                        "never overwritten")


def _run(command, run_commands, dry_run, timeout=120):
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
