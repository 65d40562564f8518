"""The plugin system: built-ins, class-based plugins in fixtures, an installed entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.manager import DEFAULT_PLUGINS, get_plugins, load_plugins, pm
from neurolabel.plugin_core.plugins.resolve import build_context

HERE = Path(__file__).resolve().parent


@pytest.fixture
def register_plugin():
    registered = []

    def register(plugin, name):
        pm.register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        pm.unregister(plugin)


def test_builtin_plugins_are_ordinary_registered_modules():
    load_plugins()
    load_plugins()  # idempotent
    names = get_plugins().plugin_names()
    for module in DEFAULT_PLUGINS:
        assert module in names
    regs = get_plugins().registries()
    assert regs.extractors.get("hooks").plugin == "neurolabel.adapters.hook_extractor"


def test_register_vocabularies_hook(register_plugin, ctx):
    class Plugin:
        @hookimpl
        def register_vocabularies(self, register):
            register(
                "fruits",
                lambda spec, c: (
                    lambda: Vocabulary.build(["Apple", "pear", "apple"], source=str(spec))
                ),
            )

    register_plugin(Plugin(), "fruits-plugin")
    vocab = build_context("cpu").registries.vocabularies.resolve("fruits", ctx)()
    assert vocab.concepts == ("apple", "pear")
    assert build_context("cpu").registries.vocabularies.get("fruits").plugin == "fruits-plugin"


def test_register_scorers_hook(register_plugin):
    class Const:
        name = "const"

        def encode_images(self, images):
            return torch.nn.functional.normalize(torch.ones(len(images), 2), dim=1)

        def encode_texts(self, texts):
            return torch.nn.functional.normalize(torch.ones(len(texts), 2), dim=1)

    class Plugin:
        @hookimpl
        def register_scorers(self, register):
            register("const", lambda spec, c: Const())

    register_plugin(Plugin(), "const-plugin")
    ctx = build_context("cpu")
    scorer = ctx.registries.scorers.resolve("const", ctx)
    assert scorer.encode_images([Image.new("RGB", (2, 2))]).shape == (1, 2)


def test_register_model_sources_hook(register_plugin):
    from neurolabel.plugin_core.data.preprocessing import Preprocessing
    from neurolabel.plugin_core.plugins.contracts import LoadedModel

    class Plugin:
        @hookimpl
        def register_model_sources(self, register):
            register(
                "tiny",
                lambda spec, c: LoadedModel(
                    torch.nn.Conv2d(3, int(spec.argument), 3),
                    Preprocessing((16, 16), 16),
                    str(spec),
                ),
            )

    register_plugin(Plugin(), "tiny-plugin")
    ctx = build_context("cpu")
    loaded = ctx.registries.model_sources.resolve("tiny:5", ctx)
    assert loaded.model.out_channels == 5 and loaded.name == "tiny:5"


def test_register_extractors_hook(register_plugin):
    from contextlib import contextmanager

    class WholeOutput:
        name = "whole-output"

        @contextmanager
        def open(self, loaded, layers):
            yield lambda batch: {"output": loaded.model(batch)}

        def list_layers(self, loaded):
            return []

    class Plugin:
        @hookimpl
        def register_extractors(self, register):
            register("whole-output", lambda spec, c: WholeOutput())

    register_plugin(Plugin(), "extractor-plugin")
    ctx = build_context("cpu")
    extractor = ctx.registries.extractors.resolve("whole-output", ctx)
    from neurolabel.plugin_core.pipeline.labeler import NeuronLabeler

    result = NeuronLabeler(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3)),
        layers=["output"],
        scorer=_color_scorer(),
        vocabulary=["red", "green"],
        extractor=extractor,
        context=ctx,
        top_k=2,
        progress=False,
    ).run([Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")])
    assert set(result.neurons) == {"output"} and len(result.neurons["output"]) == 3


def _color_scorer():
    sys.path.insert(0, str(HERE / "plugin_pkg"))
    try:
        from neurolabel_mycorp import MyCorpScorer
    finally:
        sys.path.pop(0)
    return MyCorpScorer(40)


def test_register_evaluators_hook(register_plugin, tmp_path):
    class CountDead:
        name = "count-dead"

        def evaluate(self, result, context):
            return {"dead": sum(n.dead for n in result)}

    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register("count-dead", lambda spec, c: CountDead())

    register_plugin(Plugin(), "eval-plugin")
    from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation

    result = LabelingResult(
        {"name": "m"},
        {"fc": {"units": 2}},
        {"fc": [NeuronExplanation("fc", 0, dead=True), NeuronExplanation("fc", 1, [["a", 1.0]])]},
    )
    result.save(tmp_path)
    from neurolabel.plugin_core.cli import main

    main(["evaluate", str(tmp_path), "--metric", "count-dead", "--device", "cpu"])
    assert LabelingResult.load(tmp_path).metrics["count-dead"] == {"dead": 1}


def test_register_commands_hook(register_plugin, capsys):
    import typer

    from neurolabel.plugin_core import cli

    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="hello-plugin")
            def hello(name: str = typer.Option("world")) -> None:
                print(f"hello {name}")

    register_plugin(Plugin(), "command-plugin")
    get_plugins().register_commands(cli.app)
    cli.main(["hello-plugin", "--name", "neurons"])
    assert "hello neurons" in capsys.readouterr().out


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """Build and install the separate tiny package into a private folder (no network)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(HERE / "plugin_pkg"),
        ],
        check=True,
        cwd=build,
        capture_output=True,
    )
    return target


def _cli(args, site, **env):
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(HERE)]), **env}
    return subprocess.run(
        [sys.executable, "-m", "neurolabel", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )


def test_installed_third_party_scorer_is_used_by_name_from_the_cli(installed_plugin, tmp_path):
    from synthetic import square_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        square_image(
            (64, 64), (8, 8, 40, 40), (230, 20, 20) if i % 2 else (20, 20, 230), seed=i
        ).save(folder / f"{i}.png")
    listing = _cli(["plugins", "--json"], installed_plugin)
    assert listing.returncode == 0, listing.stderr
    assert '"mycorp-vlm"' in listing.stdout and "neurolabel-mycorp" in listing.stdout
    out = tmp_path / "out"
    run = _cli(
        [
            "explain",
            "python:synthetic:ColorDetector",
            "--layer",
            "features.1",
            "--images",
            str(folder),
            "--scorer",
            "mycorp-vlm:40",
            "--vocab",
            "file:" + str(_vocab(tmp_path)),
            "--top-k",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ],
        installed_plugin,
    )
    assert run.returncode == 0, run.stderr
    from neurolabel.plugin_core.data.result import LabelingResult

    result = LabelingResult.load(out)
    assert result.settings["scorer"] == "mycorp-vlm:40"
    assert result.explanation("features.1", 0).description == "red"
    assert result.explanation("features.1", 1).description == "blue"
    assert result.explanation("features.1", 2).dead
    restricted = _cli(["plugins", "--json"], installed_plugin, NEUROLABEL_PLUGINS="")
    assert '"mycorp-vlm"' not in restricted.stdout
    chosen = _cli(["plugins", "--json"], installed_plugin, NEUROLABEL_PLUGINS="mycorp")
    assert '"mycorp-vlm"' in chosen.stdout


def _vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("# colors\nblue\ngreen\n\nBlue\nred\n")
    return path


def _entry_point_site(tmp_path: Path, module_source: str) -> Path:
    """A folder that installs one plugin module the way pip would (a dist-info with an
    entry point in the group ``neurolabel``), to put on PYTHONPATH."""
    site = tmp_path / "site"
    info = site / "neurolabel_typo-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "neurolabel_typo.py").write_text(module_source)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: neurolabel-typo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[neurolabel]\ntypo = neurolabel_typo\n")
    return site


def test_a_misspelled_hook_in_an_installed_plugin_fails_naming_plugin_and_hook(tmp_path):
    site = _entry_point_site(
        tmp_path,
        "from neurolabel import hookimpl\n\n\n@hookimpl\ndef register_scorer(register):\n"
        "    register('typo-vlm', lambda spec, ctx: None)\n",
    )
    run = _cli(["plugins"], site)
    assert run.returncode == 2, run.stdout + run.stderr
    message = " ".join(run.stderr.split())
    assert "'typo' implements 'register_scorer', which is not a neurolabel hook" in message
    assert "Did you mean 'register_scorers'?" in message and "Traceback" not in run.stderr
    # Leaving the plugin out is the way around it, and says so.
    assert _cli(["plugins"], site, NEUROLABEL_PLUGINS="").returncode == 0


def test_a_hook_with_arguments_its_spec_lacks_fails_naming_the_plugin(tmp_path):
    site = _entry_point_site(
        tmp_path,
        "from neurolabel import hookimpl\n\n\n@hookimpl\ndef register_scorers(registry):\n"
        "    pass\n",
    )
    run = _cli(["plugins"], site)
    assert run.returncode == 2
    message = " ".join(run.stderr.split())
    assert "The plugin module 'neurolabel_typo' does not fit neurolabel's hooks" in message
    assert "'typo' for hook 'register_scorers'" in message and "{'registry'}" in message
    assert "NEUROLABEL_PLUGINS" in message and "Traceback" not in run.stderr


def test_check_hooks_catches_a_class_based_plugin_too(register_plugin):
    from neurolabel.plugin_core.errors import NeurolabelError
    from neurolabel.plugin_core.plugins.manager import check_hooks

    class Plugin:
        @hookimpl
        def register_evaluator(self, register):
            raise AssertionError("never called")

    check_hooks()
    register_plugin(Plugin(), "typo-class-plugin")
    with pytest.raises(NeurolabelError, match="'typo-class-plugin' implements 'register_eval"):
        check_hooks()
