"""Re-train a suite's held-out run with other batch sizes (same model, same tokens, recipe rules).

    python benchmarks/heldout_batch.py delphi-out/tiny 128 512

Tests whether a held-out residual comes from the batch rule: for each batch B, steps =
round(tokens / (B·seq_len)) and the optimizer hyperparameters are the recipe's for (B, tokens).
"""

import dataclasses
import sys
import time
from pathlib import Path

from delphi.config import RunSpec
from delphi.recipe import get_recipe
from delphi.train import train_run

if __name__ == "__main__":
    suite_dir, batches = Path(sys.argv[1]), [int(b) for b in sys.argv[2:]]
    (run_json,) = [p for p in suite_dir.glob("runs/*heldout-s0/run.json")][:1]
    base = RunSpec.from_json(run_json.read_text())
    recipe = get_recipe(base.recipe)
    for B in batches:
        steps = round(base.tokens / (B * base.shape.seq_len))
        hp = recipe.hyperparams(B, base.tokens, base.shape.hidden_size)
        spec = dataclasses.replace(base, name=f"{base.name}-B{B}", batch_size=B, train_steps=steps, optimizer=hp,
                                   tags={})
        t = time.time()
        s = train_run(spec, suite_dir / "batch-check" / f"B{B}", progress=False, resume=True)
        print(f"B={B} steps={steps} lr={hp.lr:.4f} adam_lr={hp.adam_lr:.4f} loss={s['loss']:.4f} "
              f"wall={time.time() - t:.0f}s", flush=True)
