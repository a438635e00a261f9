"""The [inputs.etw] table: decoded with its providers, refused off Windows, an input of its own."""

from __future__ import annotations

import sys

import pytest

from agent.config import load_config
from common.errors import ConfigError


def _load(tmp_path, text: str):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(text)
    return load_config(str(cfg), environ={})


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal off Windows")
def test_etw_is_a_config_error_off_windows_and_counts_as_an_input(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[inputs.etw]\n[[inputs.etw.providers]]\nprovider = "Microsoft-Windows-DNS-Client"\n')
    assert info.value.problems == [f"inputs.etw: the ETW input is Windows-only (this is {sys.platform})"]


def test_etw_keys_are_checked_like_every_other(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[inputs.etw]\nsesion = "x"\n[[inputs.etw.providers]]\nlevel = 300\n')
    text = "\n".join(info.value.problems)
    assert "inputs.etw.sesion: unknown key (did you mean 'session'?)" in text
    assert "inputs.etw.providers[0].provider: missing (required)" in text
    assert "inputs.etw.providers[0].level" in text
