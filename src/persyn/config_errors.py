"""Config errors that name the key and the line: the messages of `load_config`, and the
cross-section checks (`KeyedProblems`) that carry their own key paths."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


class KeyedProblems(ValueError):
    """Cross-section problems, each with the key path it is about (so errors can show its line)."""

    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))


def format_validation_error(path: Path, text: str, error: ValidationError, root: type[BaseModel]) -> str:
    """The message of a config that failed validation: every problem, each with its key and line."""
    lines = _key_lines(text)
    problems: list[tuple[tuple, str]] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, KeyedProblems):
            # A cross-section check: its problems carry their own key paths (relative to `loc`).
            problems += [(loc + sub, msg) for sub, msg in cause.problems]
            continue
        key = _dotted(loc)
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {key!r}" + _suggest(root, loc)
        elif err["type"] == "missing":
            msg = f"missing required key {key!r}"
        else:
            msg = f"{key}: {err['msg']}" if key else err["msg"]
        problems.append((loc, msg))
    out = [f"{path}: invalid config ({len(problems)} problem{'s' if len(problems) > 1 else ''})"]
    for loc, msg in problems:
        line = _nearest_line(lines, loc)
        where = f"line {line}: " if line else ""
        key = _dotted(loc)
        if key and not msg.startswith((key, "unknown key", "missing required")):
            msg = f"{key}: {msg}"
        out.append(f"  {where}{msg}")
    return "\n".join(out)


def _suggest(root: type[BaseModel], loc: tuple) -> str:
    """A hint for a misspelt key: the closest known key of that section."""
    section: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(section, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                section = cand
                break
            inner = getattr(cand, "__args__", ())
            models = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if models:
                section = models[0]
                break
        else:
            return ""
    known = list(getattr(section, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dotted(loc: tuple) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[tuple, int] = {}

    def walk(node: yaml.Node, loc: tuple) -> None:
        found[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                found[loc + (k.value,)] = k.start_mark.line + 1
                walk_child(v, loc + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk_child(v, loc + (i,))

    def walk_child(node: yaml.Node, loc: tuple) -> None:
        line = found.get(loc)
        walk(node, loc)
        if line is not None:
            found[loc] = line  # keep the key's own line, not its value's

    if root is not None:
        walk(root, ())
    return found


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int | None:
    # A missing key has no line: point at its parent section instead.
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
