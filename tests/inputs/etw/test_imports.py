"""Every module of the ETW input and of the Windows layers imports here, on Linux (pywintrace's
trap: a module that touches ctypes.WinDLL at import cannot even be collected on Linux). The other
way round, every module of the project importing with Windows as the platform, is
tests/agent/test_windows_imports.py."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import agent.platforms
import inputs.etw

MODULES = sorted({m.name for pkg in (inputs.etw, agent.platforms)
                  for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")}
                 | {"common._shm_windows"})


def test_the_walk_finds_the_modules():
    assert {"inputs.etw.api", "inputs.etw.session", "agent.platforms.windows",
            "agent.platforms.windows_child"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_here(name):
    importlib.import_module(name)


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal off Windows")
def test_loading_the_windows_api_here_is_a_project_error():
    from inputs.etw.api import load
    from inputs.etw.errors import EtwUnavailable

    with pytest.raises(EtwUnavailable, match="Windows"):
        load()
