from __future__ import annotations

import math

import pytest
import torch

from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.pipeline.aggregation import (
    CORRELATION_WEIGHT,
    ImageSample,
    activation_weights,
    contrast,
    cos_cubed,
    get_aggregation,
    mean_similarity,
    soft_wpmi,
    validate_correlation_weight,
    wpmi,
)


def test_soft_wpmi_against_hand_computation():
    # 2 neurons, 2 exemplars each, 2 concepts; a=1, lam=1, top_k=2, p from 0.9 to 0.8
    sims = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 2.0], [0.0, 0.0]]])
    acts = torch.ones(2, 2)
    got = soft_wpmi(sims, acts, top_k=2, a=1.0, lam=1.0, p_start=0.9, p_end=0.8, min_prob=0.0)

    def softmax(row):
        e = [math.exp(x) for x in row]
        return [x / sum(e) for x in e]

    p_in = [0.9, 0.9 - 0.5 * 0.1]
    given = []
    for n in range(2):
        row = []
        for c in range(2):
            total = 0.0
            for j in range(2):
                prob = softmax(sims[n, j].tolist())[c]
                total += math.log(1 + p_in[j] * (prob - 1))
            row.append(total)
        given.append(row)
    for c in range(2):
        prior = math.log(sum(math.exp(given[n][c]) for n in range(2)) / 2)
        for n in range(2):
            assert got[n, c].item() == pytest.approx(given[n][c] - prior, abs=1e-5)


def test_wpmi_and_mean_and_contrast_pick_the_right_concept():
    sims = torch.tensor([[[0.9, 0.2, 0.5], [0.8, 0.1, 0.5]], [[0.1, 0.9, 0.5], [0.2, 0.7, 0.5]]])
    acts = torch.tensor([[3.0, 2.0], [5.0, float("-inf")]])
    for function in (wpmi, mean_similarity, contrast, soft_wpmi):
        assert function(sims, acts).argmax(dim=1).tolist() == [0, 1], function.__name__


def test_activation_weights_favor_strong_exemplars_and_ignore_missing():
    acts = torch.tensor([[4.0, 2.0, 1.0, float("-inf")]])
    linear = activation_weights(acts)
    sharp = activation_weights(acts, sharpness=8.0)
    assert linear[0, 3] == 0 and sharp[0, 3] == 0
    assert torch.allclose(linear.sum(), torch.tensor(1.0))
    assert linear[0, 0] > linear[0, 1] > linear[0, 2] > 0
    assert sharp[0, 0] > linear[0, 0]


def test_cos_cubed_uses_the_image_sample():
    torch.manual_seed(0)
    acts = torch.randn(50, 3)
    sims = torch.cat([acts[:, [2, 0, 1]], torch.randn(50, 1)], dim=1)
    sample = ImageSample(acts=acts, sims=sims)
    got = cos_cubed(torch.zeros(3, 1, 4), torch.ones(3, 1), sample)
    assert got.argmax(dim=1).tolist() == [1, 2, 0]
    with pytest.raises(NeurolabelError):
        cos_cubed(torch.zeros(3, 1, 4), torch.ones(3, 1), None)


def test_aggregation_lookup():
    assert get_aggregation("default").name == "contrast"
    assert get_aggregation("cos-cubed").sample == "required"
    assert get_aggregation("default").sample == "used"
    with pytest.raises(NeurolabelError, match="Did you mean 'soft-wpmi'"):
        get_aggregation("soft_wpmi")


def test_sample_correlation_z_is_fisher_scaled_and_null_calibrated():
    from neurolabel.plugin_core.pipeline.aggregation import sample_correlation_z

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(400, 30, generator=g)
    noise = torch.randn(400, 200, generator=g)
    sims = torch.cat([acts[:, :1] + 0.5 * noise[:, :1], noise[:, 1:], torch.ones(400, 1)], dim=1)
    z = sample_correlation_z(ImageSample(acts, sims))
    r = torch.corrcoef(torch.stack([acts[:, 0], sims[:, 0]]))[0, 1]
    assert z[0, 0].item() == pytest.approx(math.atanh(r.item()) * math.sqrt(397), rel=1e-4)
    # unrelated pairs are roughly standard normal, a constant concept gets exactly zero
    null = z[:, 1:200]
    assert abs(null.mean().item()) < 0.1 and 0.85 < null.std().item() < 1.15
    assert torch.all(z[:, 200] == 0)


def _embedded_sample(generator: torch.Generator, images: int = 60, concepts: int = 30):
    """A sample whose concept scores are dot products of unit embeddings (as a VLM's), with
    the first five concepts tracking the five neurons: its dense and factored forms."""
    acts = torch.randn(images, 5, generator=generator)
    embeddings = torch.randn(images, 16, generator=generator)
    embeddings[:, :5] += 2 * acts
    embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    text = torch.nn.functional.normalize(torch.randn(concepts, 16, generator=generator), dim=1)
    text[:5] = torch.nn.functional.normalize(torch.eye(16)[:5] + 0.1 * text[:5], dim=1)
    factored = ImageSample(acts, image_embeddings=embeddings, concept_embeddings=text)
    return ImageSample(acts, embeddings @ text.T), factored


@pytest.mark.parametrize("form", ["dense", "factored"])
def test_sample_statistics_by_concept_chunks_and_row_subsets_match_direct_ones(monkeypatch, form):
    # The sampled scores are reduced in chunks of concepts (dense) or in the embedding space
    # (factored) and, for validation folds, over row subsets without copies; both must give
    # the direct full-matrix figures.
    from neurolabel.plugin_core.pipeline import aggregation, image_sample

    # Blocks of 280 elements: 7 concepts of 40 rows, 3 exemplar neurons of 3 x 30; several
    # blocks each time, the last ragged.
    monkeypatch.setattr(image_sample, "BLOCK_ELEMENTS", 280)
    g = torch.Generator().manual_seed(0)
    dense, factored = _embedded_sample(g)
    sample = dense if form == "dense" else factored
    acts, sims = dense.acts, dense.sims
    rows = torch.randperm(60, generator=g)[:40].sort().values
    z = aggregation.sample_correlation_z(sample, rows)
    r = torch.corrcoef(torch.cat([acts[rows], sims[rows]], dim=1).T.double())[:5, 5:]
    assert torch.allclose(z.double(), torch.atanh(r) * math.sqrt(40 - 3), atol=1e-4)
    assert (z[range(5), range(5)] > 3).all()  # the tracking concepts are found
    subset = aggregation.sample_correlation_z(ImageSample(acts[rows], sims[rows]))
    assert torch.allclose(z, subset, atol=1e-4)

    exemplar_sims = torch.randn(4, 3, 30, generator=g)
    valid = torch.tensor([[True, True, False], [True, False, False], [True] * 3, [False] * 3])
    mean, std = aggregation.population_moments(exemplar_sims, valid, sample, rows)
    population = torch.cat([exemplar_sims[valid], sims[rows]]).double()
    assert torch.allclose(mean.double(), population.mean(dim=0), atol=1e-6)
    assert torch.allclose(std.double(), population.std(dim=0), atol=1e-5)

    chosen = torch.tensor([3, 3, 0, 29])
    assert torch.allclose(sample.scores(chosen, rows), sims[rows][:, chosen], atol=1e-6)


def test_factored_sample_labels_like_the_dense_one_without_forming_its_scores(monkeypatch):
    """contrast (weight validated by cross-validation) and cos-cubed give the same labels
    from an embedding scorer's factored sample as from its dense [S, V] scores, and contrast
    never forms a dense block of the sample's scores to get them."""
    from neurolabel.plugin_core.pipeline.image_sample import ImageSample as Sample

    g = torch.Generator().manual_seed(1)
    dense, factored = _embedded_sample(g, images=120, concepts=40)
    # 20 neurons: the five tracked ones, repeated with noise, so that standardization runs.
    acts = torch.cat([dense.acts] * 4, dim=1) + 0.3 * torch.randn(120, 20, generator=g)
    dense = ImageSample(acts, dense.sims)
    factored = ImageSample(
        acts,
        image_embeddings=factored.image_embeddings,
        concept_embeddings=factored.concept_embeddings,
    )
    top = acts.T.topk(6, dim=1).indices  # [20, 6] exemplar images
    exemplar_sims = dense.sims[top]  # [20, 6, 40]
    exemplar_acts = acts.T.gather(1, top)
    expected = {"dense": {}, "factored": {}}
    for form, sample in (("dense", dense), ("factored", factored)):
        details: dict = {}
        expected[form]["contrast"] = contrast(exemplar_sims, exemplar_acts, sample, details=details)
        expected[form]["weight"] = details["correlation_weight"]
        expected[form]["cos"] = cos_cubed(exemplar_sims, exemplar_acts, sample)
    for name in ("contrast", "cos"):
        got, want = expected["factored"][name], expected["dense"][name]
        assert torch.allclose(got, want, atol=1e-4), name
        assert torch.equal(got.argmax(dim=1), want.argmax(dim=1)), name
    assert expected["factored"]["weight"] == expected["dense"]["weight"]
    assert (expected["dense"]["contrast"].argmax(dim=1) == torch.arange(20) % 5).all()

    def no_dense_blocks(self, rows=None):
        raise AssertionError("a dense block of the sample's scores was formed")

    monkeypatch.setattr(Sample, "chunks", no_dense_blocks)
    contrast(exemplar_sims, exemplar_acts, factored)
    with pytest.raises(AssertionError, match="dense block"):
        contrast(exemplar_sims, exemplar_acts, dense)


def test_image_sample_rejects_mixed_or_mismatched_forms():
    acts = torch.rand(4, 2)
    with pytest.raises(NeurolabelError, match="not both and not neither"):
        ImageSample(acts)
    with pytest.raises(NeurolabelError, match="needs both"):
        ImageSample(acts, image_embeddings=torch.rand(4, 3))
    with pytest.raises(NeurolabelError, match="3 of scores"):
        ImageSample(acts, torch.rand(3, 5))
    with pytest.raises(NeurolabelError, match="dimension 3 but concept embeddings of 2"):
        ImageSample(acts, image_embeddings=torch.rand(4, 3), concept_embeddings=torch.rand(5, 2))


def test_contrast_weighs_image_level_correlation():
    """Exemplars favor concept 2 for even neurons and 0 for odd ones; over the sampled images
    each even neuron tracks concept 0 and each odd one concept 2, strongly. The correlation
    term decides, and ``correlation=0`` turns it off."""
    g = torch.Generator().manual_seed(1)
    neurons, images = 20, 200
    even = torch.arange(neurons) % 2 == 0
    sims = torch.full((neurons, 5, 4), 0.5)
    sims[even, :, 2] += 0.1
    sims[~even, :, 0] += 0.1
    acts = torch.ones(neurons, 5)
    signal = torch.randn(images, 2, generator=g)  # what even / odd neurons track
    sample_acts = signal[:, (~even).long()] + 0.5 * torch.randn(images, neurons, generator=g)
    sample_sims = 0.5 + 0.01 * torch.randn(images, 4, generator=g)
    sample_sims[:, 0] += 0.05 * signal[:, 0]
    sample_sims[:, 2] += 0.05 * signal[:, 1]
    sample = ImageSample(sample_acts, sample_sims)
    exemplars_only = [2 if e else 0 for e in even.tolist()]
    assert contrast(sims, acts, sample, correlation=0.0).argmax(dim=1).tolist() == exemplars_only
    assert contrast(sims, acts, sample).argmax(dim=1).tolist() == [0 if e else 2 for e in even]
    # too few sampled images: the exemplars alone decide
    few = ImageSample(sample_acts[:10], sample_sims[:10])
    assert contrast(sims, acts, few).argmax(dim=1).tolist() == exemplars_only


def _tracking_setup(exemplars_informative: bool, coupling: float, images: int, seed: int = 0):
    """Neuron i's activation over the sampled images is ``coupling * concept_i + noise``;
    its exemplars show concept i clearly when ``exemplars_informative``, nothing otherwise."""
    g = torch.Generator().manual_seed(seed)
    neurons, concepts, k = 24, 300, 5
    presence = torch.randn(images, concepts, generator=g)
    sample_acts = coupling * presence[:, :neurons] + torch.randn(images, neurons, generator=g)
    sims = torch.randn(neurons, k, concepts, generator=g)
    if exemplars_informative:
        sims[torch.arange(neurons), :, torch.arange(neurons)] += 3.0
    acts = torch.linspace(2, 1, k).expand(neurons, k).clone()
    return sims, acts, ImageSample(sample_acts, presence)


def test_auto_weight_is_small_when_the_correlation_evidence_is_noise():
    """60 images, a weak coupling and 300 concepts: the best correlation is mostly a chance
    winner, while the exemplars name the right concept. Validation must lean on the
    exemplars; a large fixed weight follows the noise."""
    sims, acts, sample = _tracking_setup(True, coupling=0.3, images=60)
    weight, scores, errors = validate_correlation_weight(sims, acts, sample)
    assert weight <= 1.0
    assert scores["4.0"] < scores[str(weight)] - 0.05
    details: dict = {}
    chosen = contrast(sims, acts, sample, details=details).argmax(dim=1)
    assert details["correlation_weight"] == weight
    assert details["correlation_choice"].startswith("validated")
    right = (chosen == torch.arange(24)).float().mean()
    noisy = contrast(sims, acts, sample, correlation=4.0).argmax(dim=1)
    assert right >= 0.8 and right > (noisy == torch.arange(24)).float().mean() + 0.1


def test_auto_weight_is_large_when_the_correlation_is_the_signal():
    """Exemplars carry nothing, 400 images track the concepts: validation must pick a
    weight above the fixed default, and label better than it."""
    sims, acts, sample = _tracking_setup(False, coupling=0.3, images=400)
    weight, scores, errors = validate_correlation_weight(sims, acts, sample)
    assert weight >= 2.0
    assert scores[str(weight)] > scores["1.0"] + 0.05 > scores["0.0"] + 0.05
    assert errors[str(weight)] == 0.0 or scores["4.0"] - scores[str(weight)] <= errors[str(weight)]
    right = (contrast(sims, acts, sample).argmax(dim=1) == torch.arange(24)).float().mean()
    fixed = contrast(sims, acts, sample, correlation=CORRELATION_WEIGHT).argmax(dim=1)
    assert right >= 0.9 > (fixed == torch.arange(24)).float().mean()


def test_auto_weight_falls_back_below_the_minimum_sample_and_is_deterministic():
    sims, acts, sample = _tracking_setup(False, coupling=0.6, images=30)
    details: dict = {}
    auto = contrast(sims, acts, sample, details=details)
    assert details["correlation_weight"] == CORRELATION_WEIGHT == 1.0
    assert details["correlation_choice"].startswith("default")
    assert "correlation_validation" not in details
    assert torch.equal(auto, contrast(sims, acts, sample, correlation=1.0))
    sims, acts, sample = _tracking_setup(True, coupling=0.3, images=60, seed=3)
    first, second = {}, {}
    assert torch.equal(
        contrast(sims, acts, sample, details=first), contrast(sims, acts, sample, details=second)
    )
    assert first == second
    with pytest.raises(NeurolabelError, match="'auto' or a weight >= 0"):
        contrast(sims, acts, sample, correlation=-1.0)
    with pytest.raises(NeurolabelError, match="'auto' or a weight >= 0"):
        contrast(sims, acts, sample, correlation="best")


def test_one_standard_error_rule_keeps_the_neutral_weight_on_noise():
    """Exemplars and correlation carry the same signal: from weight 0.5 up the candidates
    label almost alike and their held-out figures differ by fold-to-fold noise. Weight 0.5
    happens to score a little higher here; the rule keeps the neutral weight 1."""
    sims, acts, sample = _tracking_setup(True, coupling=0.4, images=100, seed=1)
    weight, scores, errors = validate_correlation_weight(sims, acts, sample)
    assert max(scores, key=lambda w: scores[w]) == "0.5" and scores["0.5"] > scores["1.0"]
    assert scores["0.5"] - scores["1.0"] <= errors["1.0"]
    assert weight == CORRELATION_WEIGHT


def test_validation_holds_out_the_exemplars_of_held_out_images():
    """Each neuron's exemplars are its top sampled images, and each of them shows a concept
    seen on no other image (image-specific detail), which the top exemplar's weight makes
    the exemplar evidence's choice. Left in the exemplar evidence when its image is held
    out, that concept "predicts" the held-out top activation it was read from; held out with
    its image (``exemplar_rows``), it predicts nothing, as on new images."""
    g = torch.Generator().manual_seed(5)
    neurons, k, images = 24, 5, 200
    sample_acts = torch.randn(images, neurons, generator=g)
    rows = sample_acts.topk(k, dim=0).indices.T  # [neurons, k], strongest first
    presence = 0.1 * torch.randn(images, neurons * k + 20, generator=g)
    for neuron in range(neurons):
        for rank in range(k):
            presence[rows[neuron, rank], neuron * k + rank] = 8.0
    sims = presence[rows]  # whole-image scoring: an exemplar's sims are its image's
    acts = sample_acts.gather(0, rows.T).T
    leaky = validate_correlation_weight(sims, acts, ImageSample(sample_acts, presence))[1]
    held = validate_correlation_weight(
        sims, acts, ImageSample(sample_acts, presence, exemplar_rows=rows)
    )[1]
    assert leaky["0.0"] > held["0.0"] + 0.04
    assert abs(held["0.0"]) < 0.03


def test_labeler_records_the_validated_weight_and_exemplar_rows(tmp_path):
    """Through the labeler: the sample knows where each exemplar's image sits, and the result
    records the weight chosen for the layer (and loads back with it)."""
    import numpy as np
    from PIL import Image
    from synthetic import SeededConvNet

    from neurolabel import LabelingResult, NeuronLabeler
    from neurolabel.plugin_core.data.preprocessing import Preprocessing

    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8), "RGB")
        for _ in range(60)
    ]
    labeler = NeuronLabeler(
        SeededConvNet(),
        layers=["block2"],
        scorer="color",
        vocabulary="colors",
        top_k=3,
        device="cpu",
        progress=False,
        preprocessing=Preprocessing((32, 32), 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    )
    evidence = labeler.gather_evidence(images, with_sample=True)
    _, values, sample = evidence.layer_tensors("block2", with_sample=True)
    ids = evidence.layer("block2").state.ids[:16]
    rows = sample.exemplar_rows
    assert rows.shape == values.shape and bool((rows >= 0).all())  # all 60 images sampled
    assert torch.equal(evidence.sample_ids[rows], ids)
    result = labeler.explain(evidence)
    details = result.settings["aggregation_details"]["block2"]
    assert details["correlation_weight"] in (0.0, 0.5, 1.0, 2.0, 4.0)
    assert set(details["correlation_validation"]) == {"0.0", "0.5", "1.0", "2.0", "4.0"}
    again = LabelingResult.load(result.save(tmp_path))
    assert again.settings["aggregation_details"] == result.settings["aggregation_details"]
    plain = labeler.explain(evidence, "mean")
    assert "aggregation_details" not in plain.settings


def test_aggregation_specs_set_options_with_the_arguments_types():
    fixed = get_aggregation("contrast?correlation=0.5&min_neurons=4")
    assert fixed.name == "contrast?correlation=0.5&min_neurons=4"
    assert fixed.function.keywords == {"correlation": 0.5, "min_neurons": 4}
    assert fixed.sample == "used" and fixed.uses_groups  # the rest of the entry is kept
    assert get_aggregation("contrast?correlation=auto").function.keywords == {"correlation": "auto"}
    g = torch.Generator().manual_seed(0)
    sims, acts = torch.rand(6, 4, 5, generator=g), torch.rand(6, 4, generator=g)
    torch.testing.assert_close(
        get_aggregation("soft-wpmi?top_k=2").function(sims, acts), soft_wpmi(sims, acts, top_k=2)
    )
    details: dict = {}
    sample = ImageSample(torch.rand(30, 6, generator=g), torch.rand(30, 5, generator=g))
    fixed.function(sims, acts, sample, details=details)
    assert details["correlation_weight"] == 0.5 and details["correlation_choice"] == "fixed"
    with pytest.raises(NeurolabelError, match="Unknown option.*Allowed: .*correlation"):
        get_aggregation("contrast?weight=2")
    with pytest.raises(NeurolabelError, match="correlation='lots'.*number"):
        get_aggregation("contrast?correlation=lots")
    with pytest.raises(NeurolabelError, match="must be an integer"):
        get_aggregation("soft-wpmi?top_k=2.5")
    with pytest.raises(NeurolabelError, match="Did you mean 'contrast'"):
        get_aggregation("contrat?correlation=1")
