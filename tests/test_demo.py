"""``paras2s shards build-demo``: seed validation, disjoint splits, determinism, bad input."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from paras2s_pl.cli import main
from paras2s_pl.data import labels
from paras2s_pl.data.demo import build_demo, plan_utterances
from paras2s_pl.data.seed import SeedError, load_seed
from paras2s_pl.data.shards import ShardDataset


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    build_demo(out, contents_per_category=6, workers=1, shard_size=8)
    return out


def read(root, split):
    ds = ShardDataset(root, split)
    samples = list(ds)
    assert not ds.stats.num_skipped
    return samples


def test_shipped_seed_meets_the_spec():
    items = load_seed()
    per = Counter(i.category for i in items)
    assert set(per) == set(labels.SYNTHETIC_CATEGORIES) and min(per.values()) >= 60
    for category in labels.SYNTHETIC_CATEGORIES:
        assert len({i.topic for i in items if i.category == category}) >= 10
    assert len({i.content for i in items}) == len(items)
    pairs = Counter(i.styles for i in items if i.category == "emotion")
    assert set(pairs) == set(labels.EMOTION_PAIRS)


def test_full_plan_has_disjoint_topics_and_speakers_and_unlabeled_rl():
    plan = plan_utterances(load_seed(), None, 0.25, seed=0)
    train, test, rl = plan["train"], plan["test"], plan["rl"]
    assert not {u.item.topic for u in train} & {u.item.topic for u in test}
    assert not {u.speaker for u in train} & {u.speaker for u in test}
    assert {u.speaker for u in rl} <= {u.speaker for u in train}
    assert all(u.key.startswith("rl-") for u in rl)  # keys give no label away
    assert Counter(u.item.category for u in test) == {c: 36 for c in labels.SYNTHETIC_CATEGORIES}
    for u in train + test:  # gender is carried by the speaker's voice
        if u.item.category == "gender":
            assert labels.speaker_gender(u.speaker) == u.style


def test_build_writes_three_splits_with_manifests(small_demo):
    train, test, rl = (read(small_demo, s) for s in ("train", "test", "rl"))
    assert len(train) + len(test) == 4 * 6 * 2 and len(rl) == len(train)
    assert not {s.meta.topic for s in train} & {s.meta.topic for s in test}
    assert not {s.meta.speaker for s in train} & {s.meta.speaker for s in test}
    assert all(s.assistant_audio is not None for s in train + test)
    assert all(not hasattr(s.meta, "style") for s in rl)
    pairs = Counter(s.meta.pair_id for s in test)
    assert set(pairs.values()) == {2}  # both contrasting styles of each content
    manifest = json.loads((small_demo / "train.manifest.json").read_text())
    assert manifest["count"] == len(train) and len(manifest["shards"]) > 1
    assert manifest["provenance"]["seed"] == 0 and manifest["skipped"] == {}


def test_same_seed_gives_the_same_sets(small_demo, tmp_path):
    build_demo(tmp_path, contents_per_category=6, workers=2, shard_size=8)
    for split in ("train", "rl"):
        a, b = read(small_demo, split), read(tmp_path, split)
        assert [s.key for s in a] == [s.key for s in b]
        assert [s.meta for s in a] == [s.meta for s in b]
        assert all(np.array_equal(x.user_audio, y.user_audio) for x, y in zip(a, b, strict=True))


def test_existing_output_is_refused_unless_overwrite(small_demo, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["shards", "build-demo", "--out", str(small_demo), "--contents_per_category", "2"])
    assert exit_.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_overwrite_flag_replaces_the_sets(tmp_path):
    build_demo(tmp_path, contents_per_category=2, workers=1)
    main(
        [
            "shards",
            "build-demo",
            "--out",
            str(tmp_path),
            "--contents_per_category",
            "3",
            "--workers",
            "1",
            "--overwrite",
        ]
    )
    assert len(read(tmp_path, "test")) + len(read(tmp_path, "train")) == 4 * 3 * 2


def _seed_line(**over):
    item = {
        "id": "emotion-901",
        "category": "emotion",
        "topic": "Travel",
        "content": "The train leaves at noon tomorrow.",
        "styles": ["happy", "sad"],
        "responses": {
            "happy": {"text": "Have a lovely trip!", "tone": "cheerful"},
            "sad": {"text": "I hope the trip goes gently.", "tone": "empathetic"},
        },
    }
    item.update(over)
    return json.dumps(item)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", "not valid json"),
        (_seed_line(styles=["happy", "sleepy"]), "unknown style 'sleepy'"),
        (_seed_line(category="weather"), "unknown category"),
        (_seed_line(content="?!"), "'content' has no words"),
        (json.dumps({"id": "x"}), "missing field"),
        (
            _seed_line(
                responses={
                    "happy": {"text": "ok", "tone": "smug"},
                    "sad": {"text": "ok", "tone": "calm"},
                }
            ),
            "tone",
        ),
    ],
)
def test_bad_seed_lines_name_file_line_and_field(tmp_path, line, match):
    path = tmp_path / "seed.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(SeedError, match=match) as err:
        load_seed([path])
    assert f"{path}:1" in str(err.value)


def test_reply_the_tts_cannot_speak_is_skipped_and_counted(tmp_path):
    lines = []
    for n, topic in enumerate(["Travel", "Food", "Work", "Music"]):
        reply = "?!" if n == 0 else "Sounds good to me."
        lines.append(
            _seed_line(
                id=f"emotion-{n}",
                topic=topic,
                content=f"Line number {n} here.",
                responses={
                    "happy": {"text": reply, "tone": "cheerful"},
                    "sad": {"text": "I am here.", "tone": "empathetic"},
                },
            )
        )
    seed = tmp_path / "seed.jsonl"
    seed.write_text("\n".join(lines))
    manifests = build_demo(tmp_path / "out", seed_files=[str(seed)], workers=1)
    skipped = sum(m["skipped"].get("tts_failed", 0) for m in manifests.values())
    made = sum(m["count"] for s, m in manifests.items() if s != "rl")
    assert skipped == 1 and made == 4 * 2 - 1
