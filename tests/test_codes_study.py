"""Chapter 09 (compact codes) study: registration, budgets, helpers and the smoke study end to end."""

from __future__ import annotations

import numpy as np
import pytest

from vitedu.budget import budget
from vitedu.experiments import EXPERIMENTS, codes_study, get
from vitedu.experiments.codes_study import (CONFIGS, DECODERS, ENCODERS, RANKS, compare_decoders, gaussian_vectors,
                                            pq_shape, split, summarize, verdict)


def test_registered():
    assert EXPERIMENTS["09_compact_codes"] is codes_study
    assert get("09") == ("09_compact_codes", codes_study)


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_every_budget_valid(name):
    cfg = codes_study.config(budget(name))
    assert cfg is CONFIGS[name]
    assert set(cfg.datasets) <= {"vit", "gauss"} and cfg.seeds and set(cfg.live_seeds) <= set(cfg.seeds)
    for bits in cfg.bits:
        pq_shape(64, bits)  # both datasets have d = 64
        assert bits <= cfg.gauss_dim  # ITQ keeps at most d bits
    assert max(RANKS) <= cfg.n_database


def test_gaussian_spectrum_decays():
    x = gaussian_vectors(20000, 16, decay=1.0, seed=0)
    assert x.shape == (20000, 16) and x.dtype == np.float32
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    np.testing.assert_allclose(eig, 1.0 / np.arange(1, 17), rtol=0.1)
    np.testing.assert_array_equal(x, gaussian_vectors(20000, 16, decay=1.0, seed=0))
    with pytest.raises(ValueError, match="decay"):
        gaussian_vectors(10, 4, decay=-1)


def test_split_disjoint_and_checked():
    x = np.arange(30, dtype=np.float32).reshape(30, 1)
    sp = split(x, 10, 15, 5, seed=1)
    assert [len(sp[k]) for k in ("train", "database", "queries")] == [10, 15, 5]
    assert len(np.unique(np.concatenate([sp[k][:, 0] for k in sp]))) == 30
    with pytest.raises(ValueError, match="fewer than"):
        split(x, 20, 15, 5)


def test_pq_shape():
    assert pq_shape(64, 32) == (4, 8) and pq_shape(64, 64) == (8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        pq_shape(64, 30)
    with pytest.raises(ValueError, match="divide"):
        pq_shape(60, 64)


def test_linear_decoder_helps_lsh_on_gaussian():
    cfg = CONFIGS["smoke"]
    x = gaussian_vectors(2300, 32, decay=1.0, seed=0)
    rows = compare_decoders(split(x, 2000, 200, 100), "LSH", 32, cfg)
    assert [r["decoder"] for r in rows] == list(DECODERS)
    by = {r["decoder"]: r for r in rows}
    assert by["linear"]["mse"] < by["implicit"]["mse"]
    assert by["mlp"]["mse"] <= by["linear"]["mse"] * 1.05
    for r in rows:
        assert 0 <= r["recall@1"] <= r["recall@10"] <= r["recall@100"] <= 1


def test_summarize_and_verdict():
    rows = []
    for seed, (m_imp, m_lin) in enumerate([(2.0, 1.0), (4.0, 1.0)]):
        for dec, mse, rec in (("implicit", m_imp, 0.5), ("linear", m_lin, 0.6), ("mlp", m_imp * 2, 0.4)):
            rows.append({"dataset": "gauss", "bits": 32, "encoder": "LSH", "decoder": dec, "seed": seed, "mse": mse,
                         "recall@1": rec / 2, "recall@10": rec, "recall@100": 1.0})
    s = {r["decoder"]: r for r in summarize(rows)}
    assert s["implicit"]["mse"] == 3.0 and s["implicit"]["mse_std"] == 1.0 and s["implicit"]["seeds"] == 2
    assert s["linear"]["mse_ratio"] == pytest.approx(1 / 3) and s["linear"]["d_recall@10"] == pytest.approx(0.1)
    v = verdict(list(s.values()))
    assert v["linear"] == {"cells": 1, "lower_mse": 1, "higher_recall@10": 1, "not_lower_recall@10": 1}
    assert v["mlp"]["lower_mse"] == 0 and v["mlp"]["higher_recall@10"] == 0


def test_smoke_study_end_to_end():
    out = codes_study.run(budget("smoke"))
    cfg = CONFIGS["smoke"]
    n = len(cfg.seeds) * len(cfg.datasets) * len(cfg.bits) * len(ENCODERS) * len(DECODERS)
    assert len(out["runs"]) == n and len(out["summary"]) == n // len(cfg.seeds)
    assert {r["dataset"] for r in out["runs"]} == {"vit", "gauss"}
    assert all(r["dim"] == 64 and np.isfinite(r["mse"]) and r["mse"] > 0 for r in out["runs"])
    assert out["verdict"]["linear"]["cells"] == n // len(cfg.seeds) // len(DECODERS)
    assert out["paper_claim"] and out["config"]["n_train"] == cfg.n_train
    assert isinstance(out["faiss_bench"], (list, str))
