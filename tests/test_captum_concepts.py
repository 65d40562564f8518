"""The TCAV bridge: neurolabel's discovered concepts as captum.concept.Concept objects,
and TCAV run on them end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.concept import TCAV, Concept
from test_pipeline import color_images, labeler

from neurolabel.adapters.captum_concepts import (
    experimental_sets,
    layer_concepts,
    neuron_concepts,
    random_concepts,
)
from neurolabel.plugin_core.data.result import LabelingResult
from neurolabel.plugin_core.errors import NeurolabelError


@pytest.fixture(scope="module")
def labeled():
    """ColorDetector on features.1 (unit 0 red, unit 1 blue, unit 2 dead), 4 exemplars each."""
    run = labeler(layers=["features.1"])
    return run.run(color_images()), run.loaded


def test_neuron_concepts_hold_the_exemplar_patches(labeled):
    result, loaded = labeled
    images = color_images()
    concepts = neuron_concepts(result, "features.1", 0, top=2, images=images)
    assert all(isinstance(c, Concept) for c in concepts)
    assert [(c.id, c.name) for c in concepts] == [(0, "red"), (1, "blue")]
    # 'red' is unit 0's own patches; 'blue' the patches of the unit labeled blue.
    red = next(iter(concepts[0].data_iter))
    assert red.shape == (4, 3, 224, 224)
    # Patches are the red squares, resized whole: red everywhere (inputs are in [0, 1]).
    assert float(red[:, 0].mean()) > 0.8 and float(red[:, 2].mean()) < 0.2
    blue = next(iter(concepts[1].data_iter))
    assert float(blue[:, 2].mean()) > 0.8 and float(blue[:, 0].mean()) < 0.2


def test_patches_come_from_memory_or_a_saved_folder(labeled, tmp_path):
    result, _ = labeled
    # Without the probing images: the patches the result keeps in memory (5 saved per unit).
    in_memory = neuron_concepts(result, "features.1", 1, top=1)
    assert len(in_memory[0].data_iter.dataset) == 4
    path = result.save(tmp_path / "run")
    from_folder = neuron_concepts(path.parent, "features.1", 1, top=1)
    batch = next(iter(from_folder[0].data_iter))
    assert batch.shape[0] == 4 and float(batch[:, 2].mean()) > 0.7  # JPEG-blue patches
    bare = LabelingResult.load(path)  # loaded from JSON: no folder, no pixels
    with pytest.raises(NeurolabelError, match="pass the probing images"):
        neuron_concepts(bare, "features.1", 1)


def test_layer_and_random_concepts(labeled):
    result, _ = labeled
    images = color_images()
    concepts = layer_concepts(result, "features.1", images=images)
    assert sorted(c.name for c in concepts) == ["blue", "red"]
    randoms = random_concepts(result, count=2, size=5, images=images, seed=1)
    assert [(c.id, c.name) for c in randoms] == [(1000, "random-0"), (1001, "random-1")]
    first = next(iter(randoms[0].data_iter))
    assert first.shape == (5, 3, 224, 224)
    again = next(iter(random_concepts(result, 1, size=5, images=images, seed=1)[0].data_iter))
    torch.testing.assert_close(first, again)  # seeded
    sets = experimental_sets(concepts, randoms)
    assert len(sets) == 4 and all(len(s) == 2 for s in sets)


@pytest.mark.filterwarnings("ignore:Using default classifier:UserWarning")
@pytest.mark.filterwarnings("ignore:Creating a tensor from a list:UserWarning")
def test_tcav_runs_on_discovered_concepts(labeled, tmp_path):
    result, loaded = labeled
    images = color_images()
    red = neuron_concepts(result, "features.1", 0, top=1, images=images)
    randoms = random_concepts(result, count=2, size=6, images=images)
    tcav = TCAV(loaded.model, layers=["features.0"], save_path=str(tmp_path / "cav"))
    inputs = torch.stack([loaded.preprocessing(image) for image in images[:4]])  # red squares
    # Captum's default CAV classifier (sklearn's SGD) shuffles with numpy's global state.
    np.random.seed(0)
    scores = tcav.interpret(inputs, experimental_sets(red, randoms), target=0)
    assert set(scores) == {"0-1000", "0-1001"}
    signs = [by_layer["features.0"]["sign_count"][0].item() for by_layer in scores.values()]
    # The red class is sensitive to the red concept on (nearly) every red-square image; a
    # CAV fit on ten examples may miss one image in twenty seeds.
    assert min(signs) >= 0.75 and sum(signs) / len(signs) >= 0.875
    blue_class = tcav.interpret(inputs, experimental_sets(red, randoms), target=1)
    for by_layer in blue_class.values():
        assert by_layer["features.0"]["sign_count"][0].item() == 0.0


def test_errors_and_warnings(labeled):
    result, _ = labeled
    with pytest.raises(NeurolabelError, match="dead or unlabeled"):
        neuron_concepts(result, "features.1", 2, images=color_images())
    with pytest.raises(NeurolabelError, match="not in this result"):
        layer_concepts(result, "fc")
    # Unit 0's third concept, 'green', labels no unit: left out, with a warning.
    with pytest.warns(UserWarning, match="'green' left out"):
        concepts = neuron_concepts(result, "features.1", 0, top=3, images=color_images())
    assert [c.name for c in concepts] == ["red", "blue"]
    with pytest.raises(NeurolabelError, match="lower min_examples"):
        neuron_concepts(result, "features.1", 0, images=color_images(), min_examples=5)
