"""Embeddings: projections and neighbours on exact values, the .npz format, the run's splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from live import png_size
from trainlab.analysis.embeddings import (
    Embeddings,
    NeighbourRows,
    Projection,
    _conditional_probabilities,
    _joint_probabilities,
    _squared_distances,
    compute_embeddings,
    draw_embeddings,
    first_of_each_class,
    nearest_neighbours,
    neighbour_rows,
    pca,
    project,
    split_indices,
    tsne,
)
from trainlab.config import build_config
from trainlab.errors import DataError, TrainlabError

# --------------------------------------------------------------------------- PCA


def test_pca_of_a_known_matrix():
    x = np.array([[3.0, 1.0], [1.0, 2.0], [-1.0, 1.0], [1.0, 0.0]])  # mean (1, 1)
    result = pca(x)
    # Centred: (2, 0), (0, 1), (-2, 0), (0, -1): variance 8 along x, 2 along y.
    np.testing.assert_allclose(result.components, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(result.explained_variance_ratio, [0.8, 0.2])
    np.testing.assert_allclose(result.coordinates, [[2, 0], [0, 1], [-2, 0], [0, -1]], atol=1e-12)


def test_pca_matches_numpy_svd_with_deterministic_signs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
    result = pca(x, components=3)
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(result.components), np.abs(vt[:3]), atol=1e-10)
    np.testing.assert_allclose(np.abs(result.coordinates), np.abs(u[:, :3] * s[:3]), atol=1e-10)
    np.testing.assert_allclose(result.explained_variance_ratio, s[:3] ** 2 / np.sum(s**2))
    # The sign rule: each axis's largest-magnitude entry is positive...
    strongest = np.abs(result.components).argmax(axis=1)
    assert np.all(result.components[np.arange(3), strongest] > 0)
    # ...so mirrored data gives the same axes and mirrored coordinates.
    mirrored = pca(-x, components=3)
    np.testing.assert_allclose(mirrored.components, result.components, atol=1e-10)
    np.testing.assert_allclose(mirrored.coordinates, -result.coordinates, atol=1e-10)


def test_pca_in_row_chunks_and_by_svd_agree(monkeypatch):
    from trainlab.analysis import embeddings

    rng = np.random.default_rng(1)
    tall = (rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    whole = pca(tall, components=3)
    monkeypatch.setattr(embeddings, "PCA_CHUNK_ROWS", 7)  # 8 chunks, the last one short
    chunked = pca(tall, components=3)
    np.testing.assert_allclose(chunked.coordinates, whole.coordinates, atol=1e-9)
    np.testing.assert_allclose(chunked.components, whole.components, atol=1e-12)
    wide = pca(tall[:5], components=3)  # fewer rows than features: the SVD path
    centred = tall[:5].astype(np.float64) - tall[:5].astype(np.float64).mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(wide.coordinates), np.abs(u[:, :3] * s[:3]), atol=1e-9)


def test_pca_pads_missing_axes_and_refuses_empty_input():
    result = pca(np.array([[1.0], [3.0]]))  # one feature: the second axis is zero
    np.testing.assert_allclose(result.coordinates, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(result.explained_variance_ratio, [1.0, 0.0])
    with pytest.raises(ValueError, match="non-empty"):
        pca(np.zeros((0, 3)))
    projection = project(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), "pca")
    assert projection.method == "pca" and projection.explained_variance_ratio == (1.0, 0.0)
    assert projection.axis_labels()[0] == "PC 1 (100.0% of variance)"
    with pytest.raises(TrainlabError, match="unknown projection 'umap'; available: pca, tsne"):
        project(np.zeros((3, 2)), "umap")


# --------------------------------------------------------------------------- t-SNE


def two_clusters(n: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0, size=(n, 10))
    b = rng.normal(0.0, 1.0, size=(n, 10)) + 20.0
    return np.vstack([a, b]), np.repeat([0, 1], n)


def test_tsne_affinities_have_the_requested_perplexity():
    x, _ = two_clusters(20)
    distances = _squared_distances(torch.as_tensor(x, dtype=torch.float32))
    conditional = _conditional_probabilities(distances, perplexity=5.0).double()
    assert torch.all(conditional.diagonal() == 0)
    torch.testing.assert_close(conditional.sum(dim=1), torch.ones(40, dtype=torch.float64))
    logs = torch.where(conditional > 0, conditional.log(), torch.zeros_like(conditional))
    perplexities = torch.exp(-(conditional * logs).sum(dim=1))
    torch.testing.assert_close(perplexities, torch.full((40,), 5.0, dtype=torch.float64),
                               rtol=1e-3, atol=0)  # fmt: skip
    joint = _joint_probabilities(distances, perplexity=5.0)
    torch.testing.assert_close(joint, joint.T)
    assert abs(float(joint.sum()) - 1.0) < 1e-5


def test_tsne_separates_two_clusters_and_is_deterministic():
    x, labels = two_clusters(30)
    first = tsne(x, perplexity=10)
    second = tsne(x, perplexity=10)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (60, 2) and np.allclose(first.mean(axis=0), 0, atol=1e-6)
    distances = np.linalg.norm(first[:, None] - first[None], axis=2)
    same = labels[:, None] == labels[None]
    # Every point is closer to every point of its own cluster than to any of the other.
    assert distances[same].max() < distances[~same].min()


def test_tsne_limits():
    with pytest.raises(ValueError, match="N >= 2"):
        tsne(np.zeros((1, 3)))
    tiny = tsne(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))  # too few for t-SNE: PCA
    assert tiny.shape == (3, 2)
    # project() says so: PCA axes, not t-SNE ones, and a user's error below 2 points
    assert project(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), "tsne").method == "pca"
    with pytest.raises(TrainlabError, match="t-SNE needs at least 2 images"):
        project(np.zeros((1, 3)), "tsne")


# --------------------------------------------------------------------------- neighbours

VECTORS = np.array(
    [
        [1.0, 0.0],  # 0
        [0.9, 0.1],  # 1: nearly 0
        [0.0, 1.0],  # 2
        [-1.0, 0.0],  # 3: opposite of 0
        [0.7, 0.7],  # 4: 45°
        [2.0, 0.0],  # 5: same direction as 0 (cosine ignores length)
        [0.0, 0.0],  # 6: zero vector, similarity 0 to all
    ]
)


def test_nearest_neighbours_by_cosine_excluding_the_query():
    indices, similarities = nearest_neighbours(VECTORS, [0, 2], k=4)
    assert indices.tolist() == [[5, 1, 4, 2], [4, 1, 0, 3]]
    np.testing.assert_allclose(similarities[0], [1.0, 0.9 / np.hypot(0.9, 0.1), 0.5**0.5, 0.0])
    # Ties keep the lower index first: from 2, vectors 0, 3, 5 and 6 all have similarity 0.
    assert similarities[1, 2:].tolist() == [0.0, 0.0]
    assert indices.dtype == np.int64


def test_nearest_neighbours_clamps_k_and_handles_zero_vectors():
    indices, _ = nearest_neighbours(VECTORS[:3], [1], k=10)
    assert indices.tolist() == [[0, 2]]
    indices, similarities = nearest_neighbours(VECTORS, [6], k=2)
    assert indices.tolist() == [[0, 1]] and similarities.tolist() == [[0.0, 0.0]]
    indices, _ = nearest_neighbours(torch.tensor(VECTORS), np.array([3]), k=3)
    assert indices.tolist() == [[2, 6, 4]]  # orthogonal and zero (similarity 0) beat -0.71


def test_first_of_each_class():
    labels = [2, 0, 2, 1, 0, 4]
    assert first_of_each_class(labels).tolist() == [1, 3, 0, 5]
    assert first_of_each_class(labels, limit=2).tolist() == [1, 3]
    assert first_of_each_class([]).tolist() == []


def make_embeddings(**overrides) -> Embeddings:
    fields = {
        "embeddings": VECTORS[:6].astype(np.float32),
        "labels": [0, 0, 1, 2, 1, 0],
        "predictions": [0, 1, 1, 2, 1, 0],
        "indices": [10, 11, 12, 13, 14, 15],
        "class_names": ["T-shirt/top", "Ankle boot", "two"],
        "model_class_names": ["T-shirt/top", "Ankle boot", "two"],
        "metadata": {"dataset": "toy", "split": "test", "model": "mlp"},
    }
    return Embeddings(**{**fields, **overrides})


def test_neighbour_rows_use_the_first_image_of_each_class():
    rows = neighbour_rows(make_embeddings(), k=2)
    assert rows.queries == [0, 2, 3]
    assert rows.neighbours == [[5, 1], [4, 1], [2, 4]]
    assert len(rows.similarities[0]) == 2


# --------------------------------------------------------------------------- the .npz file


def test_embeddings_round_trip_without_pickle(tmp_path):
    names = ["T-shirt/top", "ゐ (wi)", "two"]  # any unicode, no pickled objects
    original = make_embeddings(class_names=names, model_class_names=names)
    path = original.save(tmp_path / "sub" / "emb.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.npz"]  # no temporary left
    with np.load(path, allow_pickle=False) as data:
        assert data["embeddings"].dtype == np.float32 and data["labels"].dtype == np.int64
        assert data["class_names"].dtype.kind == "U"
        meta = json.loads(str(data["metadata"]))
    assert meta["format"] == "trainlab-embeddings" and meta["dataset"] == "toy"
    loaded = Embeddings.load(path)
    np.testing.assert_array_equal(loaded.embeddings, original.embeddings)
    for name in ("labels", "predictions", "indices"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name))
    assert loaded.class_names == names and loaded.comparable
    assert loaded.metadata["model"] == "mlp" and loaded.accuracy == pytest.approx(5 / 6)


def test_embeddings_keep_the_exact_file_name_and_check_shapes(tmp_path):
    path = make_embeddings().save(tmp_path / "plain")  # np.savez would have added .npz
    assert path.is_file() and not (tmp_path / "plain.npz").exists()
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        make_embeddings(labels=[0, 1])
    with pytest.raises(DataError, match="no such embeddings file"):
        Embeddings.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="not an embeddings file"):
        Embeddings.load(tmp_path / "other.npz")
    other_classes = make_embeddings(model_class_names=["a", "b", "c"])
    assert not other_classes.comparable and other_classes.accuracy is None


# --------------------------------------------------------------------------- the run's splits


@pytest.mark.parametrize(
    "data",
    [
        {"val_size": 100, "train_size": 300},
        {"val_fraction": 0.2},
        {"folds": 5, "fold": 2, "train_fraction": 0.5},
    ],
)
def test_split_indices_are_the_splits_training_makes(data):
    from trainlab.data import load_dataset
    from trainlab.training import prepare_data

    config = build_config({"data": {"dataset": "mnist-5k", **data}})
    prepared = prepare_data(config, torch.device("cpu"))
    bundle = load_dataset("mnist-5k")
    for split in ("train", "val"):
        indices = split_indices(bundle.train.labels, config.data, split)
        assert torch.equal(bundle.train.images[indices], getattr(prepared, split).images)
        assert torch.equal(indices, indices.sort().values)


# --------------------------------------------------------------------------- embedding and drawing


def served_mlp(folder, **options):
    """A saved 8×8, 3-class MLP with 16 features, loaded for serving, and 23 random images."""
    from trainlab.models import create_model
    from trainlab.runs.checkpoint import save_checkpoint
    from trainlab.serve.model import ServedModel

    torch.manual_seed(0)
    model = create_model("mlp", in_channels=1, num_classes=3, image_size=(8, 8), hidden=(16,),
                         **options)  # fmt: skip
    model.train()  # as a checkpoint saved mid-training would leave it
    save_checkpoint(folder, model, class_names=["a", "b", "c"],
                    preprocessing={"mean": [0.5], "std": [0.25], "kind": "digits"})  # fmt: skip
    images = torch.randint(0, 256, (23, 1, 8, 8), dtype=torch.uint8)
    return ServedModel.load(folder, device="cpu"), images


def test_compute_embeddings_in_batches_equals_one_pass(tmp_path):
    served, images = served_mlp(tmp_path / "ckpt")
    features, predictions = compute_embeddings(served, images, batch_size=5)
    whole, whole_predictions = compute_embeddings(served, images, batch_size=100)
    assert features.shape == (23, 16) and features.dtype == torch.float32
    torch.testing.assert_close(features, whole)
    assert torch.equal(predictions, whole_predictions)
    assert torch.equal(predictions, served.probabilities(images).argmax(dim=1))
    assert torch.equal(features, served.embeddings(images))


def test_non_finite_features_are_refused(tmp_path):
    from trainlab.errors import RunError

    served, images = served_mlp(tmp_path / "ckpt")
    with torch.no_grad():
        next(served.model.parameters()).fill_(float("inf"))  # weights blown up, yet loadable
    with pytest.raises(RunError, match="features are not finite"):
        compute_embeddings(served, images, batch_size=5)


def test_embeddings_come_from_the_model_in_eval_mode(tmp_path):
    # Dropout 0.5 and batch norm: in train mode two passes would differ, and batch statistics
    # would make an image's features depend on its batch.
    served, images = served_mlp(tmp_path / "ckpt", dropout=0.5, batch_norm=True)
    first, _ = compute_embeddings(served, images, batch_size=4)
    second, _ = compute_embeddings(served, images, batch_size=23)
    torch.testing.assert_close(first, second)
    alone, _ = compute_embeddings(served, images[:1], batch_size=1)
    torch.testing.assert_close(alone, first[:1])


@pytest.mark.parametrize("channels", [1, 3])
def test_draw_embeddings_writes_a_png(tmp_path, channels):
    embeddings = make_embeddings()
    images = torch.randint(0, 256, (6, channels, 12, 12), dtype=torch.uint8)
    projection = project(embeddings.embeddings, "pca")
    rows = neighbour_rows(embeddings, k=3)
    path = draw_embeddings(projection, embeddings, images, rows, tmp_path / "e.png", title="t")
    width, height = png_size(path)
    assert width > 600 and height > 400
    with pytest.raises(ValueError, match="images"):
        draw_embeddings(projection, embeddings, images[:2], rows, tmp_path / "bad.png")


def test_draw_embeddings_many_classes_and_other_class_names(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 30  # 30 classes: colours from a colormap, no legend
    embeddings = Embeddings(rng.normal(size=(60, 4)), labels, labels, np.arange(60),
                            [f"class {i}" for i in range(30)], ["x", "y"], {})  # fmt: skip
    images = np.zeros((60, 1, 8, 8), dtype=np.uint8)
    projection = Projection("tsne", rng.normal(size=(60, 2)), None)
    path = draw_embeddings(projection, embeddings, images, neighbour_rows(embeddings, k=2),
                           tmp_path / "many.png")  # fmt: skip
    assert png_size(path)[0] > 400
    empty = NeighbourRows([], [], [])
    assert draw_embeddings(projection, embeddings, images, empty, tmp_path / "none.png").is_file()
