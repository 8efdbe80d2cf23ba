"""structlog configuration, and nothing else.

Events are ``snake_case`` names with key=value fields (STYLE.md rule 8), rendered as
``<time> [<level>] <event> k=v …`` on a terminal or in a file, and as one JSON object per line
when ``json=True`` (the journal). The start-up line keeps 1.0's text because harnesses match
its suffix: ``Network Manager running on <host>:<port> (TLS ENABLED|DISABLED)``.
"""
import logging
import sys

import orjson
import structlog

LOGGER_NAME = "netmgr"


def _render_text(_, __, event_dict):
    timestamp = event_dict.pop("timestamp", "")
    level = event_dict.pop("level", "info").upper()
    event = event_dict.pop("event", "")
    fields = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
                      for k, v in event_dict.items())
    return f"{timestamp} [{level:<7}] {event}" + (f" {fields}" if fields else "")


def _render_json(_, __, event_dict):
    return orjson.dumps(event_dict, default=str).decode()


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


def configure(level="INFO", log_file=None, json=False, stream=None):
    """Send netmgr's events to ``stream`` (stdout) and, if given, ``log_file``."""
    renderer = _render_json if json else _render_text
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=False)],
    )
    root = logging.getLogger(LOGGER_NAME)
    root.handlers.clear()
    root.propagate = False
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    if log_file:
        file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    root.setLevel(parse_level(level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def set_level(level):
    logging.getLogger(LOGGER_NAME).setLevel(parse_level(level))
    return True


def get_logger(name=LOGGER_NAME):
    return structlog.get_logger(name)
