"""Image sizes and dates a reference checkpoint does not store: assumed, noted, and checked against
its segmentation head."""

from __future__ import annotations

import pytest
from reference_fixture import CHECKPOINT, OVERRIDES, require_fixture

from maestro.errors import ConfigError
from maestro.reference.convert import convert_checkpoint
from maestro.reference.options import ConversionOptions
from maestro.reference.unpickle import read_reference_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint():
    require_fixture()
    return read_reference_checkpoint(CHECKPOINT)


def test_a_segmenter_on_sizes_that_its_head_contradicts_is_refused(checkpoint):
    """The fixture's head predicts 32x32 label pixels per aerial token (6.4 m tokens); on the
    registry's 512-px aerial (3.2 m tokens) it would emit 1024-px labels for 512-px lc labels."""
    with pytest.raises(ConfigError) as caught:
        convert_checkpoint(checkpoint, ConversionOptions(model_type="maestro-segmenter"))
    message = str(caught.value)
    assert "'cosia'" in message and "32x32 label pixels" in message and "1024" in message
    assert "--image-size aerial=256" in message and "ConversionOptions.overrides" in message


def test_sizes_not_in_the_checkpoint_are_noted_and_a_contradicting_head_warned(checkpoint, caplog):
    with caplog.at_level("WARNING", logger="maestro.reference"):
        conversion = convert_checkpoint(checkpoint, ConversionOptions(model_type="maestro-encoder"))
    notes = " | ".join(conversion.report.notes)
    assert "assumed from the registry: image size aerial 512 px, dem 512 px, s2 10 px" in notes
    assert "dates s2 16, s1_asc 4, s1_des 4" in notes
    assert "'cosia'" in caplog.text and "--image-size aerial=256" in caplog.text
    assert any("'cosia'" in note and "aerial=256" in note for note in conversion.report.notes)

    caplog.clear()
    with caplog.at_level("WARNING", logger="maestro.reference"):
        given = convert_checkpoint(
            checkpoint, ConversionOptions(model_type="maestro-encoder", overrides=OVERRIDES)
        )
    notes = " | ".join(given.report.notes)
    assert "assumed from the registry: image size s2 10 px, s1_asc 10 px, s1_des 10 px" in notes
    assert "aerial 512" not in notes and "'cosia'" not in caplog.text
    assert "256-px labels" in notes  # the given sizes' label size is stated, not refused
