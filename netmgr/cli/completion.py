"""Shell completion for ``netmgr``: click's own, for bash and zsh (fish too, as click has it).

:func:`script` returns the text that ``_NETMGR_COMPLETE=bash_source netmgr`` prints, for a file
such as /usr/share/bash-completion/completions/netmgr or /usr/share/zsh/vendor-completions/_netmgr.
The script calls ``netmgr`` back with ``_NETMGR_COMPLETE=bash_complete`` (``zsh_complete``) to
complete each word, so the completions always match the installed command tree.

This module writes nothing; click's bash script runs ``bash`` once to warn about a bash older
than 4.4 (on stderr), which its completion function needs.
"""
from click.shell_completion import get_completion_class

PROG = "netmgr"
COMPLETE_VAR = "_NETMGR_COMPLETE"

#: where a system-wide install puts each shell's script (what the shell's completion loader reads)
INSTALL_PATHS = {
    "bash": "/usr/share/bash-completion/completions/netmgr",
    "zsh": "/usr/share/zsh/vendor-completions/_netmgr",
}


def script(shell):
    """The completion script for `shell` (``bash``, ``zsh`` or ``fish``); ValueError for others."""
    from netmgr.cli.app import cli  # the whole tree: app imports the command modules

    completion = get_completion_class(shell)
    if completion is None:
        raise ValueError(f"No completion for the shell {shell!r}")
    return completion(cli, {}, PROG, COMPLETE_VAR).source()
