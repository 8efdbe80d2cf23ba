"""``netmgr events``: follow the running Manager's event stream, as ``journalctl -f`` follows a log.

The connection is ``netmgr status``'s (:func:`netmgr.cli.control.manager_options`: the control
socket by default, TCP with an administrator's login on request) with the client library's
:meth:`Client.events <netmgr.client.Client.events>`. One line per event, or one JSON object
per line with ``--json``, until Ctrl-C (exit status 130).

When the Manager goes away the command keeps following, as ``journalctl -f`` does across a
restart of journald: the library reconnects (every 2 s at most) and subscribes again, and a
line on stderr says so; events published meanwhile are missed. ``--no-reconnect`` ends with
exit status 1 instead.

:func:`format_event` is the human line; it performs no I/O. Every text that came from a peer
goes through :func:`netmgr.terminal.printable`, so a name cannot send the terminal an escape
sequence (issue 10, finding 8); ``--json`` escapes all that is not ASCII for the same reason.
"""
import json
import time

import click

from netmgr.cli.app import cli
from netmgr.cli.control import manager_options
from netmgr.errors import Failed
from netmgr.terminal import printable

#: left out unless asked for by name: one every 2 s would drown the changes a person follows
QUIET = frozenset(("heartbeat",))
#: the key that names what an event is about, shown first after the type and event
SUBJECT = {"peer": "name", "service": "name", "link": "service", "lock": "service",
           "request_failed": "service", "auth": "address", "admin": "attribute", "health": "status"}
#: seconds between reconnect attempts, at most (the library's back-off starts at 0.1 s)
RECONNECT_DELAY = 2.0
#: seconds to wait for the library to subscribe again after a reconnect, for the stderr line
RESUBSCRIBE_TIMEOUT = 30.0
EVENTS_NAME = "netmgr-events"


class EventsError(Failed):
    """The subscription was refused or the Manager went away; the text is printed as it is."""


# ------------------------------------------------------------------------------------ command

@cli.command(short_help="Follow the Manager's events, like journalctl -f.")
@click.option("-t", "--type", "types", multiple=True, metavar="TYPE",
              help="Only events of this type (repeat, or separate with commas): peer, service, link, "
                   "lock, request_failed, auth, admin, heartbeat, health [default: all but heartbeat].")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON object per line.")
@click.option("--reconnect/--no-reconnect", default=True, show_default=True,
              help="Keep following when the Manager restarts; with --no-reconnect its going away "
                   "ends the command with exit status 1.")
@manager_options
def events(opener, source, types, as_json, reconnect):
    """Follow the running Manager's events: one line each (time, type, event and its fields),
    until Ctrl-C.

    Peers connecting and leaving, Services registering and going, links, locks, failed requests,
    logins, admin requests, heartbeats and health changes (docs/protocol.md, "Events on the
    wire"). Through the control socket every type is available; over TCP the command logs in as
    an administrator, as status does. Lines about the connection go to stderr."""
    follower = Follower(source, _types(types), as_json)
    extras = {}
    if reconnect:
        extras = dict(reconnect=True, max_delay=RECONNECT_DELAY, on_state_change=follower.notice)
    try:
        with opener(name=EVENTS_NAME, **extras) as client:
            return follower.follow(client)
    except KeyboardInterrupt:
        return 130


def _types(options):
    """``--type`` values (commas split) as a sorted list, or None (every type but QUIET)."""
    wanted = sorted({t.strip() for option in options for t in option.split(",") if t.strip()})
    return wanted or None


class Follower:
    """One ``netmgr events``: subscribe, print each event, say on stderr when the Manager goes
    and when the stream is followed (again)."""

    def __init__(self, source, wanted, as_json):
        self.source = source
        self.wanted = wanted
        self.as_json = as_json
        self.stream = None

    def follow(self, client):
        from netmgr.cli.status import request  # loads the client library

        request(client, "port")  # over TCP: the administrator's login (a no-op on the control socket)
        try:
            self.stream = client.events(self.wanted)
        except RuntimeError as exc:  # the Manager refused: an unknown type, an admin's type
            raise EventsError(_last_line(exc)) from None
        self._say(f"following the Manager at {self.source} (Ctrl-C to stop)")
        # not closed on the way out: disconnecting ends the subscription without a round trip
        try:
            self._print(self.stream)
        except RuntimeError as exc:  # refused when subscribing again after a reconnect
            raise EventsError(_last_line(exc)) from None
        raise EventsError(f"the Manager at {self.source} closed the connection")

    def _print(self, stream):
        dropped = 0
        for event in stream:
            if self.wanted is None and event.get("type") in QUIET:
                continue
            click.echo(json.dumps(event, separators=(",", ":")) if self.as_json else format_event(event))
            if stream.dropped != dropped:
                self._say(f"{stream.dropped - dropped} event(s) dropped: the output was slower than "
                          f"the Manager")
                dropped = stream.dropped

    def notice(self, _client, state):
        """The library's state callback (on its dispatcher thread, where waiting is allowed)."""
        if state == "RECONNECTING":
            self._say(f"lost the Manager at {self.source}; reconnecting (Ctrl-C to stop)")
        elif state == "CONNECTED" and self.stream is not None:
            if self.stream.wait_active(RESUBSCRIBE_TIMEOUT):
                self._say(f"following the Manager at {self.source} again; events meanwhile were missed")

    @staticmethod
    def _say(text):
        click.echo(f"netmgr events: {text}", err=True)


def _last_line(exc):
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# ------------------------------------------------------------------------------- the human line

def format_event(event):
    """``2025-01-02 12:00:01.234  service registered  Echo  address=… max_clients=-1 …``: the
    local time, the type and event, what it is about, then every other field as key=value in
    the Manager's order (nested objects in braces), escaped for a terminal."""
    kind = str(event.get("type", "?"))
    subject_key = SUBJECT.get(kind)
    parts = [_clock(event.get("time")), f"{printable(kind)} {printable(str(event.get('event', '?')))}"]
    if subject_key in event:
        parts.append(_text(event[subject_key]))
    fields = []
    for key, value in event.items():
        if key in ("type", "event", "seq", "time") or key == subject_key:
            continue
        if kind == "service" and key == "attributes" and isinstance(value, dict):
            fields.append("attributes=" + (",".join(printable(str(name)) for name in value) or "-"))
        else:
            fields.append(f"{printable(str(key))}={_value(value)}")
    if fields:
        parts.append(" ".join(fields))
    return "  ".join(parts)


def _clock(seconds):
    if not isinstance(seconds, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{int(seconds % 1 * 1000):03d}"


def _value(value):
    if isinstance(value, dict):
        return "{" + " ".join(f"{printable(str(k))}={_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value)  # true, false, null, integers


def _text(value):
    """A string: escaped, and quoted when it has spaces (a reason, an error message)."""
    text = printable(str(value))
    if not text or any(c.isspace() or c == '"' for c in text):
        return '"' + text.replace('"', '\\"') + '"'
    return text
