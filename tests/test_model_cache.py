"""Derived model files (an ONNX export, a GGUF model's float32 copy) are built once per key,
completely or not at all, with normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from deconfoundlm.features.model_cache import cached_folder


def _writer(calls: list, text: str = "weights"):
    def build(folder):
        calls.append(folder)
        (folder / "sub").mkdir()
        (folder / "sub" / "tokenizer.json").write_text("{}")
        path = folder / "model.bin"
        path.write_text(text)
        os.chmod(path, 0o600)  # as some writers leave their files
    return build


def test_a_folder_is_built_once_and_reused_with_normal_permissions(tmp_path):
    calls = []
    umask = os.umask(0o022)
    try:
        first = cached_folder(tmp_path / "kind", "key1", "model.bin", _writer(calls))
        again = cached_folder(tmp_path / "kind", "key1", "model.bin", _writer(calls, "other"))
    finally:
        os.umask(umask)
    assert first == again == tmp_path / "kind" / "key1" and len(calls) == 1
    assert (first / "model.bin").read_text() == "weights"
    assert stat.S_IMODE((first / "model.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE(first.stat().st_mode) == stat.S_IMODE((first / "sub").stat().st_mode) == 0o755
    assert sorted(p.name for p in (tmp_path / "kind").iterdir()) == ["key1"]  # no temporary left
    other = cached_folder(tmp_path / "kind", "key2", "model.bin", _writer(calls))
    assert other != first and len(calls) == 2


def test_a_failed_build_leaves_nothing_and_is_retried(tmp_path):
    def broken(folder):
        (folder / "model.bin").write_text("half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        cached_folder(tmp_path / "kind", "key", "model.bin", broken)
    assert list((tmp_path / "kind").iterdir()) == []
    calls = []
    assert (cached_folder(tmp_path / "kind", "key", "model.bin", _writer(calls)) / "model.bin").read_text() == "weights"
    assert len(calls) == 1


def test_an_unusable_cache_directory_builds_for_this_process(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    calls = []
    folder = cached_folder(blocker / "kind", "key", "model.bin", _writer(calls))
    assert (folder / "model.bin").read_text() == "weights" and len(calls) == 1
    assert blocker.is_file()
