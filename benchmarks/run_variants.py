"""Re-train one run of a suite with some optimizer hyperparameters overridden (same model, data,
steps and seed), to test what a residual or an IsoFLOP point is sensitive to.

    python benchmarks/run_variants.py delphi-out/micro isoflop-6e+10-d32-L1-B4-cpu beta2=0.997 beta2=0.99,lr=0.03

Each argument after the run name is one variant: comma-separated `field=value` overrides of the
run's `optimizer` (lr, adam_lr, beta1, beta2, epsilon, warmup_fraction, decay_fraction, ...).
Variants train into SUITE_DIR/variants/RUN/LABEL (re-running resumes or skips them).
"""

import dataclasses
import json
import sys
import time
from pathlib import Path

from delphi.config import RunSpec
from delphi.train import train_run

if __name__ == "__main__":
    suite_dir, run, variants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    base = RunSpec.from_json((suite_dir / "runs" / run / "run.json").read_text())
    recorded = json.loads((suite_dir / "runs" / run / "summary.json").read_text())["loss"]
    print(f"{run}: recipe optimizer {dataclasses.asdict(base.optimizer)}; loss {recorded:.4f}", flush=True)
    for variant in variants:
        overrides = {k: float(v) for k, v in (kv.split("=", 1) for kv in variant.split(","))}
        opt = dataclasses.replace(base.optimizer, **overrides)
        spec = dataclasses.replace(base, name=f"{base.name}-{variant}", optimizer=opt, tags={})
        t = time.time()
        s = train_run(spec, suite_dir / "variants" / run / variant, progress=False, resume=True)
        print(f"{variant:32s} loss={s['loss']:.4f} ({100 * (s['loss'] - recorded) / recorded:+.2f}% vs recipe) "
              f"wall={time.time() - t:.0f}s", flush=True)
