"""The metadata is in setup.cfg; this file adds the man pages, made from the click tree at build time.

``build_man`` (a step of ``build``) runs ``python -m netmgr.cli.manpage build/man`` on the source
tree, and ``install_data`` runs it first and adds the pages to setup.cfg's data files as
``share/man/man1``: a wheel, ``pip install .`` and ``pip install -e .`` all install them into
``<prefix>/share/man/man1``. The pages are never committed, so they cannot drift from the commands,
and an sdist carries only the code that makes them.

Importing the command tree needs the runtime dependencies, so they are the build's requirements
too: ``setup_requires``, which setuptools' PEP 517 backend reports to pip, and pip installs into
the isolated build environment. They are declared only under that backend: run as ``python
setup.py ...``, setuptools would fetch them itself with its deprecated egg installer (which fails
to see an installed zope.interface 8) instead of using the environment's.
"""
import configparser
import os
import subprocess
import sys

from setuptools import Command, setup

try:
    from setuptools.command.build import build
except ImportError:  # setuptools < 62.4
    from distutils.command.build import build
from distutils.command.install_data import install_data  # setuptools' own copy of distutils

HERE = os.path.dirname(os.path.abspath(__file__))
MAN_SECTION = "share/man/man1"


def runtime_requirements():
    """setup.cfg's install_requires, one requirement a line (comments dropped)."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(HERE, "setup.cfg"), encoding="utf-8")
    lines = (line.strip() for line in cfg["options"]["install_requires"].splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class build_man(Command):
    """Write netmgr.1 and the commands' pages into BUILD_BASE/man."""

    description = "generate the man pages from the click tree"
    user_options = []

    def initialize_options(self):
        self.build_base = None
        self.pages = []

    def finalize_options(self):
        self.set_undefined_options("build", ("build_base", "build_base"))

    def run(self):
        outdir = os.path.abspath(os.path.join(self.build_base, "man"))
        self.mkpath(outdir)
        # a child process: the tree of this source tree, not an installed netmgr's
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
        out = subprocess.run([sys.executable, "-m", "netmgr.cli.manpage", outdir], cwd=HERE, env=env,
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        self.pages = out.split()


class install_data_with_man(install_data):
    """setup.cfg's data files, and the man pages that build_man made."""

    def run(self):
        self.run_command("build_man")
        pages = self.get_finalized_command("build_man").pages
        self.data_files = list(self.data_files or []) + [(MAN_SECTION, pages)]
        super().run()


class build_with_man(build):
    sub_commands = build.sub_commands + [("build_man", None)]


setup(
    setup_requires=runtime_requirements() if "setuptools.build_meta" in sys.modules else [],
    cmdclass={"build": build_with_man, "build_man": build_man, "install_data": install_data_with_man},
)
