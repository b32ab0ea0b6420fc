"""storage_svc's allocator setting."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from storage_svc import memory


def test_glibc_takes_a_fixed_mmap_threshold() -> None:
    # The machines this runs on use glibc: the setting must take.
    assert memory.release_large_buffers()


def test_no_c_library_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert not memory.release_large_buffers()


def test_a_library_without_mallopt_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())
    assert not memory.release_large_buffers()
