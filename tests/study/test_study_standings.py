"""The rule a default is chosen by: per label, its worst shortfall from the best on any recording."""

from __future__ import annotations

from spikebatch.study.results import label_standings


def _case(recording: str, label: str, accuracy: float | None, status: str = "succeeded") -> dict:
    truth = None if accuracy is None else {"accuracy": accuracy}
    return {"recording": recording, "label": label, "status": status, "ground_truth": truth}


def test_the_worst_shortfall_is_the_largest_gap_to_the_best_label_on_one_recording():
    cases = [
        _case("r1", "a", 0.90), _case("r1", "b", 0.95),
        _case("r2", "a", 0.80), _case("r2", "b", 0.70),
        _case("r3", "a", 0.99), _case("r3", "b", 0.99),
    ]  # fmt: skip

    standings = label_standings(cases)

    assert standings["a"] == {
        "recordings_scored": 3,
        "mean_accuracy": round((0.90 + 0.80 + 0.99) / 3, 4),
        "recordings_compared": 3,
        "worst_shortfall": 0.05,
        "worst_recording": "r1",
    }
    assert standings["b"]["worst_shortfall"] == 0.1 and standings["b"]["worst_recording"] == "r2"


def test_recordings_some_label_has_not_scored_are_not_compared():
    cases = [
        _case("r1", "a", 0.90), _case("r1", "b", 0.50),
        _case("r2", "a", None, status="failed"), _case("r2", "b", 0.99),
        _case("r3", "a", None, status="pending"), _case("r3", "b", None, status="pending"),
    ]  # fmt: skip

    standings = label_standings(cases)

    assert standings["a"]["recordings_compared"] == standings["b"]["recordings_compared"] == 1
    assert standings["a"]["worst_shortfall"] == 0.0
    assert standings["b"]["worst_shortfall"] == 0.4
    assert standings["b"]["recordings_scored"] == 2  # its mean counts r2 too
    assert label_standings([_case("r1", "a", None, status="pending")])["a"] == {
        "recordings_scored": 0,
        "mean_accuracy": None,
        "recordings_compared": 0,
        "worst_shortfall": None,
        "worst_recording": None,
    }
