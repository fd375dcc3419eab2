"""Every module says what it offers (``__all__``), and every name it lists exists; the
sub-packages' curated names resolve to the class or function they name, loaded on first use."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import carousel_gateway

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(carousel_gateway.__path__, "carousel_gateway.")
    # protoc's output (``*_pb2``) is committed as generated: a test regenerates it.
    if not info.name.endswith(("__main__", "_pb2"))
)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_lists_names_that_exist(name):
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    assert listed is not None, f"{name} has no __all__"
    missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists {missing}, which it does not define"


@pytest.mark.parametrize("package", ["plc", "sim", "fleet", "api"])
def test_a_sub_package_loads_its_modules_only_when_a_name_is_used(package):
    code = (
        "import sys, importlib\n"
        f"p = importlib.import_module('carousel_gateway.{package}')\n"
        f"loaded = [m for m in sys.modules if m.startswith('carousel_gateway.{package}.')]\n"
        "assert not loaded, loaded\n"
        "for n in p.__all__:\n"
        "    assert getattr(p, n).__name__ == n, n\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
