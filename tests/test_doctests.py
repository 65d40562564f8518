"""Every ``>>>`` example in the three code folders runs, or is skipped for a stated reason.

Examples are collected from every module of ``neurolabel`` (the public facade),
``neurolabel.plugin_core``, ``neurolabel.adapters`` and ``neurolabel.backends``. An
example marked ``# doctest: +SKIP`` must belong to a docstring listed in
:data:`SKIPPED` with the reason it cannot run here; a listed docstring that no longer
skips anything fails too, so the list stays true.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import neurolabel
import neurolabel.adapters
import neurolabel.backends
import neurolabel.plugin_core

#: Docstring (doctest name) -> why its skipped examples cannot run in the test suite.
SKIPPED: dict[str, str] = {}


def all_modules() -> list[str]:
    names = ["neurolabel"]
    for package in (neurolabel.plugin_core, neurolabel.adapters, neurolabel.backends):
        names.append(package.__name__)
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(names)


MODULES = all_modules()


def docstring_tests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


def skipped_examples(test: doctest.DocTest) -> int:
    return sum(bool(e.options.get(doctest.SKIP)) for e in test.examples)


def test_the_walk_finds_every_folder():
    assert {"neurolabel.plugin_core.cli.app", "neurolabel.adapters.hook_extractor"} <= set(MODULES)
    assert "neurolabel.backends.open_clip_scorer" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    unexplained = []
    for test in docstring_tests(name):
        if skipped_examples(test) and test.name not in SKIPPED:
            unexplained.append(test.name)
        runner.run(test)
    assert not unexplained, f"+SKIP without a reason in SKIPPED: {unexplained}"
    assert runner.failures == 0


def test_every_listed_skip_still_skips_something():
    skipping = {
        test.name for name in MODULES for test in docstring_tests(name) if skipped_examples(test)
    }
    assert set(SKIPPED) <= skipping, f"stale SKIPPED entries: {set(SKIPPED) - skipping}"
    assert all(reason.strip() for reason in SKIPPED.values())
