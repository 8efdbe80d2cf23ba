"""A package, so that cluster/conftest.py does not shadow tests/conftest.py (see its docstring)."""
