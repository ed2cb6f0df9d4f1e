"""Image classifiers by name: ``create_model("fastnet", in_channels=1, num_classes=10, ...)``.

Every model maps ``[B, C, H, W]`` images to ``[B, num_classes]`` logits, exposes
``forward_features`` (the ``[B, D]`` penultimate embedding) and ``classifier`` (the final
layer, so ``forward(x) == classifier(forward_features(x))``), and carries ``family`` and
``trainlab_spec``, the arguments that rebuild it: ``create_model(**model.trainlab_spec)``.

Families (one module each): mlp, cnn, vgg, spinalvgg, resnet, fastnet, vit, gru, and ``hf``,
named by a prefix: ``hf:<model id or folder>`` is a pretrained Hugging Face image model (its
module imports transformers only when one is built). A new family registers itself with
:func:`register_model` and is imported below.
"""

# Importing a family module registers it with the registry.
from trainlab.models import cnn, fastnet, gru, hf, mlp, resnet, spinalvgg, vgg, vit  # noqa: F401
from trainlab.models.layers import Classifier, Head
from trainlab.models.registry import (
    ModelInfo,
    check_model,
    count_macs,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    model_from_spec,
    model_names,
    model_options,
    register_model,
)

__all__ = [
    "Classifier",
    "Head",
    "ModelInfo",
    "check_model",
    "count_macs",
    "count_parameters",
    "create_model",
    "get_model_info",
    "list_models",
    "model_from_spec",
    "model_names",
    "model_options",
    "register_model",
]
