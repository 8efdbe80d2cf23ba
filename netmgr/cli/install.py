"""Install netmgr as a systemd service: its program, user, directories, units and configuration.

:func:`install_service` is idempotent and returns what it did (or, with ``dry_run``, what it
would do) as a list of :class:`Action`. It never overwrites a configuration file that exists
(``/etc/netmgr/netmgr.conf``, ``/etc/logrotate.d/netmgr``): the administrator's edits win.
Units and completion scripts are ours and are replaced when they differ (local changes belong
in drop-ins, ``systemctl edit netmgr``). Commands (``python3 -m venv``, ``pip``,
``systemd-sysusers``, ``systemd-tmpfiles``, ``systemctl daemon-reload``) run only when
installing into the live system (``prefix="/"``); with another prefix (a package build, a test)
files are written only.

The program, by default, is a virtual environment of its own whose root is ``/opt/netmgr``,
made from a wheel of the running netmgr by :func:`netmgr.cli.venv.install_venv`: ExecStart= runs
``/opt/netmgr/bin/netmgr`` and ``/usr/local/bin/netmgr`` links to it. ``executable=`` names an
installed netmgr instead and makes no venv. Either way, a program that the unit's sandbox hides
from the service is refused (:func:`netmgr.cli.venv.check_executable`).

Root's administration commands (``netmgr user add``) find the service's database through
``home`` in ``/etc/netmgr/netmgr.conf``, and give what they create to the service's user
(:func:`netmgr.cli.actions.adopt_owner`; SQLite, as root, gives its ``-wal`` and ``-shm`` files
the database's owner itself).
"""
import contextlib
import glob
import grp
import os
import pwd
import re
import shutil
import sys

from netmgr.cli.venv import DEFAULT_EXECUTABLE, VENV, Action, base_python, check_executable, \
    install_venv, run, write
from netmgr.errors import InstallError, UsageError

SERVICE_USER = "netmgr"
#: the settings the service's config must have, whatever the template says
SERVICE_SETTINGS = {"home": "/var/lib/netmgr", "log_file": "/var/log/netmgr/manager.log"}
#: ExecStart= of systemd/netmgr.service names this path; it is replaced by the real executable
TEMPLATE_EXECUTABLE = "/usr/local/bin/netmgr"
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
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the netmgr package
_FALLBACK_CONFIG = "[netmgr]\n"


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
        raise UsageError("--executable runs an installed netmgr, --wheel, --find-links and "
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
        actions.append(write(_target(prefix, relative), completion_script(shell), 0o644, dry_run))
    if executable == DEFAULT_EXECUTABLE:  # put on root's PATH (docs/admin.md)
        actions.append(_link(_target(prefix, COMMAND_LINK), executable, dry_run))
    actions += _man_pages(prefix, executable, dry_run)
    if run_commands and not os.path.isdir("/run/systemd/system"):
        actions.append(Action("skip", "systemctl daemon-reload", "systemd is not running"))
    else:
        actions.append(run(["systemctl", "daemon-reload"], run_commands, dry_run))
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
        actions.append(write(_target(prefix, relative), text, mode, dry_run))
        if name == "netmgr.sysusers":
            actions.append(_create_user(prefix, relative, run_commands, dry_run))
        elif name == "netmgr.tmpfiles":
            actions.append(run(["systemd-tmpfiles", "--create", "/" + relative],
                               run_commands, dry_run))
    return actions


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
    return run(command, True, dry_run)


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
        return write(path, text, 0o644, dry_run)
    with open(path, encoding="utf-8") as f:
        same = f.read() == text
    return Action("unchanged", path) if same else Action("keep", path, "exists; edits are "
                                                                        "never overwritten")
