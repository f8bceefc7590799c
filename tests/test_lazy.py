"""``maestro.lazy``: package exports resolved on first use, unknown names an AttributeError."""

from __future__ import annotations

import subprocess
import sys

import pytest

from maestro.lazy import lazy_exports


def test_an_export_is_taken_from_the_module_it_names_and_an_unknown_name_is_an_attribute_error():
    getter = lazy_exports("pkg", {"sqrt": "math"})
    import math

    assert getter("sqrt") is math.sqrt
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'cos'"):
        getter("cos")


def test_the_lazy_packages_import_no_torch_until_a_network_is_asked_for():
    code = (
        "import sys, maestro.models, maestro.hub, maestro.reference, maestro.models.heads, "
        "maestro.models.baseline\n"
        "assert 'torch' not in sys.modules\n"
        "maestro.models.MaestroEncoder\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
