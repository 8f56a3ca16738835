"""The config section of where work runs (`executor`): the local executor's batch size, loaded
engines and threads, or a Ray cluster's pools. None of it changes results, so none of it is in the
run's manifest (`Config.manifest_dict`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["POOL_ROLES", "ExecutorConfig", "PoolConfig"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolConfig(_Section):
    """A Ray pool's resources (executor.pools.<name>); unset fields take the executor's defaults."""

    replicas: int | None = Field(default=None, ge=1)
    num_gpus: float | None = Field(default=None, ge=0)
    num_cpus: float | None = Field(default=None, ge=0)


#: Pool names other than teacher names (executor.pools.<role>).
POOL_ROLES = ("student", "judge", "reward")


class ExecutorConfig(_Section):
    kind: Literal["local", "ray"] = "local"
    # Ray: the cluster to join ("auto", "host:6379", "ray://host:10001"); None starts a local one.
    address: str | None = None
    # Rows per batch, and per store transaction: a crash loses at most this many rows of work.
    # None: the model's own batch size (a local model's rows per forward pass, chosen from the
    # machine and the model by persyn.util.hardware; 32 for HTTP and vLLM engines).
    batch_size: int | None = Field(default=None, ge=1)
    # Engines kept loaded between uses (a teacher that is also the student or the judge is loaded
    # once). None: 1 when a GPU is present (free each model before the next), else 4. On Ray: pools
    # kept alive (None: 1 when a pool uses GPUs, else 4; fewer when the cluster cannot hold more).
    max_loaded_engines: int | None = Field(default=None, ge=1)
    # torch threads of this process; its models run one at a time and share them. None: the
    # OMP_NUM_THREADS variable, else the CPUs the process may use (affinity mask, cgroup quota).
    # A Ray replica uses as many as the CPUs it reserves (num_cpus, at least 1).
    threads: int | None = Field(default=None, ge=1)
    # Ray: each model is a pool of replica actors with these needs (per replica), overridden per
    # teacher name or role (student, judge, reward) in `pools`.
    replicas: int = Field(default=1, ge=1)
    num_gpus_per_replica: float = Field(default=0.0, ge=0)
    num_cpus_per_replica: float = Field(default=1.0, ge=0)
    # Ray: times a replica actor is restarted after its process dies (its batches are retried).
    max_restarts: int = Field(default=3, ge=0)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)

    def pool(self, name: str | None) -> PoolConfig:
        """The resolved resources of pool `name` (a teacher name or role; None: the defaults)."""
        own = self.pools.get(name) if name is not None else None
        return PoolConfig(
            replicas=own.replicas if own and own.replicas is not None else self.replicas,
            num_gpus=own.num_gpus if own and own.num_gpus is not None else self.num_gpus_per_replica,
            num_cpus=own.num_cpus if own and own.num_cpus is not None else self.num_cpus_per_replica,
        )
