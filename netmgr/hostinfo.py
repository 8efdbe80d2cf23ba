"""This host as netmgr names it, and where netmgr keeps its files: one copy of each fact.

* the host name, and the ``language``/``os`` strings of an identity (reference 1.3, 1.5);
* this host's addresses: its interfaces' (:func:`interface_addresses`), everything that means
  "this machine" to the Manager's peer naming (:func:`local_addresses`), and 1.0's
  ``LOCALHOST_ALIASES`` (:func:`localhost_aliases`), which seed the trusted-hostname table and
  tell a client that a Manager is local;
* the home layout of msl-network 1.0 (reference section 2, "Paths")::

      HOME/certs/<host or localhost>.crt    HOME/keys/<host or localhost>.key
      HOME/manager.sqlite3                  HOME/logs/

  HOME is ``$NETMGR_HOME``, else 1.0's ``$MSL_NETWORK_HOME``, else ``~/.msl/network`` of the
  invoking user (under ``sudo``, ``$SUDO_USER``'s home, as 1.0 does).

Reads the environment, the resolver and ``ip -o addr``; imports neither gevent nor anything of
netmgr, so the daemon, the client library and the command line all use it.
"""
import functools
import ipaddress
import os
import platform
import re
import shutil
import socket
import subprocess

HOSTNAME = socket.gethostname()
LANGUAGE = f"Python {platform.python_version()}"
OS_NAME = f"{platform.system()} {platform.release()} {platform.machine()}"

#: The fixed part of 1.0's ``LOCALHOST_ALIASES``; the host name and IPv4 addresses are added.
LOCALHOST_NAMES = (
    "localhost",
    "127.0.0.1",
    "::1",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
    "1.0.0.127.in-addr.arpa",
)

_IP_ADDR = re.compile(r"\binet6?\s+([0-9A-Fa-f.:]+)/")


# ------------------------------------------------------------------------------ addresses

def _resolve(host, family=0):
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, None, family)]
    except OSError:
        return []


@functools.lru_cache(maxsize=1)
def interface_addresses():
    """Addresses of this computer's interfaces, from ``ip -o addr`` or else DNS for its hostname.

    IPv6 link-local addresses are left out: they only mean something with a zone index.
    """
    texts = []
    ip = shutil.which("ip")
    if ip:
        try:
            out = subprocess.run([ip, "-o", "addr"], capture_output=True, text=True, timeout=5).stdout
            texts = _IP_ADDR.findall(out)
        except (OSError, subprocess.SubprocessError):
            texts = []
    if not texts:
        texts = _resolve(HOSTNAME)
    found = []
    for text in texts:
        try:
            address = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if not (address.version == 6 and address.is_link_local) and str(address) not in found:
            found.append(str(address))
    return tuple(found)


def ipv4_addresses():
    """The IPv4 addresses of :func:`interface_addresses` (1.0 parsed ``ip -4 address``)."""
    return [a for a in interface_addresses() if ":" not in a]


def local_addresses():
    """Every address that is this machine: loopback, the interfaces', and what the resolver
    gives for its host name and ``localhost``."""
    return {"127.0.0.1", "::1", "localhost", *interface_addresses(), *_resolve(HOSTNAME),
            *_resolve("localhost")}


def localhost_aliases():
    """1.0's ``LOCALHOST_ALIASES``, sorted: the host name, :data:`LOCALHOST_NAMES`, IPv4 addresses."""
    return sorted({HOSTNAME, *LOCALHOST_NAMES, *ipv4_addresses()})


# ------------------------------------------------------------------------------ home layout

def default_home():
    """``~/.msl/network`` of the invoking user (``$SUDO_USER`` under sudo), as 1.0."""
    return os.path.join(os.path.expanduser("~" + os.environ.get("SUDO_USER", "")), ".msl", "network")


def home_dir():
    """HOME from the environment alone: ``$NETMGR_HOME``, else ``$MSL_NETWORK_HOME``, else the default."""
    for name in ("NETMGR_HOME", "MSL_NETWORK_HOME"):
        value = os.environ.get(name)
        if value:
            return os.path.abspath(os.path.expanduser(value))
    return default_home()


def cert_dir(home=None):
    return os.path.join(home or home_dir(), "certs")


def key_dir(home=None):
    return os.path.join(home or home_dir(), "keys")


def log_dir(home=None):
    return os.path.join(home or home_dir(), "logs")


def database_path(home=None):
    return os.path.join(home or home_dir(), "manager.sqlite3")


#: the control socket's file name, in the runtime directory (systemd) or HOME
CONTROL_SOCKET = "netmgr.sock"
#: netmgr.service's ``RuntimeDirectory=``
SERVICE_RUNTIME_DIR = "/run/netmgr"


def control_socket_path(home=None, environ=None):
    """Where a Manager puts its control socket: ``$RUNTIME_DIRECTORY`` (set by systemd's
    ``RuntimeDirectory=``), else HOME."""
    runtime = (os.environ if environ is None else environ).get("RUNTIME_DIRECTORY", "")
    return os.path.join(runtime.split(":")[0] or home or home_dir(), CONTROL_SOCKET)


def control_socket_candidates(home=None):
    """Where the admin commands look for a control socket, in order: HOME's, the service's."""
    return [os.path.join(home or home_dir(), CONTROL_SOCKET),
            os.path.join(SERVICE_RUNTIME_DIR, CONTROL_SOCKET)]


def default_cert_and_key(host=None, home=None):
    """``certs/<host>.crt`` and ``keys/<host>.key``; ``localhost`` when no host is given (1.0)."""
    stem = host or "localhost"
    return (os.path.join(cert_dir(home), f"{stem}.crt"), os.path.join(key_dir(home), f"{stem}.key"))
