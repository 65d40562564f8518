"""Scale: scoring plan, resumable runs, the activation cache, precision options, and
torch.distributed runs that give exactly the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import SeededConvNet

from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import LabelingResult
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.pipeline.labeler import NeuronLabeler
from neurolabel.plugin_core.pipeline.patch_scoring import ExemplarCrops

TESTS = Path(__file__).resolve().parent
PREPROCESSING = Preprocessing((64, 64), 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def textured(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(3,), dtype=np.uint8)
    noise = rng.integers(0, 90, size=(72, 80, 3), dtype=np.uint8)
    return Image.fromarray((base + noise).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    for i in range(23):
        textured(i).save(folder / f"im_{i:02d}.png")
    return folder


def make_labeler(model=None, **overrides) -> NeuronLabeler:
    settings = dict(
        layers=["block1", "block2"],
        scorer="color",
        vocabulary="colors",
        top_k=3,
        device="cpu",
        batch_size=4,
        progress=False,
        scoring="patches",
        preprocessing=PREPROCESSING,
        sample_size=8,
    )
    settings.update(overrides)
    return NeuronLabeler(model or SeededConvNet(), **settings)


def neurons(result: LabelingResult) -> dict:
    """Everything a run decides about its neurons (timings and devices left out)."""
    return {layer: [n.to_dict() for n in explained] for layer, explained in result.neurons.items()}


class Interrupting(torch.utils.data.Dataset):
    """Images of a folder; reading image ``stop_at`` raises KeyboardInterrupt once (Ctrl-C)."""

    def __init__(self, folder: Path, stop_at: int | None) -> None:
        self.paths = sorted(folder.iterdir())
        self.stop_at = stop_at
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        if index == self.stop_at:
            self.stop_at = None
            raise KeyboardInterrupt
        self.reads.append(index)
        return Image.open(self.paths[index]).convert("RGB")


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(image_dir, tmp_path):
    reference = make_labeler(cache=False).run(Interrupting(image_dir, None))
    checkpoint = tmp_path / "ck" / "state.pt"
    data = Interrupting(image_dir, stop_at=17)
    with pytest.raises(KeyboardInterrupt):
        make_labeler(cache=False, checkpoint=checkpoint, checkpoint_every=100).run(data)
    assert checkpoint.is_file()  # saved on the interruption, though no periodic save was due
    assert not list(checkpoint.parent.glob("*.tmp"))
    data.reads.clear()
    resumed = make_labeler(cache=False, checkpoint=checkpoint, resume=True).run(data)
    assert neurons(resumed) == neurons(reference)
    # Identifying the run reads images 0-15 (a dataset's fingerprint); then the pass reads
    # only what Ctrl-C left: the 16 images of the 4 finished batches are not streamed again.
    assert data.reads[:16] == list(range(16))
    assert data.reads[16:23] == list(range(16, 23))
    assert not checkpoint.exists()  # a finished run leaves nothing to resume


def _stop_in_the_middle_of_batch(model: torch.nn.Module, batch: int, stop) -> None:
    """Call ``stop()`` when ``block2`` runs on the given batch: ``block1`` of that batch has
    then been streamed already (inside its forward hook), ``block2`` not."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1
        if calls[0] == batch:
            stop()

    model.block2.register_forward_hook(hook)


def test_a_crash_in_the_middle_of_a_batch_resumes_to_the_uninterrupted_result(image_dir, tmp_path):
    """A batch half streamed (its first layer taken, the second not) must not be saved: a
    resume would stream its images twice into the first layer."""
    reference = make_labeler(cache=False).run(Interrupting(image_dir, None))
    checkpoint = tmp_path / "state.pt"
    model = SeededConvNet()

    def crash() -> None:
        raise RuntimeError("out of memory in block2")

    _stop_in_the_middle_of_batch(model, 4, crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        make_labeler(model, cache=False, checkpoint=checkpoint, checkpoint_every=1).run(
            Interrupting(image_dir, None)
        )
    saved = torch.load(checkpoint, weights_only=True)["state"]
    assert saved["done"] == 12  # the 3 whole batches before the crash, not the 4th's half
    resumed = make_labeler(cache=False, checkpoint=checkpoint, resume=True).run(
        Interrupting(image_dir, None)
    )
    assert neurons(resumed) == neurons(reference)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_a_batch_takes_effect_once_the_batch_is_streamed(
    image_dir, tmp_path, request
):
    import signal

    # A shell's background job starts with SIGINT ignored: give this test Python's handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    reference = make_labeler(cache=False).run(Interrupting(image_dir, None))
    checkpoint = tmp_path / "state.pt"
    model = SeededConvNet()
    _stop_in_the_middle_of_batch(model, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        make_labeler(model, cache=False, checkpoint=checkpoint, checkpoint_every=100).run(
            Interrupting(image_dir, None)
        )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    saved = torch.load(checkpoint, weights_only=True)["state"]
    assert saved["done"] == 12  # the interrupted batch was finished and kept
    resumed = make_labeler(cache=False, checkpoint=checkpoint, resume=True).run(
        Interrupting(image_dir, None)
    )
    assert neurons(resumed) == neurons(reference)


def test_periodic_checkpoints_and_a_mismatched_resume(image_dir, tmp_path, monkeypatch):
    from neurolabel.plugin_core.pipeline.exemplar_pass import Checkpoint

    saves: list[int] = []
    real_save = Checkpoint.save
    monkeypatch.setattr(
        Checkpoint, "save", lambda self, state: (saves.append(state.done), real_save(self, state))
    )
    checkpoint = tmp_path / "state.pt"
    data = Interrupting(image_dir, stop_at=21)
    with pytest.raises(KeyboardInterrupt):
        make_labeler(cache=False, checkpoint=checkpoint, checkpoint_every=2).run(data)
    assert saves == [8, 16, 20]  # every 2 batches of 4, then on the interruption
    with pytest.raises(NeurolabelError, match="different run.*stream"):
        make_labeler(cache=False, checkpoint=checkpoint, resume=True, top_k=4).run(data)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(NeurolabelError, match="cannot be read.*delete it"):
        make_labeler(cache=False, checkpoint=checkpoint, resume=True).run(data)
    with pytest.raises(NeurolabelError, match="needs a checkpoint"):
        make_labeler(resume=True).run(image_dir)


def test_the_activation_cache_skips_the_forward_pass(image_dir):
    model = SeededConvNet()
    calls = []
    model.block1.register_forward_hook(lambda *args: calls.append(1))
    first = make_labeler(model).run(image_dir)
    streamed = len(calls)
    assert streamed == 6  # 23 images in batches of 4
    other_vocab = make_labeler(model, vocabulary=["red", "blue", "green"]).run(image_dir)
    assert len(calls) == streamed  # exemplars came from the cache
    assert [e.image_index for e in other_vocab.explanation("block2", 3).exemplars] == [
        e.image_index for e in first.explanation("block2", 3).exemplars
    ]
    again = make_labeler(model).run(image_dir)
    assert neurons(again) == neurons(first)
    with torch.no_grad():  # other weights: another key, so a new pass
        model.fc.bias.add_(1.0)
    make_labeler(model).run(image_dir)
    assert len(calls) == 2 * streamed
    make_labeler(model, cache=False).run(image_dir)
    assert len(calls) == 3 * streamed


def test_scoring_plan_picks_the_cheaper_encoding(image_dir):
    # 28 units x 3 exemplars = 84 patch slots > 23 images: whole images are cheaper.
    auto = make_labeler(scoring="auto").run(image_dir)
    plan = auto.settings["scoring"]
    assert plan["mode"] == "images" and plan["exemplar_patches"] == 84
    assert plan["probing_images"] == 23 and "fewer" in plan["reason"]
    assert all(e.box is None for e in auto.explanation("block1", 0).exemplars)
    few = make_labeler(scoring="auto", units={"block1": [0], "block2": [1]}).run(image_dir)
    assert few.settings["scoring"]["mode"] == "patches"  # 6 slots < 23 images
    assert any(e.box for e in few.explanation("block1", 0).exemplars)
    forced = make_labeler(scoring="patches").run(image_dir)
    assert forced.settings["scoring"]["mode"] == "patches"
    assert "asked for with scoring='patches'" in forced.settings["scoring"]["reason"]
    with pytest.raises(NeurolabelError, match="scoring="):
        make_labeler(scoring="cheapest")
    with pytest.raises(NeurolabelError, match="patches='activation' would be ignored"):
        make_labeler(scoring="images", patches="activation").run(image_dir)


def test_reduced_precision_and_channels_last_run_the_same_pipeline(image_dir):
    reference = make_labeler(cache=False).run(image_dir)
    fast = make_labeler(cache=False, precision="bf16", channels_last=True).run(image_dir)
    assert fast.settings["precision"] == "bf16"
    same = [
        reference.explanation("block2", u).exemplars[0].image_index
        == fast.explanation("block2", u).exemplars[0].image_index
        for u in range(16)
    ]
    assert sum(same) >= 12  # bf16 rounding may reorder near-ties, not the picture
    with pytest.raises(NeurolabelError, match="precision='fp8'"):
        make_labeler(precision="fp8")


def _explain_command(image_dir: Path, out: Path) -> list[str]:
    return [
        "explain",
        "python:synthetic:SeededConvNet?resize=none&size=64",
        "--layer",
        "block1",
        "--layer",
        "block2",
        "--images",
        str(image_dir),
        "--scorer",
        "color",
        "--vocab",
        "colors",
        "--top-k",
        "3",
        "--batch-size",
        "4",
        "--scoring",
        "patches",
        "--no-cache",
        "--no-html",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    ]


def test_two_gloo_ranks_give_the_single_process_result(image_dir, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    single = subprocess.run(
        [sys.executable, "-m", "neurolabel", *_explain_command(image_dir, tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    ranks = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "neurolabel",
            *_explain_command(image_dir, tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
    assert two["neurons"] == one["neurons"]
    assert two["dataset"]["num_used"] == one["dataset"]["num_used"] == 23
    assert not (tmp_path / "two" / ".checkpoint" / "exemplars.rank1.pt").exists()


class CountingEmbedder:
    """A tiny embedding scorer: image = mean color, text = a fixed color per concept."""

    name = "counting"
    cache_id = "counting-v1"
    COLORS = {"red": (1.0, 0, 0), "green": (0, 1.0, 0), "blue": (0, 0, 1.0), "gray": (1, 1, 1)}

    def __init__(self) -> None:
        self.encoded = 0

    def encode_images(self, images):
        self.encoded += len(images)
        rows = [torch.tensor(np.asarray(im, dtype=np.float32).mean((0, 1))) for im in images]
        return torch.nn.functional.normalize(torch.stack(rows), dim=1)

    def encode_texts(self, texts):
        rows = [torch.tensor(self.COLORS[t], dtype=torch.float32) for t in texts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def test_patch_embeddings_are_encoded_once_and_cached(image_dir):
    scorer = CountingEmbedder()
    first = make_labeler(scorer=scorer, vocabulary=["red", "green", "blue"]).run(image_dir)
    # Unique patches only: 28 units x 3 exemplars share image regions, plus the 8 samples.
    slots = sum(len(n.exemplars) for layer in first.neurons.values() for n in layer)
    assert slots == 84 and 8 < scorer.encoded <= slots + 8
    encoded = scorer.encoded
    other = make_labeler(scorer=scorer, vocabulary=["red", "gray"], aggregation="mean")
    again = other.run(image_dir)
    assert scorer.encoded == encoded  # another vocabulary and aggregation: nothing re-encoded
    assert again.explanation("block1", 0).concepts[0][0] in ("red", "gray")
    assert again.patch_images  # thumbnails still cut from the images
    scorer.cache_id = "counting-v2"  # another model: another cache entry
    make_labeler(scorer=scorer, vocabulary=["red"]).run(image_dir)
    assert scorer.encoded == 2 * encoded


def test_ranks_with_different_random_weights_are_refused(image_dir, tmp_path):
    command = _explain_command(image_dir, tmp_path / "out")
    command[1] = "torchvision:resnet18?weights=none"  # initialized randomly in each process
    command[3], command[5] = "layer1", "layer2"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + ["-m", "neurolabel", *command],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "ranks loaded different models" in out.stderr + out.stdout
    assert not (tmp_path / "out" / "result.json").exists()


def test_cli_resume_reports_a_bad_checkpoint_and_a_fresh_run_replaces_it(image_dir, tmp_path):
    from neurolabel.plugin_core.cli import main
    from neurolabel.plugin_core.cli.explain import CHECKPOINT_FILE

    out = tmp_path / "out"
    (out / CHECKPOINT_FILE).parent.mkdir(parents=True)
    (out / CHECKPOINT_FILE).write_bytes(b"garbage")
    command = _explain_command(image_dir, out)
    with pytest.raises(SystemExit) as failed:
        main([*command, "--resume"])
    assert failed.value.code == 2 and not (out / "result.json").exists()
    main(command)  # without --resume the stale checkpoint is simply overwritten
    assert (out / "result.json").is_file() and not (out / CHECKPOINT_FILE).parent.exists()


class UnreadableWhenScoring(torch.utils.data.Dataset):
    """Images of a folder that stop being readable once the first pass is over: a read by a
    worker of the scoring stage fails (a file truncated mid-run)."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted(folder.iterdir())

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and isinstance(worker.dataset, ExemplarCrops):
            raise OSError("the file was truncated")
        return Image.open(self.paths[index]).convert("RGB")


def test_workers_read_and_cut_exemplars_to_the_same_result(image_dir):
    reference = make_labeler(cache=False).run(image_dir)
    with_workers = make_labeler(cache=False, num_workers=2).run(image_dir)
    assert neurons(with_workers) == neurons(reference)
    slot = ("block1", 0, 0)
    assert with_workers.patch_images[slot].tobytes() == reference.patch_images[slot].tobytes()
    # An exemplar image that became unreadable after the first pass stops the run by name,
    # from a worker as from the main process.
    with pytest.raises(NeurolabelError, match="became unreadable: .*truncated"):
        make_labeler(cache=False, num_workers=2).run(UnreadableWhenScoring(image_dir))


def test_layers_handed_over_during_the_pass_give_the_copied_result(image_dir, monkeypatch):
    import torchvision

    from neurolabel.adapters.hook_extractor import _Reader

    torch.manual_seed(0)
    # bn1 is overwritten by an in-place ReLU: streamed in the hook, before the ReLU runs.
    model = torchvision.models.resnet18(weights=None).eval()
    labeler = make_labeler(model, layers=["bn1", "layer1", "layer2.0.relu"], cache=False)
    consumed: list[set[str]] = []
    call = _Reader.__call__

    def spy(self, batch, consume=None):
        out = call(self, batch, consume=consume)
        consumed.append(set(self.consumed))
        return out

    monkeypatch.setattr(_Reader, "__call__", spy)
    handed = neurons(labeler.run(image_dir))
    # After the first batch, the layers that run once per pass were streamed in their hooks
    # (layer2.0.relu runs twice per pass and is copied).
    assert consumed[0] == set() and consumed[1] == {"bn1", "layer1"}
    monkeypatch.setattr(_Reader, "supports_consume", False)
    copied = neurons(
        make_labeler(model, layers=["bn1", "layer1", "layer2.0.relu"], cache=False).run(image_dir)
    )
    assert handed == copied
