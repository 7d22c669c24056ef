"""Validation of step 2 on published data: the OLMo model ladder (Bhagia et al. 2024,
"Establishing Task Scaling Laws via Compute-Efficient Model Ladders", allenai/OLMo-ladder).

Protocol of the paper's `step2.py` (config `final.json`, `--skip_perc 0.1 --moving_avg 5`):
fit the sigmoid from task bpb (of the correct answer, 5-shot ranked classification) to task
accuracy (length-normalised) on every checkpoint of the 190M–1.3B ladder runs at 1, 2, 5 and
10× Chinchilla tokens, the first 10% of each run's checkpoints dropped and a 5-checkpoint
moving average applied, plus the ideal point (bpb 0, accuracy 1); then predict the target's
accuracy from its bpb (both averaged over its last 5 checkpoints). MMLU is the average of its
four categories weighted 0.215/0.335/0.219/0.231 (STEM/humanities/social sciences/other).

`load_ladder` reads either the original CSVs (a directory like
../shared/data/external/olmo-ladder) or the compact copy in tests/data/eval.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from delphi.errors import DelphiError

MMLU_CATS = ("stem", "humanities", "social_sciences", "other")
MMLU_WEIGHTS = (0.215, 0.335, 0.219, 0.231)

# task → (source column stems, chance accuracy)
TASKS = {
    "mmlu": ([f"mmlu_{c}_test" for c in MMLU_CATS], 0.25),
    "hellaswag": (["hellaswag_val"], 0.25),
    "arc_challenge": (["arc_challenge_test"], 0.25),
    "arc_easy": (["arc_easy_test"], 0.25),
    "piqa": (["piqa_val"], 0.5),
    "csqa": (["csqa_val"], 0.2),
    "socialiqa": (["socialiqa_val"], 1 / 3),
    "openbookqa": (["openbookqa_test"], 0.25),
}

# Bhagia et al.'s own step-2 result for the 13B-5T target (allenai/OLMo-ladder @ 4d993445,
# src/scripts/paper/figures/step2_main.csv): (actual accuracy, predicted accuracy).
PAPER_STEP2_13B = {
    "mmlu": (0.5161402368605137, 0.5137559254977586),
    "hellaswag": (0.831905996799469, 0.8415671300246522),
    "arc_challenge": (0.638054609298706, 0.6030242849964447),
    "arc_easy": (0.8717171669006347, 0.8193835327090995),
    "piqa": (0.8295973896980285, 0.8074608283959512),
    "csqa": (0.7410319447517395, 0.7172756908394468),
    "socialiqa": (0.6159672379493714, 0.6337470338620458),
    "openbookqa": (0.4863999903202057, 0.4572227807036213),
}

LADDER_SIZES = ("190M", "370M", "760M", "1B")  # the paper's fitted ladder (3B is held back)
LADDER_MULTS = ("1xC", "2xC", "5xC", "10xC")
TARGET_FILES = {"13B": "peteish13_eval_final.csv"}  # the 7B file (peteish7) is not in our data


def _bpb_col(stem: str) -> str:
    return f"eval/downstream_bpb/{stem}_rc_5shot_bpb"


def _acc_col(stem: str) -> str:
    return f"eval/downstream/{stem}_rc_5shot_len_norm"


def needed_columns() -> list[str]:
    cols = ["_step"]
    for stems, _ in TASKS.values():
        cols += [_bpb_col(s) for s in stems] + [_acc_col(s) for s in stems]
    return cols


def load_ladder(path: str | Path):
    """Long DataFrame: run, size, kind ("ladder"|"target"), row (checkpoint order), task, bpb, acc."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        frames = []
        for size in ("190M", "370M", "760M", "1B", "3B"):
            for mult in LADDER_MULTS:
                f = path / f"{size}-{mult}.csv"
                if f.exists():
                    frames.append(pd.read_csv(f, usecols=needed_columns()).assign(run=f"{size}-{mult}"))
        for name, fname in TARGET_FILES.items():
            if (path / fname).exists():
                frames.append(pd.read_csv(path / fname, usecols=needed_columns()).assign(run=name))
        if not frames:
            raise DelphiError(f"{path}: no OLMo ladder CSVs (e.g. 190M-1xC.csv) found")
        wide = pd.concat(frames, ignore_index=True)
    elif path.exists():
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            wide = pd.read_csv(f)
    else:
        raise DelphiError(f"OLMo ladder data not found at {path}")
    wide["row"] = wide.groupby("run", sort=False).cumcount()
    rows = []
    for task, (stems, _) in TASKS.items():
        w = np.array(MMLU_WEIGHTS if task == "mmlu" else [1.0])
        bpb = wide[[_bpb_col(s) for s in stems]].to_numpy() @ w / w.sum()
        acc = wide[[_acc_col(s) for s in stems]].to_numpy() @ w / w.sum()
        rows.append(pd.DataFrame({"run": wide["run"], "row": wide["row"], "task": task, "bpb": bpb, "acc": acc}))
    out = pd.concat(rows, ignore_index=True)
    out["size"] = out["run"].str.split("-").str[0]
    out["kind"] = np.where(out["run"].isin(list(TARGET_FILES)), "target", "ladder")
    return out


def _moving_average(v: np.ndarray, n: int) -> np.ndarray:
    # Trailing mean over up to n points (shorter windows at the start), as the paper's code.
    c = np.cumsum(v, dtype=float)
    out = c.copy()
    out[n:] = c[n:] - c[:-n]
    return out / np.minimum(np.arange(1, len(v) + 1), n)


def step2_points(df, task: str, *, sizes=LADDER_SIZES, skip_frac: float = 0.1, moving_avg: int = 5):
    """(x, y, groups) of the ladder's fitting points for `task`."""
    xs, ys, gs = [], [], []
    sub = df[(df.task == task) & (df.kind == "ladder") & (df["size"].isin(sizes))]
    for run, g in sub.groupby("run", sort=True):
        g = g.sort_values("row")
        start = int(np.ceil(skip_frac * len(g)))
        xs.append(_moving_average(g["bpb"].to_numpy()[start:], moving_avg))
        ys.append(_moving_average(g["acc"].to_numpy()[start:], moving_avg))
        gs += [run] * (len(g) - start)
    if not xs:
        raise DelphiError(f"no ladder checkpoints for task {task!r} (sizes {', '.join(sizes)})")
    return np.concatenate(xs), np.concatenate(ys), np.array(gs)


def target_point(df, task: str, target: str = "13B", last: int = 5) -> tuple[float, float]:
    g = df[(df.task == task) & (df.run == target)].sort_values("row")
    if g.empty:
        raise DelphiError(f"no rows for target {target!r}")
    return float(g["bpb"].to_numpy()[-last:].mean()), float(g["acc"].to_numpy()[-last:].mean())


def validate_step2(df, *, target: str = "13B", sizes=LADDER_SIZES, bootstrap: int = 200, seed: int = 0,
                   anchor: bool = True, use_floor: bool = False):
    """Per task: the target's actual and predicted accuracy, error in points, the 95% interval,
    and the paper's numbers. `use_floor` bounds b below by the task's chance accuracy."""
    import pandas as pd

    from delphi.downstream.sigmoid import fit_sigmoid

    rows = []
    for task, (_, chance) in TASKS.items():
        x, y, groups = step2_points(df, task, sizes=sizes)
        fit = fit_sigmoid(x, y, groups=groups, anchors=[(0.0, 1.0)] if anchor else (), bootstrap=bootstrap,
                          seed=seed, floor=chance if use_floor else None)
        tx, ty = target_point(df, task, target)
        pred = fit.predict(tx)
        row = {"task": task, "target": target, "bpb": tx, "actual": ty, "predicted": pred,
               "error_pts": 100 * (pred - ty), "fit_rmse_pts": 100 * fit.rmse}
        if bootstrap:
            lo, hi = fit.interval(tx)
            row.update(lo=lo, hi=hi)
        if target == "13B" and task in PAPER_STEP2_13B:
            pa, pp = PAPER_STEP2_13B[task]
            row.update(paper_actual=pa, paper_predicted=pp, paper_error_pts=100 * (pp - pa))
        rows.append(row)
    return pd.DataFrame(rows)
