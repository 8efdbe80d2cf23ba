"""Socket-free tests of netmgr.terminal: the terminal-syntax parser in linear time (issue 10,
finding 3) and the escaping of what is not printable (finding 8).

tests/core/test_protocol.py holds the contract of reference 1.13 (its table, and a differential
test on random lines); here the same parser meets MSL-Network 1.0's on every short line over a
small alphabet and on adversarial lines, and is shown to stay linear on a 1 MiB line where 1.0's
regexes take hours.
"""
import itertools
import time

import pytest
from msl.network.utils import parse_terminal_input as parse_terminal_input_1_0

from netmgr import protocol, terminal
from netmgr.terminal import MAX_TERMINAL_LINE, parse_terminal_input, printable


def assert_same_as_1_0(line):
    ours, theirs = parse_terminal_input(line), parse_terminal_input_1_0(line)
    assert ours == theirs, line
    assert repr(ours) == repr(theirs), line


def test_protocol_re_exports_the_parser_and_the_cap():
    assert protocol.parse_terminal_input is parse_terminal_input
    assert protocol.MAX_TERMINAL_LINE == MAX_TERMINAL_LINE == 16 * 1024
    assert parse_terminal_input("exit")["attribute"] == protocol.DISCONNECT_REQUEST


# the characters that steer 1.0's regexes: word characters (ASCII and not), white space (an ASCII
# space, a tab, a no-break space), '=', both quotes, a digit and a bracket
ALPHABET = ["a", "é", " ", "\t", "\u00a0", "=", '"', "'", "1", "["]
PREFIXES = ["", "S m ", '"S v" m ', "S m x=1 "]


def test_every_short_line_over_the_alphabet_matches_1_0():
    count = 0
    for size in range(5):
        for chars in itertools.product(ALPHABET, repeat=size):
            tail = "".join(chars)
            for prefix in PREFIXES:
                assert_same_as_1_0(prefix + tail)
                count += 1
    assert count == len(PREFIXES) * sum(len(ALPHABET) ** n for n in range(5))


def adversarial_lines(n):
    """Lines of about ``n`` characters that make 1.0's regexes backtrack, and their kin."""
    return [
        "x y " + "a" * n,  # issue 10's 65,000 × a: 33 s in 1.0
        "x y a" + " " * n + '"',  # a run of spaces before an unclosed quote
        "x y " + '"' * n,
        "x y " + '"' * n + "a",
        "x y " + "=" * n,
        "x y " + "a=" * (n // 2),
        "x y " + "k=v " * (n // 4),
        "x y " + "".join(f"k{i}={i} " for i in range(n // 8)),
        "x y " + "a " * (n // 2),
        "x y " + "a" * n + "=",
        "x y " + "a" * n + " = " + '"',
        "x y k=" + " " * n + '"',
        "x y " + 'k="' * (n // 3),
        "x y " + "a" * (n // 2) + " " * (n // 2) + "b=1",
        "x y " + "1" * n,
        "x y " + "'" * n,
        "x y " + "é" * n + "=1",
        "x y " + "[1," * (n // 3) + "]",
        '"x" y ' + "a" * n,
        "client " + "a " * (n // 2),
        "link " + '"' * n,
    ]


def test_adversarial_lines_match_1_0():
    # short enough for 1.0's quadratic regexes to finish quickly
    for n in (0, 1, 2, 3, 7, 64, 301):
        for line in adversarial_lines(n):
            assert_same_as_1_0(line)


def test_the_issue_10_line_is_parsed_at_once():
    start = time.perf_counter()
    parsed = parse_terminal_input("x y " + "a" * 65000)  # 23-33 s in 1.0
    assert time.perf_counter() - start < 2.0
    assert parsed["args"] == ["a" * 65000] and parsed["kwargs"] == {}


@pytest.mark.parametrize("index", range(len(adversarial_lines(8))))
def test_one_mebibyte_adversarial_line_is_linear(index):
    """Not a benchmark: the bound is ~100× what a linear parser needs here (about 1.5 s at
    worst, for a 1 MiB ``[1,1,…]`` literal), while a quadratic one would need hours."""
    line = adversarial_lines(1 << 20)[index]
    start = time.perf_counter()
    parse_terminal_input(line)
    assert time.perf_counter() - start < 10.0


def test_repeated_tokens_are_converted_once_but_mutable_values_are_not_shared():
    parsed = parse_terminal_input("S m [1] [1] (1,) (1,) 7 7 x=[1] y=[1]")
    args, kwargs = parsed["args"], parsed["kwargs"]
    assert args == [[1], [1], (1,), (1,), 7, 7] and kwargs == {"x": [1], "y": [1]}
    assert args[0] is not args[1] and kwargs["x"] is not kwargs["y"] and args[0] is not kwargs["x"]


# --------------------------------------------------------------------------------------------
# printable

@pytest.mark.parametrize("text, shown", [
    ("plain name", "plain name"),
    ("é Ω 日本語 😀 'q' \"q\" \\x1b", "é Ω 日本語 😀 'q' \"q\" \\x1b"),  # unchanged
    ("a\x1bcb", "a\\x1bcb"),
    ("\x00\x07\x7f\x9b", "\\x00\\x07\\x7f\\x9b"),
    ("tab\there\r\n", "tab\\there\\r\\n"),
    ("\u2028\u2029", "\\u2028\\u2029"),
    ("\u202eevil\u2066", "\\u202eevil\\u2066"),
    ("\u00a0\u200b", "\\xa0\\u200b"),
    ("\U000e0001", "\\U000e0001"),
    ("\ud800", "\\ud800"),
    ("", ""),
])
def test_printable_escapes_what_is_not_printable(text, shown):
    assert printable(text) == shown
    assert printable(text).isprintable()


def test_terminal_module_is_pure():
    import pathlib
    source = pathlib.Path(terminal.__file__).read_text(encoding="utf-8")
    for name in ("gevent", "socket", "asyncio", "select", "netmgr"):
        assert f"import {name}" not in source
        assert f"from {name}" not in source
