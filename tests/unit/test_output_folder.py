"""rlvr_exp/output_folder.py: which output folders are refused before Hydra makes them, and why."""
from __future__ import annotations

import os

import pytest

from rlvr_exp.output_folder import problem


def test_a_folder_that_can_be_made_passes(tmp_path):
    assert problem(tmp_path) is None  # exists, writable
    assert problem(tmp_path / "a" / "b" / "c") is None  # made later under a writable folder
    assert list(tmp_path.iterdir()) == []  # the check creates nothing


def test_a_file_on_the_way_is_named(tmp_path):
    (tmp_path / "a").write_text("")
    assert problem(tmp_path / "a" / "b" / "c") == f"{tmp_path / 'a'} is a file, not a folder"
    assert problem(tmp_path / "a") == f"{tmp_path / 'a'} is a file, not a folder"  # the folder itself a file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert problem(locked / "run") == f"{locked} is not writable"
    finally:
        locked.chmod(0o700)
