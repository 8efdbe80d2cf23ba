"""The ``netmgr`` command tree run in this process (click's CliRunner), for tests/cli."""
from click.testing import CliRunner

from netmgr.cli import app as cli


def run(*args, input=None, env=None):
    return CliRunner().invoke(cli.cli, [str(a) for a in args], input=input, env=env)


def ok(*args, **kw):
    result = run(*args, **kw)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def fails(code, *args, **kw):
    result = run(*args, **kw)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result
