"""FLAIR #2 layout, nomenclature, reader and toy generator (maestro.data.flair2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from maestro.data.flair2 import Flair2Reader, layout, nomenclature, series, write_flair2_toy
from maestro.data.flair2.toy import Flair2Toy
from maestro.errors import DataError


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Flair2Toy:
    return write_flair2_toy(tmp_path_factory.mktemp("flair2"), num_patches=8, seed=0)


@pytest.fixture
def fresh(tmp_path: Path) -> Flair2Toy:
    """A toy tree a test may break."""
    return write_flair2_toy(tmp_path / "flair2", num_patches=8, seed=0)


def _sen(toy: Flair2Toy, patch_id: str) -> dict[str, Path]:
    info = toy.patches[patch_id]
    folder = layout.SPLIT_FOLDERS[str(info["split"])].sen[0]
    return layout.sen_files(toy.root / folder, str(info["domain"]), str(info["zone"]))


# ------------------------------------------------------------------------------ layout / nomenclature


def test_release_tree_and_names(toy: Flair2Toy) -> None:
    patch_id = toy.train_ids[0]
    info = toy.patches[patch_id]
    domain, zone = info["domain"], info["zone"]
    root = toy.root
    assert (root / "flair_aerial_train" / domain / zone / "img" / f"IMG_{patch_id}.tif").is_file()
    assert (root / "flair_labels_train" / domain / zone / "msk" / f"MSK_{patch_id}.tif").is_file()
    sen = root / "flair_sen_train" / domain / zone / "sen"
    for suffix in ("data.npy", "masks.npy", "products.txt"):
        assert (sen / f"SEN2_sp_{domain}-{zone}_{suffix}").is_file()
    assert (root / "flair_2_aerial_test").is_dir() and (root / "flair_2_sen_test").is_dir()
    centroids = json.loads((root / "flair-2_centroids_sp_to_patch.json").read_text())
    assert centroids[f"IMG_{patch_id}.tif"] == list(info["centroid"])
    metadata = json.loads((root / "flair_aerial_metadata.json").read_text())
    assert {"date", "time", "camera", "patch_centroid_x", "patch_centroid_y", "patch_centroid_z"} <= set(
        metadata[f"IMG_{patch_id}"]
    )
    with rasterio.open(root / "flair_aerial_train" / domain / zone / "img" / f"IMG_{patch_id}.tif") as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (5, 512, 512, "uint8")
        assert src.res == (0.2, 0.2) and src.crs.to_epsg() == 2154
    data = np.load(sen / f"SEN2_sp_{domain}-{zone}_data.npy")
    masks = np.load(sen / f"SEN2_sp_{domain}-{zone}_masks.npy")
    assert data.dtype == np.uint16 and data.shape[1] == 10
    assert masks.shape == (data.shape[0], 2, *data.shape[2:]) and masks.max() <= 100


def test_product_dates_parse_whole_date() -> None:
    assert layout.product_date("SENTINEL2B_20200915-105852-555_L2A_T31TCJ_C_V2-2") == 20200915
    assert layout.product_date(layout.product_name("A", 20191231)) == 20191231
    assert layout.product_date("SENTINEL2A_garbage") is None
    assert layout.patch_id_of("a/b/IMG_013954.tif") == "013954" and layout.patch_id_of("MSK_1.tif") is None


def test_nomenclature_grouping_and_weights() -> None:
    n = nomenclature
    assert len(n.RAW_VALUES) == len(n.RAW_NAMES) == len(n.RAW_COLORS) == 19
    assert n.NUM_CLASSES == len(n.CLASS_NAMES) == len(n.CLASS_WEIGHTS) == len(n.S2_CLASS_WEIGHTS) == 13
    assert (
        n.CLASS_NAMES[0] == "building" and n.CLASS_NAMES[11] == "plowed land" and n.CLASS_NAMES[12] == "other"
    )
    assert n.IGNORED_CLASSES == (12,) and n.CLASS_WEIGHTS[12] == 0.0 and sum(n.CLASS_WEIGHTS) == 12
    assert n.S2_CLASS_WEIGHTS[11] == 0.0
    raw = np.array([1, 5, 12, 13, 18, 19], dtype=np.uint8)
    assert n.group_labels(raw).tolist() == [0, 4, 11, 12, 12, 12]
    assert n.group_labels(np.array([0, 20], dtype=np.uint8)).tolist() == [n.INVALID, n.INVALID]


# ------------------------------------------------------------------------------ reader on the toy


def test_reader_samples_shapes_dtypes_and_splits(toy: Flair2Toy) -> None:
    train, val, test = (Flair2Reader(toy.root, split) for split in ("train", "val", "test"))
    assert sorted(train.patch_ids + val.patch_ids) == sorted(toy.train_ids)
    assert {toy.patches[p]["domain"] for p in train.patch_ids}.isdisjoint(
        {toy.patches[p]["domain"] for p in val.patch_ids}
    )
    assert len(val) > 0 and test.patch_ids == toy.test_ids
    for reader in (train, val, test):
        samples = list(reader)
        assert len(samples) == len(reader) and reader.skipped == 0
        for sample in samples:
            t = sample["s2"].shape[0]
            assert sample["aerial"].shape == (4, 512, 512) and sample["aerial"].dtype == np.uint8
            assert sample["elevation"].shape == (1, 512, 512) and sample["elevation"].dtype == np.uint8
            assert sample["s2"].shape == (t, 10, 40, 40) and sample["s2"].dtype == np.uint16
            assert sample["s2_mask"].shape == (t, 2, 40, 40)
            assert sample["flair2"].shape == (1, 512, 512) and sample["flair2"].dtype == np.uint8
            assert int(sample["flair2"].max()) <= 12
            assert sample["dates"]["s2"].dtype == np.int32 and sample["dates"]["s2"].shape == (t,)
            meta = sample["meta"]
            info = toy.patches[meta["patch_id"]]
            assert (meta["domain"], meta["zone"], meta["split"]) == (
                info["domain"],
                info["zone"],
                reader.split,
            )
            assert meta["rasters"]["aerial"]["path"].endswith(f"img/IMG_{meta['patch_id']}.tif")
            assert meta["rasters"]["s2"]["products"].endswith("_products.txt")
            flight = meta["aerial_metadata"]["date"].replace("-", "")
            assert sample["dates"]["aerial"].tolist() == [int(flight)]


def test_reader_channels_match_img_bands(toy: Flair2Toy) -> None:
    patch_id = toy.train_ids[0]
    sample = Flair2Reader(toy.root, "train", modalities=("aerial", "elevation")).read(patch_id)
    with rasterio.open(toy.root / sample["meta"]["rasters"]["aerial"]["path"]) as src:
        image = src.read()
    np.testing.assert_array_equal(sample["aerial"], image[:4])
    np.testing.assert_array_equal(sample["elevation"], image[4:])
    assert "s2" not in sample and "s2" not in sample["dates"]


def test_dates_come_from_the_products_file(fresh: Flair2Toy) -> None:
    patch_id = fresh.train_ids[0]
    files = _sen(fresh, patch_id)
    info = fresh.patches[patch_id]
    assert (
        Flair2Reader(fresh.root, "train", cloud_filter=False).read(patch_id)["dates"]["s2"].tolist()
        == (fresh.dates[(info["domain"], info["zone"])])
    )
    t = np.load(files["data"], mmap_mode="r").shape[0]
    own = [20220101 + 100 * m for m in range(t)]  # one per month, another year than the domain's
    files["products"].write_text("\n".join(layout.product_name("B", d, "T30TXQ") for d in own))
    assert Flair2Reader(fresh.root, "train", cloud_filter=False).read(patch_id)["dates"]["s2"].tolist() == own


def test_super_patch_crop_matches_hand_computed_window(fresh: Flair2Toy) -> None:
    patch_id = fresh.train_ids[1]  # second patch of its zone: centroid (24, 36)
    assert fresh.patches[patch_id]["centroid"] == (24, 36)
    files = _sen(fresh, patch_id)
    data = np.load(files["data"])
    t, c, h, w = data.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pattern = (rows * 100 + cols).astype(np.uint16)  # pixel (r, c) holds r * 100 + c
    data[:] = pattern + (np.arange(t) * 5000).astype(np.uint16)[:, None, None, None]  # date t adds t * 5000
    np.save(files["data"], data)
    np.save(files["masks"], np.zeros((t, 2, h, w), np.uint8))
    s2 = Flair2Reader(fresh.root, "train").read(patch_id)["s2"]
    # super_patch 40 around (24, 36): rows 4..43, cols 16..55
    assert s2.shape == (t, 10, 40, 40)
    assert s2[0, 0, 0, 0] == 4 * 100 + 16 and s2[0, 0, -1, -1] == 43 * 100 + 55
    assert s2[3, 7, 20, 20] == 15000 + 24 * 100 + 36  # the centroid is the pixel right of the middle
    small = Flair2Reader(fresh.root, "train", super_patch=8).read(patch_id)
    assert small["meta"]["rasters"]["s2"]["window"] == (20, 28, 32, 40)
    np.testing.assert_array_equal(small["s2"][0, 0], pattern[20:28, 32:40])


# ------------------------------------------------------------------------------ cloud filter / monthly


def _masks(snow: list[float], cloud: list[float], probability: int = 50) -> np.ndarray:
    """(T, 2, 10, 10) masks whose first ``fraction`` of pixels hold ``probability``; snow covers
    pixels from the start, cloud from the end, so the two overlap only past 50 % each."""
    out = np.zeros((len(snow), 2, 100), dtype=np.uint8)
    for t, (s, c) in enumerate(zip(snow, cloud, strict=True)):
        out[t, 0, : round(s * 100)] = probability
        out[t, 1, 100 - round(c * 100) :] = probability
    return out.reshape(len(snow), 2, 10, 10)


def test_cloud_filter_on_hand_made_masks() -> None:
    masks = _masks(snow=[0, 0, 0, 0.7, 0.3, 0.5], cloud=[0, 0.61, 0.6, 0, 0.31, 0.5])
    # date 1: 61 % cloudy -> drop; 2: exactly 60 % -> keep; 3: 70 % snow -> drop;
    # 4: 30 % snow + 31 % cloud, disjoint = 61 % -> drop; 5: 50 % + 50 % disjoint = 100 % -> drop
    assert series.cloud_keep(masks).tolist() == [0, 2]
    below = _masks(snow=[0], cloud=[1.0], probability=49)  # probability under the threshold
    assert series.cloud_keep(below).tolist() == [0]
    overlap = _masks(snow=[0.6], cloud=[0.6])  # union 100 %: both overlap 20 %
    assert series.covered_fraction(overlap).tolist() == [1.0]
    everything = _masks(snow=[0.9, 0.8], cloud=[0, 0])
    assert series.cloud_keep(everything).tolist() == [1]  # least covered date survives


def test_reader_cloud_filter_drops_covered_dates(fresh: Flair2Toy) -> None:
    patch_id = fresh.train_ids[0]
    files = _sen(fresh, patch_id)
    t = np.load(files["data"], mmap_mode="r").shape[0]
    masks = np.zeros((t, 2, *np.load(files["data"], mmap_mode="r").shape[2:]), np.uint8)
    row, col = fresh.patches[patch_id]["centroid"]
    masks[1, 1] = 90  # whole super-area cloudy
    masks[2, 0, row - 20 : row + 5, col - 20 : col + 20] = 60  # 25/40 = 62.5 % of the super-patch snowy
    masks[3, 1, row - 20 : row + 4, col - 20 : col + 20] = 100  # 24/40 = 60 %: kept
    masks[4, 1, :, :] = 49  # under the probability threshold: kept
    np.save(files["masks"], masks)
    info = fresh.patches[patch_id]
    days = fresh.dates[(info["domain"], info["zone"])]
    sample = Flair2Reader(fresh.root, "train").read(patch_id)
    assert sample["dates"]["s2"].tolist() == [d for i, d in enumerate(days) if i not in (1, 2)]
    assert sample["s2"].shape[0] == sample["s2_mask"].shape[0] == t - 2
    assert Flair2Reader(fresh.root, "train", cloud_filter=False).read(patch_id)["s2"].shape[0] == t


def test_monthly_means_on_hand_made_series() -> None:
    values = np.array([10, 21, 30, 41], dtype=np.uint16).reshape(4, 1, 1, 1) * np.ones(
        (1, 10, 2, 2), np.uint16
    )
    masks = np.array([0, 100, 20, 40], dtype=np.uint8).reshape(4, 1, 1, 1) * np.ones((1, 2, 2, 2), np.uint8)
    dates = np.array([20210105, 20210120, 20210210, 20210412], dtype=np.int32)
    s2, m, d = series.monthly_means(values, masks, dates)
    assert d.tolist() == [20210115, 20210215, 20210415] and d.dtype == np.int32
    assert s2[:, 0, 0, 0].tolist() == [16, 30, 41] and s2.dtype == np.uint16  # (10 + 21) / 2 rounds to 16
    assert m[:, 1, 0, 0].tolist() == [50, 20, 40] and m.dtype == np.uint8


def test_reader_monthly_one_date_per_month(toy: Flair2Toy) -> None:
    for patch_id in toy.train_ids[:2]:
        raw = Flair2Reader(toy.root, "train").read(patch_id)
        monthly = Flair2Reader(toy.root, "train", monthly=True).read(patch_id)
        months = sorted({int(d) // 100 for d in raw["dates"]["s2"]})
        assert monthly["dates"]["s2"].tolist() == [m * 100 + 15 for m in months]
        assert monthly["s2"].shape[0] == len(months) < raw["s2"].shape[0] + 1
        first = raw["dates"]["s2"] // 100 == months[0]
        expected = np.rint(raw["s2"][first].astype(np.float64).mean(axis=0)).astype(np.uint16)
        np.testing.assert_array_equal(monthly["s2"][0], expected)


# ------------------------------------------------------------------------------ bad input


def _break_centroid(toy: Flair2Toy, patch_id: str) -> tuple[Path, int]:
    path = toy.root / layout.CENTROIDS_FILES[0]
    centroids = json.loads(path.read_text())
    centroids[layout.centroid_key(patch_id)] = [3, 24]  # rows -17..23: above the super-area
    path.write_text(json.dumps(centroids))
    return path, 1


def _break_products(toy: Flair2Toy, patch_id: str) -> tuple[Path, int]:
    path = _sen(toy, patch_id)["products"]
    path.write_text("\n".join(path.read_text().splitlines()[:-1]))  # one date fewer than the data
    info = toy.patches[patch_id]
    return path, sum(
        1 for p in toy.patches.values() if (p["domain"], p["zone"]) == (info["domain"], info["zone"])
    )


def _rewrite_tif(path: Path, array: np.ndarray) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(count=array.shape[0], height=array.shape[1], width=array.shape[2])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _mask_file(toy: Flair2Toy, patch_id: str) -> Path:
    info = toy.patches[patch_id]
    return layout.mask_path(toy.root / "flair_labels_train", str(info["domain"]), str(info["zone"]), patch_id)


def _image_file(toy: Flair2Toy, patch_id: str) -> Path:
    info = toy.patches[patch_id]
    return layout.image_path(
        toy.root / "flair_aerial_train", str(info["domain"]), str(info["zone"]), patch_id
    )


def _break_mask_value(toy: Flair2Toy, patch_id: str) -> tuple[Path, int]:
    path = _mask_file(toy, patch_id)
    labels = np.full((1, 512, 512), 3, np.uint8)
    labels[0, 7, 9] = 20
    _rewrite_tif(path, labels)
    return path, 1


def _break_band_count(toy: Flair2Toy, patch_id: str) -> tuple[Path, int]:
    path = _image_file(toy, patch_id)
    _rewrite_tif(path, np.zeros((4, 512, 512), np.uint8))
    return path, 1


def _break_size(toy: Flair2Toy, patch_id: str) -> tuple[Path, int]:
    path = _image_file(toy, patch_id)
    _rewrite_tif(path, np.zeros((5, 256, 256), np.uint8))
    return path, 1


@pytest.mark.parametrize(
    ("breaker", "problem"),
    [
        (_break_centroid, "falls outside"),
        (_break_products, "product names but the super-area data has"),
        (_break_mask_value, r"values \[20\] outside"),
        (_break_band_count, "expected 5 bands, got 4"),
        (_break_size, "expected 512x512 pixels, got 256x256"),
    ],
    ids=["centroid-outside", "products-count", "mask-value", "img-bands", "img-size"],
)
def test_bad_input_names_patch_and_file_and_skip_counts(fresh: Flair2Toy, breaker, problem: str) -> None:
    patch_id = fresh.train_ids[0]  # domain D004_2021, in train for the default split seed
    path, affected = breaker(fresh, patch_id)
    reader = Flair2Reader(fresh.root, "train")
    assert patch_id in reader.patch_ids
    with pytest.raises(DataError, match=problem) as caught:
        reader.read(patch_id)
    assert caught.value.patch_id == patch_id and caught.value.path == str(path)
    assert f"patch {patch_id}" in str(caught.value) and str(path) in str(caught.value)
    with pytest.raises(DataError):
        list(Flair2Reader(fresh.root, "train"))
    skipping = Flair2Reader(fresh.root, "train", on_error="skip")
    samples = list(skipping)
    assert skipping.skipped == affected == len(skipping.skipped_errors)
    assert len(samples) == len(skipping) - affected
    assert patch_id in {e.patch_id for e in skipping.skipped_errors}
    assert patch_id not in {s["meta"]["patch_id"] for s in samples}


def test_missing_centroid_and_unknown_patch(fresh: Flair2Toy) -> None:
    path = fresh.root / layout.CENTROIDS_FILES[0]
    centroids = json.loads(path.read_text())
    del centroids[layout.centroid_key(fresh.train_ids[0])]
    path.write_text(json.dumps(centroids))
    with pytest.raises(DataError, match="no super-patch centroid") as caught:
        Flair2Reader(fresh.root, "train").read(fresh.train_ids[0])
    assert caught.value.path == str(path)
    with pytest.raises(DataError, match="not in the 'train' split"):
        Flair2Reader(fresh.root, "train").read("999999")


# ------------------------------------------------------------------------------ toy


def test_toy_is_deterministic_by_seed(tmp_path: Path) -> None:
    a = write_flair2_toy(tmp_path / "a", num_patches=4, seed=3)
    b = write_flair2_toy(tmp_path / "b", num_patches=4, seed=3)
    c = write_flair2_toy(tmp_path / "c", num_patches=4, seed=4)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    assert any((a.root / f).read_bytes() != (c.root / f).read_bytes() for f in files)


def test_toy_labels_are_learnable_from_aerial_and_s2(toy: Flair2Toy) -> None:
    """A per-pixel nearest-mean classifier fitted on train beats chance (1/13) by far on test."""
    train = list(Flair2Reader(toy.root, "train", cloud_filter=True))
    sums, counts = np.zeros((13, 5)), np.zeros(13)
    for s in train:
        pixels = np.concatenate([s["aerial"], s["elevation"]]).reshape(5, -1).T.astype(np.float64)
        labels = s["flair2"].ravel()
        np.add.at(sums, labels, pixels)
        np.add.at(counts, labels, 1)
    seen = counts > 0
    means = sums[seen] / counts[seen, None]
    classes = np.flatnonzero(seen)
    correct = total = 0
    for s in Flair2Reader(toy.root, "test"):
        pixels = np.concatenate([s["aerial"], s["elevation"]]).reshape(5, -1).T.astype(np.float64)
        labels = s["flair2"].ravel()
        known = np.isin(labels, classes) & (labels != nomenclature.OTHER)
        nearest = classes[np.argmin(((pixels[known, None] - means[None]) ** 2).sum(-1), axis=1)]
        correct += int((nearest == labels[known]).sum())
        total += int(known.sum())
    assert total > 0 and correct / total > 0.8
    # S2: the footprint of a patch carries its majority class, distinct between classes
    footprints = {}
    for s in train:
        majority = int(np.bincount(s["flair2"].ravel(), minlength=13).argmax())
        footprints.setdefault(majority, []).append(
            s["s2"][:, :, 17:23, 17:23].astype(np.float64).mean(axis=(0, 2, 3))
        )
    centres = [np.mean(v, axis=0) for v in footprints.values()]
    assert len(centres) > 1
    gaps = [np.abs(a - b).max() for i, a in enumerate(centres) for b in centres[i + 1 :]]
    assert min(gaps) > 200
