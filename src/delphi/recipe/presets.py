"""Named recipes. Paper scale: `delphi` (Complete(d)AdamH) and `delphi-v1` (Cautious AdamC).

CPU-scale recipes (used by the `tiny`/`micro` suites) keep every Delphi rule and rescale the
constants; they are defined with the suites in `delphi.sweep.presets` and registered here.
"""

from __future__ import annotations

from delphi.errors import DelphiError
from delphi.recipe.cautious_adamc import DELPHI_V1
from delphi.recipe.completed_adamh import DELPHI, Recipe

RECIPES: dict[str, Recipe] = {"delphi": DELPHI, "delphi-v1": DELPHI_V1}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise DelphiError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}") from None
