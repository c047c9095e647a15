"""The public surface: every name in ``reglab.__all__`` resolves, and ``import reglab`` stays light."""

import subprocess
import sys

import pytest

import reglab


@pytest.mark.parametrize("name", reglab.__all__)
def test_every_public_name_resolves(name):
    assert getattr(reglab, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'bogus'"):
        reglab.bogus  # noqa: B018


def test_import_does_not_load_optional_frameworks():
    code = (
        "import sys, reglab\n"
        "heavy = [m for m in ('optuna', 'lightning', 'transformers', 'peft', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
