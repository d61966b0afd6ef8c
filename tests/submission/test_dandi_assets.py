"""Asset resolution against the fake DANDI archive (the same REST endpoints the dandi client uses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikebatch.control import dandi_assets
from spikebatch.control.dandi_assets import (
    DandiLookupError,
    DandiUnavailableError,
    get_assets,
    glob_assets,
)
from tests.support.dandi_server import FakeDandiArchive


def test_glob_follows_pagination_and_sorts_by_path(archive: FakeDandiArchive) -> None:
    found = glob_assets("000409", "draft", "sub-*/*.nwb", api_url=archive.api_url)
    assert [a.path for a in found] == [f"sub-{i}/sub-{i}_ecephys.nwb" for i in (1, 2, 3)]
    assert [a.size for a in found] == [60 * 240_000, 120 * 240_000, 30 * 240_000]


def test_paths_are_checked_one_by_one_or_by_one_listing(
    archive: FakeDandiArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = ["sub-3/sub-3_ecephys.nwb", "sub-1/sub-1_ecephys.nwb"]
    assert [a.path for a in get_assets("000409", "draft", paths, api_url=archive.api_url)] == paths
    monkeypatch.setattr(dandi_assets, "FEW_PATHS", 1)
    assert [a.path for a in get_assets("000409", "draft", paths, api_url=archive.api_url)] == paths
    with pytest.raises(DandiLookupError, match=r"not in dandiset 000409 \(draft\): sub-9/x\.nwb"):
        get_assets("000409", "draft", [*paths, "sub-9/x.nwb"], api_url=archive.api_url)


def test_unknown_dandisets_and_versions_are_named_with_the_archives_answer(
    archive: FakeDandiArchive, tmp_path: Path
) -> None:
    with pytest.raises(DandiLookupError) as missing:
        glob_assets("000999", "draft", "*", api_url=archive.api_url)
    assert missing.value.field == "dandiset_id"
    assert str(missing.value) == (
        f"dandiset 000999 does not exist on {archive.api_url}"
        " (DANDI: No Dandiset matches the given query.)"
    )
    with pytest.raises(DandiLookupError) as unpublished:
        get_assets("000409", "0.230101.0000", ["sub-1/sub-1_ecephys.nwb"], api_url=archive.api_url)
    assert unpublished.value.field == "version"
    assert str(unpublished.value) == (
        f"dandiset 000409 has no published version '0.230101.0000' on {archive.api_url}"
        " (DANDI: No Version matches the given query.); it has none, or use 'draft'"
    )
    recording = tmp_path / "r.nwb"
    recording.write_bytes(b"\0" * 100)
    archive.add_asset("000411", "sub-1/r.nwb", recording, version="0.240101.0001")
    with pytest.raises(DandiLookupError, match=r"its latest published version is 0\.240101\.0001"):
        glob_assets("000411", "0.240101.0002", "*", api_url=archive.api_url)


def test_an_archive_that_cannot_answer_is_told_apart_from_a_missing_dandiset() -> None:
    """Unreachable or failing: worth retrying (DandiUnavailableError), not a bad request."""
    with FakeDandiArchive() as gone:
        url = gone.api_url
    with pytest.raises(DandiUnavailableError, match="cannot reach the DANDI API"):
        glob_assets("000409", "draft", "*", api_url=url)


def test_embargoed_dandisets_need_the_key(tmp_path: Path) -> None:
    recording = tmp_path / "r.nwb"
    recording.write_bytes(b"\0" * 1000)
    with FakeDandiArchive(token="s3cret") as archive:
        archive.add_asset("000410", "sub-1/r.nwb", recording, embargoed=True)
        with pytest.raises(DandiLookupError, match=r"DANDI refused access \(401\)"):
            glob_assets("000410", "draft", "*.nwb", api_url=archive.api_url)
        found = glob_assets("000410", "draft", "*/*.nwb", api_url=archive.api_url, token="s3cret")
        assert [a.path for a in found] == ["sub-1/r.nwb"]
