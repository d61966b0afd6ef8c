"""The documentation: generated reference pages follow the code; links resolve.

GIVEN the models and the CLI, WHEN the reference pages are rendered, THEN each field's
description (one home, in the code) is what the page says, so a change there changes the
page with no second edit. And every internal link of README.md and docs/ finds its file
and its heading (GitHub's slug), so the split README keeps pointing where it meant.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


# ---- links --------------------------------------------------------------------------------
def _prose(text: str) -> str:
    """The text outside fenced code blocks and code spans: where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def github_slugs(text: str) -> set[str]:
    """Heading anchors as GitHub makes them (lower case, punctuation dropped, '-' for ' ')."""
    slugs: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose_keep_spans(text), flags=re.M):
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")
        slug, n = base, 0
        while slug in slugs:
            n += 1
            slug = f"{base}-{n}"
        slugs.add(slug)
    return slugs


def _prose_keep_spans(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def internal_links(path: Path) -> list[str]:
    """Links that are not to the web: files in the repository and anchors."""
    links = _LINK.findall(_prose(path.read_text()))
    return [link for link in links if not re.match(r"^[a-z]+:", link)]


def _sources() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("source", _sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_internal_links_and_anchors_resolve(source: Path) -> None:
    broken = []
    for link in internal_links(source):
        target, _, anchor = link.partition("#")
        if source.parent == DOCS and target in gen.PAGES:
            continue  # a generated page: mkdocs build --strict checks its anchors
        path = (source.parent / target) if target else source
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and anchor not in github_slugs(path.read_text()):
            broken.append(f"{link}: no heading with that anchor in {path.name}")
    assert not broken, "\n".join(broken)


def test_the_slugs_are_githubs() -> None:
    text = "# Scratch: budgeted, freed, never shared\n## `make demo`\n## Ground truth and SpikeForest's files\n"
    assert github_slugs(text) == {
        "scratch-budgeted-freed-never-shared",
        "make-demo",
        "ground-truth-and-spikeforests-files",
    }


def test_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.startswith("make demo") and "\nmake test" in first_block
    assert "](docs/run-page.png)" in readme


# ---- generated pages ----------------------------------------------------------------------
class _Throwaway(BaseModel):
    knob: int = Field(3, ge=1, le=9, description="how hard to turn it")


def test_a_description_change_changes_the_page_with_no_second_edit() -> None:
    page = gen.settings_page(_Throwaway)
    assert "| `knob` | int | `3` | ≥ 1, ≤ 9 | how hard to turn it |" in page

    class Changed(BaseModel):
        knob: int = Field(3, ge=1, le=9, description="turn it gently")

    assert "turn it gently" in gen.settings_page(Changed)
    assert "how hard" not in gen.settings_page(Changed)


@pytest.mark.parametrize(
    ("page", "model_path", "field"),
    [
        ("worker_env_page", "spikebatch.worker.settings:WorkerSettings", "max_duration_s"),
        ("request_page", "spikebatch.control.request:JobRequest", "max_cost_usd"),
        ("settings_page", "stacks.config:SpikeBatchConfig", "max_vcpus"),
    ],
)
def test_each_page_reads_its_models_descriptions(
    monkeypatch: pytest.MonkeyPatch, page: str, model_path: str, field: str
) -> None:
    module, _, name = model_path.partition(":")
    model = getattr(importlib.import_module(module), name)
    info = model.model_fields[field]
    assert info.description and info.description.split("(")[0].strip() in getattr(gen, page)()
    monkeypatch.setattr(info, "description", "a description only this test wrote")
    assert "a description only this test wrote" in getattr(gen, page)()


@pytest.mark.parametrize(
    "model_path",
    [
        "spikebatch.worker.settings:WorkerSettings",
        "spikebatch.control.request:JobRequest",
        "spikebatch.control.request:Resources",
        "stacks.config:SpikeBatchConfig",
    ],
)
def test_every_field_is_described(model_path: str) -> None:
    module, _, name = model_path.partition(":")
    model = getattr(importlib.import_module(module), name)
    assert not [n for n, f in model.model_fields.items() if not f.description]


def test_every_worker_variable_is_on_its_page() -> None:
    from spikebatch.contract import Env

    page = gen.worker_env_page()
    assert not [e.value for e in Env if f"| `{e.value}` |" not in page]
    assert "| `SPIKEBATCH_LOG_LEVEL` | `INFO` |" in page
    assert "| `OUTPUT_URI` | str | required |" in page


def test_request_page_expands_resources() -> None:
    page = gen.request_page()
    assert "| `resources.spot` | bool | `true` |" in page
    assert "| `resources.timeout_hours` |" in page


def test_cli_page_has_every_command_option_and_env_var() -> None:
    import typer.main

    from spikebatch.cli.app import app

    page = gen.cli_page()
    root = typer.main.get_command(app)
    names = [path for path, _ in gen._commands(root, "spikebatch")]
    assert "spikebatch campaign status" in names and "spikebatch submit" in names
    assert not [n for n in names if f"`{n}`" not in page]
    assert "`SPIKEBATCH_STACK`" in page and "`--max-cost`" in page
