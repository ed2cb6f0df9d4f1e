"""``hf:<model id or folder>``: Hugging Face image models, on a tiny random ViT saved to a temp
folder (no download). Skipped where transformers (the ``hf`` extra) is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainlab
from trainlab.config import load_config
from trainlab.data import load_dataset
from trainlab.data.batches import channel_stats, normalize_uint8
from trainlab.errors import ModelError
from trainlab.models import (
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    model_from_spec,
    model_names,
    model_options,
)
from trainlab.models.hf import INSTALL_HINT
from trainlab.runs.checkpoint import load_checkpoint
from trainlab.serve.model import ServedModel

transformers = pytest.importorskip("transformers")

EXAMPLES = Path(__file__).parents[2] / "examples"
# A ViT small enough to train in a second: 32×32 input, 8×8 patches (16 tokens), width 32.
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
SHAPE = {"in_channels": 1, "num_classes": 10, "image_size": (28, 28)}
# ImageNet statistics, so a test notices a channel mixed up (ViT's own are 0.5 everywhere).
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def save_tiny_vit(folder: Path) -> Path:
    """What ``save_pretrained`` writes for a (random) ViT: config.json and model.safetensors."""
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**TINY)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.json + model.safetensors of a tiny random ViT (with its pooler, as in21k has)."""
    return save_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture
def tiny_copy(tiny_folder: Path, tmp_path: Path) -> Path:
    """A copy a test may change or delete."""
    return Path(shutil.copytree(tiny_folder, tmp_path / "tiny-vit"))


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test sees an empty Hugging Face cache, whatever the machine has cached, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hf-home" / "hub"


def digits(count: int = 8) -> torch.Tensor:
    return load_dataset("mnist-5k").test.images[:count]  # uint8 [N, 1, 28, 28]


# --------------------------------------------------------------------------- naming


def test_hf_is_a_prefix_family_listed_after_the_plain_names(tiny_folder: Path) -> None:
    assert "hf" not in model_names()  # the contract tests cannot build it without a source
    info = list_models(prefixed=True)[-1]
    assert (info.name, info.usage) == ("hf", "hf:<model id or folder>")
    assert get_model_info("hf") is info
    assert get_model_info("HF:google/vit-base-patch16-224-in21k") is info
    assert set(info.option_help) == set(info.options)
    assert model_options("hf:anything")["pretrained"] is True
    model = create_model(f"HF:{tiny_folder}", **SHAPE)
    assert model.trainlab_spec["name"] == f"hf:{tiny_folder}"  # the source keeps its case
    assert model.family == "hf"


def test_names_errors_mention_the_hf_form() -> None:
    with pytest.raises(ModelError, match=r"available: cnn, .*, vit, hf:<model id or folder>$"):
        create_model("vgg19", **SHAPE)
    with pytest.raises(ModelError, match=r"model 'hf' needs a model id or folder: use hf:<"):
        create_model("hf", **SHAPE)
    with pytest.raises(ModelError, match=r"model 'hf: ' names no model id or folder"):
        create_model("hf: ", **SHAPE)
    with pytest.raises(ModelError, match=r"unknown option 'pretrain' for model 'hf:x'"):
        create_model("hf:x", **SHAPE, pretrain=False)


# --------------------------------------------------------------------------- the model


def test_forward_features_and_logits(tiny_folder: Path) -> None:
    model = create_model(f"hf:{tiny_folder}", **SHAPE).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert features.shape == (3, 32) and model.embedding_dim == 32
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, model.classifier(features))
    # The embedding is the class token after the final LayerNorm, as ViTForImageClassification.
    with torch.no_grad():
        hidden = model.backbone(pixel_values=model.pixel_values(x)).last_hidden_state
    torch.testing.assert_close(features, hidden[:, 0])
    assert model.backbone.pooler is None  # unused: not built, so not trained or saved


def test_pretrained_weights_are_loaded_and_pretrained_false_is_random(tiny_folder: Path) -> None:
    saved = load_file(tiny_folder / "model.safetensors")
    saved = {name: value for name, value in saved.items() if not name.startswith("pooler.")}
    pretrained = create_model(f"hf:{tiny_folder}", **SHAPE)
    # The model's weights carry the backbone under the names HF saves (the same in every
    # transformers version), so every saved tensor is found under its own name.
    state = pretrained.state_dict()
    backbone = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    assert backbone.keys() == saved.keys()
    assert all(torch.equal(backbone[name], value) for name, value in saved.items())
    torch.manual_seed(1)
    random = create_model(f"hf:{tiny_folder}", **SHAPE, pretrained=False)
    key = "backbone.embeddings.patch_embeddings.projection.weight"
    assert not torch.equal(random.state_dict()[key], state[key])
    random.load_state_dict(state, strict=True)  # saved names load back into the modules
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(random.eval()(x), pretrained.eval()(x))


def test_freeze_backbone_trains_only_the_head(tiny_folder: Path) -> None:
    model = create_model(f"hf:{tiny_folder}", **SHAPE, freeze="backbone", dropout=0.1)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]
    assert count_parameters(model, trainable_only=True) == 32 * 10 + 10
    model.train()
    assert model.training and model.classifier.training and not model.backbone.training
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 1, 28, 28)).square().mean().backward()
    optimizer.step()
    changed = {
        name for name, value in model.state_dict().items() if not torch.equal(value, before[name])
    }
    assert changed == {"classifier.weight", "classifier.bias"}


def test_input_size_resizes_and_interpolates_position_embeddings(tiny_folder: Path) -> None:
    model = create_model(f"hf:{tiny_folder}", **SHAPE, input_size=16).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model.pixel_values(x).shape == (2, 3, 16, 16)
    assert model(x).shape == (2, 10)
    assert model.trainlab_spec["options"]["input_size"] == [16, 16]
    default = create_model(f"hf:{tiny_folder}", **SHAPE)  # the model config's 32×32
    assert default.pixel_values(x).shape == (2, 3, 32, 32)


def test_colour_images_and_channel_mismatch(tiny_folder: Path) -> None:
    model = create_model(f"hf:{tiny_folder}", in_channels=3, num_classes=100, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(ModelError, match="2-channel images cannot feed a model with 3 input"):
        create_model(f"hf:{tiny_folder}", in_channels=2, num_classes=10, image_size=28)


def test_bad_options_name_the_option(tiny_folder: Path) -> None:
    for options, message in [
        ({"freeze": "all"}, "option 'freeze' must be one of none, backbone"),
        ({"pool": "max"}, "option 'pool' must be one of auto, cls, mean, pooler"),
        ({"image_std": [0.5, 0.0, 0.5]}, "option 'image_std' must be one or 3 positive"),
        ({"input_size": [8, 8, 8]}, "option 'input_size' must be a side or"),
        ({"config": {"hidden_size": 8}}, "option 'config' must be a Hugging Face config"),
    ]:
        with pytest.raises(ModelError, match=message):
            create_model(f"hf:{tiny_folder}", **SHAPE, **options)


@pytest.mark.parametrize("pool", ["mean", "pooler"])
def test_other_pools(tiny_folder: Path, pool: str) -> None:
    model = create_model(f"hf:{tiny_folder}", **SHAPE, pool=pool).eval()
    assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 32)


def test_mean_pooling_leaves_out_every_token_that_is_not_a_patch(tmp_path: Path) -> None:
    """DeiT adds a distillation token and DINOv2 register tokens after the class token."""
    cases = {
        "deit": (transformers.DeiTConfig, {}, 2),
        "dinov2_with_registers": (
            transformers.Dinov2WithRegistersConfig,
            {"num_register_tokens": 4},
            5,
        ),
    }
    for name, (config_class, extra, leading) in cases.items():
        config = config_class(**{**TINY, "image_size": 28, "patch_size": 7}, **extra)
        config.save_pretrained(tmp_path / name)
        model = create_model(f"hf:{tmp_path / name}", **SHAPE, pretrained=False,
                             pool="mean").eval()  # fmt: skip
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            hidden = model.backbone(pixel_values=model.pixel_values(x)).last_hidden_state
            assert hidden.shape[1] == leading + 16, name
            expected = hidden[:, leading:].mean(dim=1)
            torch.testing.assert_close(model.forward_features(x), expected)


def test_a_convolutional_backbone_has_no_class_token(tmp_path: Path) -> None:
    transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                              num_channels=3).save_pretrained(tmp_path / "resnet")  # fmt: skip
    with pytest.raises(ModelError, match="'cls' but model type 'resnet' has no class token"):
        create_model(f"hf:{tmp_path / 'resnet'}", **SHAPE, pretrained=False, pool="cls",
                     input_size=32)  # fmt: skip
    model = create_model(f"hf:{tmp_path / 'resnet'}", **SHAPE, pretrained=False, pool="mean",
                         input_size=32).eval()  # fmt: skip
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_channels_last_and_bfloat16_autocast(tiny_folder: Path) -> None:
    model = create_model(f"hf:{tiny_folder}", **SHAPE).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x.contiguous())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.1)


# --------------------------------------------------------------------------- preprocessing


def _processor_pixel_values(folder: Path | None, images: torch.Tensor) -> torch.Tensor:
    """What users' Hugging Face pipelines do: grey PIL image -> RGB -> the image processor
    (the folder's preprocessor_config.json, or ViTImageProcessor's defaults)."""
    from PIL import Image

    processor_class = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    processor = processor_class.from_pretrained(folder) if folder else processor_class()
    pictures = [Image.fromarray(image[0].numpy(), "L").convert("RGB") for image in images]
    return processor(images=pictures, return_tensors="pt")["pixel_values"]


def within_one_level(ours: torch.Tensor, expected: torch.Tensor, std: list[float]) -> bool:
    """HF rounds the resized image to uint8: one level, in units of each channel's std."""
    level = (1 / 255 / torch.tensor(std)).view(1, -1, 1, 1)
    return ours.shape == expected.shape and bool(((ours - expected).abs() <= 1.01 * level).all())


@pytest.mark.parametrize(
    ("side", "resample"),
    [(32, 2), (224, 2), (20, 2), (48, 3), (20, 3), (32, 0)],
    ids=["bilinear-up", "bilinear-224", "bilinear-down", "bicubic-up", "bicubic-down", "nearest"],
)
def test_training_images_reach_the_model_as_the_hf_processor_makes_them(
    tiny_copy: Path, side: int, resample: int
) -> None:
    processor = {
        "image_processor_type": "ViTImageProcessor",
        **IMAGENET,
        "resample": resample,
        "size": {"height": side, "width": side},
    }
    (tiny_copy / "preprocessor_config.json").write_text(json.dumps(processor))
    images = digits()
    mean, std = channel_stats(images)  # the dataset statistics training normalises with
    model = create_model(f"hf:{tiny_copy}", **SHAPE, input_size=side)
    model.set_input_normalization(mean, std)
    ours = model.pixel_values(normalize_uint8(images, mean, std))
    expected = _processor_pixel_values(tiny_copy, images)
    assert expected.shape == (len(images), 3, side, side)
    assert within_one_level(ours, expected, IMAGENET["image_std"])


@pytest.mark.parametrize(
    ("processor_type", "settings"),
    [
        (
            "DeiTImageProcessor",
            {
                "size": {"height": 36, "width": 36},
                "do_center_crop": True,
                "crop_size": {"height": 32, "width": 32},
            },
        ),
        ("ConvNextImageProcessor", {"size": {"shortest_edge": 32}, "crop_pct": 0.875}),
    ],
    ids=["deit-resize-then-crop", "convnext-crop-pct"],
)
def test_processors_that_crop_the_centre_are_followed(
    tiny_copy: Path, processor_type: str, settings: dict
) -> None:
    """Resize to 36 (32 / 0.875), then keep the centre 32×32, at the model's own size."""
    config = {"image_processor_type": processor_type, **IMAGENET, "resample": 2, **settings}
    (tiny_copy / "preprocessor_config.json").write_text(json.dumps(config))
    images = digits()
    mean, std = channel_stats(images)
    model = create_model(f"hf:{tiny_copy}", **SHAPE)  # its own size: 32 (TINY's image_size)
    assert model.trainlab_spec["options"]["resize_size"] == [36, 36]
    model.set_input_normalization(mean, std)
    ours = model.pixel_values(normalize_uint8(images, mean, std))
    from PIL import Image

    processor_class = getattr(transformers, f"{processor_type}Pil",
                              getattr(transformers, processor_type))  # fmt: skip
    processor = processor_class.from_pretrained(tiny_copy)
    pictures = [Image.fromarray(image[0].numpy(), "L").convert("RGB") for image in images]
    expected = processor(images=pictures, return_tensors="pt")["pixel_values"]
    assert expected.shape == (len(images), 3, 32, 32)
    assert within_one_level(ours, expected, IMAGENET["image_std"])
    # An explicit input_size resizes straight to it, without a crop.
    assert create_model(f"hf:{tiny_copy}", **SHAPE, input_size=48).resize_size is None


def test_without_preprocessor_config_the_vit_defaults_apply(tiny_folder: Path) -> None:
    images = digits(4)
    model = create_model(f"hf:{tiny_folder}", **SHAPE, input_size=224)
    options = model.trainlab_spec["options"]
    assert options["image_mean"] == options["image_std"] == [0.5, 0.5, 0.5]
    assert options["interpolation"] == "bilinear"
    # Without set_input_normalization the model takes plain [0, 1] pixels.
    ours = model.pixel_values(images.float() / 255)
    assert within_one_level(ours, _processor_pixel_values(None, images), [0.5, 0.5, 0.5])


# --------------------------------------------------------------------------- weights and cache


def test_missing_or_pickled_weights_are_refused(tiny_copy: Path) -> None:
    (tiny_copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no weights \(model.safetensors\) in .*pretrained=false"):
        create_model(f"hf:{tiny_copy}", **SHAPE)
    (tiny_copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match=r"has only pickled weights \(pytorch_model\.bin\)"):
        create_model(f"hf:{tiny_copy}", **SHAPE)
    assert create_model(f"hf:{tiny_copy}", **SHAPE, pretrained=False)(
        torch.randn(1, 1, 28, 28)
    ).shape == (1, 10)


def test_missing_folder_and_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model folder \./no-such-folder does not exist"):
        create_model("hf:./no-such-folder", **SHAPE)
    with pytest.raises(ModelError, match=r"has no config\.json"):
        create_model(f"hf:{tmp_path}", **SHAPE)


def test_a_model_not_in_the_cache_says_how_to_get_it(empty_hf_cache: Path) -> None:
    model_id = "google/vit-base-patch16-224-in21k"
    with pytest.raises(ModelError) as caught:
        create_model(f"hf:{model_id}", **SHAPE)
    message = str(caught.value)
    assert f"not in the Hugging Face cache ({empty_hf_cache})" in message
    assert f"`hf download {model_id}`" in message and "snapshot_download" in message
    assert "--model hf:/path/to/folder" in message


def test_a_cached_model_is_found_offline(tiny_folder: Path, empty_hf_cache: Path) -> None:
    # The cache layout huggingface_hub writes: refs/main names the snapshot of the main branch.
    repo = empty_hf_cache / "models--someone--tiny-vit"
    shutil.copytree(tiny_folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    model = create_model("hf:someone/tiny-vit", **SHAPE)
    saved = load_file(tiny_folder / "model.safetensors")
    key = "embeddings.cls_token"
    torch.testing.assert_close(model.backbone.state_dict()[key], saved[key])


def test_without_transformers_the_error_says_to_install_the_extra(
    tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ModelError) as caught:
        create_model(f"hf:{tiny_folder}", **SHAPE)
    assert INSTALL_HINT in str(caught.value) and "pip install 'trainlab[hf]'" in INSTALL_HINT


def test_import_trainlab_does_not_import_transformers() -> None:
    code = "import sys, trainlab.models; sys.exit('transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------- spec, run, checkpoint


def test_spec_rebuilds_without_the_folder(tiny_copy: Path) -> None:
    model = create_model(f"hf:{tiny_copy}", **SHAPE, input_size=16, freeze="backbone").eval()
    spec = json.loads(json.dumps(model.trainlab_spec))
    options = spec["options"]
    assert options["pretrained"] is False and options["config"]["model_type"] == "vit"
    assert "id2label" not in options["config"]
    shutil.rmtree(tiny_copy)
    rebuilt = model_from_spec(spec).eval()
    assert rebuilt.trainlab_spec == spec
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_a_float16_folder_trains_and_rebuilds_in_float32(tmp_path: Path) -> None:
    folder = tmp_path / "half"
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**TINY)).half().save_pretrained(folder)
    model = create_model(f"hf:{folder}", **SHAPE).eval()
    spec = json.loads(json.dumps(model.trainlab_spec))
    assert (
        "dtype" not in spec["options"]["config"] and "torch_dtype" not in spec["options"]["config"]
    )
    rebuilt = model_from_spec(spec).eval()  # as a checkpoint is loaded
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert {p.dtype for p in rebuilt.parameters()} == {torch.float32}  # was: float16 backbone
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))  # was: "mat1 and mat2 ... Half and Float"


@pytest.fixture(scope="module")
def hf_run(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> trainlab.RunResult:
    """The users' study (examples/vit-finetune.yaml) as a smoke run: a copy of the tiny folder in
    place of google/vit-base-patch16-224-in21k, one epoch on 200 digits of mnist-5k. The copy
    is deleted after training, so everything after it works without the folder."""
    root = tmp_path_factory.mktemp("hf-run")
    folder = Path(shutil.copytree(tiny_folder, root / "tiny-vit"))
    example = EXAMPLES / "vit-finetune.yaml"
    assert load_config(example).model.name == "hf:google/vit-base-patch16-224-in21k"
    overrides = [f"model.name=hf:{folder}", "data.dataset=mnist-5k", "data.train_size=200",
                 "data.val_size=100", "data.batch_size=50", "data.eval_batch_size=1000",
                 "optim.lr=1e-3", "epochs=1", "device=cpu", "progress=false",
                 f"out={root / 'run'}"]  # fmt: skip
    result = trainlab.train(load_config(example, overrides))  # 28×28 digits enlarged to 32×32
    shutil.rmtree(folder)
    return result


def test_training_end_to_end(hf_run: trainlab.RunResult) -> None:
    assert hf_run.status == "completed"
    assert 0.0 <= hf_run.test["accuracy"] <= 1.0
    assert hf_run.config.model.options["pretrained"] is True  # config.yaml: what the user asked
    assert (hf_run.run_dir / "checkpoint" / "model.safetensors").is_file()


def test_checkpoint_and_server_work_without_the_folder(hf_run: trainlab.RunResult) -> None:
    checkpoint = load_checkpoint(hf_run.run_dir)
    assert checkpoint.architecture["options"]["config"]["hidden_size"] == 32
    rebuilt = checkpoint.build_model()
    images = digits(16)
    x = normalize_uint8(images, checkpoint.preprocessing["mean"], checkpoint.preprocessing["std"])
    with torch.no_grad():
        expected = hf_run.model.eval()(x)
        torch.testing.assert_close(rebuilt(x), expected)
    served = ServedModel.load(hf_run.run_dir, device="cpu")
    torch.testing.assert_close(served.probabilities(images), expected.softmax(dim=1))
    assert served.embeddings(images).shape == (16, 32)


def test_onnx_export_of_an_enlarging_model(hf_run: trainlab.RunResult, tmp_path: Path) -> None:
    # Enlarging needs no anti-aliasing, which ONNX's resize lacks at trainlab's opset.
    from trainlab.serve.export import OnnxServedModel, export_onnx

    exported = OnnxServedModel(export_onnx(hf_run.run_dir, tmp_path / "model.onnx"))
    images = digits(16)
    expected = ServedModel.load(hf_run.run_dir, device="cpu").probabilities(images)
    torch.testing.assert_close(exported.probabilities(images), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("input_size", [32, 16])
def test_onnx_export_of_a_bicubic_model(tiny_folder: Path, tmp_path: Path, input_size: int) -> None:
    """PIL's bicubic (DeiT, ConvNeXt and Swin processors) exports when enlarging; shrinking,
    which needs anti-aliasing ONNX's Resize lacks, is one clear error."""
    from trainlab.errors import TrainlabError
    from trainlab.runs.checkpoint import save_checkpoint
    from trainlab.serve.export import OnnxServedModel, export_onnx

    model = create_model(f"hf:{tiny_folder}", **SHAPE, interpolation="bicubic",
                         input_size=input_size).eval()  # fmt: skip
    preprocessing = {"mean": [0.13], "std": [0.31], "kind": "digits", "channels": 1,
                     "image_size": [28, 28]}  # fmt: skip
    save_checkpoint(tmp_path / "ck", model, preprocessing=preprocessing,
                    class_names=[str(i) for i in range(10)],
                    metadata={"epoch": 1, "monitor": "val.loss", "value": 1.0})  # fmt: skip
    if input_size < 28:
        with pytest.raises(TrainlabError, match="anti-aliased bicubic shrinking has no ONNX form"):
            export_onnx(tmp_path / "ck", tmp_path / "m.onnx")
        return
    exported = OnnxServedModel(export_onnx(tmp_path / "ck", tmp_path / "m.onnx"))  # was: refused
    images = digits(7)
    expected = ServedModel.load(tmp_path / "ck", device="cpu").probabilities(images)
    torch.testing.assert_close(exported.probabilities(images), expected, atol=1e-5, rtol=1e-4)


def test_training_tells_the_model_how_its_images_are_normalised(hf_run: trainlab.RunResult) -> None:
    checkpoint = load_checkpoint(hf_run.run_dir)
    torch.testing.assert_close(
        checkpoint.state_dict["input_mean"], torch.tensor(checkpoint.preprocessing["mean"])
    )
    torch.testing.assert_close(
        checkpoint.state_dict["input_std"], torch.tensor(checkpoint.preprocessing["std"])
    )


# --------------------------------------------------------------------------- the example


def test_cli_models_describes_the_hf_options() -> None:
    from typer.testing import CliRunner

    from trainlab.cli import app

    result = CliRunner().invoke(app, ["models", "hf"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0
    for option in ("pretrained", "freeze", "input_size", "image_mean", "config"):
        assert option in result.output
