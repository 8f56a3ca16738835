"""The dtype rule (persyn.util.hardware) as a pure function of what the CPU reports."""

import pytest
import torch

from persyn.util.hardware import CpuInfo, auto_cpu_dtype, resolve_dtype

AMX = CpuInfo(capability="AVX512", native_bf16=True)
AVX2 = CpuInfo(capability="AVX2", native_bf16=False)


def test_auto_picks_bfloat16_only_where_the_cpu_has_it_natively():
    assert auto_cpu_dtype(AMX) is torch.bfloat16
    assert auto_cpu_dtype(AVX2) is torch.float32
    # AVX-512 without the BF16 extension: still emulated, so float32
    assert auto_cpu_dtype(CpuInfo(capability="AVX512", native_bf16=False)) is torch.float32


@pytest.mark.parametrize("info", [AMX, AVX2])
def test_auto_never_picks_float16_on_cpu(info):
    assert resolve_dtype("auto", "cpu", info=info) in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("info", [AMX, AVX2])
@pytest.mark.parametrize("name", ["bfloat16", "float32", "float16"])
def test_an_explicit_dtype_always_wins(info, name):
    assert resolve_dtype(name, "cpu", info=info) is getattr(torch, name)


def test_auto_on_gpu_keeps_the_checkpoint_dtype():
    assert resolve_dtype("auto", "cuda", info=AVX2) is None


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype("float8", "cpu")


# --------------------------------------------------------------------------------------------------
# the rule where models load: config -> engine, and the router's encoder


@pytest.fixture
def cpu_is(monkeypatch):
    """`cpu_is(AVX2)`: make persyn.util.hardware see that CPU (the rule reads `cpu_info()`)."""
    import persyn.util.hardware as hw

    return lambda info: monkeypatch.setattr(hw, "cpu_info", lambda: info)


def _teacher_engine(tmp_path, dtype: str | None):
    """The first teacher of a config whose teachers say `dtype` (None: left out), loaded the way
    the pipeline loads it (load_config -> teacher_spec -> load_engine)."""
    import yaml

    from persyn.config import load_config
    from persyn.engines import load_engine

    teacher = {"name": "a", "model": "zoo:tiny-llama-s1", **({"dtype": dtype} if dtype else {})}
    cfg = {
        "prompts": {"path": "p.jsonl", "answer_field": "answer"},
        "student": {"model": "zoo:tiny-llama-s2"},
        "teachers": [teacher, {"name": "b", "model": "zoo:tiny-llama-s3"}],
        "quality": {"method": "answers"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return load_engine(load_config(tmp_path / "c.yaml").teacher_spec("a"))


@pytest.mark.parametrize(("info", "expected"), [(AMX, torch.bfloat16), (AVX2, torch.float32)])
def test_a_config_without_dtype_loads_what_the_cpu_does_natively(tmp_path, cpu_is, info, expected):
    cpu_is(info)
    engine = _teacher_engine(tmp_path, None)
    assert engine.dtype == expected and engine.model.dtype == expected
    about = engine.describe()
    assert about["dtype"] == str(expected).removeprefix("torch.")
    assert about["dtype_reason"].startswith("auto: ") and info.capability in about["dtype_reason"]


@pytest.mark.parametrize("info", [AMX, AVX2])
@pytest.mark.parametrize("name", ["bfloat16", "float32"])
def test_an_explicit_dtype_in_the_config_always_wins(tmp_path, cpu_is, info, name):
    cpu_is(info)
    engine = _teacher_engine(tmp_path, name)
    assert engine.model.dtype == getattr(torch, name)
    assert engine.describe()["dtype_reason"] == "set in the config"
    # the fingerprint (the key of every row the model writes) covers the dtype
    other = _teacher_engine(tmp_path, "float32" if name == "bfloat16" else "bfloat16")
    assert other.fingerprint != engine.fingerprint


@pytest.mark.parametrize(("info", "expected"), [(AMX, torch.bfloat16), (AVX2, torch.float32)])
def test_the_router_encoder_follows_the_same_rule(cpu_is, info, expected):
    from persyn.router.encoders import load_encoder

    cpu_is(info)
    # max_length differs per case: load_encoder memoises by its arguments, not by the CPU
    auto = load_encoder("zoo:tiny-llama-s0", max_length=64 + expected.itemsize)
    assert next(auto.module.parameters()).dtype == expected
    assert auto.key.endswith("|bfloat16") == (expected == torch.bfloat16)  # cache namespaces differ
    forced = load_encoder("zoo:tiny-llama-s0", max_length=64 + expected.itemsize, dtype="float32")
    assert next(forced.module.parameters()).dtype == torch.float32


def test_a_remembered_fingerprint_is_per_resolved_dtype(cpu_is):
    """A run moved to another kind of CPU must not key new rows by the fingerprint of the dtype the
    old CPU used: the memo key of a spec with dtype auto names what auto resolves to."""
    from persyn.engines.spec import EngineSpec
    from persyn.stages.context import spec_digest

    auto = EngineSpec(model="zoo:tiny-llama-s1")
    pinned = EngineSpec(model="zoo:tiny-llama-s1", dtype="float32")
    cpu_is(AMX)
    on_amx = spec_digest(auto), spec_digest(pinned)
    cpu_is(AVX2)
    assert spec_digest(auto) != on_amx[0] and spec_digest(pinned) == on_amx[1]


# --------------------------------------------------------------------------------------------------
# threads


def _cgroup_root(tmp_path, lines: str, files: dict[str, str]):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(lines)
    for rel, text in files.items():
        path = tmp_path / "sys/fs/cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_cgroup_quota_v2_v1_and_unlimited(tmp_path):
    from persyn.util.hardware import cgroup_cpu_limit

    v2 = _cgroup_root(tmp_path / "v2", "0::/ci/job\n", {"cpu.max": "max 100000\n",
                                                         "ci/cpu.max": "300000 100000\n",
                                                         "ci/job/cpu.max": "max 100000\n"})  # fmt: skip
    assert cgroup_cpu_limit(v2) == 3.0  # the tightest quota on the way up counts
    v1 = _cgroup_root(tmp_path / "v1", "4:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n",
                      {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
                       "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})  # fmt: skip
    assert cgroup_cpu_limit(v1) == 1.5  # a container: its own path is not mounted, the root is
    free = _cgroup_root(tmp_path / "free", "0::/\n", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(free) is None
    assert cgroup_cpu_limit(tmp_path / "nothing") is None  # no /proc: no limit known


def test_threads_follow_the_quota_then_the_environment(monkeypatch):
    import persyn.util.hardware as hw

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hw.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(hw, "cgroup_cpu_limit", lambda: 2.5)
    assert hw.default_threads().n == 2  # floor: a throttled thread stalls every parallel region
    assert "quota" in hw.default_threads().reason
    monkeypatch.setattr(hw, "cgroup_cpu_limit", lambda: None)
    assert hw.default_threads().n == 16
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hw.default_threads() == hw.Threads(3, "OMP_NUM_THREADS=3")


def test_ensure_threads_sets_once_and_an_explicit_count_wins(monkeypatch):
    import persyn.util.hardware as hw

    before = torch.get_num_threads()
    monkeypatch.setattr(hw, "_THREADS", None)
    monkeypatch.setattr(hw, "default_threads", lambda: hw.Threads(1, "test default"))
    try:
        assert hw.ensure_threads() == hw.Threads(1, "test default") and torch.get_num_threads() == 1
        torch.set_num_threads(2)  # somebody else changed it: a later model load keeps their choice
        hw.ensure_threads()
        assert torch.get_num_threads() == 2 and hw.current_threads().reason == "changed outside persyn"
        assert hw.ensure_threads(3).reason == "set in the config" and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_hyperthreads_of_one_core_count_once(tmp_path):
    from persyn.util.hardware import physical_cores

    topo = tmp_path / "sys/devices/system/cpu"
    for cpu, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():
        (topo / f"cpu{cpu}/topology").mkdir(parents=True)
        (topo / f"cpu{cpu}/topology/thread_siblings_list").write_text(siblings + "\n")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1  # the affinity mask holds one core's two threads
    assert physical_cores({0, 7}, tmp_path) is None  # unknown CPU: the caller counts CPUs instead
