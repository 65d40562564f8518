"""Faithfulness metrics against hand-computed values, and the paper's sanity checks."""

from __future__ import annotations

import pytest
import torch

from neurolabel.plugin_core.evaluation.metrics import (
    METRICS,
    RELIABLE,
    auprc,
    best_f1,
    binarize_top,
    extra_labels,
    fit_linear_explanation,
    get_metric,
    iou,
    missing_labels,
    pearson,
    precision,
    recall,
    sanity_checks,
    top_count,
)


def column(*values):
    return torch.tensor(values, dtype=torch.float64)[:, None]


def flags(*values):
    return torch.tensor(values, dtype=torch.bool)[:, None]


def test_top_count_and_binarize_top():
    assert top_count(100, 0.05) == 5
    assert top_count(7, 0.01) == 1  # never empty
    assert top_count(3, 1.0) == 3
    with pytest.raises(ValueError, match="top"):
        top_count(10, 0.0)
    # ties at the cutoff are kept; the column minimum never is
    assert binarize_top(column(5, 1, 5, 0), 0.25).flatten().tolist() == [True, False, True, False]
    assert binarize_top(column(0, 0, 0, 0, 3), 0.6).flatten().tolist() == [0, 0, 0, 0, 1]
    assert not binarize_top(column(2, 2, 2), 0.5).any()  # a constant unit has no positives
    # 0/1 labels keep all their ones whatever the fraction
    assert binarize_top(column(1, 1, 1, 0, 0, 0), 0.2).sum() == 3


def test_pearson_by_hand():
    acts = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    presence = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 5.0], [4.0, 1.0, 5.0]])
    out = pearson(acts, presence)
    # unit 0: deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): 3 / sqrt(2 * 14/3)
    assert out[0].item() == pytest.approx(3 / (2 * 14 / 3) ** 0.5)
    assert out[1].item() == pytest.approx(-1.0)
    assert torch.isnan(out[2])  # a constant concept has no correlation
    with pytest.raises(ValueError, match="images, neurons"):
        pearson(acts, presence[:2])


def test_auprc_by_hand():
    # ranks 1..4: hit, miss, hit, miss -> precisions at the hits 1/1 and 2/3
    assert auprc(flags(1, 0, 1, 0), column(0.9, 0.8, 0.7, 0.1)).item() == pytest.approx(5 / 6)
    # tied scores are one threshold: precision 1/2 at both hits
    assert auprc(flags(1, 0, 1, 0), column(0.9, 0.9, 0.1, 0.1)).item() == pytest.approx(0.5)
    # perfect ranking and no positives
    assert auprc(flags(0, 1, 1), column(0.0, 1.0, 2.0)).item() == 1.0
    assert torch.isnan(auprc(flags(0, 0), column(1.0, 2.0))).all()


def test_best_f1_by_hand():
    # thresholds 0.9: F1 2/3 (1 TP of 2, 1 predicted); 0.8: 1/2; 0.7: 4/5; 0.1: 2/3
    assert best_f1(flags(1, 0, 1, 0), column(0.9, 0.8, 0.7, 0.1)).item() == pytest.approx(0.8)
    # ties: predicting both tied images at once (1 TP, 1 FP) or all four
    assert best_f1(flags(1, 0, 1, 0), column(0.9, 0.9, 0.1, 0.1)).item() == pytest.approx(2 / 3)
    assert torch.isnan(best_f1(flags(0, 0), column(1.0, 2.0))).all()


def test_iou_recall_precision_by_hand():
    positives = flags(1, 1, 0, 0)
    scores = column(0.9, 0.1, 0.8, 0.2)  # the concept's top half: images 0 and 2
    assert iou(positives, scores, top=0.5).item() == pytest.approx(1 / 3)
    assert recall(positives, scores, top=0.5).item() == pytest.approx(0.5)
    assert precision(positives, scores, top=0.5).item() == pytest.approx(0.5)
    # a 0/1 concept is binarized by its ones: {0, 1, 2} vs positives {0, 1}
    labels = column(1, 1, 1, 0)
    assert iou(positives, labels, top=0.25).item() == pytest.approx(2 / 3)
    assert recall(positives, labels, top=0.25).item() == 1.0
    assert precision(positives, labels, top=0.25).item() == pytest.approx(2 / 3)
    assert torch.isnan(iou(flags(0, 0), column(1.0, 1.0)))


def test_ranking_metrics_match_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 5, (40, 12), generator=generator).double()  # many ties
    positives = torch.rand(40, 12, generator=generator) < 0.3
    ap, f1 = auprc(positives, scores), best_f1(positives, scores)
    for unit in range(12):
        y, s = positives[:, unit].numpy(), scores[:, unit].numpy()
        assert ap[unit].item() == pytest.approx(sklearn_metrics.average_precision_score(y, s))
        p, r, _ = sklearn_metrics.precision_recall_curve(y, s)
        best = max(2 * a * b / (a + b) for a, b in zip(p, r, strict=True) if a + b > 0)
        assert f1[unit].item() == pytest.approx(best)


def test_metric_registry():
    acts = column(0, 1, 0, 2)
    assert set(RELIABLE) <= set(METRICS)
    assert METRICS["auprc"](acts, acts, 0.5).item() == 1.0
    assert get_metric("iou") is METRICS["iou"]
    with pytest.raises(ValueError, match="Unknown metric"):
        get_metric("accuracy")


def test_perturbations_of_labels():
    labels = column(1, 1, 1, 1, 0, 0, 0, 0, 0, 0)
    generator = torch.Generator().manual_seed(0)
    missing = missing_labels(labels, 0.1, generator)
    assert missing.sum() == 2 and missing[4:].sum() == 0  # half the ones dropped, nothing added
    extra = extra_labels(labels, 0.1, generator)
    assert extra.sum() == 8 and extra[:4].sum() == 4  # as many ones added, none lost
    # continuous scores move only within the column's own values
    scores = torch.rand(50, 3, generator=generator)
    for perturbed in (missing_labels(scores, 0.1, generator), extra_labels(scores, 0.1, generator)):
        for unit in range(3):
            assert set(perturbed[:, unit].tolist()) <= set(scores[:, unit].tolist())
        assert (perturbed != scores).sum() > 0


@pytest.fixture
def activations():
    return torch.rand(400, 30, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", RELIABLE)
def test_sanity_checks_pass_with_a_perfect_label_fail_with_a_random_one(activations, name):
    perfect = binarize_top(activations, 0.05).double()  # presence == activation indicator
    random = torch.rand(activations.shape, generator=torch.Generator().manual_seed(1))
    metric = get_metric(name)
    chance = metric(activations, random, 0.05).mean()
    assert abs(chance - {"correlation": 0.0}.get(name, 0.05)) < 0.1  # chance level
    assert metric(activations, perfect, 0.05).mean() > chance + 0.3
    good = sanity_checks(name, activations, perfect, top=0.05)
    assert good["missing"].passed and good["extra"].passed
    assert good["missing"].decrease_rate == 1.0 and good["missing"].units == 30
    assert good["missing"].mean_change < 0 and good["extra"].mean_change < 0
    bad = sanity_checks(name, activations, random, top=0.05, draws=2)
    assert not bad["missing"].passed and not bad["extra"].passed
    assert bad["missing"].decrease_rate < 0.9


def test_sanity_checks_catch_the_metrics_the_paper_rejects(activations):
    perfect = binarize_top(activations, 0.05).double()
    # recall ignores false positives, precision ignores missed positives
    assert sanity_checks("recall", activations, perfect)["extra"].decrease_rate == 0.0
    assert sanity_checks("recall", activations, perfect)["missing"].passed
    assert sanity_checks("precision", activations, perfect)["missing"].decrease_rate == 0.0
    assert sanity_checks("precision", activations, perfect)["extra"].passed


def test_sanity_checks_edge_cases(activations):
    constant = torch.ones_like(activations)
    out = sanity_checks("correlation", activations, constant)
    assert out["missing"].units == 0 and out["missing"].decrease_rate is None
    assert not out["missing"].passed
    assert out["extra"].to_dict()["test"] == "extra"
    with pytest.raises(ValueError, match="draws"):
        sanity_checks("f1", activations, activations, draws=0)


def test_linear_explanation_recovers_sparse_non_negative_weights():
    generator = torch.Generator().manual_seed(0)
    presence = torch.rand(400, 2, 4, generator=generator)
    presence[:, :, 3] = 0.5  # a concept the scorer cannot see: constant
    noise = 0.05 * torch.randn(400, 2, generator=generator)
    # unit 0 = 2 * c0 + c1; unit 1 = c2 - c0 (the negative part cannot be expressed)
    acts = torch.stack(
        [2 * presence[:, 0, 0] + presence[:, 0, 1], presence[:, 1, 2] - presence[:, 1, 0]], dim=1
    )
    acts = acts + noise
    fit = fit_linear_explanation(presence, acts, l1=0.0)
    assert (fit.weights >= 0).all()
    share = fit.weights[0] / fit.weights[0].sum()
    assert share.tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0], abs=0.03)
    assert fit.weights[1, 0] == 0 and fit.weights[1, 2] > 0 and fit.weights[:, 3].eq(0).all()
    assert pearson(acts, fit.predict(presence))[0] > 0.99
    # chosen by validation: irrelevant concepts stay out
    chosen = fit_linear_explanation(presence, acts, seed=1)
    assert chosen.weights[0, 2] < 0.05 * chosen.weights[0, 0]
    assert (chosen.l1 > 0).all()


def test_linear_explanation_beats_its_best_single_concept():
    generator = torch.Generator().manual_seed(2)
    presence = torch.rand(600, 5, 6, generator=generator)
    acts = presence[:, :, 0] + presence[:, :, 1] + 0.3 * torch.randn(600, 5, generator=generator)
    fit_rows, eval_rows = slice(0, 300), slice(300, 600)
    fit = fit_linear_explanation(presence[fit_rows], acts[fit_rows], seed=0)
    combined = pearson(acts[eval_rows], fit.predict(presence[eval_rows]))
    single = pearson(acts[eval_rows], presence[eval_rows, :, 0])
    assert (combined > single).all()


def test_linear_explanation_errors():
    with pytest.raises(ValueError, match=r"\[N, U, K\]"):
        fit_linear_explanation(torch.rand(5, 2), torch.rand(5, 2))
    with pytest.raises(ValueError, match="too few"):
        fit_linear_explanation(torch.rand(5, 1, 2), torch.rand(5, 1))
    with pytest.raises(ValueError, match="non-negative"):
        fit_linear_explanation(torch.rand(5, 1, 2), torch.rand(5, 1), l1=-1.0)
