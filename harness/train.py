"""`python -m harness.train IMPL --preset NAME`: train one implementation for real and score it.

The implementation runs as it does for a comparison (same job protocol, its own process), on an
*indexed* job (the training images once, each batch as indices) in the `train` capture mode: the
memstate keeps the loaded and the final parameters, and a summary row of `loss/value` per step,
which the progress line reads while the run goes on. The harness then scores the final parameters
on the test images with its own float64 forward pass, and can save them as a parameter file that
`harness.compare --params` loads. docs/training.md has the presets and the measured table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np

from harness.run.capture import SUMMARY_FIELDS, TRAIN, Capture
from harness.spec.config import (Config, add_config_arguments, config_from_arguments, explicit_fields, positive_number,
                                  widths_text)
from harness.spec.data import Mnist, load_mnist
from harness.errors import InputError, printable
from harness.run.job import prepare_job, resolve, train_count
from harness.store.format import SUMMARIES, SUMMARY_NAMES
from harness.store.memstate import Memstate
from harness.run.outputs import check_file_target, check_output_paths, claim_run_directory, release_run_directory
from harness.spec.params import Params, initial_params, load_params
from harness.spec.presets import get_preset
from harness.spec.network import network
from harness.run.runner import load_implementation, run_implementation

ROW = len(SUMMARY_FIELDS) * 8  # bytes of one summary row
VALUE = SUMMARY_FIELDS.index("s_min")  # a scalar's summary holds its value in every quantile


@dataclass
class TrainResult:
    """One training run and its score. Truthy when the run completed."""

    implementation: str
    preset: str | None
    steps: int
    epochs: float
    seconds: float
    seconds_per_epoch: float
    images_per_second: float
    final_loss: float | None  # the mean loss/value over the last epoch (or the whole run if shorter)
    test_accuracy: float | None  # percent, on the data's test images
    test_images: int
    status: str
    error: str | None = None
    params: Params | None = None

    def __bool__(self) -> bool:
        return self.status == "complete"

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "params"}


def predict(params: Params, config: Config, images: np.ndarray) -> np.ndarray:
    """Class predictions of the network, in float64, for images (n, 28, 28) uint8; no dropout (evaluation)."""
    a = images.reshape(len(images), -1) / 255.0  # (n, 784)
    if config.scaled_inputs:
        a = a * (config.input_max - config.input_min) + config.input_min
    for W, b in zip(params.weights[:-1], params.biases[:-1]):
        z = a @ W.T + b  # (n, H_k)
        if config.activation == "relu":
            a = np.maximum(z, 0.0)
        elif config.activation == "sigmoid":
            a = 1 / (1 + np.exp(-z))
        else:
            a = np.tanh(z)
    return np.argmax(a @ params.weights[-1].T + params.biases[-1], axis=1)  # (n,); sigmoid and softmax keep the order


def accuracy(params: Params, config: Config, mnist: Mnist) -> float:
    """Percent of the test images classified correctly."""
    return 100.0 * float(np.mean(predict(params, config, mnist.test_images) == mnist.test_labels))


def final_params(ms: Memstate) -> Params | None:
    """The parameters after the memstate's last step (its load unit if it ran none)."""
    for unit in reversed(ms.units):
        got = [ms.get(unit, n) for n in network(ms.cfg).parameters]
        if all(g is not None for g in got):
            return Params.of([np.asarray(g, dtype=np.float64) for g in got])
    return None


def losses(out: Path) -> np.ndarray:
    """The loss/value of every finished step so far, read from the summaries a train-mode run appends."""
    try:
        names = (out / SUMMARY_NAMES).read_text().split("\n")
        raw = (out / SUMMARIES).read_bytes()
    except OSError:
        return np.zeros(0)
    rows = np.frombuffer(raw[:len(raw) - len(raw) % ROW], dtype="<f8").reshape(-1, len(SUMMARY_FIELDS))
    if "loss/value" not in names:
        return np.zeros(0)
    return rows[rows[:, 1] == names.index("loss/value"), VALUE]


class Progress:
    """A progress line on stderr while the run goes on: steps, epoch, loss and images per second."""

    def __init__(self, out: Path, steps: int, epoch_steps: int, batch: int, stream=sys.stderr):
        self.out, self.steps, self.epoch_steps, self.batch, self.stream = out, steps, epoch_steps, batch, stream
        self.start = time.perf_counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.last_tenth = -1

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.show(final=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self.show()

    def show(self, final: bool = False) -> None:
        seen = losses(self.out)
        done = len(seen)
        tty = self.stream.isatty()
        tenth = 10 * done // max(self.steps, 1)
        if not tty and not final and tenth == self.last_tenth:
            return  # a log file gets one line per tenth
        self.last_tenth = tenth
        width = 30
        fill = width * done // max(self.steps, 1)
        rate = done * self.batch / max(time.perf_counter() - self.start, 1e-9)
        recent = float(np.mean(seen[-self.epoch_steps:])) if done else float("nan")
        line = (f"[{'#' * fill}{'.' * (width - fill)}] step {done}/{self.steps} "
                f"epoch {done / self.epoch_steps:.2f}/{self.steps / self.epoch_steps:.2f} "
                f"loss {recent:.4f} {rate:,.0f} img/s")
        if tty:
            print("\r" + line, end="\n" if final else "", file=self.stream, flush=True)
        elif done or final:
            print(line, file=self.stream, flush=True)


def train(impl_dir: str | Path, config: Config, mnist: Mnist, work: Path, params: Params | None = None,
          preset: str | None = None, timeout: float | None = None, progress: bool = True) -> TrainResult:
    """Run `impl_dir` for config.steps steps on an indexed job and score the parameters it ends with."""
    impl = load_implementation(impl_dir)
    config = resolve(config, mnist)
    epoch_steps = max(1, train_count(config, mnist) // config.batch_size)
    last = config.steps - 1
    capture = Capture(TRAIN, ((last, last),))
    job = prepare_job(work / "job", config, params if params is not None else initial_params(config), mnist,
                      capture, indexed=True)
    out = work / "run"
    if progress:
        with Progress(out, config.steps, epoch_steps, config.batch_size):
            run = run_implementation(impl, job, out, timeout=timeout or 24 * 3600.0)
    else:
        run = run_implementation(impl, job, out, timeout=timeout or 24 * 3600.0)
    seen = losses(out)
    ms = Memstate(out)
    trained = final_params(ms) if run.status == "complete" else None
    epochs = config.steps / epoch_steps
    return TrainResult(
        implementation=impl.name, preset=preset, steps=config.steps, epochs=round(epochs, 3),
        seconds=round(run.seconds, 3), seconds_per_epoch=round(run.seconds / epochs, 3),
        images_per_second=round(len(seen) * config.batch_size / max(run.seconds, 1e-9), 1),
        final_loss=float(np.mean(seen[-epoch_steps:])) if len(seen) else None,
        test_accuracy=round(accuracy(trained, config, mnist), 2) if trained is not None else None,
        test_images=len(mnist.test_images), status=run.status, error=run.error, params=trained)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("impl", metavar="IMPL", help="implementation directory (impls/numpy, your port, ...)")
    p.add_argument("--epochs", type=positive_number, help="train this many epochs of the training images (default: the "
                   "preset's length; without a preset, --steps)")
    p.add_argument("--data", metavar="DIR", help="directory with the four MNIST files (default: the bundled "
                   "subset; the presets' published accuracies need full MNIST)")
    p.add_argument("--params", metavar="FILE", help="start from these parameters (default: the config's init)")
    p.add_argument("--save", metavar="FILE", help="write the trained parameters here (memstate-params/1)")
    p.add_argument("--out", metavar="DIR", help="keep the job and memstate here (default: a temporary directory)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON ('-' for stdout)")
    p.add_argument("--timeout", type=positive_number, help="seconds before the run is killed (default: a day)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_config_arguments(p)
    return p


def run_length(args: argparse.Namespace, config: Config, mnist: Mnist) -> int:
    """Steps to train: --epochs, else an explicit --steps, else the preset's length, else config.steps."""
    epoch_steps = max(1, train_count(config, mnist) // config.batch_size)
    if args.epochs is not None:
        if args.epochs <= 0:
            raise InputError(f"--epochs must be positive, got {args.epochs}")
        return max(1, round(args.epochs * epoch_steps))
    if "steps" in explicit_fields(args) or not args.preset:
        return config.steps
    preset = get_preset(args.preset)
    return preset.train_steps or preset.epochs * epoch_steps


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else [str(a) for a in argv])
    claimed: bool | None = None  # whether this command made the --out it claimed (None: claimed none)
    try:
        mnist = load_mnist(args.data)
        config = config_from_arguments(args)
        if config.batch_size > train_count(config, mnist):
            raise InputError(f"batch size {config.batch_size} is larger than the {train_count(config, mnist)} "
                             f"training images of {mnist.source} (give --data DIR for full MNIST, or --batch-size)")
        config = config.replace(steps=run_length(args, config, mnist))
        params = load_params(args.params) if args.params else None
        if params is not None and params.widths != config.widths:
            raise InputError(f"{args.params}: parameters have hidden widths {widths_text(params.widths)} but "
                             f"the config says {widths_text(config.widths)}")
        print(f"training {args.impl} for {config.steps} steps of {config.batch_size} on {mnist.source} "
              f"({train_count(config, mnist)} training images){f', preset {args.preset}' if args.preset else ''}",
              file=sys.stderr)
        if args.save:
            check_output_paths({"--save": args.save}, [Path(p) for p in (args.impl, args.params, args.data) if p])
            check_file_target(args.save, "--save")  # now, not after hours of training
        if args.json and args.json != "-":
            check_file_target(args.json, "--json")
        if args.out:
            work = Path(args.out)
            claimed = claim_run_directory(work)
            result = train(args.impl, config, mnist, work, params, args.preset, args.timeout, not args.quiet)
        else:
            with tempfile.TemporaryDirectory(prefix="memstate-train-") as tmp:
                result = train(args.impl, config, mnist, Path(tmp), params, args.preset, args.timeout,
                               not args.quiet)
        if args.save and result.params is not None:
            try:
                result.params.write(args.save)
            except OSError as e:
                raise InputError(f"{args.save}: cannot write the parameters: {e.strerror}") from None
    except InputError as e:
        if claimed is not None:
            release_run_directory(Path(args.out), claimed)
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    out = sys.stderr if args.json == "-" else sys.stdout
    if result:
        print(f"{printable(result.implementation)}: {result.steps} steps ({result.epochs:g} epochs) in {result.seconds:.1f} s, "
              f"{result.seconds_per_epoch:.2f} s/epoch, {result.images_per_second:,.0f} img/s", file=out)
        print(f"loss {result.final_loss:.4f} (mean over the last epoch); test accuracy {result.test_accuracy:.2f}% "
              f"on {result.test_images} images", file=out)
        if args.save:
            print(f"parameters: {args.save} (python -m harness.compare A B --params {args.save})", file=out)
    else:
        print(f"{printable(result.implementation)} {result.status}: {printable(result.error)}", file=out)
    if args.json:
        text = json.dumps(result.to_dict(), indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if result else 1


if __name__ == "__main__":
    raise SystemExit(main())
