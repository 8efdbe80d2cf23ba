"""The login attacks of issue 10 (findings 4 and 9), re-exported by :mod:`bench.attacks`.

Many connections at once, each answering every prompt of the Manager as it comes (a Manager may make
a connection wait for its turn before prompting it), the password wrong; the outcome of each is the
first line that is not a prompt. Loopback only; source addresses may be rotated over ``127.x.y.z``.
"""
import time

from bench.rawconn import (Conn, client_identity, first_lines, message_text, next_lines, parse, reply_line,
                           request_line)


def tally(texts):
    """Outcomes of login attempts by kind: what the attacker saw last on each connection."""
    kinds = {"checked": 0, "throttled": 0, "refused": 0, "closed": 0, "timeout": 0, "other": 0}
    others = []
    for text in texts:
        if text is None:
            kinds["closed"] += 1
        elif text == "timeout":
            kinds["timeout"] += 1
        elif "Wrong" in text or "Unregistered" in text:
            kinds["checked"] += 1
        elif "Too many failed attempts" in text:
            kinds["throttled"] += 1
        elif text.startswith("ConnectionRefusedError"):
            kinds["refused"] += 1
        else:
            kinds["other"] += 1
            others.append(text[:200])
    return {**kinds, "other_samples": others[:5]}


def open_many(port, count, sources, timeout):
    """``count`` connections, the source addresses taken in turn; (connections, connect failures)."""
    conns, failed = [], 0
    for i in range(count):
        try:
            conns.append(Conn(port, source=sources[i % len(sources)], timeout=timeout))
        except OSError:
            failed += 1
    return conns, failed


def answer_every_prompt(conns, answers, deadline, on_sent=None):
    """Answer each prompt of the Manager (``answers``: attribute -> value) on every connection, as
    the prompts come (a Manager may make a connection wait for its turn), until the connection gets a
    line that is not a prompt, or EOF. ``({conn: that line's text, None at EOF, "timeout"}, number of
    passwords sent)``; ``on_sent()`` is called after the first round in which passwords were sent."""
    finals, pending, passwords = {}, list(conns), 0
    while pending and time.monotonic() < deadline:
        sent = 0
        for c, line in next_lines(pending, min(1.0, max(0.0, deadline - time.monotonic()))).items():
            msg = None if line is None else parse(line)
            prompt = msg is not None and not msg.get("error") and "result" not in msg
            if prompt and msg.get("attribute") in answers:
                try:
                    c.send(reply_line(answers[msg["attribute"]], requester=msg.get("requester")))
                except OSError:
                    finals[c] = None
                sent += msg["attribute"] == "password"
            else:
                finals[c] = message_text(msg)
        passwords += sent
        if sent and on_sent is not None:
            on_sent()
            on_sent = None
        pending = [c for c in pending if c not in finals]
    finals.update({c: "timeout" for c in pending})
    return finals, passwords


def login_guessing(port, count=100, mode="password", sources=("127.0.0.1",), username="admin",
                   guess="wrong guess", timeout=30.0, on_sent=None):
    """(4) ``count`` connections (source addresses rotated over ``sources``) each answer every prompt,
    the password wrong (``on_sent()`` after the first round of guesses). ``checked``: how many were
    told the password was wrong; ``throttled``, ``refused``: turned away before that."""
    t0 = time.monotonic()
    conns, failed = open_many(port, count, sources, timeout)
    answers = {"password": guess, **({"username": username} if mode == "login" else {})}
    try:
        finals, passwords = answer_every_prompt(conns, answers, t0 + timeout, on_sent)
    finally:
        for c in conns:
            c.close()
    elapsed = time.monotonic() - t0
    result = tally(finals.values())
    return {"attack": "login_guessing", "mode": mode, "connections": count, "connect_failed": failed,
            "passwords_sent": passwords, "elapsed_s": round(elapsed, 3),
            "checked_per_s": round(result["checked"] / elapsed, 1), **result}


def pending_handshakes(port, count=300, sources=("127.0.0.1",), timeout=10.0, on_held=None):
    """(4) ``count`` connections that read the Manager's first line and never answer it: how many
    were prompted, and how many refused (``ConnectionRefusedError: too many connections in progress``).
    ``on_held()`` is called while they are still open."""
    conns, failed = open_many(port, count, sources, timeout)
    try:
        lines = first_lines(conns, timeout)
        texts = [message_text(None if line is None else parse(line)) for line in lines.values()]
        if on_held is not None:
            on_held()
    finally:
        for c in conns:
            c.close()
    refused = [t for t in texts if t and t.startswith("ConnectionRefusedError")]
    return {"attack": "pending_handshakes", "connections": count, "connect_failed": failed,
            "prompted": sum(1 for t in texts if t == ""), "refused": len(refused),
            "refused_samples": refused[:3], "closed": sum(1 for t in texts if t is None)}


def inline_admin_guessing(port, count=50, username="admin", guess="wrong guess", timeout=30.0, on_sent=None):
    """(4) No-auth mode: ``count`` identified Clients each send the admin request ``peers`` and answer
    the inline username/password prompts, the password wrong. The reply to the request is the outcome."""
    t0 = time.monotonic()
    conns = []
    try:
        for i in range(count):
            conns.append(Conn(port, timeout=timeout).handshake(client_identity(f"Guess{i}")))
        for i, c in enumerate(conns):
            c.send(request_line("Manager", "peers", uid=f"admin-{i}"))
        finals, passwords = answer_every_prompt(conns, {"username": username, "password": guess},
                                                t0 + timeout, on_sent)
    finally:
        for c in conns:
            c.close()
    return {"attack": "inline_admin_guessing", "connections": count, "passwords_sent": passwords,
            "elapsed_s": round(time.monotonic() - t0, 3), **tally(finals.values())}


def wrong_logins(port, count=300, password="wrong guess", sources=("127.0.0.1",), parallel=32, timeout=30.0):
    """(9) ``count`` connections, ``parallel`` at a time, each answering the Manager password wrong."""
    texts, t0 = [], time.monotonic()
    for start in range(0, count, parallel):
        batch = [sources[(start + i) % len(sources)] for i in range(min(parallel, count - start))]
        conns, _ = open_many(port, len(batch), batch, timeout)
        try:
            finals, _ = answer_every_prompt(conns, {"password": password}, time.monotonic() + timeout)
            texts += list(finals.values())
        finally:
            for c in conns:
                c.close()
    return {"attack": "wrong_logins", "connections": count, "elapsed_s": round(time.monotonic() - t0, 3),
            **tally(texts)}
