"""Install netmgr as a systemd service: its user, directories, units and configuration.

:func:`install_service` is idempotent and returns what it did (or, with ``dry_run``, what it
would do) as a list of :class:`Action`. It never overwrites a configuration file that exists:
the administrator's edits win. Units are ours and are replaced when they differ (local changes
belong in drop-ins, ``systemctl edit netmgr``). Commands (``systemd-sysusers``,
``systemd-tmpfiles``, ``systemctl daemon-reload``) run only when installing into the live
system (``prefix="/"``); with another prefix (a package build, a test) files are written only.

Root's administration commands (``netmgr user add``) find the service's database through
``home`` in ``/etc/netmgr/netmgr.conf``, and give what they create to the service's user
(:func:`netmgr.cli.actions.adopt_owner`; SQLite, as root, gives its ``-wal`` and ``-shm`` files
the database's owner itself).
"""
import contextlib
import dataclasses
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys

from netmgr.errors import InstallError

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
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the netmgr package
_FALLBACK_CONFIG = "[netmgr]\n"


@dataclasses.dataclass(frozen=True)
class Action:
    """One step: ``verb`` is write, unchanged, keep, run, skip or warn."""

    verb: str
    target: str
    why: str = ""

    def __str__(self):
        return f"{self.verb:<9} {self.target}" + (f"  ({self.why})" if self.why else "")


# ------------------------------------------------------------------------------ where things are

def data_dir():
    """The unit files: ``<venv>/share/netmgr/systemd`` from a wheel, ``systemd/`` in a checkout."""
    for candidate in (os.path.join(sys.prefix, "share", "netmgr", "systemd"),
                      os.path.join(os.path.dirname(_HERE), "systemd")):
        if os.path.isfile(os.path.join(candidate, "netmgr.service")):
            return candidate
    raise InstallError("cannot find netmgr.service: reinstall netmgr from its wheel or source")


def default_config_template():
    """``etc/netmgr/netmgr.conf`` of the checkout or the wheel's copy, or None."""
    for candidate in (os.path.join(sys.prefix, "share", "netmgr", "netmgr.conf"),
                      os.path.join(os.path.dirname(_HERE), "etc", "netmgr", "netmgr.conf")):
        if os.path.isfile(candidate):
            return candidate
    return None


def default_executable():
    """``netmgr`` beside the running Python (a venv's ``bin/``), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "netmgr")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("netmgr") or TEMPLATE_EXECUTABLE


def _target(prefix, relative):
    return os.path.join(prefix, relative)


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


# ------------------------------------------------------------------------------ the steps

def install_service(prefix="/", config_template=None, dry_run=False, executable=None,
                    run_commands=None):
    """Install the service under `prefix`; return the list of :class:`Action`.

    `config_template`: the file copied to ``/etc/netmgr/netmgr.conf`` when that is absent
    (default: the shipped ``netmgr.conf``). `executable`: the ``netmgr`` that ExecStart= runs
    (default: the one beside this Python). `run_commands`: run systemd-sysusers,
    systemd-tmpfiles and systemctl (default: only when `prefix` is ``/``).
    """
    prefix = os.path.abspath(prefix)
    run_commands = prefix == "/" if run_commands is None else run_commands
    executable = executable or default_executable()
    source = data_dir()
    actions = []
    if executable.startswith(("/home/", "/root/")):
        actions.append(Action("warn", executable, "ProtectHome=yes hides it from the service: "
                                                  "install netmgr in /opt or /usr/local"))
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
    actions.append(_install_config(prefix, config_template, run_commands, dry_run))
    if run_commands and not os.path.isdir("/run/systemd/system"):
        actions.append(Action("skip", "systemctl daemon-reload", "systemd is not running"))
    else:
        actions.append(_run(["systemctl", "daemon-reload"], run_commands, dry_run))
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


def _run(command, run_commands, dry_run):
    shown = " ".join(command)
    if not run_commands:
        return Action("skip", shown, "not installing into the live system")
    if not dry_run:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallError(f"{shown}: {exc}") from None
        if result.returncode:
            raise InstallError(f"{shown} failed: {(result.stderr or result.stdout).strip()}")
    return Action("run", shown)
