"""Where netmgr's files live.

netmgr keeps msl-network 1.0's layout (reference section 2, "Paths") so that a site that ran
``msl-network start`` keeps its users, trusted hostnames and the certificate its clients have
cached::

    HOME/certs/<host or localhost>.crt    HOME/keys/<host or localhost>.key
    HOME/manager.sqlite3                  HOME/logs/

HOME is ``$NETMGR_HOME``, else ``$MSL_NETWORK_HOME``, else ``~/.msl/network`` of the invoking
user (under ``sudo``, ``$SUDO_USER``'s home, as 1.0 does).
"""
import os


def home_dir():
    for name in ("NETMGR_HOME", "MSL_NETWORK_HOME"):
        value = os.environ.get(name)
        if value:
            return os.path.abspath(os.path.expanduser(value))
    return os.path.join(os.path.expanduser("~" + os.environ.get("SUDO_USER", "")), ".msl", "network")


def cert_dir(home=None):
    return os.path.join(home or home_dir(), "certs")


def key_dir(home=None):
    return os.path.join(home or home_dir(), "keys")


def log_dir(home=None):
    return os.path.join(home or home_dir(), "logs")


def database_path(home=None):
    return os.path.join(home or home_dir(), "manager.sqlite3")


def default_cert_and_key(host=None, home=None):
    """``certs/<host>.crt`` and ``keys/<host>.key``; ``localhost`` when no host is given (1.0)."""
    stem = host or "localhost"
    return (os.path.join(cert_dir(home), f"{stem}.crt"), os.path.join(key_dir(home), f"{stem}.key"))
