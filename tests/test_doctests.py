"""The examples in the docstrings of the pure functions run as written (doctest), so the docs cannot drift from
what the code does. Only these modules are collected: the rest of the package needs models and data."""

import doctest
import importlib

import pytest

MODULES = {  # module → the functions whose examples must exist (and pass)
    "lipslib.schedule": ["update", "initial_schedule"],
    "lipslib.pruning.engine": ["n_remove"],
    "lipslib.pruning.spec": ["read_spec", "parse_spec"],
    "lipslib.cfg": ["load_params"],
    "lipslib.cfg.settings": ["loop_settings"],
    "lipslib.recovery": ["Recovery"],
    "lipslib.errors": ["LipsError"],
    "lipslib.files": ["portable"],
    "lipslib.assets.catalog": [],
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = {t.name.rsplit(".", 1)[-1]: t for t in finder.find(module) if t.examples}
    for fn in MODULES[name]:
        assert fn in tests, f"{name}.{fn} has no docstring example"
    for test in tests.values():
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"
