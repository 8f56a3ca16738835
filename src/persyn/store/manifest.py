"""The manifest of a run directory (`manifest.json`): which config made it.

    manifest = reconcile_manifest(run_dir, config_dict, force=False)

A new directory records the config (environment variable *names*, never keys: a config holding a
secret is refused before anything is written) and its hash. An existing one must have been made
with the same config (same hash), else `ConfigMismatchError` names the top-level keys that differ.
With `force` the manifest takes the new config and keeps the old hash in `history`; rows are keyed
by content, so only what the change touches is recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persyn.store.keys import canonical_json, config_hash
from persyn.store.records import StoreError
from persyn.util.atomic import write_json
from persyn.util.credentials import find_secrets

__all__ = ["MANIFEST_NAME", "ConfigMismatchError", "check_no_secrets", "read_manifest", "reconcile_manifest"]

MANIFEST_NAME = "manifest.json"


class ConfigMismatchError(StoreError):
    """The run directory was made with another config. `changed_keys`: top-level keys that differ."""

    def __init__(self, message: str, changed_keys: list[str]):
        super().__init__(message)
        self.changed_keys = changed_keys


def check_no_secrets(config: Mapping[str, Any]) -> None:
    secrets = find_secrets(config)
    if secrets:
        raise StoreError(
            "the config holds what looks like a secret at "
            + ", ".join(secrets)
            + "; put secrets in environment variables and name the variable (e.g. api_key_env)"
        )


def read_manifest(run_dir: Path) -> dict | None:
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(
            f"{path} is unreadable ({e}); it records the run's config, restore or remove it"
        ) from e


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if canonical_json(old.get(k)) != canonical_json(new.get(k))]


def reconcile_manifest(
    run_dir: Path, config: Mapping[str, Any] | None, force: bool, schema_version: int
) -> dict | None:
    """The manifest after checking `config` against it (see the module docstring); `config=None`
    only reads it."""
    from persyn import __version__

    manifest = read_manifest(run_dir)
    if config is None:
        return manifest
    new_hash = config_hash(config)
    if manifest is None:
        # A new run, or a store first opened without a config (tests, tools): record this one.
        manifest = {
            "persyn_version": __version__,
            "schema_version": schema_version,
            "created_at": _now_iso(),
            "updated_at": _now_iso(),
            "config_hash": new_hash,
            "config": dict(config),
            "history": [],
        }
        write_json(run_dir / MANIFEST_NAME, manifest)
        return manifest
    if manifest.get("config_hash") == new_hash:
        return manifest
    changed = _changed_keys(manifest.get("config") or {}, config)
    if not force:
        raise ConfigMismatchError(
            f"{run_dir} was made with another config (hash {str(manifest.get('config_hash'))[:12]}, now "
            f"{new_hash[:12]}); top-level keys that differ: {', '.join(changed) or '(none at top level)'}. "
            "Use a new output directory, or force to reuse this one (rows are keyed by content, so only "
            "what the change affects is recomputed).",
            changed,
        )
    manifest["history"] = [
        *manifest.get("history", []),
        {"config_hash": manifest.get("config_hash"), "replaced_at": _now_iso(), "changed_keys": changed},
    ]
    manifest.update(
        config=dict(config), config_hash=new_hash, updated_at=_now_iso(), persyn_version=__version__
    )
    write_json(run_dir / MANIFEST_NAME, manifest)
    return manifest
