"""The run store: manifest, resume semantics, no duplicates, error rows and retries, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from persyn.engines.base import Generation
from persyn.prompts import Prompt
from persyn.store import (
    ConfigMismatchError,
    ResponseKey,
    ResponseRow,
    RunDirBusyError,
    RunStore,
    ScoreRow,
    StoreError,
    config_hash,
    content_key,
    make_gen_key,
)

CONFIG = {
    "seed": 0,
    "prompts": {"path": "data/p.jsonl"},
    "teachers": [{"name": "qwen", "model": "zoo:qwen"}, {"name": "big", "api_key_env": "OPENAI_API_KEY"}],
    "router": {"alpha": 0.4},
}


def prompts(n: int, start: int = 0) -> list[Prompt]:
    return [
        Prompt(f"p{i:04d}", f"prompt number {i}", str(i) if i % 2 else None, f"f.jsonl:{i + 1}", {"i": i})
        for i in range(start, start + n)
    ]


@pytest.fixture
def store(tmp_path):
    s = RunStore.open(tmp_path / "run", CONFIG)
    s.put_prompts(prompts(20))
    yield s
    s.close()


# ----------------------------------------------------------------------------- manifest


def test_manifest_records_config_and_refuses_another(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run, CONFIG) as s:
        assert s.manifest["config_hash"] == config_hash(CONFIG)
        s.put_prompts(prompts(3))
    m = json.loads((run / "manifest.json").read_text())
    assert m["config"] == CONFIG and m["history"] == []
    with RunStore.open(run, json.loads(json.dumps(CONFIG))) as s:  # same config: fine
        assert s.count_prompts() == 3

    changed = {**CONFIG, "router": {"alpha": 0.5}, "calibration": {"size": 10}}
    with pytest.raises(ConfigMismatchError) as ei:
        RunStore.open(run, changed)
    assert ei.value.changed_keys == ["calibration", "router"]
    assert "top-level keys that differ: calibration, router" in str(ei.value) and "force" in str(ei.value)

    with RunStore.open(run, changed, force=True) as s:
        assert s.count_prompts() == 3  # rows kept, reused by their content keys
    m = json.loads((run / "manifest.json").read_text())
    assert m["config_hash"] == config_hash(changed)
    assert m["history"][0]["config_hash"] == config_hash(CONFIG)
    assert m["history"][0]["changed_keys"] == ["calibration", "router"]
    with RunStore.open(run) as s:  # no config: no check
        assert s.manifest["config"] == changed


def test_secrets_are_never_written(tmp_path):
    bad = {**CONFIG, "teachers": [{"name": "big", "api_key": "sk-live-123"}]}
    with pytest.raises(StoreError, match=r"teachers\[0\]\.api_key"):
        RunStore.open(tmp_path / "run", bad)
    assert not (tmp_path / "run" / "manifest.json").exists()
    RunStore.open(tmp_path / "ok", {"teachers": [{"api_key_env": "KEY", "api_key": None}]}).close()


def test_one_writer_many_readers(tmp_path):
    run = tmp_path / "run"
    writer = RunStore.open(run, CONFIG)
    with pytest.raises(RunDirBusyError, match="open for writing by another process"):
        RunStore.open(run, CONFIG)
    writer.put_prompts(prompts(5))
    reader = RunStore.open(run, readonly=True)
    assert reader.count_prompts() == 5
    with pytest.raises(StoreError, match="read-only"):
        reader.put_prompts(prompts(1, start=50))
    writer.put_prompts(prompts(2, start=5))
    assert reader.count_prompts() == 7  # readers see each committed batch
    writer.close()
    RunStore.open(run, CONFIG).close()  # the lock is released on close
    reader.close()
    with pytest.raises(StoreError, match="not a persyn run directory"):
        RunStore.open(tmp_path / "nowhere", readonly=True)


def test_keys():
    assert make_gen_key("fp-a", "k1") == make_gen_key("fp-a", "k1")
    assert len({make_gen_key("fp-a", "k1"), make_gen_key("fp-b", "k1"), make_gen_key("fp-a", "k2")}) == 3
    assert content_key("learnability", "student-a") != content_key("learnability", "student-b")
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


# ----------------------------------------------------------------------------- prompts and subsets


def test_prompts_roundtrip_order_and_conflicts(store):
    assert store.count_prompts() == 20
    assert store.prompt_ids()[:3] == ["p0000", "p0001", "p0002"]
    got = store.get_prompts(["p0003", "p0000"])
    assert got == [prompts(4)[3], prompts(1)[0]] and got[0].meta == {"i": 3} and got[0].answer == "3"
    assert store.put_prompts(prompts(25)) == 5  # 20 already there
    assert [len(b) for b in store.iter_prompts(batch_size=10)] == [10, 10, 5]
    moved = Prompt("p0001", "prompt number 1", "1", "moved.jsonl:9", {"i": 1})
    assert store.put_prompts([moved]) == 0
    assert store.get_prompts(["p0001"])[0].source == "moved.jsonl:9"  # provenance refreshed
    with pytest.raises(StoreError, match="different text or answer"):
        store.put_prompts([Prompt("p0002", "edited text")])
    with pytest.raises(StoreError, match="different text or answer"):
        store.put_prompts([Prompt("p0003", "prompt number 3", answer="4")])
    with pytest.raises(KeyError, match="unknown prompt id"):
        store.get_prompts(["p0000", "nope"])


def test_subsets(store):
    ids = ["p0005", "p0001", "p0009"]
    store.set_subset("calibration", ids)
    assert store.get_subset("calibration") == ids and store.get_subset("other") is None
    store.set_subset("calibration", ids)  # same again: no-op
    with pytest.raises(StoreError, match="already holds 3 other prompts"):
        store.set_subset("calibration", ["p0001"])
    store.set_subset("calibration", ["p0001"], replace=True)
    assert store.subsets() == {"calibration": 1}
    with pytest.raises(StoreError, match="not in this run"):
        store.set_subset("x", ["p0001", "ghost"])
    with pytest.raises(StoreError, match="more than once"):
        store.set_subset("x", ["p0001", "p0001"])


# ----------------------------------------------------------------------------- responses


def ok(pid, teacher="qwen", gk="g1", text=None):
    gen = Generation(
        text or f"answer to {pid}",
        prompt_tokens=5,
        completion_tokens=7,
        finish_reason="stop",
        meta={"server": "x"},
    )
    return ResponseRow.from_generation(pid, teacher, gk, gen, params={"temperature": 0}, duration_s=0.1)


def test_resume_skips_finished_rows(store):
    ids = store.prompt_ids()
    assert store.responses_todo("qwen", "g1", ids) == ids
    assert store.put_responses([ok(p) for p in ids[:8]]) == 8
    todo = store.responses_todo("qwen", "g1", ids + ids[:2])  # input duplicates are dropped
    assert todo == ids[8:]
    # Another gen_key (changed model or parameters) owes everything.
    assert store.responses_todo("qwen", "g2", ids) == ids
    assert store.responses_todo("big", "g1", ids) == ids
    r = store.get_response("qwen", "g1", ids[0])
    assert (r.text, r.prompt_tokens, r.completion_tokens, r.finish_reason) == (
        f"answer to {ids[0]}",
        5,
        7,
        "stop",
    )
    assert r.params == {"temperature": 0} and r.meta == {"server": "x"} and r.status == "ok"


def test_finished_rows_are_never_rewritten_or_duplicated(store):
    store.put_responses([ok("p0000", text="first")])
    created = store.get_response("qwen", "g1", "p0000").created_at
    assert store.put_responses([ok("p0000", text="second"), ok("p0000", text="third")]) == 0
    assert store.put_responses([ResponseRow.failure("p0000", "qwen", "g1", "late error")]) == 0
    r = store.get_response("qwen", "g1", "p0000")
    assert (r.text, r.created_at, r.attempts) == ("first", created, 1)
    assert store.stats()["responses"] == 1


def test_error_rows_and_retry(store):
    ids = store.prompt_ids()[:4]
    store.put_responses(
        [ok(ids[0]), ResponseRow.failure(ids[1], "qwen", "g1", TimeoutError("server slow"), attempts=3)]
    )
    assert store.responses_todo("qwen", "g1", ids) == ids[2:]  # errors are rows: not redone by default
    assert store.responses_todo("qwen", "g1", ids, retry_failed=True) == ids[1:]
    err = store.get_responses("qwen", "g1", include_errors=True)[ids[1]]
    assert err.status == "error" and err.error == "TimeoutError: server slow" and err.text is None
    assert ids[1] not in store.get_responses("qwen", "g1")
    store.put_responses([ResponseRow.failure(ids[1], "qwen", "g1", "still slow")])
    assert store.get_response("qwen", "g1", ids[1]).attempts == 4  # attempts add up
    store.put_responses([ok(ids[1])])
    r = store.get_response("qwen", "g1", ids[1])
    assert (r.status, r.error, r.attempts) == ("ok", None, 5)
    assert store.responses_todo("qwen", "g1", ids, retry_failed=True) == ids[2:]
    (c,) = store.response_counts()
    assert (c["teacher"], c["ok"], c["error"], c["completion_tokens"]) == ("qwen", 2, 0, 14)


def test_a_bad_row_rejects_the_whole_batch(store):
    rows = [ok("p0000"), ResponseRow("p0001", "qwen", "g1", None, "ok")]
    with pytest.raises(StoreError, match="needs a text"):
        store.put_responses(rows)
    with pytest.raises(StoreError, match="needs an error message"):
        store.put_responses([ResponseRow("p0001", "qwen", "g1", None, "error")])
    assert store.stats()["responses"] == 0


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction():
            store.put_responses([ok("p0000")])
            store.log_event("generate", "progress", "1 done", done=1)
            raise RuntimeError("boom")
    assert store.stats()["responses"] == 0 and store.events() == []
    with store.transaction():  # nested puts join one transaction
        store.put_responses([ok("p0000")])
        store.put_responses([ok("p0001")])
    assert store.stats()["responses"] == 2


def test_iter_responses_pages_through_everything(store):
    ids = store.prompt_ids()
    store.put_responses([ok(p, teacher=t) for t in ("big", "qwen") for p in ids])
    store.put_responses([ResponseRow.failure("p0000", "zeta", "g1", "x")])
    pages = list(store.iter_responses(batch_size=7))
    rows = [r for page in pages for r in page]
    assert len(rows) == 40 and len({r.key for r in rows}) == 40 and len(pages) == 6
    assert {r.teacher for r in rows} == {"big", "qwen"}
    assert len([r for page in store.iter_responses("qwen", "g1", batch_size=3) for r in page]) == 20
    assert len([r for page in store.iter_responses(status=None) for r in page]) == 41


# ----------------------------------------------------------------------------- scores


def test_scores_reuse_across_students(store):
    ids = store.prompt_ids()[:5]
    keys = [ResponseKey(p, t, "g1") for p in ids for t in ("qwen", "big")]
    quality = content_key("quality", "judge-fp")
    learn_a, learn_b = content_key("learnability", "student-a"), content_key("learnability", "student-b")
    store.put_scores([ScoreRow("quality", quality, *k, value=0.5) for k in keys])
    store.put_scores([ScoreRow("learnability", learn_a, *k, value=-1.2) for k in keys])
    # A new student: quality is done, only its learnability is to do.
    assert store.scores_todo("quality", quality, keys) == []
    assert store.scores_todo("learnability", learn_b, keys) == keys
    assert store.scores_todo("learnability", learn_a, keys) == []
    got = store.get_scores("learnability", learn_a, keys[:3])
    assert set(got) == set(keys[:3]) and got[keys[0]].value == pytest.approx(-1.2)
    assert len(store.get_scores("quality", quality)) == 10


def test_failed_scores_and_retry(store):
    k = ResponseKey("p0000", "qwen", "g1")
    store.put_scores([ScoreRow("quality", "s", *k, value=None, error="judge overflow")])
    assert store.scores_todo("quality", "s", [k]) == []
    assert store.scores_todo("quality", "s", [k], retry_failed=True) == [k]
    assert store.get_scores("quality", "s") == {}
    assert store.get_scores("quality", "s", include_errors=True)[k].error == "judge overflow"
    store.put_scores([ScoreRow("quality", "s", *k, value=0.25)])
    store.put_scores([ScoreRow("quality", "s", *k, value=0.99)])  # a value is final
    assert store.get_scores("quality", "s")[k].value == 0.25
    with pytest.raises(StoreError, match="neither a value nor an error"):
        store.put_scores([ScoreRow("quality", "s", "p0001", "qwen", "g1", value=None)])
    with pytest.raises(StoreError, match="is nan"):
        store.put_scores([ScoreRow("quality", "s", "p0001", "qwen", "g1", value=float("nan"))])


# ----------------------------------------------------------------------------- routes, embeddings, events


def test_routes(store):
    ids = store.prompt_ids()[:6]
    names = ["qwen", "big", "gemma"]
    scores = np.arange(18, dtype=np.float32).reshape(6, 3)
    assigned = [names[i % 3] for i in range(6)]
    assert store.put_routes("r1", names, ids[::-1], assigned[::-1], scores[::-1], meta={"caps": None}) == 6
    rs = store.get_routes("r1")
    assert rs.prompt_ids == ids and rs.assigned == assigned  # prompt load order
    np.testing.assert_array_equal(rs.scores, scores)
    assert rs.meta == {"caps": None} and rs.teacher_names == names
    assert store.put_routes("r1", names, ids[:2], ["big", "big"]) == 0  # a route is final
    sub = store.get_routes("r1", [ids[4], ids[1], "unrouted"])
    assert sub.prompt_ids == [ids[4], ids[1]] and sub.assigned == [assigned[4], assigned[1]]
    assert store.get_routes("nope") is None and store.route_keys() == ["r1"]
    with pytest.raises(StoreError, match="was stored with teachers"):
        store.put_routes("r1", ["qwen", "big"], ids[:1], ["qwen"])
    with pytest.raises(StoreError, match="unknown teacher"):
        store.put_routes("r2", names, ids[:1], ["llama"])
    with pytest.raises(StoreError, match="scores shape"):
        store.put_routes("r2", names, ids[:2], ["qwen", "big"], np.zeros((2, 2)))


def test_embedding_cache(store):
    cache = store.embedding_cache()
    vecs = {f"enc#{i}": np.full(4, i, dtype=np.float32) for i in range(5)}
    cache.put(vecs)
    got = cache.get(["enc#1", "enc#4", "enc#missing"])
    assert set(got) == {"enc#1", "enc#4"} and got["enc#4"].dtype == np.float32
    np.testing.assert_array_equal(got["enc#4"], vecs["enc#4"])
    got["enc#1"][0] = 99  # a copy: cached data is not changed through it
    assert cache.get(["enc#1"])["enc#1"][0] == 1
    assert len(cache) == 5 and len(store.embedding_cache("other")) == 0


def test_embedding_cache_serves_the_router(store):
    from persyn.router.encoders import EmbeddingCache, embed_prompts

    class CountingEncoder:
        key, dim, calls = "fake-encoder", 3, []

        def embed(self, texts, batch_size=64):
            self.calls.append(list(texts))
            return np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)

    cache = store.embedding_cache()
    assert isinstance(cache, EmbeddingCache)
    enc = CountingEncoder()
    first = embed_prompts(enc, ["aa", "bbb", "aa"], cache)
    again = embed_prompts(enc, ["bbb", "aa", "cccc"], cache)
    assert enc.calls == [["aa", "bbb"], ["cccc"]]  # cached prompts are not encoded again
    np.testing.assert_array_equal(again[:2], first[[1, 0]])


def test_events_and_state(store):
    store.log_event("generate", "resume", "40 done earlier, 24 to do", done=40, todo=24)
    store.log_event("score", "start", "quality")
    ev = store.log_event("generate", "done", "64 responses", done=64)
    gen = store.events("generate")
    assert [e.kind for e in gen] == ["resume", "done"] and gen[0].counts == {"done": 40, "todo": 24}
    assert "generate resume: 40 done earlier, 24 to do" in str(gen[0])
    assert store.events(kind="start")[0].stage == "score"
    assert store.events(since_id=ev.id - 1) == [ev]
    assert str(store.log_todo("generate", 0, 64)).endswith("generate start: 0 done earlier, 64 to do")
    e = store.log_todo("generate", 40, 24, failed=3)
    assert e.message == "40 done earlier, 24 to do (3 failed earlier, not retried: use --retry-failed)"
    assert e.kind == "resume" and e.counts == {"done": 40, "todo": 24, "failed": 3}
    store.set_state("router_key", "r1")
    store.set_state("router_key", {"key": "r2"})
    assert store.get_state("router_key") == {"key": "r2"} and store.get_state("nope", 3) == 3


# ----------------------------------------------------------------------------- crash safety

CHILD = textwrap.dedent(
    """
    import sys, time
    from persyn.prompts import Prompt
    from persyn.store import ResponseRow, RunStore

    run_dir, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = RunStore.open(run_dir, {"test": "crash"})
    ids = store.prompt_ids()
    todo = store.responses_todo("t", "g", ids)
    rows = [ResponseRow(p, "t", "g", "text of " + p * 50, prompt_tokens=3, completion_tokens=len(p))
            for p in todo]
    for b in range(batches):
        store.put_responses(rows[b * size:(b + 1) * size])
        print("committed", b + 1, flush=True)
    # The next batch is written but its transaction stays open until the kill.
    with store.transaction():
        store.put_responses(rows[batches * size:(batches + 1) * size])
        print("in flight", flush=True)
        time.sleep(60)
    """
)


def test_sigkill_loses_only_the_batch_in_flight(tmp_path):
    run = tmp_path / "run"
    with RunStore.open(run, {"test": "crash"}) as s:
        s.put_prompts(prompts(200))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run), "3", "32"], stdout=subprocess.PIPE, text=True, env=env
    )
    lines = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = child.stdout.readline()
        lines.append(line.strip())
        if line.startswith("in flight") or not line:
            break
    assert lines[-1] == "in flight", lines
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    with RunStore.open(run, {"test": "crash"}) as s:  # the dead writer's lock is gone
        done = s.get_responses("t", "g", include_errors=True)
        assert len(done) == 96  # three committed batches, not a row of the fourth
        for pid, r in done.items():  # every row whole
            assert (r.status, r.text, r.completion_tokens) == ("ok", "text of " + pid * 50, len(pid))
        created = {pid: r.created_at for pid, r in done.items()}
        ids = s.prompt_ids()
        todo = s.responses_todo("t", "g", ids)
        assert todo == ids[96:]
        # Resuming writes the rest; re-sending finished rows changes nothing.
        assert s.put_responses([ResponseRow(p, "t", "g", "resumed") for p in ids]) == 104
        after = s.get_responses("t", "g")
        assert len(after) == 200
        assert all(after[p].created_at == created[p] and after[p].text != "resumed" for p in created)
        assert s.stats()["responses"] == 200
