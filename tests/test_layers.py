"""The arrows of docs/design.md: which part of netmgr may import which (read from the source)."""
import ast
import pathlib
import subprocess
import sys

import netmgr

ROOT = pathlib.Path(netmgr.__file__).parent
PURE = {"netmgr.protocol", "netmgr.terminal", "netmgr.nesting", "netmgr.errors", "netmgr.certinfo",
        "netmgr.daemon.registry", "netmgr.daemon.routing"}
IO = {"gevent", "socket", "ssl", "select", "selectors", "asyncio"}


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _walk(node):
    """``ast.walk`` without the bodies of ``if TYPE_CHECKING:`` (never run)."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
        yield from (n for child in node.orelse for n in _walk(child))
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _walk(child)


def imports(path):
    """Every module `path` imports, at any depth of its code (lazy imports count)."""
    found = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def reach(module):
    """What `module` imports, following netmgr's own modules."""
    seen, todo = set(), [module]
    while todo:
        for name in GRAPH.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def top(name):
    return name.split(".")[0]


def part(name):
    return ".".join(name.split(".")[:2])


def test_the_pure_modules_import_neither_gevent_nor_sockets():
    for module in PURE:
        assert not {top(n) for n in reach(module)} & IO, module


def test_the_client_library_imports_neither_gevent_nor_the_daemon_nor_the_cli():
    for module in (m for m in GRAPH if part(m) == "netmgr.client"):
        found = reach(module)
        assert "gevent" not in {top(n) for n in found}, module
        assert not {part(n) for n in found} & {"netmgr.daemon", "netmgr.cli"}, module


def test_only_the_daemon_imports_gevent():
    for module, names in GRAPH.items():
        if part(module) != "netmgr.daemon":
            assert "gevent" not in {top(n) for n in names}, module


def test_the_cli_reaches_the_daemon_only_through_its_start_up_entry():
    for module in (m for m in GRAPH if part(m) == "netmgr.cli"):
        daemon = {n for n in GRAPH[module] if part(n) == "netmgr.daemon"}
        assert daemon <= {"netmgr.daemon", "netmgr.daemon.startup"}, module


def test_the_core_and_the_store_import_no_part():
    parts = {"netmgr.daemon", "netmgr.client", "netmgr.cli"}
    for module in GRAPH:
        if part(module) not in parts and module not in ("netmgr", "netmgr.launcher", "netmgr.service"):
            assert not {part(n) for n in reach(module)} & parts, module


def test_import_netmgr_and_its_one_line_port_load_no_gevent():
    for code in ("import netmgr", "from netmgr import connect, Service, LinkedClient, run_services, "
                 "run_forever"):
        check = f"import sys; {code}; assert 'gevent' not in sys.modules, sorted(sys.modules)"
        subprocess.run([sys.executable, "-c", check], check=True)
