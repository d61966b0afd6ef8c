"""What decides whether a rerun may reuse the sort an earlier failed run kept."""

from __future__ import annotations

import copy
from typing import Any

from spikebatch.worker.kept_sort import sort_identity

RECORD: dict[str, Any] = {
    "input": {
        "source": "dandi:000999/draft/sub-1/sub-1_ecephys.nwb",
        "size": 1_000,
        "digest": {"name": "dandi-etag", "value": "abc-1", "verified": True},
        "download_s": 1.2,
        "n_channels": 384,
        "duration_s": 3600.0,
    },
    "settings": {"SORT_BY_GROUP": False, "OUTPUT_URI": "s3://b/results", "PHY_PC_FEATURES": True},
    "sorter": {"name": "kilosort4", "version": "4.1.7", "params": {"Th_universal": 9}},
    "preprocessing": {"steps": {"phase_shift": {}}, "applied": ["phase_shift"]},
    "versions": {"spikeinterface": "0.105.3"},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    record = copy.deepcopy(RECORD)
    *parents, last = path.split(".")
    node = record
    for key in parents:
        node = node[key]
    node[last] = value
    return record


def test_what_acts_after_the_sort_does_not_change_it() -> None:
    same = sort_identity(RECORD)
    assert same is not None
    assert sort_identity(_with("input.download_s", 9.9)) == same
    assert sort_identity(_with("settings.OUTPUT_URI", "s3://other/x")) == same
    assert sort_identity(_with("settings.PHY_PC_FEATURES", False)) == same


def test_what_decides_the_sort_changes_it() -> None:
    same = sort_identity(RECORD)
    for path, value in [
        ("input.digest", {"name": "dandi-etag", "value": "abc-2", "verified": True}),
        ("sorter.version", "4.1.8"),
        ("sorter.params", {"Th_universal": 8}),
        ("preprocessing.applied", []),
        ("settings.SORT_BY_GROUP", True),
        ("versions.spikeinterface", "0.106.0"),
    ]:
        assert sort_identity(_with(path, value)) != same, path


def test_an_input_not_verified_is_never_the_same() -> None:
    assert sort_identity(_with("input.digest", {"name": None, "value": None})) is None
    files = [
        {"path": "a.ap.bin", "digest": {"name": "s3-etag", "value": "x"}, "verified": True},
        {"path": "a.ap.meta", "digest": {"name": None, "value": None}, "verified": False},
    ]
    assert sort_identity(_with("input.files", files)) is None
    files[1] = {**files[1], "digest": {"name": "s3-etag", "value": "y"}, "verified": True}
    assert sort_identity(_with("input.files", files)) is not None
