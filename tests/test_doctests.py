"""The examples in the core's docstrings run (so they cannot rot)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import neurolabel.plugin_core as core

MODULES = sorted(m.name for m in pkgutil.iter_modules(core.__path__, "neurolabel.plugin_core."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
