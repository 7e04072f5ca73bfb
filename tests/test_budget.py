import pytest
import torch

import vitedu
from vitedu.budget import BUDGETS, Budget, budget


def test_env_var_sets_budget(monkeypatch):
    monkeypatch.setenv("VITEDU_BUDGET", "cpu")
    assert budget().name == "cpu"
    monkeypatch.setenv("VITEDU_BUDGET", " Smoke ")
    assert budget().name == "smoke"


def test_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("VITEDU_BUDGET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert budget().name == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert budget().name == "gpu"


def test_unknown_budget_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("VITEDU_BUDGET", "huge")
    with pytest.raises(ValueError) as error:
        budget()
    for name in BUDGETS:
        assert name in str(error.value)
    assert "huge" in str(error.value)


def test_select_picks_and_explains_missing_entries():
    table = {"smoke": 1, "cpu": 2}
    assert Budget("cpu").select(table) == 2
    with pytest.raises(ValueError, match="no 'full' budget.*smoke, cpu"):
        Budget("full").select(table)


def test_budget_is_exported():
    assert vitedu.budget is budget
