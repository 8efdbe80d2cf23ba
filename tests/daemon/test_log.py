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
