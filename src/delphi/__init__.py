"""Delphi: a scaling-law laboratory.

Data flow (each arrow is a plain function; see README "Architecture"):

    budget --recipe--> Candidate(s) --plan--> RunSpec
    RunSpec + token shards --train--> run dir (metrics.jsonl, checkpoints/, hf/, summary.json)
    summaries --collect--> runs table --fit--> optima, allocation law, loss law
    laws --forecast--> Forecast --register--> ledger --check--> residuals --report--> report.html
"""

__version__ = "0.1.0"
