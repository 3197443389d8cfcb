"""Room to write (io.space): permission and free space checked before a run, and a write's reason in
a few words, whatever library raised it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from snrmoe_dask.errors import InputError
from snrmoe_dask.io.space import Need, check_room, nearest_folder, reason


def test_nearest_folder_is_the_first_that_exists(tmp_path):
    assert nearest_folder(tmp_path / "a" / "b" / "c.md") == tmp_path.resolve()
    (tmp_path / "a").mkdir()
    assert nearest_folder(tmp_path / "a" / "c.md") == (tmp_path / "a").resolve()


def test_needs_on_one_file_system_add_up(tmp_path, monkeypatch):
    # 3/5 of the free space each: the margins absorb what other processes write or delete meanwhile
    share = shutil.disk_usage(tmp_path).free * 3 // 5
    check_room([Need("a", tmp_path / "x", share)])  # each fits alone
    with pytest.raises(InputError) as err:
        check_room([Need("a", tmp_path / "x", share), Need("b", tmp_path / "sub" / "y", share)])
    message = str(err.value)
    assert message.startswith(f"a {tmp_path / 'x'}: ") and "(with b)" in message and "\n" not in message


def test_an_appended_file_needs_no_writable_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    check_room([Need("--log", tmp_path / "run.log", 10, appends=True)])
    with pytest.raises(InputError, match=f"--log {tmp_path / 'run.log'}: cannot write in {tmp_path.resolve()} "
                                         r"\(Permission denied\)"):
        check_room([Need("--log", tmp_path / "run.log", 10)])


@pytest.mark.parametrize("exc, expected", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError("Unable to synchronously create file (file write failed: time = Thu Dec  3 2026\n, filename = 'x.h5', "
             "file descriptor = 3, errno = 28, error message = 'No space left on device', buf = 0x1)"),
     os.strerror(errno.ENOSPC)),  # h5py: no errno attribute, the C library's report over two lines
    (RuntimeError("NetCDF: HDF error\nmore"), "NetCDF: HDF error"),
    (OSError(), "OSError"),
])
def test_reason_is_a_few_words(exc, expected):
    assert reason(exc) == expected


def test_a_path_under_a_file_is_left_to_its_writer(tmp_path):
    (tmp_path / "f").write_text("x")
    check_room([Need("output.dir", Path(tmp_path / "f" / "res"), 10)])  # the output.dir check names it
