"""The mini tokenizer: word-level default (one id per mini-world word), BPE still available."""

from __future__ import annotations

import re

import pytest

from paras2s_pl.bench.rubric_cues import CUES
from paras2s_pl.models import tokenizer as tokmod
from paras2s_pl.models.tokenizer import (
    MINI_SPECIAL_IDS,
    MINI_UNK_ID,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    build_mini_tokenizer,
    load_tokenizer,
    mini_world_texts,
    special_ids,
)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return mini_world_texts()


@pytest.fixture(scope="module")
def word(tmp_path_factory):
    return build_mini_tokenizer(out_dir=tmp_path_factory.mktemp("tok"))


def _ids(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def test_word_tokenizer_special_ids_and_size(word):
    assert special_ids(word) == MINI_SPECIAL_IDS
    assert word.convert_ids_to_tokens(list(range(9))) == list(SPECIAL_TOKENS)
    assert word.unk_token == UNK_TOKEN and word.unk_token_id == MINI_UNK_ID == 9
    assert 2900 < len(word) < 4000  # a few thousand: the words, case kept, + lower case forms
    assert len(word) == len(word.get_vocab())  # no ids beyond the vocabulary


def test_word_round_trip_of_every_mini_world_text(word, texts):
    assert all(MINI_UNK_ID not in _ids(word, t) for t in texts)
    bad = [t for t in texts if word.decode(_ids(word, t)) != t]
    assert not bad, bad[:3]
    # skip_special_tokens (how the policy's text is decoded) changes nothing without specials
    assert all(word.decode(_ids(word, t), skip_special_tokens=True) == t for t in texts[:50])


def test_every_word_is_one_id(word, texts):
    # as many ids as words + punctuation marks: no word is split
    for text in texts[:100]:
        assert len(_ids(word, text)) == len(re.findall(r"\w+(?:'\w+)*|[^\w\s]", text)), text
    ids = _ids(word, "I'm so sorry, congratulations! That's great.")
    assert word.convert_ids_to_tokens(ids) == [
        "▁I'm", "▁so", "▁sorry", ",", "▁congratulations", "!", "▁That's", "▁great", ".",
    ]  # fmt: skip
    # ASR transcripts are lower case: the lower-case forms are words too
    assert MINI_UNK_ID not in _ids(word, "i'm sorry that's great")


def test_cue_words_are_single_ids(word, texts):
    """Every cue word of the rubric judge that the mini world says is one id; a stem cue
    (``apolog``, ``frustrat``) covers mini-world words, each one id."""
    mini_words = {w.lower() for t in texts for w in re.findall(r"\w+(?:'\w+)*", t)}
    cue_words = {w for phrases in CUES.values() for p in phrases for w in p.split()}
    spoken = sorted(w for w in cue_words if w in mini_words)
    assert len(spoken) > 250 and {"sorry", "congratulations", "careful"} <= set(spoken)
    for w in spoken:
        assert len(_ids(word, w)) == 1 and MINI_UNK_ID not in _ids(word, w), w
        assert len(_ids(word, f"so {w}")) == 2, w  # mid-sentence too
    # cues match word-initially: a stem's mini-world words are one id each
    covered = {c: [w for w in mini_words if w.startswith(c)] for c in cue_words - set(spoken)}
    assert all(covered[s] for s in ("apolog", "frustrat", "disappoint")), covered
    for stem, words in covered.items():
        assert all(len(_ids(word, w)) == 1 for w in words), stem


def test_unknown_word_encodes_to_unk_without_crashing(word):
    ids = _ids(word, "The zyxwv is flurbish, 42 okey?")
    assert ids.count(MINI_UNK_ID) == 3 and len(ids) == 9  # numbers: digit by digit
    assert word.decode(ids) == "The<|unk|> is<|unk|>, 42<|unk|>?"
    assert word.decode(ids, skip_special_tokens=True) == "The is, 42?"
    assert word.decode(_ids(word, "call 911 now")) == "call 911 now"
    assert _ids(word, "") == []
    assert _ids(word, "é\ttab\nline") and _ids(word, "two  spaces")  # no crash


def test_score_characters_are_single_tokens(word):
    from paras2s_pl.models.reward import score_token_ids

    ids = score_token_ids(word)
    assert len(set(ids)) == 5 and all(i > MINI_UNK_ID for i in ids)


def test_word_cache_reuse_and_determinism(tmp_path, monkeypatch, texts):
    tok = build_mini_tokenizer(out_dir=tmp_path)
    first = (tmp_path / tok.name_or_path.rsplit("/", 1)[-1] / "tokenizer.json").read_bytes()

    def no_rebuild(*_a, **_k):
        raise AssertionError("rebuilt instead of loading the cache")

    monkeypatch.setattr(tokmod, "train_word_tokenizer", no_rebuild)
    again = build_mini_tokenizer(out_dir=tmp_path)
    assert again.name_or_path == tok.name_or_path and len(again) == len(tok)
    monkeypatch.undo()
    other = build_mini_tokenizer(out_dir=tmp_path / "b")  # a second build: the same file
    assert (tmp_path / "b" / other.name_or_path.rsplit("/", 1)[-1] / "tokenizer.json"
            ).read_bytes() == first  # fmt: skip
    # the kind and the texts are in the key
    bpe = build_mini_tokenizer(out_dir=tmp_path, kind="bpe")
    small = build_mini_tokenizer(out_dir=tmp_path, texts=texts[:10])
    assert len({tok.name_or_path, bpe.name_or_path, small.name_or_path}) == 3
    assert len(small) < len(tok)


def test_bpe_kind_still_builds(tmp_path):
    bpe = build_mini_tokenizer(out_dir=tmp_path, kind="bpe")
    assert len(bpe) == 512 and special_ids(bpe) == MINI_SPECIAL_IDS and bpe.unk_token_id is None
    text = "How are you feeling today? Zyxwv!"
    assert bpe.decode(_ids(bpe, text)) == text  # byte level: nothing unknown
    assert len(build_mini_tokenizer(300, tmp_path, kind="bpe")) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        build_mini_tokenizer(100, tmp_path, kind="bpe")
    with pytest.raises(ValueError, match="kind='bpe' only"):
        build_mini_tokenizer(512, tmp_path)  # the word kind has no vocab_size
    with pytest.raises(ValueError, match="kind="):
        build_mini_tokenizer(out_dir=tmp_path, kind="char")


def test_load_tokenizer_mini_kinds_and_saved_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAS2S_CACHE", str(tmp_path / "cache"))
    word, bpe = load_tokenizer("mini:word"), load_tokenizer("mini:bpe")
    assert len(bpe) == 512 and len(word) > 2900
    bpe.save_pretrained(tmp_path / "export")  # what a policy export keeps beside its weights
    again = load_tokenizer(tmp_path / "export")
    assert len(again) == 512 and _ids(again, "hello there") == _ids(bpe, "hello there")


def test_policy_export_without_tokenizer_gets_the_mini_kind_of_its_size(tmp_path, monkeypatch):
    from paras2s_pl.models.tokenizer import mini_tokenizer_for

    monkeypatch.setenv("PARAS2S_CACHE", str(tmp_path / "cache"))
    assert len(mini_tokenizer_for(512)) == 512
    word = build_mini_tokenizer()
    assert mini_tokenizer_for(len(word)).name_or_path == word.name_or_path
    assert mini_tokenizer_for(7).name_or_path == word.name_or_path  # neither: the default
