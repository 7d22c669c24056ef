"""Data: tokenizers, the embedded mixture, cached token shards, the packed loader, validation sets.

    prepared = prepare_data(DataSpec())                  # tokenise (cached) the embedded mixture
    loader = PackedLoader(prepared, seq_len=256, batch_size=32, seed=0)
    batch = loader.next_batch()                          # tokens / document_ids [32, 257]
    val = validation_sets(prepared, seq_len=256, windows_per_domain=16)

No torch import happens until a batch or validation set is built.
"""

from delphi.data.loader import Batch, DataRepeatWarning, PackedLoader, ValidationSet, validation_sets
from delphi.data.mixture import Domain, Mixture, resolve_mixture
from delphi.data.shards import PreparedData, Shard, prepare_data
from delphi.data.tokenizers import Tokenizer, load_tokenizer

__all__ = [
    "Batch", "DataRepeatWarning", "Domain", "Mixture", "PackedLoader", "PreparedData", "Shard", "Tokenizer",
    "ValidationSet", "load_tokenizer", "prepare_data", "resolve_mixture", "validation_sets",
]
