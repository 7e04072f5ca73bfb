import matplotlib as mpl
import torch

import vitedu


def test_setup_seeds_and_reports(monkeypatch, capsys):
    monkeypatch.setenv("VITEDU_BUDGET", "smoke")
    session = vitedu.setup(seed=3)
    first = torch.rand(4)
    again = vitedu.setup(seed=3)
    assert torch.equal(first, torch.rand(4))
    assert session == again
    assert session.budget.name == "smoke"
    assert session.device.type in ("cpu", "cuda", "mps")
    out = capsys.readouterr().out
    assert "budget: smoke" in out and f"torch {torch.__version__}" in out
    assert mpl.rcParams["figure.facecolor"] == "white"


def test_setup_notes_when_a_gpu_would_help(monkeypatch, capsys):
    monkeypatch.setenv("VITEDU_BUDGET", "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    vitedu.setup(seed=0)
    assert "GPU" in capsys.readouterr().out


def test_quiet_setup_prints_nothing(capsys):
    vitedu.setup(seed=0, quiet=True)
    assert capsys.readouterr().out == ""


def test_in_colab_reads_modules(monkeypatch):
    import sys
    import types

    assert not vitedu.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert vitedu.in_colab()
