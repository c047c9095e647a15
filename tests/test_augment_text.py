import random
import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reglab
from reglab.augment import text as T

SPECIAL = (0, 101, 102)  # pad, [CLS], [SEP]


@st.composite
def token_batches(draw):
    """Right-padded batches: [CLS] words [SEP] pad..., words drawn from ids 1..60 plus some specials inside."""
    n = draw(st.integers(1, 5))
    length = draw(st.integers(2, 16))
    rows = []
    for _ in range(n):
        k = draw(st.integers(0, length - 2))
        body = draw(st.lists(st.sampled_from(list(range(1, 61)) + [101]), min_size=k, max_size=k))
        rows.append([101, *body, 102] + [0] * (length - 2 - k))
    return torch.tensor(rows)


rates = st.floats(0.0, 1.0)
seeds = st.integers(0, 2**31 - 1)


def test_public_names():
    assert reglab.augment.text is T
    assert callable(reglab.augment.default_policy)


@settings(max_examples=40, deadline=None)
@given(ids=token_batches(), p=rates, seed=seeds)
def test_random_mask_properties(ids, p, seed):
    out, mask = T.random_mask(ids, p, mask_id=103, special_ids=SPECIAL,
                              generator=torch.Generator().manual_seed(seed), return_mask=True)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert out.shape == ids.shape and out.dtype == ids.dtype
    assert torch.equal(out[special], ids[special])  # specials and padding untouched
    assert not mask[special].any()
    assert torch.all(out[mask] == 103) and torch.equal(out[~mask], ids[~mask])
    again = T.random_mask(ids, p, 103, SPECIAL, torch.Generator().manual_seed(seed))
    assert torch.equal(again, out)
    if p == 1.0:
        assert torch.equal(mask, ~special)
    if p == 0.0:
        assert torch.equal(out, ids)


@settings(max_examples=40, deadline=None)
@given(ids=token_batches(), p=rates, seed=seeds)
def test_random_delete_tensor_properties(ids, p, seed):
    out = T.random_delete(ids, p, special_ids=(101, 102), pad_id=0, generator=torch.Generator().manual_seed(seed))
    assert out.shape == ids.shape
    for row_in, row_out in zip(ids.tolist(), out.tolist()):
        content = [t for t in row_out if t != 0]
        # the surviving tokens are a subsequence of the input, with every special token kept
        it = iter(t for t in row_in if t != 0)
        assert all(any(t == u for u in it) for t in content)
        assert [t for t in row_in if t in (101, 102)] == [t for t in row_out if t in (101, 102)]
        # padding only at the end
        assert row_out == content + [0] * (len(row_out) - len(content))


@settings(max_examples=40, deadline=None)
@given(ids=token_batches(), p=rates, seed=seeds)
def test_random_swap_tensor_properties(ids, p, seed):
    out = T.random_swap(ids, p, special_ids=SPECIAL, generator=torch.Generator().manual_seed(seed))
    assert out.shape == ids.shape
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert torch.equal(out[special], ids[special])  # specials stay in place
    assert torch.equal(out.sort(1).values, ids.sort(1).values)  # a permutation of each row
    moved = (out != ids).nonzero().tolist()
    for r, c in moved:  # every change is a neighbour swap
        assert (c + 1 < ids.shape[1] and out[r, c] == ids[r, c + 1] and out[r, c + 1] == ids[r, c]) or (
            c > 0 and out[r, c] == ids[r, c - 1] and out[r, c - 1] == ids[r, c]
        )


def test_random_swap_rate():
    ids = torch.arange(1, 1001).repeat(20, 1)
    out = T.random_swap(ids, 0.3, generator=torch.Generator().manual_seed(0))
    moved = float((out != ids).float().mean())
    assert abs(moved - 0.3) < 0.02  # each token moves with probability about p
    assert torch.equal(T.random_swap(ids[0], 1.0, generator=torch.Generator().manual_seed(1)).sort().values, ids[0])


def test_random_mask_rate_and_1d():
    ids = torch.randint(1, 100, (200, 100))
    out = T.random_mask(ids, 0.15, 0, generator=torch.Generator().manual_seed(0))
    assert abs(float((out == 0).float().mean()) - 0.15) < 0.01
    assert T.random_mask(torch.tensor([5, 6]), 0.0, 0).tolist() == [5, 6]


words = st.text(alphabet="abcdefgh", min_size=1, max_size=5)
sentences = st.lists(st.lists(words, min_size=0, max_size=12).map(" ".join), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(texts=sentences, p=rates, seed=seeds)
def test_word_delete_and_swap_properties(texts, p, seed):
    deleted = T.random_delete(texts, p, generator=torch.Generator().manual_seed(seed))
    swapped = T.random_swap(texts, p, generator=torch.Generator().manual_seed(seed))
    assert len(deleted) == len(swapped) == len(texts)
    for src, d, s in zip(texts, deleted, swapped):
        w, wd, ws = src.split(), d.split(), s.split()
        it = iter(w)
        assert all(any(a == b for b in it) for a in wd)  # subsequence
        assert (len(wd) >= 1) == (len(w) >= 1)  # never empties a sentence
        assert sorted(ws) == sorted(w) and len(ws) == len(w)
    assert deleted == T.random_delete(texts, p, generator=torch.Generator().manual_seed(seed))
    assert swapped == T.random_swap(texts, p, generator=torch.Generator().manual_seed(seed))


def test_word_ops_rates():
    texts = [" ".join(f"w{i}" for i in range(20))] * 500
    out = T.random_delete(texts, 0.2, generator=torch.Generator().manual_seed(0))
    kept = sum(len(t.split()) for t in out) / (20 * 500)
    assert abs(kept - 0.8) < 0.02
    sw = T.random_swap(texts, 0.2, generator=torch.Generator().manual_seed(0))
    moved = sum(a != b for s in sw for a, b in zip(s.split(), texts[0].split())) / (20 * 500)
    assert abs(moved - 0.2) < 0.02
    assert T.random_delete(["a b c"], 0.0) == ["a b c"]
    assert T.random_delete(["", "x"], 1.0) == ["", "x"]


def test_validation_messages():
    ids = torch.tensor([[1, 2]])
    for fn in (lambda: T.random_mask(ids, 1.5, 0), lambda: T.random_delete(ids, -0.1), lambda: T.random_swap(["a b"], 2)):
        with pytest.raises(ValueError, match="p="):
            fn()
    with pytest.raises(ValueError, match="integer tensor"):
        T.random_mask(torch.rand(2, 3), 0.1, 0)
    with pytest.raises(ValueError, match="sequence of str"):
        T.random_delete("a single string", 0.1)
    with pytest.raises(ValueError, match="rng="):
        T.synonym_replace(["a"], {}, 0.5, rng="seed")
    with pytest.raises(ValueError, match="batch_size=0"):
        T.back_translate(["a"], _Fake(), batch_size=0)
    with pytest.raises(ValueError, match="translator must have"):
        T.back_translate(["a"], object())
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        T.MarianTranslator(None, None, max_new_tokens=0)


def test_synonym_replace():
    lex = {"movie": ["film", "picture"], "good": ["great"]}
    out = T.synonym_replace(["The Movie was good.", "no match here"], lex, 1.0, rng=0)
    assert out[0] in ("The Film was great.", "The Picture was great.")
    assert out[1] == "no match here"
    assert T.synonym_replace(["good good good"], lex, 0.0, rng=1) == ["good good good"]
    # reproducible from a seed or a Random
    texts = ["the movie was good and the film was good"] * 30
    assert T.synonym_replace(texts, lex, 0.5, rng=3) == T.synonym_replace(texts, lex, 0.5, rng=random.Random(3))
    replaced = sum(t.split().count("great") for t in T.synonym_replace(texts, lex, 0.5, rng=4)) / 60
    assert 0.35 < replaced < 0.65
    builtin = T.builtin_lexicon()
    assert len(builtin) > 50 and all(isinstance(v, list) and v for v in builtin.values())
    assert T.synonym_replace(["a big car"], builtin, 1.0, rng=0)[0].split()[1] in builtin["big"]


def test_wordnet_lexicon_without_and_with_nltk(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)
    with pytest.raises(LookupError, match="nltk"):
        T.wordnet_lexicon()

    class _Synset:
        def __init__(self, names):
            self._names = names

        def lemma_names(self):
            return self._names

    wordnet = types.SimpleNamespace(synsets=lambda w: [_Synset(["car", "auto", "motor_car"])] if w == "car" else [])
    nltk = types.ModuleType("nltk")
    corpus = types.ModuleType("nltk.corpus")
    corpus.wordnet = wordnet
    nltk.corpus = corpus
    nltk.data = types.SimpleNamespace(find=lambda path: path)
    monkeypatch.setitem(sys.modules, "nltk", nltk)
    monkeypatch.setitem(sys.modules, "nltk.corpus", corpus)
    lex = T.wordnet_lexicon()
    assert lex.get("car") == ["auto", "motor car"] and lex.get("zzz") is None
    assert T.synonym_replace(["my car"], lex, 1.0, rng=0)[0] in ("my auto", "my motor car")

    def missing(path):
        raise LookupError(path)

    nltk.data = types.SimpleNamespace(find=missing)
    with pytest.raises(LookupError, match="WordNet data"):
        T.wordnet_lexicon()


class _Fake:
    """Deterministic translator: to_pivot reverses word order, from_pivot reverses back and uppercases."""

    def __init__(self):
        self.calls = []

    def to_pivot(self, texts):
        self.calls.append(len(texts))
        return [" ".join(reversed(t.split())) for t in texts]

    def from_pivot(self, texts):
        return ["" if t == "drop" else " ".join(reversed(t.split())).upper() for t in texts]


def test_back_translate_with_fake_translator():
    fake = _Fake()
    texts = ["the cat sat", "a dog", "drop", "x y z"]
    out = T.back_translate(texts, fake, batch_size=3)
    assert out == ["THE CAT SAT", "A DOG", "drop", "X Y Z"]  # empty round trip keeps the original
    assert fake.calls == [3, 1]
    assert T.back_translate(["drop"], _Fake(), keep_empty=True) == [""]

    class Short(_Fake):
        def from_pivot(self, texts):
            return texts[:-1]

    with pytest.raises(ValueError, match="one sentence per input"):
        T.back_translate(["a", "b"], Short())


def _tiny_marian():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = "the a cat dog sat on mat ran fast slow big small".split()
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    cfg = MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, forced_eos_token_id=2,
    )
    torch.manual_seed(0)
    return MarianMTModel(cfg), fast, set(words)


def test_marian_translator_tiny_random_model(tmp_path):
    model, tokenizer, vocab = _tiny_marian()
    model.train()
    tr = T.MarianTranslator(model, tokenizer, max_new_tokens=5)
    texts = ["the cat sat on the mat", "a dog ran"]
    pivot = tr.to_pivot(texts)
    assert len(pivot) == 2 and all(set(p.split()) <= vocab for p in pivot)
    assert all(0 < len(p.split()) <= 5 for p in pivot)
    out = T.back_translate(texts, tr)
    assert out == T.back_translate(texts, tr)  # greedy decoding is deterministic
    assert model.training  # mode restored
    sampled = T.MarianTranslator(model, tokenizer, max_new_tokens=5, do_sample=True, seed=1)
    assert T.back_translate(texts, sampled) == T.back_translate(texts, sampled)
    # the local loading path (no download): save and reload both directions
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded = T.MarianTranslator.from_pretrained(str(tmp_path / "m"), str(tmp_path / "m"), max_new_tokens=5)
    assert T.back_translate(texts, loaded) == out
