"""What one epoch of each user study costs on this machine, measured with the real training loop.

The five studies (docs/studies/) train on data sets that may not be on this machine (K49,
CIFAR-10, the pretrained ViT-B). Their cost does not depend on the pixels, only on the shapes, so
each study's own configuration (``examples/*.yaml``: model, batch size, augmentation, AMP on CUDA)
is trained by ``trainlab.train`` on generated images of the real size and class count, for
``--seconds`` of steps after a warm-up, and the epoch at full size is projected from the measured
rates:

    epoch ≈ train images / train rate + (validation images) / evaluation rate

The train rate is measured over whole steps (forward, backward, optimizer, on-device
augmentation) between synchronisations of the device, leaving out the validation passes between
epochs; the evaluation rate over one more validation pass after the loop's own (warm shapes).
Studies run without a progress bar, and so does this. The ViT case builds ViT-B/16 (``transformers``'
default ``ViTConfig``: 86M parameters, 224 px) with random weights in a temporary folder: the
same computation as the pretrained one. The optimizer study's MNIST case is the calibration:
compare it with the epoch times of a real full-MNIST run (``history.csv``, column ``seconds``).

    python bench/bench_study_cost.py                       # every study, 20 s of steps each
    python bench/bench_study_cost.py --only k49-spinalvgg vit-b16 --seconds 60
    python bench/bench_study_cost.py --device cuda --json cost.json
    python bench/bench_study_cost.py --device cuda --unfused-baseline   # what fusing gains
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import yaml

from trainlab.config import set_dotted
from trainlab.engine.callbacks import Callback
from trainlab.engine.loop import Trainer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Case:
    """One study's training run at full size: its config and its data set's shape."""

    name: str
    config: str  # examples/<config>
    image: tuple[int, ...]  # (H, W) grey or (H, W, 3) colour, as stored
    classes: int
    train: int  # images per epoch at full size
    val: int  # images validated per epoch
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    needs_hf: bool = False


# Sizes of the real data sets, split as each study's configuration splits them.
CASES = [
    # Optimizer study: the simple CNN, 80/20 split of the 60k MNIST / Fashion-MNIST training images
    Case("optimizers-mnist", "optimizers.yaml", (28, 28), 10, 48_000, 12_000),
    Case("optimizers-cifar10", "optimizers.yaml", (32, 32, 3), 10, 40_000, 10_000),
    # K49: 232,365 training images, 10% validation by default
    Case("k49-spinalvgg", "k49.yaml", (28, 28), 49, 209_129, 23_236),
    # CIFAR-10: 50k training images, 10% validation (examples/cifar10-vgg.yaml)
    Case("cifar10-vgg", "cifar10-vgg.yaml", (32, 32, 3), 10, 45_000, 5_000),
    # its costliest variant (examples/cifar10-vgg-grid.yaml, no. 5): kernels growing 3, 5, 7
    Case(
        "cifar10-vgg-k357",
        "cifar10-vgg.yaml",
        (32, 32, 3),
        10,
        45_000,
        5_000,
        {
            "model.options": {
                "stages": [64, 128, 256],
                "convs_per_stage": 2,
                "kernel_sizes": [3, 5, 7],
                "global_pool": True,
                "dense": [512, 256],
                "dropout": 0.3,
            }
        },
    ),
    # GRU approach A: the small model, 90/10 split of MNIST, 1000 epochs
    Case("gru-small", "gru-small.yaml", (28, 28), 10, 54_000, 6_000),
    # ViT-B/16 fine-tune: 5-fold cross-validation on the 60k MNIST training images
    Case("vit-b16", "vit-finetune.yaml", (28, 28), 10, 48_000, 12_000, needs_hf=True),
    # the CPU route the page suggests for screening: the new head only, at 112 px (49 tokens)
    Case(
        "vit-b16-head-112",
        "vit-finetune.yaml",
        (28, 28),
        10,
        48_000,
        12_000,
        {"model.options.freeze": "backbone", "model.options.input_size": 112},
        needs_hf=True,
    ),
]


class StepClock(Callback):
    """Times training steps, between device synchronisations, from step ``warmup`` until
    ``seconds`` of steps are measured (across epochs: the validation passes between epochs are
    left out), then stops training and times one more, warm validation pass."""

    def __init__(self, device: torch.device, warmup: int, seconds: float) -> None:
        self.device, self.warmup, self.seconds = device, warmup, seconds
        self.steps = self.measured_steps = 0
        self.segment_start: float | None = None  # the running measured stretch of steps
        self.segment_steps = 0
        self.train_seconds = self.eval_seconds = 0.0
        self.done = False

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_epoch_start(self, trainer: Trainer) -> None:
        if self.steps >= self.warmup and not self.done:
            self.segment_start, self.segment_steps = self._now(), self.steps

    def on_batch_end(self, trainer: Trainer) -> None:
        self.steps += 1
        if self.steps == self.warmup:
            self.segment_start, self.segment_steps = self._now(), self.steps
            return
        if self.segment_start is None or self.done:
            return
        # Deciding needs no synchronisation: the device keeps its queue until the segment ends.
        spent = self.train_seconds + time.perf_counter() - self.segment_start
        last_of_epoch = self.steps % trainer.steps_per_epoch == 0
        if spent >= self.seconds or last_of_epoch:
            self.train_seconds += self._now() - self.segment_start
            self.measured_steps += self.steps - self.segment_steps
            self.segment_start = None
        if self.train_seconds >= self.seconds:
            self.done = True
            trainer.request_stop("budget_exhausted", "measured enough steps")

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if self.done and trainer.state.status != "diverged":
            # The loop has just validated once (warming up the evaluation shapes); time another.
            started = self._now()
            trainer.evaluate(trainer.val_loader)
            self.eval_seconds = self._now() - started


def write_images(case: Case, count: int, path: Path) -> None:
    """Random images of the case's shape; every class present (stratified splits need it)."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % case.classes
    images = rng.integers(0, 256, (count, *case.image), dtype=np.uint8)
    kind = "natural" if len(case.image) == 3 else "characters"
    np.savez(path, x_train=images, y_train=labels, x_test=images[: case.classes * 2],
             y_test=labels[: case.classes * 2], kind=kind)  # fmt: skip


def random_vit_base(folder: Path) -> str:
    """ViT-B/16 at 224 px (transformers' default ViTConfig) with random weights, saved the way
    ``save_pretrained`` saves the real one; returns the ``hf:`` model name."""
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig()).save_pretrained(folder)
    return f"hf:{folder}"


def case_config(config: dict[str, Any], case: Case, data_file: Path, val_images: int,
                device: str, model_name: str | None) -> dict[str, Any]:  # fmt: skip
    """The study's example config (as read) on the generated data, stopped by the clock."""
    config["data"].update(dataset=str(data_file), val_size=val_images)
    config["data"].pop("folds", None)
    if model_name:
        config["model"]["name"] = model_name
        config["model"].setdefault("options", {})["pretrained"] = True
    for key, value in case.overrides.items():
        set_dotted(config, key, value)
    # Epochs enough for any --seconds (the clock stops training); no progress bar, as in studies.
    config.update(epochs=1000, device=device, seed=0, progress=False)
    config["early_stopping"] = {"enabled": False}
    return config


def measure(
    case: Case, args: argparse.Namespace, workdir: Path, fused: bool = True
) -> dict[str, Any]:
    """One case's rates; ``fused=False`` measures the optimizer's per-tensor update instead of
    the fused one trainlab picks on CUDA (the baseline of ``--unfused-baseline``)."""
    import trainlab
    from trainlab.engine import optim
    from trainlab.training import resolve_device

    device = resolve_device(args.device)
    example = yaml.safe_load((EXAMPLES / case.config).read_text())
    batch, eval_batch = example["data"]["batch_size"], example["data"].get("eval_batch_size", 1000)
    # An epoch of up to --max-steps steps (more epochs follow while --seconds are not measured)
    # and a validation set of a few evaluation batches.
    val_images = max(case.classes * 2, min(4 * eval_batch, 4_000))
    train_images = batch * args.max_steps
    data_file = workdir / f"{case.name}.npz"
    if not data_file.exists():  # the second variant of a case reuses the first one's files
        write_images(case, train_images + val_images, data_file)
    vit_folder = workdir / "vit-b16"
    model_name = None
    if case.needs_hf:
        model_name = f"hf:{vit_folder}" if vit_folder.exists() else random_vit_base(vit_folder)
    clock = StepClock(device, args.warmup, args.seconds)
    config = case_config(example, case, data_file, val_images, args.device, model_name)
    with mock.patch.object(optim, "use_fused", optim.use_fused if fused else lambda *_: False):
        result = trainlab.train(config, save=False, callbacks=[clock])
    if result.status == "diverged":
        raise SystemExit(f"{case.name}: training diverged ({result.summary.get('stop_reason')})")
    if not clock.done:
        raise SystemExit(f"{case.name}: training ended before {args.seconds:g} s were measured")
    train_rate = clock.measured_steps * batch / clock.train_seconds
    eval_rate = val_images / clock.eval_seconds
    epoch = case.train / train_rate + case.val / eval_rate
    return {"case": case.name, "config": f"examples/{case.config}", "batch": batch, "fused": fused,
            "steps": clock.measured_steps, "measured_s": clock.train_seconds,
            "train_img_s": train_rate, "eval_img_s": eval_rate, "train_images": case.train,
            "val_images": case.val, "epoch_s": epoch}  # fmt: skip


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def rate(images_per_second: float) -> str:
    """Three significant figures below 100 (2.3, not 2), whole numbers above."""
    if images_per_second >= 100:
        return f"{images_per_second:,.0f}"
    return f"{images_per_second:.3g}"


def print_table(rows: list[dict[str, Any]], device: str) -> None:
    print(f"\n## Cost of one epoch at full size on {device}\n")
    print(
        "| study run | batch | measured | train img/s | eval img/s | train + val images | epoch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} (`{r['config']}`) | {r['batch']} | {r['steps']} steps, "
              f"{r['measured_s']:.0f} s | {rate(r['train_img_s'])} | {rate(r['eval_img_s'])} | "
              f"{r['train_images']:,} + {r['val_images']:,} | {duration(r['epoch_s'])} |")  # fmt: skip


def print_speedups(rows: list[dict[str, Any]]) -> None:
    """Median train rate of each variant (of two alternated measurements), both shown."""
    print("\n| study run | unfused train img/s | fused train img/s | speed-up |")
    print("|---|---:|---:|---:|")
    for r in rows:
        before, after = r["unfused_train_img_s"], r["fused_train_img_s"]
        ratio = float(np.median(after) / np.median(before))
        print(f"| {r['case']} | {' / '.join(map(rate, before))} | {' / '.join(map(rate, after))} "
              f"| {ratio:.2f}× |")  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CASES], metavar="CASE",
                        help=f"some of: {', '.join(c.name for c in CASES)}")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds of steps")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first steps (>= 1)")
    parser.add_argument("--max-steps", type=int, default=400,
                        help="steps per generated epoch (more epochs run if needed)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--unfused-baseline", action="store_true",
                        help="also measure each case with per-tensor optimizer updates "
                             "(trainlab fuses them on CUDA) and print the speed-up")  # fmt: skip
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.max_steps < 1 or args.seconds <= 0:
        parser.error("--warmup and --max-steps must be at least 1, --seconds above 0")
    from trainlab.training import resolve_device

    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    for case in cases:
        if case.needs_hf:
            try:
                import transformers  # noqa: F401
            except ImportError:
                print(f"{case.name}: skipped (pip install 'trainlab[hf]')", file=sys.stderr)
                continue
        with tempfile.TemporaryDirectory() as workdir:
            # Alternated, twice each: a difference smaller than a variant's own spread is noise,
            # and neither variant gets all the warm starts.
            variants = (False, True, False, True) if args.unfused_baseline else (True,)
            case_rows = []
            for fused in variants:
                row = measure(case, args, Path(workdir), fused)
                label = f" ({'fused' if fused else 'unfused'})" if args.unfused_baseline else ""
                print(f"{case.name}{label}: {rate(row['train_img_s'])} train img/s over "
                      f"{row['steps']} steps, {rate(row['eval_img_s'])} eval img/s -> epoch "
                      f"{duration(row['epoch_s'])}", flush=True)  # fmt: skip
                case_rows.append(row)
        rows.append(case_rows[-1])
        if args.unfused_baseline:
            rows[-1]["unfused_train_img_s"] = [
                r["train_img_s"] for r in case_rows if not r["fused"]
            ]
            rows[-1]["fused_train_img_s"] = [r["train_img_s"] for r in case_rows if r["fused"]]
    name = device_name(resolve_device(args.device))
    print_table(rows, name)
    if args.unfused_baseline:
        print_speedups(rows)
        if resolve_device(args.device).type != "cuda":
            print("(trainlab fuses only on CUDA: here both variants are the same code)")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
