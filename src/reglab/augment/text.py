"""Text augmentation: token masking, deletion and swapping, synonym replacement, back-translation.

Token-level operations work on integer tensors ``(N, L)`` (or ``(L,)``) of token ids, fully
vectorised, and never touch special tokens (``special_ids``, which should include the padding
id): the output has the same shape, special tokens stay where they are (deletion shifts the
remaining tokens left and pads at the end, so it assumes right padding). ``random_delete`` and
``random_swap`` also accept a list of sentences and work on whitespace-separated words, in the
style of EDA (Wei & Zou, 2019, "EDA: Easy data augmentation techniques for boosting performance
on text classification tasks"); the randomness for a whole list is drawn at once.

``random_mask`` is the corruption of masked language modelling (Devlin et al., 2019, BERT) used
as a regulariser; back-translation is from Sennrich, Haddow & Birch, 2016, "Improving neural
machine translation models with monolingual data".

No lexicon or model is downloaded: ``synonym_replace`` takes a lexicon you pass (a dict, the
small :func:`builtin_lexicon`, or :func:`wordnet_lexicon` when NLTK and its WordNet data are
already installed), and :class:`MarianTranslator` takes models you built or saved locally.
"""

from __future__ import annotations

import random
import re
from itertools import chain, compress
from operator import itemgetter
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

__all__ = [
    "Lexicon",
    "MarianTranslator",
    "Translator",
    "back_translate",
    "builtin_lexicon",
    "random_delete",
    "random_mask",
    "random_swap",
    "synonym_replace",
    "wordnet_lexicon",
]


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a number in [0, 1]; received p={p!r}")
    return float(p)


def _check_ids(token_ids: Any) -> torch.Tensor:
    if not isinstance(token_ids, torch.Tensor) or token_ids.is_floating_point() or token_ids.is_complex():
        raise ValueError(
            f"token_ids must be an integer tensor; received {type(token_ids).__name__}"
            + (f" of dtype {token_ids.dtype}" if isinstance(token_ids, torch.Tensor) else "")
        )
    if token_ids.ndim not in (1, 2):
        raise ValueError(f"token_ids must be (L,) or (N, L); received shape {tuple(token_ids.shape)}")
    return token_ids


def _protected(token_ids: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    special = torch.as_tensor(list(special_ids), dtype=token_ids.dtype, device=token_ids.device)
    if special.numel() == 0:
        return torch.zeros_like(token_ids, dtype=torch.bool)
    if special.numel() <= 4:  # a few comparisons beat isin's sort for the usual handful of ids
        out = token_ids == special[0]
        for s in special[1:]:
            out |= token_ids == s
        return out
    return torch.isin(token_ids, special)


def _bernoulli(shape: torch.Size, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) < p


def random_mask(
    token_ids: torch.Tensor,
    p: float,
    mask_id: int,
    special_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
    *,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Replace each non-special token by ``mask_id`` with probability ``p`` (independently).

    Args:
        token_ids: integer tensor ``(L,)`` or ``(N, L)``; not modified.
        p: masking probability in ``[0, 1]``.
        mask_id: the id written at masked positions.
        special_ids: ids never masked (``[CLS]``, ``[SEP]``, padding, …).
        generator: source of randomness (CPU generator for CPU tensors).
        return_mask: also return the boolean mask of the masked positions.

    Returns:
        The masked ids (same shape and dtype), and the mask when ``return_mask``.

    Raises:
        ValueError: for a non-integer or wrongly shaped ``token_ids`` or ``p`` outside ``[0, 1]``.

    Example:
        >>> ids = torch.tensor([[101, 7, 8, 9, 102, 0]])
        >>> random_mask(ids, 1.0, mask_id=103, special_ids=(0, 101, 102))
        tensor([[101, 103, 103, 103, 102,   0]])
    """
    ids = _check_ids(token_ids)
    p = _check_p(p)
    mask = _bernoulli(ids.shape, p, generator, ids.device)
    mask &= ~_protected(ids, special_ids)
    out = ids.masked_fill(mask, mask_id)
    return (out, mask) if return_mask else out


# --- sentences as words (vectorised over the whole list) ------------------------------------------


def _split(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    lists = [t.split() for t in texts]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    return list(chain.from_iterable(lists)), lengths


def _join(words: Sequence[str], lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    return [" ".join(words[a:b]) for a, b in zip(starts, ends)]


def _uniform_np(n: int, generator: torch.Generator | None) -> np.ndarray:
    return torch.rand(n, generator=generator, dtype=torch.float64).numpy()


def _delete_keep(lengths: np.ndarray, p: float, u: np.ndarray) -> np.ndarray:
    """Per-word keep mask; ``u`` holds one uniform per word, then one per sentence."""
    total = int(lengths.sum())
    keep = u[:total] >= p
    ends = np.cumsum(lengths)
    starts = ends - lengths
    running = np.concatenate(([0], np.cumsum(keep)))
    empty = (running[ends] - running[starts] == 0) & (lengths > 0)
    if empty.any():  # never delete every word: keep one at random (as EDA does)
        keep[starts[empty] + (u[total:][empty] * lengths[empty]).astype(np.int64)] = True
    return keep


def _swap_order(lengths: np.ndarray, p: float, u: np.ndarray) -> np.ndarray:
    """Permutation of the flat word positions that swaps chosen neighbour pairs within each sentence.

    ``u`` holds one uniform per word (pair choice), then one per sentence (pair parity).
    """
    total = int(lengths.sum())
    ends = np.cumsum(lengths)
    # pairs start where the position inside the sentence has the sentence's parity:
    # (i - start - parity) even  <=>  i's parity equals (start + parity)'s
    phase = np.repeat((ends - lengths + (u[total:] < 0.5)) & 1, lengths)
    left = ((np.arange(total) & 1) == phase) & (u[:total] < p)
    left[ends[lengths > 0] - 1] = False  # the last word of a sentence has no right neighbour
    order = np.arange(total)
    i = np.flatnonzero(left)
    order[i], order[i + 1] = i + 1, i
    return order


def _word_op(texts: Sequence[str], p: float, generator: torch.Generator | None, op: str) -> list[str]:
    """Delete or swap words of every sentence at once: one draw of randomness for the whole list."""
    words, lengths = _split(_check_texts(texts))
    total = len(words)
    if total == 0:
        return ["" for _ in texts]
    u = _uniform_np(total + len(texts), generator)
    if op == "delete":
        keep = _delete_keep(lengths, p, u)
        running = np.concatenate(([0], np.cumsum(keep)))
        ends = np.cumsum(lengths)
        return _join(list(compress(words, keep.tolist())), running[ends] - running[ends - lengths])
    order = _swap_order(lengths, p, u)
    return _join(itemgetter(*order.tolist())(words) if total > 1 else words, lengths)


def random_delete(
    tokens: torch.Tensor | Sequence[str],
    p: float,
    *,
    special_ids: Iterable[int] = (),
    pad_id: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor | list[str]:
    """Delete each token (or word) independently with probability ``p``.

    * Token ids ``(L,)`` / ``(N, L)``: deleted positions are removed, the rest shift left in
      order and the row is right-padded with ``pad_id``: the shape is unchanged, special tokens
      and padding (``pad_id`` is always protected) are never deleted.
    * Sentences (a list of str): words are whitespace-separated and re-joined with one space; a
      sentence never loses all its words (one survivor is kept at random, as in EDA).

    Args:
        tokens: integer tensor of ids, or a sequence of sentences.
        p: deletion probability in ``[0, 1]``.
        special_ids: ids never deleted (tensors only).
        pad_id: padding id used to fill the end of each row (tensors only).
        generator: source of randomness.

    Returns:
        A tensor of the same shape, or a list of sentences.

    Raises:
        ValueError: for ``p`` outside ``[0, 1]`` or bad ``tokens``.

    Example:
        >>> random_delete(torch.tensor([[101, 5, 6, 102, 0]]), 1.0, special_ids=(101, 102))
        tensor([[101, 102,   0,   0,   0]])
        >>> random_delete(["one two three"], 1.0, generator=torch.Generator().manual_seed(0))
        ['three']
    """
    p = _check_p(p)
    if isinstance(tokens, torch.Tensor):
        ids = _check_ids(tokens)
        flat = ids.unsqueeze(0) if ids.ndim == 1 else ids
        delete = _bernoulli(flat.shape, p, generator, flat.device)
        delete &= ~_protected(flat, (*special_ids, pad_id))
        keep = ~delete
        pos = keep.cumsum(1) - 1
        rows = torch.arange(flat.shape[0], device=flat.device).unsqueeze(1).expand_as(flat)
        out = torch.full_like(flat, pad_id)
        out[rows[keep], pos[keep]] = flat[keep]
        return out.squeeze(0) if ids.ndim == 1 else out
    return _word_op(tokens, p, generator, "delete")


def random_swap(
    tokens: torch.Tensor | Sequence[str],
    p: float,
    *,
    special_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor | list[str]:
    """Swap neighbouring tokens (or words): each one moves with probability about ``p``.

    For each row (sentence) a parity is drawn, the positions are grouped into the disjoint
    neighbour pairs ``(i, i+1)`` of that parity, and each pair whose two members are swappable is
    swapped with probability ``p``. Pairs never overlap, so the result is a permutation within
    the row; special tokens (``special_ids``, include the padding id) never move and are never
    swapped with. The shape (tensors) and the word count (sentences) are unchanged.

    Args:
        tokens: integer tensor ``(L,)`` / ``(N, L)`` of ids, or a sequence of sentences.
        p: swap probability of a pair, in ``[0, 1]``.
        special_ids: ids that stay in place (tensors only).
        generator: source of randomness.

    Returns:
        A tensor of the same shape, or a list of sentences.

    Raises:
        ValueError: for ``p`` outside ``[0, 1]`` or bad ``tokens``.

    Example:
        >>> out = random_swap(torch.tensor([[1, 5, 6, 7, 2]]), 1.0, special_ids=(1, 2))
        >>> out[0, 0].item(), out[0, -1].item(), sorted(out[0, 1:4].tolist())
        (1, 2, [5, 6, 7])
    """
    p = _check_p(p)
    if isinstance(tokens, torch.Tensor):
        ids = _check_ids(tokens)
        flat = ids.unsqueeze(0) if ids.ndim == 1 else ids
        n, length = flat.shape
        if length < 2:
            return ids.clone()
        movable = ~_protected(flat, special_ids)
        u = torch.rand(n, length, generator=generator, device=flat.device)
        parity = torch.rand(n, 1, generator=generator, device=flat.device) < 0.5
        pos = torch.arange(length - 1, device=flat.device)
        left = ((pos % 2 == 1) == parity) & movable[:, :-1] & movable[:, 1:] & (u[:, :-1] < p)
        order = torch.arange(length, device=flat.device).repeat(n, 1)
        shift = left.long()
        order[:, :-1] += shift
        order[:, 1:] -= shift
        out = flat.gather(1, order)
        return out.squeeze(0) if ids.ndim == 1 else out
    return _word_op(tokens, p, generator, "swap")


def _check_texts(texts: Any) -> Sequence[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a sequence of str (not a single str) or an integer tensor of token ids")
    return texts


# --- synonyms -----------------------------------------------------------------------------------


@runtime_checkable
class Lexicon(Protocol):
    """Anything with ``get(word) -> list of synonyms or None`` (a ``dict`` qualifies)."""

    def get(self, word: str, default: Any = None) -> Sequence[str] | None: ...


# A small hand-written list of common English words and interchangeable synonyms, written for
# this package (no external source), for examples and tests; pass your own dict for real use.
_BUILTIN = """
big: large, huge, sizable
small: little, tiny, minor
fast: quick, rapid, speedy
slow: sluggish, unhurried
good: fine, great, decent
bad: poor, awful, terrible
happy: glad, cheerful, pleased
sad: unhappy, sorrowful, gloomy
smart: clever, bright, intelligent
easy: simple, effortless
hard: difficult, tough
start: begin, commence
end: finish, conclude
begin: start, commence
finish: end, complete
buy: purchase, acquire
help: assist, aid
show: display, reveal
make: create, build
use: employ, utilize
choose: pick, select
answer: reply, response
quiet: silent, calm
loud: noisy, booming
old: aged, elderly, ancient
new: fresh, novel, recent
rich: wealthy, affluent
strange: odd, weird, unusual
funny: amusing, humorous
angry: mad, furious, irate
scared: afraid, frightened
beautiful: pretty, lovely, attractive
ugly: unattractive, unsightly
important: vital, crucial, significant
movie: film, picture
film: movie, picture
car: automobile, vehicle
house: home, dwelling
road: street, avenue
job: work, occupation
child: kid, youngster
shop: store, market
idea: notion, concept
problem: issue, difficulty
story: tale, narrative
answered: replied, responded
said: stated, remarked
looked: glanced, gazed
walked: strolled, wandered
ran: sprinted, dashed
liked: enjoyed, loved
hated: disliked, loathed
very: really, extremely, quite
often: frequently, regularly
maybe: perhaps, possibly
also: too, additionally
almost: nearly, practically
quickly: rapidly, swiftly
slowly: gradually, leisurely
great: excellent, wonderful, superb
boring: dull, tedious
interesting: engaging, fascinating
terrible: awful, dreadful, horrible
nice: pleasant, kind, lovely
wrong: incorrect, mistaken
right: correct, accurate
"""


def builtin_lexicon() -> dict[str, list[str]]:
    """A small English synonym lexicon shipped with reglab (about 70 words, hand-written).

    Written for this package from common usage (no external source), for examples and tests.

    Returns:
        A new ``dict`` mapping a lowercase word to its synonyms.

    Example:
        >>> builtin_lexicon()["movie"]
        ['film', 'picture']
    """
    lexicon: dict[str, list[str]] = {}
    for line in _BUILTIN.strip().splitlines():
        word, _, syns = line.partition(":")
        lexicon[word.strip()] = [s.strip() for s in syns.split(",") if s.strip()]
    return lexicon


class _WordNetLexicon:
    """Synonyms from NLTK's WordNet corpus reader (lemma names of all synsets of a word)."""

    def __init__(self, wordnet: Any) -> None:
        self._wordnet = wordnet

    def get(self, word: str, default: Any = None) -> Sequence[str] | None:
        names: list[str] = []
        for synset in self._wordnet.synsets(word):
            for lemma in synset.lemma_names():
                name = lemma.replace("_", " ")
                if name.lower() != word and name not in names:
                    names.append(name)
        return names or default


def wordnet_lexicon() -> Lexicon:
    """WordNet synonyms (Miller, 1995) through NLTK, when NLTK **and** its WordNet data are installed.

    Nothing is downloaded: NLTK's corpus must already be on ``nltk.data.path`` (e.g. put there
    by ``python -m nltk.downloader wordnet`` beforehand).

    Returns:
        A lexicon usable with :func:`synonym_replace`.

    Raises:
        LookupError: when NLTK is not installed or its WordNet data is not found.
    """
    try:
        import nltk
        from nltk.corpus import wordnet
    except ImportError:
        raise LookupError("WordNet needs the nltk package and its wordnet data; nltk is not installed") from None
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            raise LookupError(
                "nltk is installed but its WordNet data is not; install it beforehand "
                "(nothing is downloaded at run time) or pass a dict lexicon"
            ) from None
    return _WordNetLexicon(wordnet)


_WORD = re.compile(r"^(\W*)([\w'-]+?)(\W*)$")


def _rng(rng: random.Random | int | None) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return random.Random(rng)
    raise ValueError(f"rng must be a random.Random, an int seed or None; received rng={rng!r}")


def synonym_replace(
    texts: Sequence[str],
    lexicon: Mapping[str, Sequence[str]] | Lexicon,
    p: float,
    rng: random.Random | int | None = None,
) -> list[str]:
    """Replace each word that has synonyms in ``lexicon`` by a random one, with probability ``p``.

    Words are whitespace-separated; leading/trailing punctuation is kept, the lookup is in
    lowercase, and a capitalised word gets a capitalised synonym (EDA's synonym replacement with
    a per-word probability instead of a fixed count).

    Args:
        texts: sentences.
        lexicon: a ``dict`` word -> synonyms, :func:`builtin_lexicon`, :func:`wordnet_lexicon`,
            or anything with ``get(word)``.
        p: replacement probability per eligible word, in ``[0, 1]``.
        rng: a ``random.Random``, an int seed, or ``None`` (fresh unseeded generator).

    Returns:
        The new sentences (words joined with one space).

    Raises:
        ValueError: for ``p`` outside ``[0, 1]``, a lexicon without ``get`` or a bad ``rng``.

    Example:
        >>> synonym_replace(["The movie was great!"], {"movie": ["film"]}, 1.0, rng=0)
        ['The film was great!']
    """
    p = _check_p(p)
    if not hasattr(lexicon, "get"):
        raise ValueError(f"lexicon must be a dict or have a get(word) method; received {type(lexicon).__name__}")
    texts = _check_texts(texts)
    r = _rng(rng)
    out = []
    for text in texts:
        words = text.split()
        for i, token in enumerate(words):
            m = _WORD.match(token)
            if m is None:
                continue
            pre, core, post = m.groups()
            options = lexicon.get(core.lower())
            if not options or r.random() >= p:
                continue
            choice = r.choice(list(options))
            if core[:1].isupper():
                choice = choice[:1].upper() + choice[1:]
            words[i] = f"{pre}{choice}{post}"
        out.append(" ".join(words))
    return out


# --- back-translation ------------------------------------------------------------------------------


@runtime_checkable
class Translator(Protocol):
    """A round trip through a pivot language: ``to_pivot`` then ``from_pivot``, one output per input."""

    def to_pivot(self, texts: Sequence[str]) -> list[str]: ...

    def from_pivot(self, texts: Sequence[str]) -> list[str]: ...


def back_translate(
    texts: Sequence[str], translator: Translator, *, batch_size: int = 32, keep_empty: bool = False
) -> list[str]:
    """Paraphrase by translating to a pivot language and back (Sennrich et al., 2016).

    Args:
        texts: sentences.
        translator: a :class:`Translator` (e.g. :class:`MarianTranslator`).
        batch_size: sentences per call to the translator, >= 1.
        keep_empty: keep an empty round-trip result; by default the original sentence is
            returned where the round trip gives an empty string.

    Returns:
        One paraphrase per input, in order.

    Raises:
        ValueError: for a bad ``batch_size``, a translator without the two methods, or a
            translator that returns a different number of sentences.

    Example:
        >>> class Upper:
        ...     def to_pivot(self, texts): return [t.upper() for t in texts]
        ...     def from_pivot(self, texts): return [t.lower() for t in texts]
        >>> back_translate(["Hello World"], Upper())
        ['hello world']
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; received batch_size={batch_size!r}")
    if not isinstance(translator, Translator):
        raise ValueError(
            f"translator must have to_pivot(texts) and from_pivot(texts); received {type(translator).__name__}"
        )
    texts = list(_check_texts(texts))
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        pivot = translator.to_pivot(chunk)
        back = translator.from_pivot(pivot)
        if len(pivot) != len(chunk) or len(back) != len(chunk):
            raise ValueError(
                f"translator must return one sentence per input; got {len(pivot)} pivot and "
                f"{len(back)} back-translated sentences for {len(chunk)} inputs"
            )
        out.extend(b if (b.strip() or keep_empty) else t for t, b in zip(chunk, back))
    return out


class MarianTranslator:
    """Back-translation with Hugging Face MarianMT models (Junczys-Dowmunt et al., 2018, Marian NMT).

    Wraps ``model.generate``: any seq2seq model and tokenizer pair works (``MarianMTModel`` with a
    ``MarianTokenizer`` or a ``PreTrainedTokenizerFast``). Nothing is downloaded: build the models
    in code or load them from local directories with :meth:`from_pretrained`.

    Args:
        forward_model: source -> pivot model.
        forward_tokenizer: its tokenizer.
        backward_model: pivot -> source model (default: ``forward_model``, for tests).
        backward_tokenizer: its tokenizer (default: ``forward_tokenizer``).
        max_new_tokens: generation length limit, >= 1.
        num_beams: beam width, >= 1 (1 = greedy).
        do_sample: sample instead of searching (more diverse paraphrases).
        seed: with ``do_sample``, seed of the sampling (the global RNG is saved and restored).

    Raises:
        ValueError: for a bad ``max_new_tokens`` or ``num_beams``.
    """

    def __init__(
        self,
        forward_model: Any,
        forward_tokenizer: Any,
        backward_model: Any = None,
        backward_tokenizer: Any = None,
        *,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        do_sample: bool = False,
        seed: int | None = None,
    ) -> None:
        for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; received {name}={value!r}")
        self.forward = (forward_model, forward_tokenizer)
        self.backward = (
            backward_model if backward_model is not None else forward_model,
            backward_tokenizer if backward_tokenizer is not None else forward_tokenizer,
        )
        self.generate_kwargs = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": do_sample}
        self.seed = seed

    @classmethod
    def from_pretrained(cls, forward_path: str, backward_path: str, **kwargs: Any) -> MarianTranslator:
        """Load both directions from local directories (``local_files_only=True``; no download)."""
        from transformers import AutoTokenizer, MarianMTModel

        def load(path: str) -> tuple[Any, Any]:
            return (
                MarianMTModel.from_pretrained(path, local_files_only=True),
                AutoTokenizer.from_pretrained(path, local_files_only=True),
            )

        fwd, bwd = load(forward_path), load(backward_path)
        return cls(fwd[0], fwd[1], bwd[0], bwd[1], **kwargs)

    @torch.no_grad()
    def _translate(self, pair: tuple[Any, Any], texts: Sequence[str]) -> list[str]:
        model, tokenizer = pair
        if not texts:
            return []
        was_training = model.training
        model.eval()
        try:
            batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True)
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            if self.generate_kwargs["do_sample"] and self.seed is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    generated = model.generate(**batch, **self.generate_kwargs)
            else:
                generated = model.generate(**batch, **self.generate_kwargs)
        finally:
            model.train(was_training)
        return [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]

    def to_pivot(self, texts: Sequence[str]) -> list[str]:
        return self._translate(self.forward, texts)

    def from_pivot(self, texts: Sequence[str]) -> list[str]:
        return self._translate(self.backward, texts)
