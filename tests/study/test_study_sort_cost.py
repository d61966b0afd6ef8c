"""A study compares sorters on what their sorts cost: a case rerun after a failure that
reused its sort (``kept_sort``) reports the reused sort's seconds, not the rerun's zero."""

from __future__ import annotations

from spikebatch.study.results import _sort_cost


def test_a_reused_sort_counts_what_it_cost() -> None:
    record = {"sort_reused": {"sort_s": 3094.5, "cpu_s": 5800.0, "parts": [None]}}
    assert _sort_cost(record, 0.01, "sort_s") == 3094.51
    assert _sort_cost(record, None, "cpu_s") == 5800.0


def test_a_sort_that_ran_counts_its_own_time() -> None:
    assert _sort_cost({}, 61.2, "sort_s") == 61.2
    assert _sort_cost({"sort_reused": {"sort_s": None}}, 61.2, "sort_s") == 61.2
