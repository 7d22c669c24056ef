"""Reference tuning: search the reference point's constants, measure the token-horizon exponent,
check that the recipe's LR transfers away from the reference.

    from delphi.tune import search, run_horizon, fit_horizon_exponent, check_transfer

Optuna, matplotlib and the trainer are imported only when a function needs them.
"""

from delphi.tune.common import TuneSettings, load_recipe, lr_grid
from delphi.tune.horizon import HorizonFit, Optimum, fit_horizon_exponent, optimum_lr, run_horizon
from delphi.tune.search import Param, SearchResult, default_space, search
from delphi.tune.transfer import TransferCheck, check_transfer, run_transfer

__all__ = ["HorizonFit", "Optimum", "Param", "SearchResult", "TransferCheck", "TuneSettings", "check_transfer",
           "default_space", "fit_horizon_exponent", "load_recipe", "lr_grid", "optimum_lr", "run_horizon",
           "run_transfer", "search"]
