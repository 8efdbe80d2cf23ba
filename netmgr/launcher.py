"""Entry point of the ``netmgr`` command: patch gevent first, then run the click tree.

The Manager itself only uses gevent's own socket and server classes, but patching first
makes every library the daemon imports (logging handlers, the threadpool, DNS) cooperative.
"""
import sys


def main():
    from gevent import monkey

    monkey.patch_all()
    from netmgr.cli import app as cli

    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
