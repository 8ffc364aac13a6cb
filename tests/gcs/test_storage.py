"""gs:// transfers against a real emulator: checksums, retries, atomic publishing."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from oasis_vqvae import storage
from oasis_vqvae.errors import DataError
from tests.gcs.conftest import make_bucket, start_emulator


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_download_of_one_object_and_of_a_prefix(bucket, tmp_path):
    files = {"a.bin": os.urandom(300_000), "sub/b.txt": b"hello", "sub/deeper/c": b"x" * 10}
    for name, data in files.items():
        bucket.blob(f"folder/{name}").upload_from_string(data)
    one = storage.download(f"gs://{bucket.name}/folder/a.bin", tmp_path / "one")
    assert one == tmp_path / "one" / "a.bin" and one.read_bytes() == files["a.bin"]
    root = storage.download(f"gs://{bucket.name}/folder", tmp_path / "all")
    assert root == tmp_path / "all" / "folder"
    assert _files(root) == files
    assert not list((tmp_path / "all").rglob(".*part-*")), "no temporary files stay behind"


def test_missing_object_or_bucket_is_a_clear_error(bucket, tmp_path):
    with pytest.raises(DataError, match="no such object or prefix"):
        storage.download(f"gs://{bucket.name}/nothing/here", tmp_path)
    with pytest.raises(DataError, match="no such bucket"):
        storage.download("gs://no-such-bucket-anywhere/x", tmp_path)


def test_checksum_mismatch_fails_clearly_and_leaves_no_file(bucket, gcs_emulator, tmp_path):
    data = os.urandom(100_000)
    bucket.blob("model.keras").upload_from_string(data)
    # Damage the stored bytes behind the emulator's back: same size, the CRC32C no longer fits.
    stored = gcs_emulator.object_file(bucket.name, "model.keras")
    assert stored.read_bytes() == data
    stored.write_bytes(bytes(255 - b for b in data))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"model\.keras: checksum mismatch, download discarded"):
        storage.download(f"gs://{bucket.name}/model.keras", dest)
    assert list(dest.iterdir()) == [], "neither the file nor a partial download is left"


def test_download_is_retried_while_the_emulator_restarts(tmp_path, free_port, monkeypatch):
    emulator = start_emulator(tmp_path / "data", free_port())
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        data = os.urandom(4_000_000)
        make_bucket("flaky").blob("big.bin").upload_from_string(data)
        emulator.stop()
        outcome: dict[str, object] = {}

        def fetch() -> None:
            try:
                outcome["path"] = storage.download("gs://flaky/big.bin", tmp_path / "dest")
            except Exception as err:  # reported by the assertion below
                outcome["error"] = err

        thread = threading.Thread(target=fetch)
        thread.start()
        time.sleep(1.0)
        # Nothing can be downloaded while the emulator is down: the client is retrying.
        assert thread.is_alive() and not outcome
        emulator.start()  # same port, same data directory
        thread.join(timeout=storage.RETRY_TIMEOUT_S)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert Path(outcome["path"]).read_bytes() == data
    finally:
        emulator.stop()


def test_upload_directory_publishes_files_then_the_marker(bucket, tmp_path):
    uri = f"gs://{bucket.name}/runs/model"
    first = _tree(tmp_path / "v1", {"a": b"one", "old/b": b"stale"})
    storage.upload_directory(first, uri)
    second = _tree(tmp_path / "v2", {"a": b"two", "new/c": os.urandom(50_000)})
    storage.upload_directory(second, uri)

    names = sorted(blob.name for blob in bucket.list_blobs(prefix="runs/model/"))
    assert names == ["runs/model/_COMPLETE.json", "runs/model/a", "runs/model/new/c"]
    marker = json.loads(bucket.blob(f"runs/model/{storage.MARKER}").download_as_bytes())
    assert sorted(marker["files"]) == ["a", "new/c"]
    for name, entry in marker["files"].items():
        blob = bucket.get_blob(f"runs/model/{name}")
        assert (entry["generation"], entry["crc32c"]) == (blob.generation, blob.crc32c)
    # The marker is the last object written: newer than every file it lists.
    marker_generation = bucket.get_blob(f"runs/model/{storage.MARKER}").generation
    assert all(entry["generation"] < marker_generation for entry in marker["files"].values())
    assert _files(storage.download(uri, tmp_path / "back")) == _files(second)


def test_a_reader_refuses_a_directory_changed_after_its_marker(bucket, tmp_path):
    uri = f"gs://{bucket.name}/dataset"
    storage.upload_directory(_tree(tmp_path / "v1", {"x": b"1", "y": b"2"}), uri)
    bucket.blob("dataset/y").upload_from_string(b"rewritten by a writer still at work")
    with pytest.raises(DataError, match="changed while read"):
        storage.download(uri, tmp_path / "back")


def test_an_output_needs_a_folder_below_the_bucket():
    with (
        pytest.raises(DataError, match="needs a folder below the bucket"),
        storage.staged_output("gs://bucket-only"),
    ):
        pass
