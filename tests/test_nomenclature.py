"""maestro.nomenclature: a user's classes, checked when loaded, grouped when read."""

from pathlib import Path

import numpy as np
import pytest

from maestro.errors import ConfigError
from maestro.labels import palette
from maestro.nomenclature import Nomenclature, load_nomenclature

HEDGEROWS = """\
classes:
  - {value: 0, name: other}
  - {value: 1, name: hedgerow, colour: "#1b7837"}
  - {value: 2, name: isolated tree, colour: "#7fbc41"}
  - {value: 3, name: forest, colour: "#00441b"}
  - {value: 4, name: unlabelled}
ignored: [4]
grouping:
  0: 0
  11: 1
  12: 1
  20: 2
  30: 3
  99: 4
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nomenclature.yaml"
    path.write_text(text)
    return path


def test_a_nomenclature_loads_with_its_colours_ignored_values_and_grouping(tmp_path: Path):
    nomenclature = load_nomenclature(_write(tmp_path, HEDGEROWS))
    level = nomenclature.level()
    assert level.names == ("other", "hedgerow", "isolated tree", "forest", "unlabelled")
    assert level.num_classes == 4 and level.evaluated == [0, 1, 2, 3] and level.ignored == {4}
    colours = palette(level)
    assert colours[1] == (0x1B, 0x78, 0x37) and colours[3] == (0x00, 0x44, 0x1B)
    assert len(set(colours)) == 5  # generated colours for the classes without one are distinct
    raw = np.array([[0, 11, 12, 20], [30, 99, 11, 0]], dtype=np.uint8)
    classes, unknown = nomenclature.group(raw)
    assert classes.tolist() == [[0, 1, 1, 2], [3, 4, 1, 0]] and unknown == []
    assert nomenclature.classes_only().grouping is None


def test_raw_values_the_nomenclature_does_not_list_are_reported_not_turned_into_a_class(tmp_path: Path):
    grouped = load_nomenclature(_write(tmp_path, HEDGEROWS))
    assert grouped.group(np.array([[11, 13, 255]], dtype=np.uint8))[1] == [13, 255]
    plain = Nomenclature.from_dict({"classes": [{"value": 0, "name": "a"}, {"value": 1, "name": "b"}]})
    classes, unknown = plain.group(np.array([[0, 1, 2, 7]], dtype=np.uint8))
    assert unknown == [2, 7] and classes[0, :2].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEDGEROWS.replace("value: 4, name: unlabelled", "value: 3, name: unlabelled"),
            r"values given more than once: \[3\]",
        ),
        (HEDGEROWS.replace("name: forest", "name: hedgerow"), r"names given more than once: \['hedgerow'\]"),
        (
            HEDGEROWS.replace("  30: 3\n", "  30: 3\n  11: 2\n"),
            r"key 11 is given twice in one mapping \(lines 10 and 14\)",
        ),
        (
            HEDGEROWS.replace("value: 4, name: unlabelled", "value: 6, name: unlabelled"),
            r"values must be 0\.\.4.*\[4\] missing",
        ),
        (HEDGEROWS.replace("ignored: [4]", "ignored: [7]"), r"ignored: \[7\] must be distinct class values"),
        (HEDGEROWS.replace("99: 4", "99: 5"), r"map to class values .* \(bad: \[5\]\)"),
        (HEDGEROWS.replace("99: 4", "300: 4"), r"raw values must be 0\.\.255 \(bad: \[300\]\)"),
        (HEDGEROWS.replace('"#1b7837"', "green"), r"colour 'green' is not #rrggbb"),
        (HEDGEROWS.replace("classes:", "clases:"), r"unknown key\(s\) \['clases'\]"),
        ("classes: [{value: 0, name: all}]\n", "at least 2 classes"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_a_bad_nomenclature_is_a_config_error_naming_the_file(tmp_path: Path, text: str, message: str):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_nomenclature(path)
    assert str(path) in str(caught.value)


def test_a_missing_nomenclature_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nomenclature file .*nope\.yaml does not exist"):
        load_nomenclature(tmp_path / "nope.yaml")
