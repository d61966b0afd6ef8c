"""Reference pages built from the code, so they cannot drift from it.

The cdk.json settings, the worker's environment variables, the request file's keys and the
CLI are documented once, where they are defined: in the pydantic fields' ``description``
(plus ``json_schema_extra={"unset": ...}`` where an unset value means more than its default)
and in the typer options' ``help``. ``make docs`` renders them through the MkDocs hook
(``docs/hooks.py``); ``python docs/gen_reference.py DIR`` writes them as files.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script or a MkDocs hook: the repository's packages
    sys.path.insert(0, str(ROOT))

_CONSTRAINTS = {
    annotated_types.Ge: ("≥", "ge"),
    annotated_types.Gt: (">", "gt"),
    annotated_types.Le: ("≤", "le"),
    annotated_types.Lt: ("<", "lt"),
    annotated_types.MinLen: ("length ≥", "min_length"),
    annotated_types.MaxLen: ("length ≤", "max_length"),
}


# ---- cells -----------------------------------------------------------------------------
def _cell(text: str) -> str:
    """One Markdown table cell: pipes escaped, no line breaks."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    return f"`{value}`"


def type_name(annotation: Any) -> str:
    """A field's type as a reader knows it: `int`, `"retain" | "destroy"`, `list[str] | null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return "object" if issubclass(annotation, BaseModel) else annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field: FieldInfo) -> str:
    """What an unset field means: the field's ``unset`` note, else its default value."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "unset" in extra:
        return str(extra["unset"])
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:  # a factory of the other fields: it says so in its unset note
            return "computed"
        return _code(value.model_dump() if isinstance(value, BaseModel) else value)
    if field.default is None or field.default is PydanticUndefined:
        return "—"
    return _code(str(field.default).lower() if isinstance(field.default, bool) else field.default)


def constraint_text(field: FieldInfo) -> str:
    """The field's numeric, length and pattern bounds, as they read."""
    parts = []
    for item in field.metadata:
        for kind, (label, attr) in _CONSTRAINTS.items():
            if isinstance(item, kind):
                bound = getattr(item, attr)
                parts.append(f"{label} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _field_rows(
    model: type[BaseModel], *, prefix: str = "", expand: tuple[str, ...] = ()
) -> Iterator[tuple[str, FieldInfo]]:
    """Every field as (dotted key, field); the ``expand`` ones become their sub-fields."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        if name in expand and isinstance(field.annotation, type):
            yield from _field_rows(field.annotation, prefix=f"{key}.")
        else:
            yield key, field


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def model_table(model: type[BaseModel], *, key: str, expand: tuple[str, ...] = ()) -> str:
    """A model's fields as a Markdown table: name, type, default, constraint, description."""
    rows = [
        [
            _code(name),
            type_name(field.annotation),  # plain text: a code span would show the escaped |
            default_text(field),
            constraint_text(field),
            field.description or "",
        ]
        for name, field in _field_rows(model, expand=expand)
    ]
    return _table([key, "type", "default", "constraint", "meaning"], rows)


# ---- pages -----------------------------------------------------------------------------
_GENERATED = (
    "<!-- Generated by docs/gen_reference.py from {source} at `make docs` time: edit the "
    "descriptions (field descriptions, option help) there, not this page. -->\n\n"
)


def settings_page(model: type[BaseModel] | None = None) -> str:
    """The cdk.json ``context.spikebatch`` settings, from the stack's config model."""
    if model is None:
        from stacks.config import SpikeBatchConfig as model
    return (
        "# cdk.json settings\n\n"
        + _GENERATED.format(source="`stacks/config.py` (`SpikeBatchConfig`)")
        + "The settings live in `cdk.json` under `context.spikebatch`; override one per deploy "
        "with `-c spikebatch:<key>=<value>` (see [Configuration](deploy.md#configuration)). "
        "Unknown keys are errors.\n\n" + model_table(model, key="key")
    )


def worker_env_page(model: type[BaseModel] | None = None, outer: tuple = ()) -> str:
    """The worker's environment variables, from ``WorkerSettings`` (alias = variable)."""
    if model is None:
        from spikebatch.worker.settings import OUTER_VARIABLES, WorkerSettings

        model, outer = WorkerSettings, OUTER_VARIABLES
    rows = [[_code(v.name), v.unset, v.description] for v in outer]
    return (
        "# Worker environment variables\n\n"
        + _GENERATED.format(source="`spikebatch/worker/settings.py` (`WorkerSettings`)")
        + "How they are validated, and which source to give: "
        "[Environment variables](worker.md#environment-variables).\n\n"
        + model_table(model, key="variable")
        + "\nRead outside the model (before validation, or by the job's logging):\n\n"
        + _table(["variable", "default", "meaning"], rows)
    )


def request_page(model: type[BaseModel] | None = None) -> str:
    """The job-request file's keys, from ``JobRequest``."""
    if model is None:
        from spikebatch.control.request import JobRequest as model
    return (
        "# Request file keys\n\n"
        + _GENERATED.format(source="`spikebatch/control/request.py` (`JobRequest`)")
        + "The file itself, an example and what happens to it: "
        "[The request file](submit.md#the-request-file).\n\n"
        + model_table(model, key="key", expand=("resources",))
    )


# typer carries its own copy of click: its objects are read by their attributes.
def _param_row(param: Any) -> list[str]:
    names = ", ".join(_code(o) for o in [*param.opts, *param.secondary_opts])
    if param.param_type_name == "argument":
        names = _code((param.metavar or param.name).upper())
    envvar = param.envvar if isinstance(param.envvar, str) else ", ".join(param.envvar or ())
    default = param.default
    shown = "" if default in (None, ()) or callable(default) or param.required else _code(default)
    if getattr(param, "is_flag", False) and not param.secondary_opts:
        shown = "" if not default else _code(default)
    help_text = getattr(param, "help", None) or ""
    return [
        names,
        "required" if param.required else shown,
        _code(envvar) if envvar else "",
        help_text,
    ]


def _commands(group: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every command under ``group``, depth first, by its full name."""
    yield path, group
    if hasattr(group, "commands"):
        for name in group.commands:  # in the order the app adds them
            yield from _commands(group.commands[name], f"{path} {name}")


def cli_page(app: Any = None) -> str:
    """Every command of the typer app, with its options, defaults, env vars and help."""
    import typer.main

    if app is None:
        from spikebatch.cli.app import app
    root = typer.main.get_command(app)
    parts = [
        "# CLI reference\n\n",
        _GENERATED.format(source="the typer app (`spikebatch/cli/`)"),
        "Precedence, everywhere: flag > environment variable > `--request` file > default. "
        "The commands in use: [Submit, follow, fetch](submit.md#the-cli).\n\n",
    ]
    for path, command in _commands(root, "spikebatch"):
        level = "#" * min(2 + path.count(" ") - 1, 4) if " " in path else "##"
        parts.append(f"{level} `{path}`\n\n{(command.help or '').strip()}\n\n")
        params = [p for p in command.params if p.name != "help"]
        if params and not hasattr(command, "commands"):
            rows = [_param_row(p) for p in params]
            parts.append(_table(["option", "default", "env var", "help"], rows) + "\n")
    return "".join(parts)


PAGES: dict[str, Callable[[], str]] = {
    "cdk-json.md": settings_page,
    "worker-env.md": worker_env_page,
    "request-keys.md": request_page,
    "cli.md": cli_page,
}
"""Generated page (path under docs/) -> its builder."""


def main(argv: list[str]) -> int:
    """Write every page into the folder given (for reading them without MkDocs)."""
    out = Path(argv[0]) if argv else ROOT / "site" / "reference"
    out.mkdir(parents=True, exist_ok=True)
    for name, build in PAGES.items():
        (out / name).write_text(build())
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
