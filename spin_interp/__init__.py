"""spin_interp: find, understand and edit the neurons behind two behaviours that pull against each
other in an LLM (SPIN, Qian et al., ACL 2025), on TransformerLens bridges.

Data flows one way: behaviour data -> model -> scores -> selection -> edit -> evaluate / export.
"""

__version__ = "0.1.0"

from spin_interp import ablate, coupling, data, distributed, evaluate, graph, mi, sae  # noqa: E402
from spin_interp.attribution import WeightScores, score_neurons, score_weights  # noqa: E402
from spin_interp.export import export_hf  # noqa: E402
from spin_interp.models import (  # noqa: E402
    list_aliases,
    load_model,
    model_fingerprint,
)
from spin_interp.select import Selection, random_like, select_coupled, top_fraction  # noqa: E402

__all__ = [
    "Selection",
    "WeightScores",
    "__version__",
    "ablate",
    "coupling",
    "data",
    "distributed",
    "evaluate",
    "export_hf",
    "graph",
    "list_aliases",
    "load_model",
    "mi",
    "model_fingerprint",
    "random_like",
    "sae",
    "score_neurons",
    "score_weights",
    "select_coupled",
    "top_fraction",
]
