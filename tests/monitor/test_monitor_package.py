"""attnkit.monitor's names load on first use; importing the package stays light."""

import subprocess
import sys

import pytest

import attnkit.monitor as monitor


def test_names_resolve_lazily():
    code = (
        "import sys, attnkit.monitor\n"
        "assert 'sqlalchemy' not in sys.modules and 'fastapi' not in sys.modules\n"
        "attnkit.monitor.Store\n"
        "assert 'sqlalchemy' in sys.modules and 'fastapi' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in monitor.__all__:
        assert getattr(monitor, name).__name__ == name


def test_unknown_names_raise():
    with pytest.raises(AttributeError, match="Nothing"):
        monitor.Nothing  # noqa: B018
