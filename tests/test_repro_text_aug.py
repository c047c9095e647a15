"""Text augmentation on generated reviews: the data generator and the measured effect."""

import pytest

from reglab.recipes.repro_text_aug import NEGATIVE, POSITIVE, make_reviews, run


def test_reviews_are_balanced_seeded_and_labelled_by_majority():
    texts, labels = make_reviews(200, 0.0, seed=3)
    assert make_reviews(200, 0.0, seed=3) == (texts, labels)
    assert sum(labels) == 100
    for text, label in zip(texts, labels):
        words = text.split()
        pos = sum(w in POSITIVE for w in words)
        neg = sum(w in NEGATIVE for w in words)
        assert (pos, neg) == ((2, 1) if label else (1, 2))
    with pytest.raises(ValueError, match="synonym_rate=1.5"):
        make_reviews(10, 1.5, 0)


def test_synonyms_broaden_the_vocabulary():
    plain = {w for t in make_reviews(300, 0.0, 0)[0] for w in t.split()}
    broad = {w for t in make_reviews(300, 0.5, 0)[0] for w in t.split()}
    assert len(broad - plain) > 10


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_effect_is_measured_over_seeds(result):
    acc = result.metrics["test_acc"]
    assert set(acc) == {"none", "mask", "synonym", "both"} and all(len(v) == 5 for v in acc.values())
    assert result.checks[0].passed  # every setting learns the task
    deltas = result.metrics["delta_points"]["synonym"]
    assert result.checks[1].passed == (sum(deltas) > 0)
