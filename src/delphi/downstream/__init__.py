"""Two-step downstream forecasts: soft metric vs compute (step 1, the loss-law machinery), then
a sigmoid from soft metric to accuracy fitted on a pool of external models (step 2).

    from delphi.downstream import forecast_downstream
    fc = forecast_downstream(runs, "pool.csv", soft="mmlu_sl_verb_5shot/choice_logprob",
                             target_flops=[1e21, 1e22], floor=0.25)
    fc.to_dict(); fc.plot("downstream.png")
"""

from delphi.downstream.forecast import (DownstreamForecast, SoftLaw, compose, fit_soft_law, forecast_downstream,
                                        load_pool, pool_from_results, select_optima)
from delphi.downstream.sigmoid import SigmoidFit, fit_sigmoid, sigmoid

__all__ = ["forecast_downstream", "DownstreamForecast", "fit_soft_law", "SoftLaw", "compose", "load_pool", "pool_from_results",
           "select_optima", "fit_sigmoid", "SigmoidFit", "sigmoid"]
