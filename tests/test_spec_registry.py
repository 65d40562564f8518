from __future__ import annotations

import pytest

from neurolabel.plugin_core.errors import SpecError, UnknownNameError
from neurolabel.plugin_core.plugins.registry import Registry
from neurolabel.plugin_core.plugins.spec import Spec


@pytest.mark.parametrize(
    ("text", "name", "argument", "options"),
    [
        ("imagenet", "imagenet", None, {}),
        ("words:20000", "words", "20000", {}),
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip", "ViT-B-32/laion2b_s34b_b79k", {}),
        ("open_clip:ViT-S-32?pretrained=none", "open_clip", "ViT-S-32", {"pretrained": "none"}),
        ("python:pkg.mod:build?a=1&b=x", "python", "pkg.mod:build", {"a": "1", "b": "x"}),
        (
            "llm:openai/gpt-4o-mini?api_base=http://127.0.0.1:8000/v1&topics=dog,car",
            "llm",
            "openai/gpt-4o-mini",
            {"api_base": "http://127.0.0.1:8000/v1", "topics": "dog,car"},
        ),
        ("file:/tmp/a b.txt", "file", "/tmp/a b.txt", {}),
        ("open_clip:RN50?pretrained=/m/a+b.pt", "open_clip", "RN50", {"pretrained": "/m/a+b.pt"}),
    ],
)
def test_spec_grammar(text, name, argument, options):
    spec = Spec.parse(text)
    assert (spec.name, spec.argument, dict(spec.options)) == (name, argument, options)
    assert Spec.parse(str(spec)) == spec


def test_spec_errors_and_typed_options():
    with pytest.raises(SpecError, match="Empty spec"):
        Spec.parse("  ")
    with pytest.raises(SpecError, match="no name"):
        Spec.parse(":x")
    spec = Spec.parse("x?flag=yes&n=3&f=0.5&bad=maybe")
    assert spec.option_bool("flag") is True
    assert spec.option_int("n") == 3
    assert spec.option_float("f") == 0.5
    with pytest.raises(SpecError, match="true or false"):
        spec.option_bool("bad")
    with pytest.raises(SpecError, match="must be an integer"):
        Spec.parse("x?n=three").option_int("n")
    with pytest.raises(SpecError, match="Unknown option.*bad.*Allowed: f, flag, n"):
        spec.check_options({"flag", "n", "f"})
    with pytest.raises(SpecError, match="needs a model name"):
        Spec.parse("timm").require_argument("a model name")


def test_registry_unknown_name_lists_names_and_closest():
    reg: Registry[str] = Registry("scorer")
    reg.add("open_clip", lambda spec, ctx: f"clip {spec.argument}", plugin="p")
    reg.add("classifier", lambda spec, ctx: "c", plugin="p")
    assert reg.resolve("open_clip:RN50", None) == "clip RN50"
    with pytest.raises(UnknownNameError) as info:
        reg.resolve("open_clp:RN50", None)
    message = str(info.value)
    assert "Did you mean 'open_clip'" in message
    assert "classifier, open_clip" in message
    with pytest.raises(ValueError):
        reg.add("bad:name", lambda s, c: "x")
