"""The worker's instance facts: the user data's file first, IMDS only without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikebatch.worker import instance


@pytest.fixture
def no_imds(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("IMDS must not be asked when the facts file is there")

    monkeypatch.setattr(instance, "_from_imds", refuse)


def _facts(tmp_path: Path, **facts: str) -> Path:
    path = tmp_path / "instance.json"
    path.write_text(json.dumps(facts))
    return path


def test_facts_file_gives_type_and_spot_without_imds(tmp_path, no_imds):
    path = _facts(tmp_path, instance_type="g5.xlarge", instance_life_cycle="spot")
    info = instance.detect_instance(None, facts_file=path)
    assert info == instance.InstanceInfo("g5.xlarge", spot=True, source="file")


def test_env_type_wins_and_the_file_still_says_on_demand(tmp_path, no_imds):
    path = _facts(tmp_path, instance_type="g5.xlarge", instance_life_cycle="on-demand")
    info = instance.detect_instance("g4dn.xlarge", facts_file=path)
    assert info == instance.InstanceInfo("g4dn.xlarge", spot=False, source="env")


def test_an_empty_type_in_the_file_reads_as_unknown(tmp_path, no_imds):
    path = _facts(tmp_path, instance_type="", instance_life_cycle="")
    assert instance.detect_instance(None, facts_file=path).instance_type is None


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_without_a_readable_file_it_falls_back_to_imds(tmp_path, monkeypatch, content):
    path = tmp_path / "instance.json"
    if content is not None:
        path.write_text(content)
    asked: list[str | None] = []
    fallback = instance.InstanceInfo(None, spot=False, source="unknown")
    monkeypatch.setattr(instance, "_from_imds", lambda t: asked.append(t) or fallback)
    assert instance.detect_instance(None, facts_file=path) is fallback
    assert asked == [None]
