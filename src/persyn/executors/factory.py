"""The one place that knows every executor: `make_executor` builds the one a config names. It is
kept apart from `base` (which `local` and `ray` import), so the executors form no import circle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from persyn.engines.spec import EngineSpec
from persyn.executors.base import Executor

if TYPE_CHECKING:
    from persyn.config import ExecutorConfig

__all__ = ["make_executor"]


def make_executor(config: ExecutorConfig, roles: Mapping[str, EngineSpec] | None = None) -> Executor:
    """The executor `config` names. `roles` (`Config.engine_roles()`: teacher names, student,
    judge or reward -> spec) lets the Ray executor give each model the resources of its pool."""
    if config.kind == "local":
        from persyn.executors.local import LocalExecutor

        return LocalExecutor(max_loaded=config.max_loaded_engines)
    if config.kind == "ray":
        try:
            from persyn.executors.ray import RayExecutor
        except ImportError as exc:
            from persyn.config import ConfigError

            raise ConfigError(f"executor.kind 'ray' needs Ray: `pip install 'persyn[ray]'` ({exc})") from exc
        return RayExecutor(config, roles)
    raise ValueError(f"unknown executor kind {config.kind!r}")
