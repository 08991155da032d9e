from __future__ import annotations

import json

import pytest

from judgealign.config import load_config
from judgealign.errors import ConfigError


def test_precedence_defaults_file_env_overrides(tmp_path):
    cfg = tmp_path / "custom.toml"
    cfg.write_text('[lm]\nmodel = "openai/from-file"\nmax_tokens = 100\n[memory]\nk = 5\n')
    s = load_config(cfg, environ={})
    assert (s.lm.model, s.lm.max_tokens, s.memory.k) == ("openai/from-file", 100, 5)
    s = load_config(cfg, environ={"JUDGEALIGN_LM__MODEL": "openai/from-env"})
    assert s.lm.model == "openai/from-env" and s.lm.max_tokens == 100
    s = load_config(cfg, environ={"JUDGEALIGN_LM__MODEL": "openai/from-env"},
                    overrides={"lm": {"model": "openai/from-flag"}, "memory.k": 1})
    assert s.lm.model == "openai/from-flag" and s.memory.k == 1
    assert load_config(None, environ={}).lm.model == "local"


def test_config_file_in_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "judgealign.toml").write_text('[lm]\nmodel = "openai/cwd"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).lm.model == "openai/cwd"


def test_reflection_lm_defaults_to_lm():
    s = load_config(environ={}, overrides={"lm.model": "openai/x"})
    assert s.reflection.model == "openai/x"
    s = load_config(environ={}, overrides={"reflection_lm": {"model": "openai/y"}})
    assert s.reflection.model == "openai/y" and s.lm.model == "local"


def test_malformed_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[lm\nmodel=")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_invalid_values_name_field_and_source(tmp_path):
    cfg = tmp_path / "judgealign.toml"
    cfg.write_text("[lm]\ntemperature = 9\n")
    with pytest.raises(ConfigError, match=r"lm\.temperature.*judgealign\.toml"):
        load_config(cfg, environ={})
    with pytest.raises(ConfigError, match="JUDGEALIGN_MEMORY__K"):
        load_config(None, environ={"JUDGEALIGN_MEMORY__K": "many"})
    with pytest.raises(ConfigError, match="unknown_key"):
        load_config(None, environ={}, overrides={"lm": {"unknown_key": 1}})


def test_no_secret_reaches_serialised_settings(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    s = load_config(environ={}, overrides={"lm": {"model": "openai/gpt-4.1-mini",
                                                  "api_key_env": "MY_KEY"}})
    assert "sk-secret-123" not in json.dumps(s.public_dict())
    with pytest.raises(ConfigError):
        load_config(environ={}, overrides={"lm": {"api_key": "sk-secret-123"}})


def test_environment_reaches_every_section_in_any_case():
    s = load_config(None, environ={"JUDGEALIGN_REFLECTION_LM__MODEL": "openai/reflect",
                                   "judgealign_memory__k": "7",
                                   "JUDGEALIGN_CACHE_DIR": "/not/a/setting",
                                   "JUDGEALIGN_EMBEDDER": '{"kind": "hashing", "dim": 512}'})
    assert s.reflection.model == "openai/reflect" and s.lm.model == "local"
    assert s.memory.k == 7 and s.embedder.dim == 512


def test_file_and_environment_merge_inside_a_section(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lm]\nmodel = "openai/file"\ntemperature = 0.5\n')
    s = load_config(cfg, environ={"JUDGEALIGN_LM__TEMPERATURE": "1.5"},
                    overrides={"lm": {"max_tokens": 9, "model": None}})
    assert (s.lm.model, s.lm.temperature, s.lm.max_tokens) == ("openai/file", 1.5, 9)


def test_loaded_settings_are_plain_settings():
    from judgealign.config import Settings

    s = load_config(None, environ={})
    assert type(s) is Settings and s == Settings()


@pytest.mark.parametrize("environ,named", [
    ({"JUDGEALIGN_LM": "{not json"}, "JUDGEALIGN_LM: a whole section must be a JSON object"),
    ({"JUDGEALIGN_LMM__MODEL": "x"}, "JUDGEALIGN_LMM__MODEL: no settings section 'lmm'"),
    ({"JUDGEALIGN_LM__TEMPERATURE": "hot"}, "JUDGEALIGN_LM__TEMPERATURE: "),
])
def test_environment_errors_name_the_variable(environ, named):
    with pytest.raises(ConfigError) as err:
        load_config(None, environ=environ)
    assert named in str(err.value) and "(from environment)" in str(err.value)


def test_config_path_problems_are_named(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="dir.toml is a folder"):
        load_config(tmp_path / "dir.toml", environ={})
    with pytest.raises(ConfigError, match="given both as a value and as a section"):
        load_config(None, environ={}, overrides={"lm": "x", "lm.model": "y"})
