"""``netmgr install-service`` (:mod:`netmgr.cli.install`): the files it writes into a prefix, the
venv it makes from a wheel, and the programs it refuses because the unit's sandbox hides them.

Files go under ``tmp_path`` as the prefix, with ``run_commands=False``. The venv is real: made by
``python -m venv`` and a real, offline pip (``--no-index --find-links``) from a small wheel
written here; the checkout's own wheel is really built. ``tests/system`` runs the whole command
in a booted systemd.
"""
import base64
import grp
import hashlib
import importlib.metadata
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest
from click.testing import CliRunner

from netmgr import __version__
from netmgr.cli import app
from netmgr.cli import install
from netmgr.cli import venv as cli_venv
from netmgr.errors import InstallError, UsageError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = "etc/systemd/system/netmgr.service"
EXEC_START = "ExecStart=/opt/netmgr/bin/netmgr start --config /etc/netmgr/netmgr.conf\n"
HINT = "; install into /opt/netmgr (the default) or /usr/local"


def verbs(actions):
    return sorted({a.verb for a in actions})


def write_wheel(directory, version="1.0", says="one", date=(2020, 1, 1, 0, 0, 0)):
    """A small wheel of a 'netmgr' whose ``netmgr`` command prints `says` and that has a man
    page: what pip needs, nothing more."""
    info = f"netmgr-{version}.dist-info"
    files = {
        "netmgr/__init__.py": f"__version__ = {version!r}\n",
        "netmgr/launcher.py": f"def main():\n    print({says!r})\n",
        f"netmgr-{version}.data/data/share/man/man1/netmgr.1": ".TH NETMGR 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: netmgr\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nnetmgr = netmgr.launcher:main\n",
    }
    record = "".join(f"{name},sha256={_b64(hashlib.sha256(text.encode()).digest())},"
                     f"{len(text.encode())}\n" for name, text in files.items())
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    path = os.path.join(directory, f"netmgr-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(zipfile.ZipInfo(name, date), text)
    return path


def _b64(digest):
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def executable(path, text="#!/bin/sh\n"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return str(path)


# ---------------------------------------------------------------------- the default: /opt/netmgr

def test_the_unit_runs_the_venv_and_a_second_run_changes_nothing(tmp_path):
    actions = install.install_service(prefix=str(tmp_path), run_commands=False)
    assert actions[0] == install.Action("skip", "venv /opt/netmgr",
                                        "not installing into the live system")
    assert EXEC_START in (tmp_path / UNIT).read_text()
    assert os.readlink(tmp_path / "usr/local/bin/netmgr") == "/opt/netmgr/bin/netmgr"
    with open(os.path.join(REPO, "etc", "logrotate.d", "netmgr")) as f:
        assert (tmp_path / "etc/logrotate.d/netmgr").read_text() == f.read()
    bash = (tmp_path / "usr/share/bash-completion/completions/netmgr").read_text()
    zsh = (tmp_path / "usr/share/zsh/vendor-completions/_netmgr").read_text()
    assert "_NETMGR_COMPLETE=bash_complete" in bash and zsh.startswith("#compdef netmgr\n")

    again = install.install_service(prefix=str(tmp_path), run_commands=False)
    assert verbs(again) == ["keep", "skip", "unchanged"], again


def test_the_unit_has_the_control_sockets_runtime_directory(tmp_path):
    install.install_service(prefix=str(tmp_path), run_commands=False)
    unit = (tmp_path / UNIT).read_text().splitlines()
    assert "RuntimeDirectory=netmgr" in unit and "RuntimeDirectoryMode=0750" in unit


def test_the_venvs_man_pages_are_linked_into_usr_local(tmp_path):
    pages = tmp_path / "opt/netmgr/share/man/man1"
    pages.mkdir(parents=True)
    for name in ("netmgr.1", "netmgr-start.1", "other.1"):
        (pages / name).write_text(".TH X 1\n")
    install.install_service(prefix=str(tmp_path), run_commands=False)
    man = tmp_path / "usr/local/share/man/man1"
    assert sorted(os.listdir(man)) == ["netmgr-start.1", "netmgr.1"]
    assert os.readlink(man / "netmgr.1") == "/opt/netmgr/share/man/man1/netmgr.1"


def test_files_that_are_not_ours_are_kept(tmp_path):
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/netmgr").write_text("#!/bin/sh\n")  # someone else's netmgr
    (tmp_path / "etc/logrotate.d").mkdir(parents=True)
    (tmp_path / "etc/logrotate.d/netmgr").write_text("# the administrator's\n")
    actions = install.install_service(prefix=str(tmp_path), run_commands=False)
    kept = {a.target for a in actions if a.verb == "keep"}
    assert {str(tmp_path / "usr/local/bin/netmgr"),
            str(tmp_path / "etc/logrotate.d/netmgr")} <= kept
    assert (tmp_path / "etc/logrotate.d/netmgr").read_text() == "# the administrator's\n"


def test_executable_and_wheel_options_exclude_each_other(tmp_path):
    with pytest.raises(UsageError, match="give one or the other"):
        install.install_service(prefix=str(tmp_path), executable="/usr/bin/netmgr",
                                find_links=str(tmp_path))


# ---------------------------------------------------------------------------- an installed netmgr

def test_install_into_a_prefix_is_idempotent(tmp_path):
    prefix = tmp_path / "root"
    template = tmp_path / "template.conf"
    template.write_text("[netmgr]\n# home = ~/.msl/network\nport = 1875\n")
    actions = install.install_service(prefix=str(prefix), config_template=str(template),
                                      executable="/opt/netmgr/bin/netmgr")
    # 4 units, the config, logrotate.d and 2 completion scripts
    assert [a.verb for a in actions].count("write") == 8
    assert verbs(actions) == ["link", "skip", "write"]  # link: /usr/local/bin/netmgr
    assert EXEC_START in (prefix / UNIT).read_text()
    config = prefix / "etc/netmgr/netmgr.conf"
    assert config.read_text() == ("[netmgr]\nlog_file = /var/log/netmgr/manager.log\n"
                                  "home = /var/lib/netmgr\nport = 1875\n")
    assert oct(config.stat().st_mode & 0o777) == "0o640"

    config.write_text(config.read_text() + "auth = login\n")  # an administrator's edit
    again = install.install_service(prefix=str(prefix), config_template=str(template),
                                    executable="/opt/netmgr/bin/netmgr")
    assert not [a for a in again if a.verb == "write"]
    assert config.read_text().endswith("auth = login\n")


def test_the_shipped_template_becomes_the_service_config(tmp_path):
    from netmgr import config

    assert install.default_config_template() == os.path.join(REPO, "etc", "netmgr", "netmgr.conf")
    install.install_service(prefix=str(tmp_path), run_commands=False)
    settings = config.load(str(tmp_path / "etc/netmgr/netmgr.conf"), environ={})
    assert settings.home == "/var/lib/netmgr"
    assert settings.database == "/var/lib/netmgr/manager.sqlite3"
    assert settings.log_file == "/var/log/netmgr/manager.log"
    assert settings.port == 1875 and settings.auth == "none"


def test_dry_run_writes_nothing(tmp_path):
    actions = install.install_service(prefix=str(tmp_path), dry_run=True, run_commands=False)
    assert list(tmp_path.iterdir()) == []
    assert "write" in verbs(actions) and "link" in verbs(actions)


def test_render_config():
    assert install.render_config("[netmgr]\n; home = x\n") == (
        "[netmgr]\nlog_file = /var/log/netmgr/manager.log\nhome = /var/lib/netmgr\n")
    assert install.render_config("") == (
        "[netmgr]\nlog_file = /var/log/netmgr/manager.log\nhome = /var/lib/netmgr\n")


def test_an_executable_path_with_spaces_is_quoted():
    unit = install.render_service("ExecStart=/usr/local/bin/netmgr start --config x\n",
                                  "/opt/my tools/bin/netmgr")
    assert unit == 'ExecStart="/opt/my tools/bin/netmgr" start --config x\n'


# ------------------------------------------------------------------------- what the sandbox hides

@pytest.mark.parametrize("top, setting", [("/tmp", "PrivateTmp=yes"),
                                          ("/var/tmp", "PrivateTmp=yes")])
def test_a_program_in_a_private_tmp_is_refused(tmp_path, top, setting):
    with tempfile.TemporaryDirectory(dir=top) as venv:
        netmgr = executable(os.path.join(venv, "bin", "netmgr"))
        with pytest.raises(InstallError) as refused:
            install.install_service(prefix=str(tmp_path / "root"), executable=netmgr)
    assert str(refused.value) == f"refusing ExecStart={netmgr}: {setting} hides {top} from " \
                                 "the service" + HINT
    assert not (tmp_path / "root").exists()  # refused before anything was written


@pytest.mark.parametrize("path, top", [("/home/j.doe/.venv/bin/netmgr", "/home"),
                                       ("/root/.local/bin/netmgr", "/root"),
                                       ("/run/user/1000/netmgr", "/run/user")])
def test_a_program_in_a_home_is_refused(tmp_path, path, top):
    with pytest.raises(InstallError, match=f"^refusing ExecStart={path}: ProtectHome=yes hides "
                                           f"{top} from the service"):
        install.install_service(prefix=str(tmp_path), executable=path)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """``tmp_path/home`` hidden as /home is (tmp_path itself is under /tmp: made visible here)."""
    hidden = tmp_path / "home"
    hidden.mkdir()
    monkeypatch.setattr(cli_venv, "HIDDEN", ((str(hidden), "ProtectHome=yes"),))
    return hidden


def test_a_link_into_a_home_is_refused(tmp_path, home):
    real = executable(home / "j.doe/.pyenv/bin/netmgr")
    os.makedirs(tmp_path / "usr/local/bin")
    os.symlink(real, tmp_path / "usr/local/bin/netmgr")
    link = str(tmp_path / "usr/local/bin/netmgr")
    with pytest.raises(InstallError) as refused:
        cli_venv.check_executable(link)
    assert str(refused.value) == (f"refusing ExecStart={link} (a link to {real}): "
                                  f"ProtectHome=yes hides {home} from the service" + HINT)


def test_an_interpreter_in_a_home_is_refused(tmp_path, home):
    python = executable(home / "j.doe/python3")
    netmgr = executable(tmp_path / "opt/x/bin/netmgr", f"#!{python}\nimport netmgr\n")
    assert cli_venv.why_hidden(netmgr) == f" (run by {python}): ProtectHome=yes hides {home} " \
                                          "from the service"


def test_a_venv_made_from_a_python_in_a_home_is_refused(tmp_path, home):
    venv = tmp_path / "opt/v"
    python = executable(venv / "bin/python3")  # a copy (venv --copies): no link to follow
    netmgr = executable(venv / "bin/netmgr", f"#!{python}\n")
    (venv / "pyvenv.cfg").write_text(f"home = {home}/j.doe/.pyenv/bin\nversion = 3.11.7\n")
    assert cli_venv.why_hidden(netmgr) == (f" (a venv of {home}/j.doe/.pyenv/bin): "
                                           f"ProtectHome=yes hides {home} from the service")
    with pytest.raises(InstallError, match="^refusing --python "):
        cli_venv.base_python(python)


def test_a_visible_program_is_accepted(tmp_path):
    assert cli_venv.why_hidden("/usr/bin/env") is None
    assert cli_venv.why_hidden("/opt/netmgr/bin/netmgr") is None  # not there yet: its path counts


def test_the_command_refuses_with_one_line(tmp_path):
    with tempfile.TemporaryDirectory(dir="/tmp") as venv:
        netmgr = executable(os.path.join(venv, "bin", "netmgr"))
        result = CliRunner().invoke(app.cli, ["install-service", "--prefix", str(tmp_path),
                                              "--executable", netmgr])
    assert result.exit_code == 1  # a refusal, with its reason
    assert result.stderr == (f"refusing ExecStart={netmgr}: PrivateTmp=yes hides /tmp from the "
                             "service" + HINT + "\n")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ the wheel

def test_a_checkout_is_built(tmp_path):
    assert cli_venv.find_wheel() == ("build", REPO)
    before = _tree(REPO)  # an editable install may have left build/man: only new files count
    wheel = cli_venv.build_wheel(REPO, str(tmp_path))
    assert os.path.basename(wheel) == f"netmgr-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    data = f"netmgr-{__version__}.data/data/share/netmgr/"
    assert {"netmgr/cli/install.py", data + "systemd/netmgr.service", data + "netmgr.conf",
            data + "logrotate.d/netmgr"} <= set(names)
    assert _tree(REPO) == before  # a copy was built: no build/ or egg-info left in the checkout


def _tree(top):
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, _, files in os.walk(top)
                  for f in files if "__pycache__" not in d and ".git" not in d.split(os.sep)
                  and not d.startswith(os.path.join(top, ".pytest_cache")))


def test_an_install_from_a_wheel_file_names_it(tmp_path):
    wheel = write_wheel(str(tmp_path), version=__version__)
    info = tmp_path / f"netmgr-{__version__}.dist-info"
    info.mkdir()
    (info / "direct_url.json").write_text(json.dumps({"url": "file://" + wheel.replace(" ", "%20"),
                                                      "archive_info": {}}))
    installed = importlib.metadata.PathDistribution(info)
    not_a_checkout = str(tmp_path)
    assert cli_venv.find_wheel(source=not_a_checkout, distribution=installed) == ("file", wheel)

    os.rename(wheel, tmp_path / "elsewhere.whl")  # gone: the wheelhouse may hold one
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    there = write_wheel(str(wheelhouse), version=__version__)
    write_wheel(str(wheelhouse), version="0.0.1")  # another version is not this netmgr
    assert cli_venv.find_wheel(str(wheelhouse), not_a_checkout, installed) == ("file", there)
    assert cli_venv.find_wheel(None, not_a_checkout, installed) is None


def test_an_install_from_a_source_tree_builds_that_tree(tmp_path):
    """``pip install /path/to/checkout`` (not editable) names the tree in direct_url.json."""
    info = tmp_path / f"netmgr-{__version__}.dist-info"
    info.mkdir()
    (info / "direct_url.json").write_text(json.dumps({"url": "file://" + REPO, "dir_info": {}}))
    installed = importlib.metadata.PathDistribution(info)
    assert cli_venv.find_wheel(source=str(tmp_path), distribution=installed) == ("build", REPO)
    (info / "direct_url.json").write_text(json.dumps({"url": f"file://{tmp_path}/gone", "dir_info": {}}))
    assert cli_venv.find_wheel(source=str(tmp_path), distribution=installed) is None


def test_the_digest_is_of_the_files_not_the_zip(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = cli_venv.wheel_digest(write_wheel(str(tmp_path / "a")))
    assert cli_venv.wheel_digest(write_wheel(str(tmp_path / "b"), date=(2024, 5, 6, 7, 8, 10))) \
        == first
    assert cli_venv.wheel_digest(write_wheel(str(tmp_path / "b"), says="two")) != first


def test_the_venv_is_made_once_and_remade_when_the_wheel_changes(tmp_path):
    wheels, venv = tmp_path / "wheels", str(tmp_path / "opt" / "netmgr")
    wheels.mkdir()
    wheel = write_wheel(str(wheels))
    made = cli_venv.install_venv(venv, wheel, str(wheels), python=sys.executable)
    assert [a.target.split()[1:3] for a in made if a.verb == "run"] == [
        ["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]
    assert subprocess.run([f"{venv}/bin/netmgr"], capture_output=True, text=True).stdout == "one\n"
    assert os.path.isfile(f"{venv}/share/man/man1/netmgr.1")

    again = cli_venv.install_venv(venv, wheel, str(wheels), python=sys.executable)
    assert again == [cli_venv.Action("unchanged", venv, "netmgr from netmgr-1.0-py3-none-any.whl")]

    rebuilt = write_wheel(str(wheels), says="two")  # same version, other files
    remade = cli_venv.install_venv(venv, rebuilt, str(wheels))
    assert "-m venv" not in " ".join(a.target for a in remade)
    assert subprocess.run([f"{venv}/bin/netmgr"], capture_output=True, text=True).stdout == "two\n"
    assert oct(os.stat(f"{venv}/bin/netmgr").st_mode & 0o755) == "0o755"


def test_no_wheel_to_be_found_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_venv, "find_wheel", lambda find_links: None)
    with pytest.raises(InstallError, match=f"cannot find a wheel of netmgr {__version__}: "
                                           "give --wheel PATH"):
        cli_venv.install_venv(str(tmp_path / "venv"))


# ------------------------------------------------------------------------------ logrotate

def test_logrotate_accepts_the_shipped_file(tmp_path):
    if not shutil.which("logrotate"):
        pytest.skip("logrotate is not installed (Debian/Ubuntu: apt-get install logrotate)")
    with open(os.path.join(REPO, "etc", "logrotate.d", "netmgr")) as f:
        text = f.read()
    try:
        pwd.getpwnam("netmgr")
    except KeyError:  # logrotate checks that `su` and `create` name a real user and group
        me = f"{pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}"
        text = text.replace("netmgr netmgr", me)
    (tmp_path / "netmgr").write_text(text)
    result = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"),
                             str(tmp_path / "netmgr")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "error" not in result.stderr, result.stderr
    assert "rotating pattern: /var/log/netmgr/*.log  weekly (8 rotations)" in result.stderr
