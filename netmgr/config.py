"""Settings: resolved once from the defaults, the config file, the environment and the flags.

Precedence, lowest first (STYLE.md layout)::

    built-in defaults  <  the config file  <  NETMGR_* environment variables  <  command-line flags

The config file is ``/etc/netmgr/netmgr.conf`` (:data:`SYSTEM_CONFIG`) if it exists, or the file
named by ``--config`` or ``$NETMGR_CONFIG`` (which must then exist). It is INI with one
``[netmgr]`` section whose keys are those of :data:`KEYS`; ``etc/netmgr/netmgr.conf`` in the
source tree documents each one. Every key ``k`` also has the environment variable
``NETMGR_<K>`` (``port`` -> ``NETMGR_PORT``). An empty value, in the file or the environment,
means "not set".

The result is one :class:`Config` (gunicorn's ``cfg``): the command line builds it, and the
daemon receives that same object, with the same key names at every layer. Files keep
msl-network 1.0's layout (:mod:`netmgr.hostinfo`): HOME is the ``home`` key, whose environment
layer is ``$NETMGR_HOME``, else 1.0's ``$MSL_NETWORK_HOME``; ``database``, ``cert_file``,
``key_file`` and ``log_file`` default to their place under HOME. Passwords given as values may
name a file whose first line is the password (1.0): :func:`secret_value`.

This module reads files and the environment; it writes nothing and opens no sockets.
"""
import configparser
import ipaddress
import logging
import math
import os
import re
import time

from netmgr.errors import ConfigError, Failed, UsageError
from netmgr.hostinfo import (CONTROL_SOCKET, SERVICE_RUNTIME_DIR, control_socket_path, database_path,
                             default_cert_and_key, default_home, log_dir)

SYSTEM_CONFIG = "/etc/netmgr/netmgr.conf"
"""The config file read when neither ``--config`` nor ``$NETMGR_CONFIG`` names one (if it exists)."""

CONFIG_ENV = "NETMGR_CONFIG"
ENV_PREFIX = "NETMGR_"
SECTION = "netmgr"
AUTH_MODES = ("none", "password", "login", "hostname")
SECRET_KEYS = ("auth_password", "key_file_password")
_HOST = re.compile(r"^[A-Za-z0-9_.:%-]+$")  # a name or an address: no spaces, slashes or brackets
LOG_NAME = "manager-%Y-%m-%d-%H-%M-%S.log"  # 1.0's log file, named after the start time
LOG_NAME_SHOWN = "manager-YYYY-MM-DD-HH-MM-SS.log"  # the same, as ``netmgr config`` shows it


# ------------------------------------------------------------------------------ secrets

def secret_value(value, announce=None):
    """1.0's password values: the text itself, or the first line of the file it names.

    `announce` is called with 1.0's message when the value was a file, e.g. ``announce("Reading
    the password from the file")`` (the caller chooses the words).
    """
    if value is not None and os.path.isfile(value):
        if announce is not None:
            announce()
        return read_secret_file(value)
    return value


def read_secret_file(path):
    """The first line of `path`, stripped (1.0's rule for password files)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except OSError as exc:
        raise Failed(f"Cannot read the password file {path}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------ value parsers

def _path(text):
    return os.path.abspath(os.path.expanduser(text))


def _log_file(text):
    return "" if text.strip().lower() == "none" else _path(text)  # "none": no log file


def _optional_path(text):
    """A path (the control socket, the HTTP token file); ``none`` (or empty): none."""
    return "" if text.strip().lower() in ("", "none") else _path(text)


def http_address(text):
    """``(host, port)`` of ``HOST:PORT`` (an IPv6 address in brackets: ``[::1]:1876``).

    ValueError says what is wrong. The host may be a name; it is resolved when the Manager binds.
    """
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, as in [::1]:1876, got {text!r}")
    if (not colon or not host or not _HOST.match(host) or not (port.isascii() and port.isdigit())
            or int(port) > 65535):
        raise ValueError(f"must be HOST:PORT (e.g. 127.0.0.1:1876 or [::1]:1876) or none, got {text!r}")
    return host, int(port)


def _cluster(text):
    """``nats://h1:4222,nats://h2:4222``: the NATS servers of the cluster; ``none``: no cluster."""
    value = text.strip()
    if value.lower() in ("", "none"):
        return ""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("nats", "tls") or not rest:
            raise ValueError(f"must be NATS server URLs such as nats://h1:4222,nats://h2:4222, got {url!r}")
    return ",".join(urls)


def _node(text):
    """A node's name: letters, digits, ``-`` and ``_`` (it is part of NATS subjects)."""
    value = text.strip()
    if not value or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise ValueError(f"must be letters, digits, '-' or '_', got {text!r}")
    return value


def _http(text):
    """``HOST:PORT`` of the HTTP endpoint, as given; ``none`` (or empty): off (``""``)."""
    value = text.strip()
    if value.lower() in ("", "none"):
        return ""
    http_address(value)
    return value


def _int(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ValueError(f"must be an integer {bound}, got {text!r}")
        return value
    return parse


def _float(low):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low:
            raise ValueError(f"must be a number >= {low}, got {text!r}")
        return value
    return parse


def _bool(text):
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"must be yes or no, got {text!r}")


def _auth(text):
    value = text.strip().lower()
    if value not in AUTH_MODES:
        raise ValueError(f"must be one of {', '.join(AUTH_MODES)}, got {text!r}")
    return value


def parse_level(level):
    """A level name (any case), number, or numeric string -> int; ValueError as 1.0 words it."""
    if isinstance(level, int):
        return level
    text = str(level).strip()
    if text.isdigit():
        return int(text)
    value = logging.getLevelName(text.upper())
    if not isinstance(value, int):
        raise ValueError(f"Cannot set logging level to {level!r}")
    return value


def _log_level(text):
    parse_level(text)  # ValueError: Cannot set logging level to 'X'
    return text


def _text(text):
    return text


def _startups(text):
    """``START:RATE:FULL`` (OpenSSH's ``MaxStartups``), or one number for ``N:100:N``."""
    parts = text.strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = [values[0], 100, values[0]]
    if len(values) != 3 or not (1 <= values[0] <= values[2] and 0 <= values[1] <= 100):
        raise ValueError(f"must be START:RATE:FULL with 1 <= START <= FULL and RATE 0-100, got {text!r}")
    return tuple(values)


#: key -> (parser of its text, built-in default). None defaults are derived from HOME or mean "off".
KEYS = {
    "home": (_path, None),
    "database": (_path, None),
    "host": (_text, None),
    "port": (_int(0, 65535), 1875),
    "disable_tls": (_bool, False),
    "cert_file": (_path, None),
    "key_file": (_path, None),
    "key_file_password": (_text, None),
    "auth": (_auth, "none"),
    "auth_password": (_text, None),
    "log_level": (_log_level, "INFO"),
    "log_file": (_log_file, None),
    "max_connections": (_int(1), 10000),
    "handshake_timeout": (_float(0.1), 30.0),
    "max_line_size": (_int(1024), 256 * 1024 * 1024),
    "max_queue_size": (_int(1024), 512 * 1024 * 1024),
    "bcrypt_rounds": (_int(4, 31), 12),
    "max_auth_failures": (_int(1), 5),
    "auth_lockout": (_float(0), 30.0),
    "auth_workers": (_int(1, 64), 1),
    "write_timeout": (_float(0.1), 10.0),
    "max_queue_total": (_int(1024), 1024 * 1024 * 1024),
    "max_inflight": (_int(1), 10000),
    "partial_line_timeout": (_float(0.1), 30.0),
    "max_connections_per_address": (_int(1), 1024),
    "max_startups": (_startups, (256, 30, 1024)),
    "max_startups_per_address": (_int(1), 128),
    "connections_max_rows": (_int(0), 1_000_000),
    "connections_max_age": (_float(0), 0.0),
    "control_socket": (_optional_path, None),
    "heartbeat_interval": (_float(0.1), 2.0),
    "http": (_http, None),
    "http_token_file": (_optional_path, None),
    "cluster": (_cluster, None),
    "node": (_node, None),
    "cluster_name": (_node, "netmgr"),
    "cluster_creds": (_optional_path, None),
    "cluster_tls_ca": (_optional_path, None),
}
DEFAULTS = {key: default for key, (_, default) in KEYS.items()}

#: keys a reload (SIGHUP) cannot change in a running Manager: they need a restart
RESTART_ONLY = ("host", "port", "database", "disable_tls", "home", "auth", "auth_password",
                "max_connections", "log_file", "auth_workers", "control_socket", "http",
                "http_token_file", "cluster", "node", "cluster_name", "cluster_creds", "cluster_tls_ca")


def env_name(key):
    return ENV_PREFIX + key.upper()


# ------------------------------------------------------------------------------ the settings

class Config:
    """Resolved settings (``cfg.port``, ``cfg.database`` …), built once and passed down.

    ``cfg.source(key)`` says where each value came from. The daemon reads the same object the
    command line resolved: the names are the config file's keys at every layer.
    """

    def __init__(self, values, sources, path=None):
        self._values = dict(values)
        self._sources = dict(sources)
        self.path = path  # the config file that was read, or None
        for key, value in self._values.items():
            if key not in ("home", "database"):  # derived: see the properties
                setattr(self, key, value)  # a plain attribute: the daemon reads some per message

    def source(self, key):
        return self._sources.get(key, "default")

    def override(self, **flags):
        """A copy where every flag that is not None wins (the command line)."""
        values, sources = dict(self._values), dict(self._sources)
        for key, value in flags.items():
            if key not in KEYS:
                raise KeyError(f"unknown setting {key!r}")
            if value is not None:
                values[key], sources[key] = value, "command line"
        return Config(values, sources, self.path)

    def replace(self, **values):
        """A copy with these values (None too), each keeping its source."""
        unknown = set(values) - set(KEYS)
        if unknown:
            raise KeyError(f"unknown setting {sorted(unknown)[0]!r}")
        return Config({**self._values, **values}, self._sources, self.path)

    def with_auth_flags(self, auth_hostname=False, auth_login=False, auth_password=None):
        """The command line's authentication flags as the ``auth`` key.

        A flag replaces the configured ``auth`` entirely (so ``--auth-login`` overrides
        ``auth = password``); without any, ``auth`` decides. Two flags are an error (1.0).
        """
        chosen = [mode for mode, on in (("hostname", auth_hostname), ("login", auth_login),
                                        ("password", auth_password is not None)) if on]
        if len(chosen) > 1:
            raise UsageError("Cannot specify multiple authentication methods")
        if chosen:
            return self.override(auth=chosen[0], auth_password=auth_password)
        if self.auth == "password" and self.auth_password is None:
            raise ConfigError(f"auth = password needs auth_password ({self.source('auth')})")
        return self

    def for_reload(self, new):
        """`new` with this Config's restart-only values, and the restart-only keys it changes."""
        changed = sorted(k for k in RESTART_ONLY if new._values.get(k) != self._values.get(k))
        return new.replace(**{k: self._values[k] for k in RESTART_ONLY}), changed

    # derived paths -----------------------------------------------------------------------------
    @property
    def home(self):
        return self._values["home"] or default_home()

    @property
    def database(self):
        return self._values["database"] or database_path(self.home)

    def cert_and_key(self, host=None):
        """The certificate and key: the configured ones, else ``certs/<host>.crt``, ``keys/<host>.key``."""
        cert, key = default_cert_and_key(host, self.home)
        return self._values["cert_file"] or cert, self._values["key_file"] or key

    def log_path(self, when=None):
        """The log file of a Manager started at `when` (a ``time.struct_time``, default now): the
        configured one (``""``: none), else 1.0's ``HOME/logs/manager-<local start time>.log``."""
        if self.log_file is not None:
            return self.log_file
        return os.path.join(log_dir(self.home), time.strftime(LOG_NAME, when or time.localtime()))

    def items(self):
        """``[(key, shown value, source)]`` for every key; secrets are shown as ``<set>``.

        A path that is not set shows the one the Manager derives (``netmgr start``), with a
        source naming where that came from, e.g. ``home (default)``, ``home (NETMGR_HOME)``.
        """
        derived = self._derived()
        rows = []
        for key in KEYS:
            value, source = self._values[key], self.source(key)
            if value is None and key in derived:
                value, source = derived[key]
            if key in SECRET_KEYS and value is not None:
                value = "<set>"
            elif isinstance(value, tuple):  # max_startups, written as in the file
                value = ":".join(map(str, value))
            rows.append((key, value, source))
        return rows

    def _derived(self):
        """``{key: (value, source)}`` of the paths that ``netmgr start`` derives when they are not set."""
        from_home = f"home ({self.source('home')})"
        cert, key = default_cert_and_key(self.host, self.home)  # start names them after --host
        if self._values["cert_file"] is not None:  # a certificate alone must also hold the key (1.0)
            key, key_source = self._values["cert_file"], "cert_file"
        else:
            key_source = from_home
        return {"home": (self.home, "default"), "database": (self.database, from_home),
                "cert_file": (cert, from_home), "key_file": (key, key_source),
                "log_file": (os.path.join(log_dir(self.home), LOG_NAME_SHOWN), from_home),
                "control_socket": (control_socket_path(self.home),
                                   f"{from_home}; {SERVICE_RUNTIME_DIR}/{CONTROL_SOCKET} under systemd")}

    def as_dict(self):
        return {key: value for key, value, _ in self.items()}


def config_file(explicit=None, environ=None):
    """``(path, required)``: ``--config``, else ``$NETMGR_CONFIG``, else :data:`SYSTEM_CONFIG`."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit, True
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], True
    return SYSTEM_CONFIG, False


def read_file(path, required=True):
    """``{key: text}`` of the ``[netmgr]`` section of `path`; {} when an optional file is missing."""
    if not os.path.exists(path):
        if required:
            raise ConfigError(f"Cannot find the config file {path}")
        return {}
    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as exc:
        hint = "" if required else f" (set {CONFIG_ENV} to another file, or to /dev/null for none)"
        raise ConfigError(f"Cannot read the config file {path}: {exc.strerror or exc}{hint}") from None
    except configparser.Error as exc:
        raise ConfigError(f"Invalid config file {path}: {' '.join(str(exc).split())}") from None
    extra = [s for s in parser.sections() if s != SECTION]
    if extra:
        raise ConfigError(f"{path}: unknown section [{extra[0]}] (only [{SECTION}] is read)")
    if not parser.has_section(SECTION):
        return {}
    texts = dict(parser.items(SECTION))
    for key in texts:
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} in [{SECTION}]")
    return texts


def environment(environ=None):
    """``{key: (text, variable name)}`` of the NETMGR_* variables that are set and not empty."""
    environ = os.environ if environ is None else environ
    found = {}
    for key in KEYS:
        name = env_name(key)
        if environ.get(name, "").strip():
            found[key] = (environ[name], name)
    if "home" not in found and environ.get("MSL_NETWORK_HOME", "").strip():
        found["home"] = (environ["MSL_NETWORK_HOME"], "MSL_NETWORK_HOME")  # 1.0's variable
    return found


def load(path=None, environ=None):
    """The settings from the defaults, the config file and the environment (no flags yet)."""
    path, required = config_file(path, environ)
    values, sources = dict(DEFAULTS), {}
    file_texts = read_file(path, required)
    layers = [({k: (v, path) for k, v in file_texts.items()}, lambda where, k: f"{where}: {k}"),
              (environment(environ), lambda where, k: where)]
    for texts, label in layers:
        for key, (text, where) in texts.items():
            if not text.strip():
                continue
            try:
                values[key] = KEYS[key][0](text.strip())
            except ValueError as exc:
                raise ConfigError(f"{label(where, key)}: {exc}") from None
            sources[key] = where
    return Config(values, sources, path if file_texts or required else None)
