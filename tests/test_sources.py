"""The raw-data registry: verified copies only, clear messages for missing files, graceful chapters."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from musecl.datasets import sources
from musecl.datasets.sources import ChecksumError, DataMissingError


def fake_registry(monkeypatch, content: bytes, note: str = ""):
    table = pd.DataFrame([{"file": "manhattan/x/a.npy", "bytes": str(len(content)),
                           "sha256": hashlib.sha256(content).hexdigest(), "source_repo": "someone/repo",
                           "commit": "0123456789abcdef", "source_path": "data/a.npy", "license": "MIT",
                           "note": note}]).set_index("file", drop=False)
    monkeypatch.setattr(sources, "registry", lambda: table)


def test_registry_lists_every_data_set_file_with_its_source():
    table = sources.registry()
    assert {"file", "sha256", "source_repo", "commit", "source_path"} <= set(table.columns)
    assert len(sources.files_of("manhattan")) == 21 and len(sources.files_of("beijing")) == 93
    assert table["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert not sources.downloadable("manhattan/regiondcl/nyc_tracts_2020.geojson")  # a converted pickle
    with pytest.raises(ValueError, match="unknown data set"):
        sources.files_of("paris")


def test_a_verified_copy_in_the_data_directory_is_used(tmp_path, monkeypatch):
    fake_registry(monkeypatch, b"right bytes")
    (tmp_path / "manhattan/x").mkdir(parents=True)
    (tmp_path / "manhattan/x/a.npy").write_bytes(b"right bytes")
    assert sources.locate("manhattan/x/a.npy", data_dir=tmp_path) == tmp_path / "manhattan/x/a.npy"


def test_a_copy_with_another_sha256_is_rejected(tmp_path, monkeypatch):
    fake_registry(monkeypatch, b"right bytes")
    (tmp_path / "manhattan/x").mkdir(parents=True)
    (tmp_path / "manhattan/x/a.npy").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="sha256 differs.*not used"):
        sources.locate("manhattan/x/a.npy", data_dir=tmp_path)


def test_a_missing_file_names_itself_its_source_and_the_command(tmp_path, monkeypatch):
    fake_registry(monkeypatch, b"right bytes")
    monkeypatch.setenv("MUSECL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataMissingError) as err:
        sources.locate("manhattan/x/a.npy", data_dir=tmp_path / "nowhere", download=False)
    assert all(s in str(err.value) for s in ("manhattan/x/a.npy", "someone/repo", "data/a.npy",
                                             "musecl fetch manhattan", f"{tmp_path / 'nowhere'} does not exist"))


def no_network(tmp_path, monkeypatch) -> list[str]:
    """Downloads allowed but failing, as without a network: the URLs tried, in order."""
    import pooch

    monkeypatch.setenv("MUSECL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MUSECL_OFFLINE", raising=False)
    urls = []

    def offline(url, **kwargs):
        urls.append(url)
        raise ConnectionError("no network")

    monkeypatch.setattr(pooch, "retrieve", offline)
    return urls


def test_a_failed_download_is_a_missing_file_and_a_bad_one_is_rejected(tmp_path, monkeypatch):
    import pooch

    fake_registry(monkeypatch, b"right bytes")
    urls = no_network(tmp_path, monkeypatch)
    with pytest.raises(DataMissingError, match="download from .* failed"):
        sources.locate("manhattan/x/a.npy", data_dir=tmp_path / "nowhere")
    assert urls == ["https://raw.githubusercontent.com/someone/repo/0123456789abcdef/data/a.npy"]

    def wrong_hash(url, **kwargs):
        raise ValueError("SHA256 hash of downloaded file does not match the known hash")

    monkeypatch.setattr(pooch, "retrieve", wrong_hash)
    with pytest.raises(ChecksumError, match="rejected"):
        sources.locate("manhattan/x/a.npy", data_dir=tmp_path / "nowhere")


def test_converted_files_are_never_downloaded(tmp_path, monkeypatch):
    fake_registry(monkeypatch, b"right bytes", note="converted from a Python pickle to GeoJSON")
    urls = no_network(tmp_path, monkeypatch)
    with pytest.raises(DataMissingError, match="cannot be downloaded byte for byte"):
        sources.locate("manhattan/x/a.npy", data_dir=tmp_path / "nowhere")
    assert urls == []  # not even tried


def test_a_chapter_without_its_data_stops_with_a_note_not_an_error(tmp_path, monkeypatch):
    import nbformat

    from musecl.book import execute_chapters

    chapter = tmp_path / "book" / "99_needs_data.py"
    chapter.parent.mkdir()
    chapter.write_text('# %% tags=["parameters"]\ndata_dir = None\n\n'
                       '# %%\nfrom musecl.notebooks import require_data\nfiles = require_data("manhattan", data_dir)\n\n'
                       '# %%\nprint("never reached")\n')
    monkeypatch.setenv("MUSECL_OFFLINE", "1")
    monkeypatch.setenv("MUSECL_CACHE", str(tmp_path / "cache"))
    [executed] = execute_chapters([chapter], tmp_path / "out", {"data_dir": str(tmp_path / "nowhere")},
                                  progress=False)
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    shown = json.dumps(outputs)
    assert "musecl fetch manhattan" in shown and "never reached" not in json.dumps(nb.cells)
    assert nb.metadata["musecl"]["complete"] is False  # executed again once the data is there


def test_a_reader_fetches_only_the_files_it_reads(tmp_path, monkeypatch):
    """Chapter 10 reads 9 of the 21 Manhattan files: a data directory without the others (and
    offline) still serves it; asking for all of them names the missing one."""
    rows = [{"file": f"manhattan/x/{name}.npy", "bytes": "5", "sha256": hashlib.sha256(name.encode()).hexdigest(),
             "source_repo": "someone/repo", "commit": "0123456789abcdef", "source_path": f"data/{name}.npy",
             "license": "MIT", "note": ""} for name in ("a", "b")]
    monkeypatch.setattr(sources, "registry", lambda: pd.DataFrame(rows).set_index("file", drop=False))
    monkeypatch.setenv("MUSECL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "manhattan/x").mkdir(parents=True)
    (tmp_path / "manhattan/x/a.npy").write_bytes(b"a")
    got = sources.fetch("manhattan", data_dir=tmp_path, download=False, progress=False, files=["manhattan/x/a.npy"])
    assert got == {"manhattan/x/a.npy": tmp_path / "manhattan/x/a.npy"}
    with pytest.raises(DataMissingError, match="manhattan/x/b.npy"):
        sources.fetch("manhattan", data_dir=tmp_path, download=False, progress=False)
    with pytest.raises(ValueError, match="not files of the manhattan data set"):
        sources.fetch("manhattan", data_dir=tmp_path, download=False, progress=False, files=["beijing/y.csv"])
