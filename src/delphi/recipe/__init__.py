"""The recipe: compute budget → complete training configurations (pure Python, no torch)."""

from delphi.recipe.cautious_adamc import DELPHI_V1, CautiousAdamCRecipe
from delphi.recipe.completed_adamh import DELPHI, DELPHI_ISOFLOP_BUDGETS, Candidate, Recipe, check_budget
from delphi.recipe.presets import RECIPES, get_recipe

__all__ = ["DELPHI", "DELPHI_V1", "DELPHI_ISOFLOP_BUDGETS", "Candidate", "CautiousAdamCRecipe", "Recipe",
           "RECIPES", "check_budget", "get_recipe"]
