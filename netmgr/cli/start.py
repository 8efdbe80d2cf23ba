"""``netmgr start``: resolve the settings (file, environment, flags) and run the Manager.

The only command that reaches the daemon, through its start-up entry, imported when the command
runs so that the other commands never load the daemon or its event loop.
"""
import click

from netmgr import config
from netmgr.cli.app import cli, config_option, database_option
from netmgr.cli.app import settings as _settings

# ------------------------------------------------------------------------------------------ start

D = config.DEFAULTS


@cli.command()
@click.option("--auth-hostname", is_flag=True, default=None,
              help="Only accept peers from trusted hostnames.")
@click.option("--auth-login", is_flag=True, default=None,
              help="Ask every peer for a username and password.")
@click.option("-P", "--auth-password", default=None, metavar="PASSWORD",
              help="Require this Manager password (the value, or a file whose first line is it).")
@click.option("-c", "--cert-file", default=None,
              help="TLS certificate (PEM) [default: HOME/certs/<host>.crt].")
@database_option
@click.option("--disable-tls/--enable-tls", default=None,
              help="Plaintext TCP (LabVIEW VIs, trusted networks) [default: TLS].")
@click.option("-H", "--host", default=None, help="Address to bind [default: all interfaces].")
@click.option("-k", "--key-file", default=None, help="Private key of the certificate (PEM).")
@click.option("-D", "--key-file-password", default=None, metavar="PASSWORD",
              help="Password of the private key (the value, or a file whose first line is it).")
@click.option("-p", "--port", default=None, help=f"Port (0 picks a free one) [default: {D['port']}].")
@click.option("-G", "--log-level", default=None,
              help=f"Log level: a name (any case) or a number [default: {D['log_level']}].")
@click.option("-l", "--log-file", default=None, help="Also log to this file (appended; its "
              "directory must exist) [default: HOME/logs/manager-<time>.log; 'none': no file].")
@click.option("--max-connections", type=click.IntRange(1), default=None,
              help=f"Connections served at once; more wait in the backlog "
                   f"[default: {D['max_connections']}].")
@click.option("--handshake-timeout", type=click.FloatRange(0.1), default=None,
              help=f"Seconds a peer has for TLS, authentication and its identity "
                   f"[default: {D['handshake_timeout']}].")
@click.option("--max-line-size", type=click.IntRange(1024), default=None,
              help=f"Largest message (bytes) an identified peer may send [default: {D['max_line_size']}].")
@click.option("--max-queue-size", type=click.IntRange(1024), default=None,
              help=f"Bytes queued for a peer that does not read before it is dropped "
                   f"[default: {D['max_queue_size']}].")
@click.option("--bcrypt-rounds", type=click.IntRange(4, 31), default=None,
              help=f"bcrypt cost of passwords hashed by this Manager [default: {D['bcrypt_rounds']}].")
@click.option("--max-auth-failures", type=click.IntRange(1), default=None,
              help=f"Failed logins from one address before it is locked out "
                   f"[default: {D['max_auth_failures']}].")
@click.option("--auth-lockout", type=click.FloatRange(0), default=None,
              help=f"Seconds an address stays locked out [default: {D['auth_lockout']}].")
@click.option("--auth-workers", type=click.IntRange(1, 64), default=None,
              help=f"Threads that check passwords [default: {D['auth_workers']}].")
@click.option("--max-queue-total", type=click.IntRange(1024), default=None,
              help=f"Bytes queued for all peers; over it the largest queue's peer is dropped "
                   f"[default: {D['max_queue_total']}].")
@click.option("--write-timeout", type=click.FloatRange(0.1), default=None,
              help=f"Seconds a peer with queued output may accept nothing before it is dropped "
                   f"[default: {D['write_timeout']}].")
@click.option("--max-inflight", type=click.IntRange(1), default=None,
              help=f"Requests a Client may have in flight [default: {D['max_inflight']}].")
@click.option("--partial-line-timeout", type=click.FloatRange(0.1), default=None,
              help=f"Seconds an identified peer may leave a line unfinished "
                   f"[default: {D['partial_line_timeout']}].")
@click.option("--max-connections-per-address", type=click.IntRange(1), default=None,
              help=f"Connections from one address [default: {D['max_connections_per_address']}].")
@click.option("--max-startups", default=None, metavar="START:RATE:FULL",
              help="Connections in their handshake: random early refusal from START, all from FULL "
                   "[default: 256:30:1024].")
@click.option("--max-startups-per-address", type=click.IntRange(1), default=None,
              help=f"Connections from one address in their handshake "
                   f"[default: {D['max_startups_per_address']}].")
@click.option("--connections-max-rows", type=click.IntRange(0), default=None,
              help=f"Rows kept in the connection log; 0: no limit "
                   f"[default: {D['connections_max_rows']}].")
@click.option("--connections-max-age", type=click.FloatRange(0), default=None,
              help=f"Days a connection-log row is kept; 0: no limit "
                   f"[default: {D['connections_max_age']}].")
@click.option("--control-socket", default=None, metavar="PATH",
              help="The local control socket; 'none': none [default: $RUNTIME_DIRECTORY/netmgr.sock "
                   "under systemd, else HOME/netmgr.sock].")
@click.option("--http", default=None, metavar="HOST:PORT",
              help="Serve /metrics, /healthz, /readyz, /api/status, /api/events and a status page "
                   "on HOST:PORT ([::1]:PORT for IPv6); beyond loopback it needs TLS and "
                   "authentication; 'none': off [default: off].")
@click.option("--cluster", default=None, metavar="URLS",
              help="Join a cluster of Managers over NATS: its servers, e.g. "
                   "nats://h1:4222,nats://h2:4222 (needs netmgr[cluster]); 'none': none [default: none].")
@click.option("--node", default=None, metavar="NAME",
              help="This Manager's name in the cluster [default: the host's short name].")
@config_option
def start(config_file, auth_hostname, auth_login, auth_password, log_file, **flags):
    """Start the Network Manager.

    It runs until SIGTERM (then exits 0), `netmgr stop` (0) or Ctrl-C (130, after the same clean
    stop); SIGHUP reloads the settings and opens the log file again (logrotate). It exits 2 when
    it cannot start (a port in use, a bad option), 1 when a file cannot be created or opened
    (HOME, the database, the log file), 130 on Ctrl-C during the start; a start that fails
    leaves no new file behind.
    """
    from netmgr.daemon import startup

    if log_file is not None and log_file.strip().lower() == "none":
        log_file = ""

    if flags.get("control_socket") is not None:
        flags["control_socket"] = config.KEYS["control_socket"][0](flags["control_socket"])
    if flags.get("http") is not None:
        try:
            flags["http"] = config.KEYS["http"][0](flags["http"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--http'") from None
    for key in ("cluster", "node"):
        if flags.get(key) is not None:
            try:
                flags[key] = config.KEYS[key][0](flags[key])
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'--{key}'") from None
    if flags.get("max_startups") is not None:
        try:
            flags["max_startups"] = config.KEYS["max_startups"][0](flags["max_startups"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--max-startups'") from None

    def resolve():
        cfg = _settings(config_file, log_file=log_file, **flags)
        return cfg.with_auth_flags(auth_hostname, auth_login, auth_password)

    return startup.run(resolve(), reread=resolve)  # SIGHUP resolves the settings again; 130 after Ctrl-C
