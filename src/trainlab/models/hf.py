"""``hf:<model id or folder>``: a pretrained Hugging Face image model fine-tuned as a classifier.

``--model hf:google/vit-base-patch16-224-in21k`` (or ``hf:/path/to/folder``) takes the
backbone of a `transformers <https://huggingface.co/docs/transformers>`_ image model
(``AutoModel``: ViT, DeiT, DINOv2 ... and convolutional ones such as ConvNeXt or ResNet), and
puts a new trainlab :class:`~trainlab.models.layers.Head` with ``num_classes`` outputs on its
image embedding. transformers is an optional extra (``pip install 'trainlab[hf]'``) imported
only when such a model is built, so ``import trainlab`` stays fast.

**Input.** trainlab feeds every model the images of its dataset as they are stored (e.g.
1×28×28 MNIST digits), normalised with the dataset's channel statistics. The model turns them,
batch-wise on the device, into exactly what the Hugging Face image processor of the model
would have made of the same images (``pixel_values``), up to its uint8 rounding:

1. resize to the model's input size with the processor's interpolation (bilinear for ViT),
   anti-aliased as PIL does;
2. grey images feed every input channel of the model, as PIL's ``convert("RGB")`` does;
3. ``(pixel - image_mean) / image_std`` with the processor's statistics, from the source's
   ``preprocessor_config.json`` (ViT's 0.5/0.5 when it has none).

Resizing is linear with weights that sum to one, so it commutes with the per-channel affine
maps of steps 2–3: the model resizes the normalised images and then applies one multiply-add
per channel, ``x · input_std / image_std + (input_mean - image_mean) / image_std``, where
``input_mean``/``input_std`` are the statistics the images arrive normalised with. They are
buffers saved with the weights; training sets them with :meth:`HFClassifier.set_input_normalization`
(the default, 0 and 1, means plain pixels in [0, 1]).

**Weights.** ``pretrained=True`` loads the backbone's weights from a local folder
(``config.json`` and ``model.safetensors``, as ``save_pretrained`` writes them) or from the
Hugging Face cache. trainlab never downloads a model, and never loads pickled weights
(``pytorch_model.bin``): loading a pickle can run code. A model missing from the cache raises a
:class:`~trainlab.errors.ModelError` that says how to download it.

**Checkpoints.** The spec (``model.trainlab_spec``, saved as a checkpoint's architecture) records
the Hugging Face config and the resolved preprocessing, with ``pretrained: false``: rebuilding it
makes the architecture with random weights, which the checkpoint's weights then replace, so a
checkpoint loads without the original folder, the cache or transformers' network access.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ModelError
from trainlab.models.layers import (
    Classifier,
    Head,
    check_bool,
    check_choice,
    check_ints,
    check_probability,
)
from trainlab.models.registry import register_model

INSTALL_HINT = "install the hf extra: pip install 'trainlab[hf]'"

# Model types whose token sequence starts with a class token that their own classification
# heads read (ViTForImageClassification, DeiT, DINOv2, ViT-MSN): pool="auto" uses it. Other
# backbones use their pooled output (mean of tokens, or global average pool of a feature map).
CLS_TOKEN_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers", "vit_msn")
POOLS = ("auto", "cls", "mean", "pooler")
INTERPOLATIONS = ("auto", "bilinear", "bicubic", "nearest")
# PIL resampling codes in preprocessor_config.json -> torch modes (lanczos: bicubic is closest).
_PIL_RESAMPLE = {
    0: "nearest",
    1: "bicubic",
    2: "bilinear",
    3: "bicubic",
    4: "bilinear",
    5: "bilinear",
}
# Keys of a config dict that describe the old classification head or the machine it came from.
# "dtype"/"torch_dtype": a folder saved in float16 trains in float32, and its checkpoint must
# rebuild in float32 too (not cut the trained weights down to float16 and fail on the head).
_DROPPED_CONFIG_KEYS = ("id2label", "label2id", "_name_or_path", "dtype", "torch_dtype")
# A Hugging Face Hub id: "name" or "owner/name".
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _import_transformers() -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise ModelError(f"hf: models need the transformers package; {INSTALL_HINT}") from None
    return transformers


@contextlib.contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """Silence transformers' progress bars and load reports (trainlab reports problems itself)."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


# --------------------------------------------------------------------------- finding the model


def hf_cache_dir() -> Path:
    """The Hugging Face Hub cache, resolved from the environment now (as huggingface_hub does at
    import): ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):  # the older name
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _download_hint(repo_id: str) -> str:
    return (
        f"on a machine with internet, download it with `hf download {repo_id}` (or "
        f'`python -c "from huggingface_hub import snapshot_download; '
        f"snapshot_download('{repo_id}')\"`) and copy the cache here or point HF_HOME at it; "
        "or pass a local folder holding config.json and model.safetensors (as save_pretrained "
        "writes them): --model hf:/path/to/folder"
    )


def find_model_folder(source: str) -> Path:
    """The folder of ``source``: a local folder, or the snapshot of a Hub id in the HF cache.

    Never downloads. Raises :class:`ModelError` saying how to get the model when it is missing.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
    elif not _REPO_ID.match(source):
        raise ModelError(f"model folder {source} does not exist")
    else:
        from huggingface_hub import try_to_load_from_cache

        cache = hf_cache_dir()
        try:
            config = try_to_load_from_cache(source, "config.json", cache_dir=cache)
        except ValueError:  # not a valid repository id after all (e.g. "a--b")
            config = None
        if not isinstance(config, str):
            raise ModelError(
                f"{source!r} is not a folder and not in the Hugging Face cache ({cache}); "
                f"trainlab never downloads models: {_download_hint(source)}"
            )
        folder = Path(config).parent
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} has no config.json; save a model there with "
            "model.save_pretrained(folder) or pass a Hugging Face model id"
        )
    return folder


def _check_weights(folder: Path, source: str) -> None:
    """Refuse a folder without safetensors weights (pickled weights are never loaded)."""
    if any(
        (folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")
    ):
        return
    pickles = [
        name
        for name in ("pytorch_model.bin", "pytorch_model.bin.index.json")
        if (folder / name).is_file()
    ]
    cached = folder.parent.parent.name.startswith("models--")  # a snapshot in the HF cache
    if pickles:
        fix = (
            f"`hf download {source} model.safetensors` fetches them where the Hub has them"
            if cached
            else "convert them once where you trust the file: AutoModel.from_pretrained(folder)"
            ".save_pretrained(folder)"
        )
        raise ModelError(
            f"{folder} has only pickled weights ({pickles[0]}); trainlab loads only "
            f"model.safetensors (loading a pickle can run code): {fix}; "
            "or use pretrained=false for random initialisation"
        )
    hint = _download_hint(source) if cached else "save them with model.save_pretrained(folder)"
    raise ModelError(
        f"no weights (model.safetensors) in {folder}: {hint}; "
        "or use pretrained=false for random initialisation"
    )


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Processor:
    """What the model's Hugging Face image processor does, in trainlab's terms."""

    mean: tuple[float, ...]  # per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    interpolation: str  # torch mode: bilinear, bicubic or nearest
    size: tuple[int, int] | None  # (height, width) of the images it makes, if it says
    # (height, width) it resizes to before cropping the centre to ``size`` (DeiT: 256 -> 224,
    # ConvNeXt/ResNet: shortest edge 224 / crop_pct 0.875); None: no crop
    resize: tuple[int, int] | None = None


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Mapping):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:  # resize + centre crop of a photo; a square here
            return _pair(int(value["shortest_edge"]))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None


def _interpolation(resample: Any) -> str:
    """A PIL resampling code or name -> the torch mode that matches it best."""
    if isinstance(resample, int) and not isinstance(resample, bool):
        return _PIL_RESAMPLE.get(resample, "bilinear")
    name = str(resample).lower()
    for key, mode in (("lanczos", "bicubic"), ("bicubic", "bicubic"), ("nearest", "nearest")):
        if key in name:
            return mode
    return "bilinear"


def read_processor(folder: Path | None, channels: int) -> Processor:
    """The image processor settings of ``folder`` (``preprocessor_config.json``).

    HF computes ``(u · rescale_factor - mean) / std`` on uint8 values ``u``; with ``p = u / 255``
    that is ``(p - mean / k) / (std / k)`` for ``k = 255 · rescale_factor``, so the mean and std
    returned here are in [0, 1] pixel units. Without a file: ViT's defaults (0.5, 0.5, bilinear).
    """
    path = folder / "preprocessor_config.json" if folder is not None else None
    settings: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"cannot read {path}: {error}") from error
    mean = settings.get("image_mean", 0.5) if settings.get("do_normalize", True) else 0.0
    std = settings.get("image_std", 0.5) if settings.get("do_normalize", True) else 1.0
    scale = (
        255.0 * float(settings.get("rescale_factor", 1 / 255))
        if settings.get("do_rescale", True)
        else 255.0
    )

    def per_channel(value: Any) -> tuple[float, ...]:
        values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
        if len(values) not in (1, channels):
            raise ModelError(f"{path}: {len(values)} image_mean/std values for {channels} channels")
        return tuple(v / scale for v in values * (channels if len(values) == 1 else 1))

    resize, crop = _resize_and_crop(settings)
    return Processor(
        mean=per_channel(mean),
        std=per_channel(std),
        interpolation=_interpolation(settings.get("resample", 2)),
        size=crop or resize,
        resize=resize if crop is not None and resize not in (None, crop) else None,
    )


def _resize_and_crop(settings: Mapping[str, Any]) -> tuple[tuple[int, int] | None, ...]:
    """(resize, centre crop) of a processor config, for trainlab's square-or-not images."""
    size = settings.get("size")
    resize = _pair(size)
    crop_pct = settings.get("crop_pct")
    if isinstance(size, Mapping) and "shortest_edge" in size and crop_pct:
        # ConvNeXt's processor (ResNet's too): below 384 px, the shortest edge is resized to
        # shortest_edge / crop_pct and the centre shortest_edge × shortest_edge is kept.
        edge = int(size["shortest_edge"])
        if edge < 384:
            return _pair(int(edge / float(crop_pct))), (edge, edge)
        return (edge, edge), None
    if settings.get("do_center_crop") and settings.get("crop_size") is not None:
        return resize, _pair(settings.get("crop_size"))
    return resize, None


# --------------------------------------------------------------------------- the model


class HFClassifier(Classifier):
    """A Hugging Face backbone (``self.backbone``) with a trainlab head (``self.classifier``).

    ``forward_features`` is the backbone's image embedding ``[B, D]``: the class token of the
    last layer (after its final LayerNorm) for ViT-like models, as their HF classifiers use it.
    """

    family = "hf"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        in_channels: int,
        num_classes: int,
        embedding_dim: int,
        input_size: tuple[int, int],
        interpolation: str,
        image_mean: tuple[float, ...],
        image_std: tuple[float, ...],
        pool: str,
        skip_tokens: int,
        dropout: float,
        freeze: str,
        forward_kwargs: dict[str, Any],
        resize_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.resize_size = resize_size  # resized to, then the centre cropped to input_size
        self.interpolation = interpolation
        self.pool = pool
        self.skip_tokens = skip_tokens  # leading special tokens left out of pool="mean"
        self.freeze = freeze
        self.forward_kwargs = forward_kwargs
        # How the images arrive (saved with the weights) and what the backbone expects.
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        self.register_buffer("image_mean", torch.tensor(image_mean), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std), persistent=False)
        self.classifier = Head(embedding_dim, num_classes, dropout=dropout)
        # As HF's image classifiers initialise their heads; a fresh head starts near zero.
        initializer_range = float(getattr(backbone.config, "initializer_range", 0.02) or 0.02)
        nn.init.trunc_normal_(self.classifier.weight, std=initializer_range)
        nn.init.zeros_(self.classifier.bias)
        if freeze == "backbone":
            backbone.requires_grad_(False)
        self.train()  # from_pretrained returns the backbone in eval mode
        # Backbone weights are saved under the names Hugging Face writes to model.safetensors.
        self._saved_names = saved_weight_names(backbone)  # module name -> saved name
        self._module_names = {saved: name for name, saved in self._saved_names.items()}

    def train(self, mode: bool = True) -> HFClassifier:
        super().train(mode)
        if self.freeze == "backbone":  # a frozen backbone is a fixed feature extractor
            self.backbone.eval()
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The weights, the backbone's under Hugging Face's saved names (see saved_weight_names)."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "") + "backbone."
        _rename(state, prefix, self._saved_names)
        return state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Runs before the children load: saved names become module names (others stay as they are).
        _rename(state_dict, prefix + "backbone.", self._module_names)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def set_input_normalization(self, mean: Any, std: Any) -> None:
        """Say how the images the model gets are normalised: ``(pixel - mean) / std`` per
        channel, pixels in [0, 1] (trainlab's dataset statistics, see ``normalize_uint8``)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.shape != self.input_mean.shape or std.shape != self.input_std.shape:
            raise ModelError(
                f"input normalisation needs {len(self.input_mean)} mean and std values, one a "
                f"channel; got {mean.tolist()} and {std.tolist()}"
            )
        if not bool((std > 0).all()):
            raise ModelError(f"input std must be positive; got {std.tolist()}")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` trainlab images -> the ``pixel_values`` the backbone expects."""
        if self.resize_size is not None:  # as the processor: resize, then crop the centre
            x = self._resize(x, self.resize_size)
            x = _centre_crop(x, self.input_size)
        elif tuple(x.shape[-2:]) != self.input_size:
            x = self._resize(x, self.input_size)
        # p = x · input_std + input_mean; pixel_values = (p - image_mean) / image_std. A grey
        # image ([B, 1, ...]) broadcasts to every channel of the model, as convert("RGB") does.
        scale = self.input_std / self.image_std
        shift = (self.input_mean - self.image_mean) / self.image_std
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def _resize(self, x: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
        """Resize as PIL does (HF processors resize with PIL): anti-aliased when shrinking."""
        if tuple(x.shape[-2:]) == tuple(target):
            return x
        if self.interpolation == "nearest":
            return F.interpolate(x, size=target, mode="nearest-exact")
        if self.interpolation == "bilinear":  # weights in [0, 1]: no overshoot, one pass
            # Enlarging, anti-aliasing changes nothing (to float rounding); without it the
            # model exports to ONNX, which has no anti-aliased resize at trainlab's opset.
            shrinks = target[0] < x.shape[-2] or target[1] < x.shape[-1]
            return F.interpolate(
                x, size=target, mode="bilinear", antialias=shrinks, align_corners=False
            )
        # Bicubic overshoots at edges; PIL resizes the rows, then the columns, and saturates
        # each pass to [0, 255]. The same here (within one uint8 level on MNIST digits).
        low = (-self.input_mean / self.input_std).view(1, -1, 1, 1)  # pixel 0, normalised
        high = ((1 - self.input_mean) / self.input_std).view(1, -1, 1, 1)  # pixel 1
        height, width = target
        for size in ((x.shape[-2], width), (height, width)):
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
                x = torch.clamp(x, min=low, max=high)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        output = self.backbone(
            pixel_values=self.pixel_values(x), return_dict=True, **self.forward_kwargs
        )
        if self.pool == "pooler":
            return output.pooler_output.flatten(1)
        hidden = output.last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        if hidden.ndim == 4:  # a convolutional feature map [B, D, h, w]
            return hidden.mean(dim=(2, 3))
        return hidden[:, self.skip_tokens :].mean(dim=1)


def _centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of ``x`` (HF's center_crop: the top-left offset rounds down)."""
    top = (x.shape[-2] - size[0]) // 2
    left = (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def saved_weight_names(backbone: nn.Module) -> dict[str, str]:
    """Backbone state-dict keys that Hugging Face saves under another name: ``{module: saved}``.

    transformers 5 renamed the modules of many models (ViT's ``encoder.layer.0.attention.
    attention.query`` is now ``layers.0.attention.q_proj``) and converts the names when it saves
    and loads files. trainlab checkpoints keep the saved names too, so they load whatever the
    transformers version. Only pure renames are mapped; a model whose conversion changes tensors
    (fused or split weights) keeps its module names, tied to the transformers that saved them.
    """
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: modules are named as saved
        return {}
    state = backbone.state_dict()
    # The library's default mapping, not the one recorded by from_pretrained for the file it
    # read: a model rebuilt from its config must map its names the same way.
    recorded = backbone.__dict__.pop("_weight_conversions", None)
    try:
        saved = revert_weight_conversion(backbone, dict(state))
    except Exception:  # an internal API: when it changes, fall back to the module names
        return {}
    finally:
        if recorded is not None:
            backbone.__dict__["_weight_conversions"] = recorded
    by_tensor = {id(tensor): name for name, tensor in state.items()}
    names = {by_tensor.get(id(tensor)): new for new, tensor in saved.items()}
    if len(saved) != len(state) or None in names or len(names) != len(state):
        return {}
    return {name: new for name, new in names.items() if name != new}


def _rename(state: dict[str, Any], prefix: str, names: Mapping[str, str]) -> None:
    """Rename ``prefix + old`` keys to ``prefix + names[old]`` in place, keeping their order."""
    keys = [key for key in state if key.startswith(prefix)] if names else []
    for key in keys:
        name = key[len(prefix) :]
        state[prefix + names.get(name, name)] = state.pop(key)


# --------------------------------------------------------------------------- building


def _config_from_dict(transformers: ModuleType, data: Mapping[str, Any]) -> Any:
    model_type = data.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise ModelError(
            f"option 'config' has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know; upgrade transformers"
        )
    with _quiet(transformers):
        return transformers.CONFIG_MAPPING[model_type].from_dict(dict(data))


def _read_config(transformers: ModuleType, folder: Path) -> Any:
    try:
        with _quiet(transformers):
            return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(
            f"cannot read the model config in {folder}: {error} (trainlab never runs code from "
            "a model repository, so models that need trust_remote_code are not supported)"
        ) from error


def _config_dict(config: Any) -> dict[str, Any]:
    """The config as plain JSON types, without what describes the old head or machine."""
    data = json.loads(config.to_json_string(use_diff=False))
    return {key: value for key, value in data.items() if key not in _DROPPED_CONFIG_KEYS}


def _model_class(transformers: ModuleType, config: Any) -> type:
    try:
        model_class = transformers.MODEL_MAPPING[type(config)]
    except KeyError:
        raise ModelError(
            f"transformers has no AutoModel for model type {config.model_type!r}"
        ) from None
    if getattr(model_class, "main_input_name", "") != "pixel_values":
        raise ModelError(
            f"model type {config.model_type!r} is not an image model (its input is "
            f"{getattr(model_class, 'main_input_name', '?')}, not pixel_values)"
        )
    return model_class


def _leading_tokens(config: Any) -> int:
    """Tokens before the patch tokens, left out of ``pool=mean``: the class token, DeiT's
    distillation token, DINOv2's register tokens."""
    if config.model_type not in CLS_TOKEN_TYPES:
        return 0
    distillation = 1 if config.model_type == "deit" else 0
    return 1 + distillation + int(getattr(config, "num_register_tokens", 0) or 0)


def _embedding_dim(config: Any, pool: str) -> int:
    width = getattr(config, "pooler_output_size", None) if pool == "pooler" else None
    width = width or getattr(config, "hidden_size", None)
    if not width and getattr(config, "hidden_sizes", None):  # convolutional: the last stage
        width = config.hidden_sizes[-1]
    if not isinstance(width, int) or width < 1:
        raise ModelError(f"cannot tell the embedding width of model type {config.model_type!r}")
    return width


def _load_backbone(
    transformers: ModuleType, folder: Path, config: Any, kwargs: dict[str, Any]
) -> nn.Module:
    try:
        with _quiet(transformers):
            backbone, info = transformers.AutoModel.from_pretrained(
                str(folder),
                config=config,
                local_files_only=True,
                use_safetensors=True,
                output_loading_info=True,
                **kwargs,
            )
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelError(f"cannot load the weights in {folder}: {error}") from error
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (
            f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise ModelError(
            f"the weights in {folder} do not fit its config ({shown} missing or of another shape)"
        )
    return backbone.float()  # a checkpoint saved in float16 trains in float32 (AMP casts)


def _floats(value: Any, name: str, channels: int, positive: bool = False) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    ok = len(values) in (1, channels) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 or not positive)
        for v in values
    )
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise ModelError(f"option '{name}' must be one or {channels} {kind}; got {value!r}")
    return tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)


@register_model(
    "hf",
    source="model id or folder",
    description="Hugging Face image model (ViT, ...) with a new head; pip install 'trainlab[hf]'",
)
def build(
    *,
    source: str,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    pretrained: bool = True,
    freeze: str = "none",
    dropout: float = 0.0,
    input_size: int | tuple[int, int] | None = None,
    resize_size: int | tuple[int, int] | str | None = "auto",
    pool: str = "auto",
    interpolation: str = "auto",
    image_mean: float | tuple[float, ...] | None = None,
    image_std: float | tuple[float, ...] | None = None,
    config: dict[str, Any] | None = None,
) -> nn.Module:
    """Options:

    - ``pretrained``: load the weights of the folder or cached model; false: random weights.
      A saved spec says false: a checkpoint brings its own weights.
    - ``freeze``: "none" trains everything; "backbone" trains only the new head (fast on CPU).
    - ``dropout``: dropout probability before the new head.
    - ``input_size``: side (or [height, width]) images are resized to; null = the model's own
      (224 for ViT-B/16); a smaller size is much faster (ViT interpolates its position embeddings).
    - ``resize_size``: side (or [height, width]) images are resized to before their centre
      ``input_size`` is cropped, as processors that crop do (DeiT: 256, then 224); "auto" = the
      processor's when the model runs at its own size, null = no crop.
    - ``pool``: image embedding: "cls" token, "mean" of the patch tokens (without class,
      distillation or register tokens; of the feature map for convolutional models), the
      model's "pooler" output, or "auto" (cls for ViT, DeiT, DINOv2; pooler for the others).
    - ``interpolation``: resize filter: bilinear, bicubic, nearest, or "auto" (the processor's).
    - ``image_mean``, ``image_std``: normalisation the model was trained with, per channel in
      [0, 1] units; null = its preprocessor_config.json (ViT's 0.5 when it has none).
    - ``config``: the Hugging Face model config as a mapping; null = the source's config.json.
      A saved spec holds it, so a checkpoint rebuilds without the source.
    """
    del image_size  # any input size works: images are resized to input_size in forward
    pretrained = check_bool(pretrained, "pretrained")
    freeze = check_choice(freeze, "freeze", ("none", "backbone"))
    dropout = check_probability(dropout, "dropout")
    pool = check_choice(pool, "pool", POOLS)
    interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)
    if config is not None and not (isinstance(config, Mapping) and "model_type" in config):
        raise ModelError("option 'config' must be a Hugging Face config mapping with a model_type")
    transformers = _import_transformers()

    folder = find_model_folder(source) if pretrained or config is None else None
    hf_config = (
        _config_from_dict(transformers, config)
        if config is not None
        else _read_config(transformers, folder)
    )
    model_class = _model_class(transformers, hf_config)
    channels = int(getattr(hf_config, "num_channels", 3))
    if in_channels not in (1, channels):
        raise ModelError(
            f"{in_channels}-channel images cannot feed a model with {channels} input channels "
            "(grey images feed any model)"
        )
    processor = read_processor(folder, channels)

    model_size = _pair(getattr(hf_config, "image_size", None))
    if input_size is None:
        size = model_size or processor.size or (224, 224)
    else:
        sides = check_ints(input_size, "input_size")
        if len(sides) not in (1, 2):
            raise ModelError(
                f"option 'input_size' must be a side or [height, width]; got {input_size!r}"
            )
        size = (sides[0], sides[-1])
    if resize_size == "auto":
        own_size = input_size is None and size == processor.size
        resize = processor.resize if own_size else None
    elif resize_size is None:
        resize = None
    else:
        sides = check_ints(resize_size, "resize_size")
        if len(sides) not in (1, 2) or sides[0] < size[0] or sides[-1] < size[1]:
            raise ModelError(f"option 'resize_size' must be a side or [height, width] at least "
                             f"input_size {list(size)}; got {resize_size!r}")  # fmt: skip
        resize = (sides[0], sides[-1])
    if resize == size:
        resize = None
    if pool == "auto":
        pool = "cls" if hf_config.model_type in CLS_TOKEN_TYPES else "pooler"
    if pool == "cls" and not getattr(hf_config, "hidden_size", None):
        # A convolutional backbone's last_hidden_state is a feature map [B, D, h, w]: no tokens.
        raise ModelError(f"option 'pool' is 'cls' but model type {hf_config.model_type!r} has no "
                         "class token (a convolutional feature map); use mean or pooler")  # fmt: skip
    mean = processor.mean if image_mean is None else _floats(image_mean, "image_mean", channels)
    std = (
        processor.std
        if image_std is None
        else _floats(image_std, "image_std", channels, positive=True)
    )
    if interpolation == "auto":
        interpolation = processor.interpolation

    parameters = inspect.signature(model_class.__init__).parameters
    kwargs = (
        {"add_pooling_layer": False}
        if pool != "pooler" and "add_pooling_layer" in parameters
        else {}
    )
    if folder is not None and pretrained:
        _check_weights(folder, source)
        backbone = _load_backbone(transformers, folder, hf_config, kwargs)
    else:
        with _quiet(transformers):
            backbone = transformers.AutoModel.from_config(hf_config, **kwargs).float()
    if pool == "pooler" and getattr(backbone, "pooler", True) is None:
        raise ModelError("option 'pool' is 'pooler' but this model has no pooler; use cls or mean")
    forward = inspect.signature(backbone.forward).parameters
    forward_kwargs = (
        {"interpolate_pos_encoding": True}
        if model_size is not None and size != model_size and "interpolate_pos_encoding" in forward
        else {}
    )

    model = HFClassifier(
        backbone,
        in_channels=in_channels,
        num_classes=num_classes,
        embedding_dim=_embedding_dim(hf_config, pool),
        input_size=size,
        interpolation=interpolation,
        image_mean=mean,
        image_std=std,
        pool=pool,
        skip_tokens=_leading_tokens(hf_config),
        dropout=dropout,
        freeze=freeze,
        forward_kwargs=forward_kwargs,
        resize_size=resize,
    )
    # What rebuilding needs without the source: see the module docstring.
    model.trainlab_spec_options = {
        "pretrained": False,
        "input_size": list(size),
        "resize_size": list(resize) if resize else None,
        "pool": pool,
        "interpolation": interpolation,
        "image_mean": list(mean),
        "image_std": list(std),
        "config": _config_dict(hf_config),
    }
    return model
