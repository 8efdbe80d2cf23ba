"""netmgr.daemon.log renders what a peer chose (a name, an error text) without writing a
non-printable character raw (issue 10, finding 8: ``\\x1bc`` in a name reset the admin's terminal).

No Manager: events go through :func:`log.configure` to an in-memory stream and a file, and the
journal's fields are built as :class:`log.JournalHandler` builds them, without sending them.
"""
import io
import json
import logging

import pytest

from netmgr.daemon import log

HOSTILE = "Evil\x1bc\x07\x00\x7f\x9b\u2028\u202eC"
ESCAPED = "Evil\\x1bc\\x07\\x00\\x7f\\x9b\\u2028\\u202eC"


@pytest.fixture
def stream():
    """The netmgr logger's output, in memory; the handlers are removed afterwards."""
    out = io.StringIO()
    yield out
    root = logging.getLogger(log.LOGGER_NAME)
    for handler in root.handlers:
        handler.close()
    root.handlers.clear()


def test_text_rendering_escapes_event_keys_and_values():
    line = log._render_text(None, None, {
        "timestamp": "T", "level": "info", "event": "odd\x1b[2Jevent", "peer": HOSTILE,
        "reason": f"two words {HOSTILE}", "n": 3, "names": [HOSTILE], "k\x07": "v"})
    assert line.isprintable()
    assert line == (f"T [INFO   ] odd\\x1b[2Jevent peer={ESCAPED} reason={f'two words {HOSTILE}'!r} "
                    f"n=3 names={[HOSTILE]!r} k\\x07=v")
    assert f"reason='two words {ESCAPED}'" in line


def test_printable_text_is_unchanged():
    line = log._render_text(None, None, {"timestamp": "T", "level": "warning", "event": "e",
                                         "peer": "Pi é 😀[h:1]", "path": "C:\\x1b\\dir"})
    assert line == "T [WARNING] e peer='Pi é 😀[h:1]' path=C:\\x1b\\dir"


def test_text_stream_and_file_hold_no_raw_control(stream, tmp_path):
    path = tmp_path / "netmgr.log"
    log.configure("INFO", log_file=str(path), stream=stream, journal=False)
    log.get_logger().info("identity_rejected", name=HOSTILE, reason=f"invalid {HOSTILE!r}")
    for text in (stream.getvalue(), path.read_text(encoding="utf-8")):
        line = text.rstrip("\n")
        assert "\n" not in line and line.isprintable(), repr(line)
        assert f"identity_rejected name={ESCAPED}" in line


def test_json_lines_escape_what_orjson_leaves_raw(stream):
    log.configure("INFO", json=True, stream=stream, journal=False)
    log.get_logger().info("peer_connected", peer=HOSTILE, emoji="😀 é", tag="\U000e0001")
    line = stream.getvalue().rstrip("\n")
    assert line.isprintable() and "\n" not in line
    assert "\\u007f\\u009b\\u2028\\u202e" in line and "\\udb40\\udc01" in line
    event = json.loads(line)  # the same values for a JSON reader
    assert (event["peer"], event["emoji"], event["tag"]) == (HOSTILE, "😀 é", "\U000e0001")


def test_json_line_with_a_lone_surrogate():
    line = log.json_line({"event": "e", "error": "bad \ud800"})
    assert line.isprintable() and json.loads(line)["error"] == "bad \ud800"


def test_journal_message_is_escaped_and_fields_are_exact():
    event = {"event": "identity_rejected", "level": "info", "timestamp": "T", "name": HOSTILE}
    message = log._message({k: v for k, v in event.items() if k not in ("timestamp", "level")})
    fields = dict(log.journal_fields(event, message))
    assert fields["MESSAGE"] == f"identity_rejected name={ESCAPED}"
    assert fields["NAME"] == HOSTILE  # journald keeps any bytes; journalctl shows them as a blob


def test_journal_handler_escapes_the_message(stream, monkeypatch):
    sent = []
    monkeypatch.setattr(log, "JOURNAL_SOCKET", "/nonexistent/netmgr-test-journal")
    monkeypatch.setattr(log.JournalHandler, "send", lambda self, payload, event: sent.append(payload))
    log.configure("INFO", stream=stream, journal=True)
    log.get_logger().info("peer_connected", peer=HOSTILE, error="x \ud800")
    (payload,) = sent
    message = payload.split(b"\n")[0].decode()
    assert message.isprintable()
    assert message.startswith(f"MESSAGE=peer_connected peer={ESCAPED} error=")
    assert stream.getvalue() == ""  # nothing went to the fallback


# ------------------------------------------------------------------ issue 11: the log file, tracebacks

def test_a_held_log_file_is_created_only_when_opened(stream, tmp_path):
    path = tmp_path / "manager.log"
    log.configure("INFO", log_file=str(path), stream=stream, journal=False, hold=True)
    log.get_logger().info("loaded certificate /x.crt")
    log.get_logger().info("not using authentication")
    assert not path.exists()  # a start that fails here leaves no log file
    log.open_file()
    log.get_logger().info("Network Manager running on h:1 (TLS ENABLED)")
    events = [line.split("] ", 1)[1] for line in path.read_text().splitlines()]
    assert events == ["loaded certificate /x.crt", "not using authentication",
                      "Network Manager running on h:1 (TLS ENABLED)"]


def test_reopen_writes_a_new_file_at_the_path(stream, tmp_path):
    path = tmp_path / "manager.log"
    log.configure("INFO", log_file=str(path), stream=stream, journal=False)
    log.get_logger().info("before")
    path.rename(tmp_path / "manager.log.1")  # logrotate
    log.reopen()
    log.get_logger().info("after")
    assert "before" in (tmp_path / "manager.log.1").read_text()
    assert "after" not in (tmp_path / "manager.log.1").read_text()
    assert path.read_text().rstrip("\n").endswith("] after")


def test_reopen_keeps_the_old_file_when_the_path_cannot_be_opened(stream, tmp_path):
    path = tmp_path / "logs" / "manager.log"
    path.parent.mkdir()
    log.configure("INFO", log_file=str(path), stream=stream, journal=False)
    path.parent.rename(tmp_path / "old-logs")
    log.reopen()
    log.get_logger().info("still_logged")
    text = (tmp_path / "old-logs" / "manager.log").read_text()
    assert f"log_file_reopen_failed path={path} error='No such file or directory'" in text
    assert "still_logged" in text


@pytest.fixture
def hub():
    """gevent's hub of this thread, its own exception printing restored afterwards."""
    import gevent

    hub = gevent.get_hub()
    yield hub
    hub.__dict__.pop("print_exception", None)


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_a_greenlet_that_dies_is_logged_not_printed(stream, tmp_path, capfd, hub, level):
    import gevent

    def fails():
        raise ValueError("boom \x1b[2J")

    path = tmp_path / "manager.log"
    log.configure(level, log_file=str(path), stream=stream, journal=False)
    log.log_hub_errors(hub)
    greenlet = gevent.spawn(fails)
    greenlet.join()
    assert isinstance(greenlet.exception, ValueError)
    assert capfd.readouterr().err == ""  # gevent prints it on stderr by default
    text = path.read_text()
    (warning,) = [line for line in text.splitlines() if "[WARNING]" in line]
    assert "unhandled_error error='ValueError: boom \\x1b[2J' where=" in warning
    assert "Greenlet" in warning and warning.isprintable()
    debug = [line for line in text.splitlines() if "[DEBUG  ] traceback" in line]
    if level == "DEBUG":
        (line,) = debug
        assert "Traceback (most recent call last):" in line and "in fails" in line
        assert line.isprintable()  # the traceback's lines are one escaped field
    else:
        assert debug == [] and "Traceback" not in text
    assert stream.getvalue() == text  # stdout gets the same events


def test_log_exception_gives_the_error_and_the_traceback_at_debug(stream):
    log.configure("DEBUG", stream=stream, journal=False)
    try:
        {}["missing"]
    except KeyError as exc:
        log.log_exception("start_failed", (type(exc), exc, exc.__traceback__))
    warning, debug = stream.getvalue().splitlines()
    assert warning.endswith("[WARNING] start_failed error=\"KeyError: 'missing'\"")
    assert "[DEBUG  ] traceback traceback='Traceback (most recent call last):\\n" in debug
    assert debug.endswith("\\nKeyError: \\'missing\\''")  # one line: a repr of the text
