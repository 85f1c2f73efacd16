"""Process tuning: the allocator setting the service and the extraction workers apply."""

from __future__ import annotations

import platform
import sys

import pytest

from speech_emotion.runtime import retain_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_allocator_thresholds_are_applied_on_glibc():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent
