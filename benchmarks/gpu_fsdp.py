"""GPU check (not run in CI: Lightning refuses strategy="fsdp" without a GPU): the monitors under FSDP give the
single-device figures.

    python benchmarks/gpu_fsdp.py                 # every visible GPU; FSDP1 through Lightning's FSDPStrategy
    python benchmarks/gpu_fsdp.py --devices 2

Two fits of the same seeded MLP on digits: one on a single GPU without FSDP, one under strategy="fsdp" on
``--devices`` GPUs. Both probe at step 0, before any update, so the weights are the same; with ``--devices 1`` the
two runs also train identically and the final probes are compared too. The weight-reading monitors (condensation,
LIB) must read the parameters in full (``summon_full_params``), never a shard; the forward-based ones (spectrum,
concepts, interactions) run through the model. Prints one line per scalar that differs beyond the tolerance and
exits 1 if any does. Under ``devices > 1`` Lightning starts one process per GPU by re-running this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

from lightning_probes import presets  # noqa: E402
from lightning_probes.datasets import DigitsDataModule  # noqa: E402
from lightning_probes.models import MLPClassifier  # noqa: E402
from lightning_probes.schedules import every  # noqa: E402

RTOL = 1e-4  # float32 on a GPU: TF32 and reduction order may differ between the runs; the figures are float64


class Dump(pl.Callback):
    def __init__(self, monitors, path):
        self.monitors, self.path = monitors, path

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            with open(self.path, "w") as fh:
                json.dump({m.name: m.history for m in self.monitors}, fh)


def run(strategy: str, devices: int, steps: int, path: str) -> None:
    from helpers import all_five

    pl.seed_everything(0)
    monitors = list(presets.standard(**all_five()))
    for m in monitors:
        m.schedule, m.images_every, m.on_error = every(max(steps, 1)), 0, "raise"
    trainer = pl.Trainer(accelerator="gpu", devices=devices, strategy=strategy, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[*monitors, Dump(monitors, path)])
    trainer.fit(MLPClassifier(hidden=(32,)), DigitsDataModule(batch_size=64))


def compare(single: dict, sharded: dict, same_training: bool) -> list[str]:
    bad = []
    for name, history in single.items():
        other = dict((s, v) for s, v in sharded.get(name, []))
        for step, scalars in history:
            if step != 0 and not same_training:
                continue
            if step not in other:
                bad.append(f"{name}: no probe at step {step} under FSDP")
                continue
            for key, value in scalars.items():
                got = other[step].get(key)
                if got is None or abs(got - value) > RTOL * max(abs(value), 1.0):
                    bad.append(f"{name} step {step} {key}: single {value!r} vs fsdp {got!r}")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=torch.cuda.device_count())
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dir", default=os.environ.get("LP_FSDP_DIR") or tempfile.mkdtemp(prefix="lp_fsdp_"))
    args = parser.parse_args()
    if not torch.cuda.is_available() or args.devices < 1:
        print("needs a CUDA GPU: Lightning refuses strategy='fsdp' on CPU ('The strategy `fsdp` requires a GPU "
              "accelerator'); see tests/test_fsdp_weights.py for the CPU check of the weight reads.")
        return 2
    os.environ["LP_FSDP_DIR"] = args.dir  # the processes Lightning re-launches read the same folder
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    single, sharded = os.path.join(args.dir, "single.json"), os.path.join(args.dir, "fsdp.json")
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and "LP_FSDP_SINGLE_DONE" not in os.environ:
        run("auto", 1, args.steps, single)
        os.environ["LP_FSDP_SINGLE_DONE"] = "1"
    run("fsdp", args.devices, args.steps, sharded)
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return 0
    bad = compare(json.load(open(single)), json.load(open(sharded)), same_training=args.devices == 1)
    for line in bad:
        print("MISMATCH", line)
    print(f"fsdp on {args.devices} GPU(s), {args.steps} steps: "
          + ("all figures equal the single-device run" if not bad else f"{len(bad)} mismatches"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
