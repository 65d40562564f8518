"""The open_clip scorer, on random weights (no download ever)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurolabel.backends.open_clip_scorer import (
    CACHE_SUBDIR,
    OpenClipScorer,
    resolve_templates,
)
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.contracts import EmbeddingScorer
from neurolabel.plugin_core.plugins.spec import Spec

# The smallest open_clip config that builds in well under a second on two CPU cores.
MODEL = "ViT-S-32-alt"
RANDOM = f"open_clip:{MODEL}?pretrained=none"


@pytest.fixture(scope="module")
def scorer() -> OpenClipScorer:
    # One model for the read-only tests keeps the file fast; it has no disk cache.
    return OpenClipScorer(MODEL, None, templates="simple", batch_size=4)


class CountingEncoder:
    """Wraps the scorer's text tower and counts the prompts it encodes."""

    def __init__(self, scorer: OpenClipScorer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prompts = 0
        original = scorer.encode_tokens

        def counted(tokens, *args, **kwargs):
            self.prompts += int(tokens.shape[0])
            return original(tokens, *args, **kwargs)

        monkeypatch.setattr(scorer, "encode_tokens", counted)


def test_registered_and_resolves(ctx):
    entry = ctx.registries.scorers.get("open_clip")
    assert entry.plugin == "neurolabel.backends.open_clip_scorer"
    built = ctx.registries.scorers.resolve(f"{RANDOM}&batch_size=8&templates=none", ctx)
    assert isinstance(built, OpenClipScorer)
    assert isinstance(built, EmbeddingScorer)
    assert built.name == f"{RANDOM}&batch_size=8&templates=none"
    assert built.batch_size == 8
    assert built.templates == ("{}",)
    assert built.device.type == "cpu"
    assert built.random_weights
    assert callable(built.preprocess)
    # Random weights are never cached on disk.
    built.encode_texts(["dog"])
    assert not (ctx.cache_dir / CACHE_SUBDIR).exists()


def test_shapes_dtype_and_normalization(scorer, images):
    mixed = [*images[:3], images[3].convert("L"), images[4].convert("RGBA")]
    image_emb = scorer.encode_images(mixed)
    text_emb = scorer.encode_texts(["dog", "striped", "red"])
    dim = scorer.embed_dim
    assert dim == 256
    assert image_emb.shape == (5, dim)
    assert text_emb.shape == (3, dim)
    for emb in (image_emb, text_emb):
        assert emb.dtype == torch.float32
        assert emb.device.type == "cpu"
        assert not emb.requires_grad
        # Not an inference-mode tensor, so callers may modify it in place.
        assert not emb.is_inference()
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(emb)))
    assert scorer.encode_images([]).shape == (0, dim)
    assert scorer.encode_texts([]).shape == (0, dim)
    assert scorer.logit_scale > 0


def test_image_batching_is_consistent(scorer, images, monkeypatch):
    monkeypatch.setattr(scorer, "batch_size", 2)
    in_twos = scorer.encode_images(images[:5])
    monkeypatch.setattr(scorer, "batch_size", 64)
    all_at_once = scorer.encode_images(images[:5])
    torch.testing.assert_close(in_twos, all_at_once, atol=1e-5, rtol=1e-4)


def test_text_batching_is_consistent(scorer):
    texts = ["hound", "kitten", "red car", "plaid", "dusk"]
    # The fixture (batch_size=4, 4 templates) encodes one concept per forward pass.
    one_by_one = scorer.encode_texts(texts)
    at_once = OpenClipScorer(MODEL, None, batch_size=64).encode_texts(texts)
    torch.testing.assert_close(one_by_one, at_once, atol=1e-5, rtol=1e-4)


def test_random_weights_are_reproducible(scorer, images):
    again = OpenClipScorer(MODEL, None, templates="simple", batch_size=4)
    torch.testing.assert_close(again.encode_images(images[:2]), scorer.encode_images(images[:2]))


def test_template_ensemble_is_renormalized_mean():
    templates = ("a photo of a {}.", "a drawing of a {}.")
    ensemble = OpenClipScorer(MODEL, None, templates=templates)
    with torch.inference_mode():
        tokens = ensemble.tokenizer([t.replace("{}", "dog") for t in templates])
        prompts = ensemble.model.encode_text(tokens)
    prompts = prompts / prompts.norm(dim=1, keepdim=True)
    expected = prompts.mean(0)
    expected = expected / expected.norm()
    torch.testing.assert_close(ensemble.encode_texts(["dog"])[0], expected, atol=1e-5, rtol=1e-4)


def test_text_tower_skips_the_padding_and_gives_encode_texts_own_embeddings(scorer):
    """Prompts of different lengths, batched: the trimmed text tower runs on the columns up
    to the longest prompt only, and its features equal open_clip's full encode_text."""
    from neurolabel.backends.open_clip_text import text_encoder

    prompts = ["a photo of a dog.", "red", "a close-up photo of a very old striped armchair."]
    tokens = scorer.tokenizer(prompts)
    seen: list[int] = []
    hook = scorer.model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs=None: seen.append(int(args[0].shape[1]))
    )
    try:
        with torch.inference_mode():
            trimmed = scorer.encode_tokens(tokens)
            full = scorer.model.encode_text(tokens)
    finally:
        hook.remove()
    longest = int((tokens != 0).sum(dim=1).max())
    assert seen == [longest, tokens.shape[1]] and longest < 20 < tokens.shape[1]
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-4)

    # Where the cut would not be exact, open_clip's own encode_text runs.
    class Subclassed(type(scorer.model)):
        pass

    other = Subclassed.__new__(Subclassed)
    other.__dict__.update(scorer.model.__dict__)
    assert text_encoder(other, scorer.tokenizer) == other.encode_text
    bidirectional = type(scorer.model).__new__(type(scorer.model))
    bidirectional.__dict__.update(scorer.model.__dict__)
    bidirectional.__dict__["_buffers"] = {
        **scorer.model._buffers,
        "attn_mask": torch.zeros_like(scorer.model.attn_mask),
    }
    assert text_encoder(bidirectional, scorer.tokenizer) == bidirectional.encode_text
    assert text_encoder(scorer.model, lambda texts: None) == scorer.model.encode_text


def test_memory_cache_avoids_recomputation(scorer, monkeypatch):
    counter = CountingEncoder(scorer, monkeypatch)
    first = scorer.encode_texts(["zebra", "zebra", "gravel"])
    assert counter.prompts == 2 * len(scorer.templates)  # duplicates encoded once
    torch.testing.assert_close(first[0], first[1])
    again = scorer.encode_texts(["gravel", "zebra"])
    assert counter.prompts == 2 * len(scorer.templates)
    torch.testing.assert_close(again, first[[2, 0]])
    scorer.encode_texts(["gravel", "moss"])
    assert counter.prompts == 3 * len(scorer.templates)


@pytest.fixture
def checkpoint(scorer, tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save(scorer.model.state_dict(), path)
    return path


def test_local_checkpoint_and_disk_cache(ctx, scorer, checkpoint, images, monkeypatch):
    spec = f"open_clip:{MODEL}?pretrained={checkpoint}&templates=simple"
    loaded = ctx.registries.scorers.resolve(spec, ctx)
    assert not loaded.random_weights
    # The checkpoint holds the fixture's weights: same embeddings.
    torch.testing.assert_close(loaded.encode_images(images[:2]), scorer.encode_images(images[:2]))
    texts = ["dog", "striped", "red"]
    expected = loaded.encode_texts(texts)
    torch.testing.assert_close(expected, scorer.encode_texts(texts))
    files = list((ctx.cache_dir / CACHE_SUBDIR).glob("*.pt"))
    assert len(files) == 1
    assert not list((ctx.cache_dir / CACHE_SUBDIR).glob("*.tmp"))

    # A new scorer (a new process, in effect) reads the embeddings from disk.
    fresh = ctx.registries.scorers.resolve(spec, ctx)
    counter = CountingEncoder(fresh, monkeypatch)
    torch.testing.assert_close(fresh.encode_texts(texts[::-1]), expected.flip(0))
    assert counter.prompts == 0
    fresh.encode_texts(["sky"])
    assert counter.prompts == len(fresh.templates)

    # ?cache=false skips the disk.
    no_disk = ctx.registries.scorers.resolve(f"{spec}&cache=false", ctx)
    counter = CountingEncoder(no_disk, monkeypatch)
    no_disk.encode_texts(["dog"])
    assert counter.prompts == len(no_disk.templates)


def test_default_names_rebuild_the_scorer(scorer, checkpoint):
    assert scorer.name == f"open_clip:{MODEL}?pretrained=none"
    from_file = OpenClipScorer(MODEL, checkpoint)
    assert from_file.name == f"open_clip:{MODEL}?pretrained={checkpoint}"
    assert Spec.parse(from_file.name).option("pretrained") == str(checkpoint)


def test_local_dir_schema(ctx, scorer, tmp_path: Path):
    import json

    import open_clip

    folder = tmp_path / "clip"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config(MODEL), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config), encoding="utf-8")
    torch.save(scorer.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    loaded = ctx.registries.scorers.resolve(f"open_clip:local-dir:{folder}", ctx)
    assert not loaded.random_weights
    torch.testing.assert_close(loaded.encode_texts(["dog"]), scorer.encode_texts(["dog"]))
    assert len(list((ctx.cache_dir / CACHE_SUBDIR).glob("*.pt"))) == 1


def test_corrupt_disk_cache_is_recomputed(ctx, checkpoint):
    spec = f"open_clip:{MODEL}?pretrained={checkpoint}&templates=none"
    first = ctx.registries.scorers.resolve(spec, ctx)
    expected = first.encode_texts(["dog"])
    (cache_file,) = (ctx.cache_dir / CACHE_SUBDIR).glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    again = ctx.registries.scorers.resolve(spec, ctx)
    torch.testing.assert_close(again.encode_texts(["dog"]), expected)


def test_unknown_model_lists_close_names(ctx):
    with pytest.raises(SpecError) as info:
        ctx.registries.scorers.resolve("open_clip:ViT-B-33?pretrained=none", ctx)
    message = str(info.value)
    assert "Unknown open_clip model 'ViT-B-33'" in message
    assert "ViT-B-32" in message
    with pytest.raises(SpecError, match="Closest: ViT-B-32"):
        ctx.registries.scorers.resolve("open_clip:vit-b-32/openai", ctx)


def test_option_and_weight_errors(ctx, tmp_path: Path):
    resolve = ctx.registries.scorers.resolve
    with pytest.raises(SpecError, match="Unknown option.*Allowed: batch_size"):
        resolve(f"{RANDOM}&temperature=2", ctx)
    with pytest.raises(SpecError, match="needs an open_clip model name"):
        resolve("open_clip", ctx)
    with pytest.raises(SpecError, match="which weights.*pretrained=none.*laion2b_s34b_b79k"):
        resolve("open_clip:ViT-B-32", ctx)
    with pytest.raises(SpecError, match="Unknown pretrained tag 'nope'.*laion2b_s34b_b79k"):
        resolve("open_clip:ViT-B-32/nope", ctx)
    with pytest.raises(SpecError, match="names the weights twice"):
        resolve("open_clip:ViT-B-32/openai?pretrained=none", ctx)
    with pytest.raises(SpecError, match="does not exist"):
        resolve(f"open_clip:{MODEL}?pretrained={tmp_path / 'missing.pt'}", ctx)
    with pytest.raises(SpecError, match="Invalid templates"):
        resolve(f"{RANDOM}&templates=fancy", ctx)
    with pytest.raises(SpecError, match="batch_size must be at least 1"):
        resolve(f"{RANDOM}&batch_size=0", ctx)
    with pytest.raises(SpecError, match="must be an integer"):
        resolve(f"{RANDOM}&batch_size=many", ctx)
    with pytest.raises(SpecError, match="brings its own weights"):
        resolve("open_clip:hf-hub:timm/ViT-B-16-SigLIP?pretrained=none", ctx)
    with pytest.raises(SpecError, match="local-dir folder .* does not exist"):
        resolve(f"open_clip:local-dir:{tmp_path / 'nowhere'}", ctx)
    with pytest.raises(SpecError, match="precision"):
        resolve(f"{RANDOM}&precision=int8", ctx)


def test_resolve_templates():
    assert resolve_templates(None) == resolve_templates("simple")
    assert len(resolve_templates("simple")) == 4
    assert resolve_templates("none") == ("{}",)
    assert len(resolve_templates("imagenet")) == 7
    assert len(resolve_templates("imagenet80")) == 80
    assert all("{}" in t for t in resolve_templates("imagenet80"))
    assert resolve_templates("a {} texture|{}") == ("a {} texture", "{}")
    with pytest.raises(SpecError):
        resolve_templates("a texture")


def test_custom_templates_survive_spec_parsing():
    spec = Spec.parse(f"{RANDOM}&templates=a sketch of a {{}}.|{{}}")
    assert resolve_templates(spec.option("templates")) == ("a sketch of a {}.", "{}")


def test_patches_preprocessed_in_workers_embed_as_encode_images(scorer, images, tmp_path):
    import pickle

    from neurolabel.plugin_core.data.images import as_image_source
    from neurolabel.plugin_core.data.vocabulary import Vocabulary
    from neurolabel.plugin_core.pipeline.patch_scoring import score_patches
    from neurolabel.plugin_core.runtime.progress import Steps

    for i, image in enumerate(images[:4]):
        image.convert("L" if i == 0 else "RGB").save(tmp_path / f"{i}.png")  # one grayscale
    source = as_image_source(tmp_path)
    keys = [(i, None) for i in range(4)] + [(1, (2, 3, 20, 18)), (3, (0, 0, 9, 30))]
    pickle.dumps(scorer.image_transform)  # workers receive it
    scores = score_patches(
        keys,
        source,
        scorer,
        Vocabulary(("red", "dog")),
        batch_size=4,
        steps=Steps(False),
        thumbnail_slots={(1, (2, 3, 20, 18)): [("layer", 0, 0)]},
        device=torch.device("cpu"),
        num_workers=2,
    )
    crops = [source.load(i) if box is None else source.load(i).crop(box) for i, box in keys]
    expected = scorer.encode_images(crops) @ scorer.encode_texts(["red", "dog"]).T
    torch.testing.assert_close(scores.rows_for(keys), expected, atol=1e-5, rtol=1e-4)
    assert scores.thumbnails[("layer", 0, 0)].size == (18, 15)


def test_hub_weights_offline_fail_at_once_with_one_message(ctx, monkeypatch, capfd):
    import time

    from neurolabel.backends import open_clip_scorer
    from neurolabel.plugin_core.errors import NeurolabelError

    monkeypatch.setattr(open_clip_scorer, "hub_reachable", lambda: False)
    started = time.perf_counter()
    with pytest.raises(NeurolabelError) as raised:
        ctx.registries.scorers.resolve("open_clip:ViT-B-32/laion2b_s34b_b79k", ctx)
    message = str(raised.value)
    assert "cannot be reached" in message and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert "--trust-pickle" in message and ".." not in message
    assert time.perf_counter() - started < 10
    # Weights the cache claims to have are read without asking the hub: no retries logged.
    monkeypatch.setattr(open_clip_scorer, "cached_hub_file", lambda repo, files: "/cached")
    with pytest.raises(NeurolabelError, match="Could not load open_clip weights") as raised:
        ctx.registries.scorers.resolve("open_clip:ViT-B-32/laion2b_s34b_b79k", ctx)
    assert "\n" not in str(raised.value) and ".." not in str(raised.value)
    printed = capfd.readouterr()
    assert "Retrying" not in printed.err + printed.out and "ERROR:root" not in printed.err
    assert time.perf_counter() - started < 20


def test_where_hub_weights_live():
    import open_clip

    from neurolabel.backends.open_clip_scorer import _hub_weights

    repo, files = _hub_weights(open_clip, "ViT-B-32", "laion2b_s34b_b79k")
    assert repo == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert files == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert _hub_weights(open_clip, "hf-hub:timm/ViT-B-16-SigLIP", None)[0] == (
        "timm/ViT-B-16-SigLIP"
    )
    assert _hub_weights(open_clip, "ViT-B-32", None) is None
