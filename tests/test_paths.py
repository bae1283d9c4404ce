"""Data-dir resolution: environment variable first, then the shared folder beside the repo."""

import pytest

from aetheris import paths
from aetheris.paths import DataDirNotFoundError, data_path, shared_data_dir


def test_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("AETHERIS_DATA_DIR", str(tmp_path))
    assert shared_data_dir() == tmp_path


def test_env_var_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AETHERIS_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataDirNotFoundError) as err:
        shared_data_dir()
    assert "AETHERIS_DATA_DIR" in str(err.value) and str(tmp_path / "missing") in str(err.value)


def test_default_is_shared_data_beside_the_repo(monkeypatch):
    monkeypatch.delenv("AETHERIS_DATA_DIR", raising=False)
    assert paths.DEFAULT_DATA_DIR == paths.REPO_ROOT.parent / "shared" / "data"
    assert (paths.REPO_ROOT / "src" / "aetheris" / "paths.py").is_file()
    if paths.DEFAULT_DATA_DIR.is_dir():
        assert shared_data_dir() == paths.DEFAULT_DATA_DIR


def test_missing_default_names_env_var_and_default(tmp_path, monkeypatch):
    monkeypatch.delenv("AETHERIS_DATA_DIR", raising=False)
    monkeypatch.setattr(paths, "DEFAULT_DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        shared_data_dir()
    assert "AETHERIS_DATA_DIR" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)


def test_data_path_finds_files(tmp_path, monkeypatch):
    (tmp_path / "xcopa" / "data").mkdir(parents=True)
    monkeypatch.setenv("AETHERIS_DATA_DIR", str(tmp_path))
    assert data_path("xcopa", "data") == tmp_path / "xcopa" / "data"


def test_data_path_missing_names_path_and_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("AETHERIS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        data_path("mgsm", "mgsm_sw.tsv", hub_id="juletxara/mgsm")
    message = str(err.value)
    assert str(tmp_path / "mgsm" / "mgsm_sw.tsv") in message and "juletxara/mgsm" in message
    with pytest.raises(FileNotFoundError) as err:
        data_path("mgsm", "mgsm_sw.tsv")
    assert "hub" not in str(err.value)


def test_data_path_without_data_dir_still_names_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("AETHERIS_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="cambridgeltl/xcopa"):
        data_path("xcopa", hub_id="cambridgeltl/xcopa")


def test_real_shared_data_is_reachable():
    # CI and this machine keep shared/ beside the repository; the loaders depend on it.
    assert data_path("flores_sib200", "annotated", "swh_Latn", "test.tsv").is_file()
