"""Chapter 09 (compact codes): the chapter's figure and table helpers, and the exercises' checks."""

import math

import matplotlib
import numpy as np
import pytest

from vitedu import check
from vitedu.codes import ITQ, LSH, LinearDecoder, ProductQuantizer, recall_at, reconstruction_mse, search
from vitedu.experiments import codes_study
from vitedu.experiments.codes_study import cell_means, format_summary, plot_cells, plot_summary, toy_vectors

matplotlib.use("Agg")


def test_toy_vectors_are_stretched_along_the_angle():
    x = toy_vectors(20000, seed=0, angle=30.0, stds=(1.0, 0.3))
    assert x.shape == (20000, 2) and x.dtype == np.float32
    eig, vec = np.linalg.eigh(np.cov(x.T))
    np.testing.assert_allclose(np.sqrt(eig), [0.3, 1.0], rtol=0.05)
    assert abs(math.degrees(math.atan2(vec[1, 1], vec[0, 1])) % 180 - 30.0) < 2.0  # the long axis
    np.testing.assert_array_equal(x, toy_vectors(20000, seed=0, angle=30.0, stds=(1.0, 0.3)))
    with pytest.raises(ValueError, match="stds"):
        toy_vectors(10, stds=(1.0, 0.0))


def test_cell_means_is_the_best_decoder_of_a_code():
    x = toy_vectors(3000, seed=1)
    lsh = LSH(2, 4, seed=0).fit(x)
    codes = lsh.encode(x)
    distinct, means = cell_means(codes, x)
    assert len(distinct) == len(np.unique(codes, axis=0)) and means.shape == (len(distinct), 2)
    lookup = {tuple(c): m for c, m in zip(distinct, means)}
    best = np.stack([lookup[tuple(c)] for c in codes])
    for c, m in zip(distinct[:3], means[:3]):  # each row is the mean of its cell
        np.testing.assert_allclose(m, x[(codes == c).all(1)].mean(0), rtol=1e-6)
    best_mse = reconstruction_mse(x, best)
    assert best_mse <= reconstruction_mse(x, LinearDecoder(lsh).fit(x).decode(codes)) + 1e-9
    assert best_mse < reconstruction_mse(x, lsh.decode(codes))
    with pytest.raises(ValueError, match="same vectors"):
        cell_means(codes[:10], x)


def test_plot_cells_draws_every_kind_of_encoder():
    x = toy_vectors(500, seed=0)
    lsh = LSH(2, 3, seed=0).fit(x)
    ax = plot_cells(lsh, x, {"implicit": lsh, "least squares": LinearDecoder(lsh).fit(x)}, title="LSH",
                    resolution=40)
    assert len(ax.lines) == 3  # one separating line per bit
    assert len(ax.collections) == 3 and ax.get_title() == "LSH"  # the points and one marker set per decoder
    pq_ax = plot_cells(ProductQuantizer(2, 2, 2).fit(x), x, resolution=40)
    assert len(pq_ax.lines) == 0 and len(pq_ax.images) == 1
    itq = ITQ(2, 2).fit(x)
    assert len(plot_cells(itq, x, {"ITQ": itq}, resolution=40).lines) == 2
    with pytest.raises(ValueError, match="2-D"):
        plot_cells(LSH(3, 2).fit(np.ones((4, 3), np.float32)), np.ones((4, 3)))


def _fake_summary(seeds):
    rows = []
    for dataset in ("vit", "gauss"):
        for bits in (32, 64):
            for enc in codes_study.ENCODERS:
                for i, dec in enumerate(codes_study.DECODERS):
                    row = {"dataset": dataset, "bits": bits, "encoder": enc, "decoder": dec, "seeds": seeds,
                           "mse": 1.0 - 0.1 * i, "mse_ratio": 1.0 - 0.1 * i}
                    for k in codes_study.RANKS:
                        row[f"recall@{k}"] = min(1.0, 0.1 * k ** 0.5 + 0.01 * i)
                        row[f"recall@{k}_std"] = 0.01
                    row["mse_std"] = 0.02
                    rows.append(row)
    return rows


def test_format_summary_prints_one_line_per_row_and_the_spread_over_seeds():
    table = format_summary(_fake_summary(3), "vit").splitlines()
    assert len(table) == 1 + 2 * 3 * 3 and "R@100" in table[0]
    assert "0.800 ± 0.020" in table[3] and "0.80" in table[3] and table[3].split()[:4] == ["vit", "32", "LSH", "mlp"]
    single = format_summary(_fake_summary(1))
    assert "±" not in single and len(single.splitlines()) == 1 + 36
    with pytest.raises(ValueError, match="no rows"):
        format_summary(_fake_summary(1), "sift")


def test_plot_summary_has_a_row_per_dataset_and_a_bar_per_decoder():
    fig = plot_summary(_fake_summary(3), "t")
    axes = fig.axes
    assert len(axes) == 2 * (1 + len(codes_study.RANKS))
    assert len(axes[0].patches) == 6 * len(codes_study.DECODERS)  # (bits, encoder) groups x decoders
    assert axes[0].patches[6].get_height() == pytest.approx(0.9)  # the linear decoder's first bar
    with pytest.raises(ValueError, match="empty"):
        plot_summary([])


def test_the_ledger_summary_formats_and_plots():
    import vitedu

    ref = vitedu.results.load("09_compact_codes")["numbers"]
    assert "gauss" in format_summary(ref["summary"], "gauss")
    plot_summary(ref["summary"])


# ---- the exercises' checks: right answers pass, typical wrong ones fail with a hint ----

def test_code_memory_check():
    assert check.code_memory(lambda n, bits: n * math.ceil(bits / 8))
    assert "8" in check.code_memory(lambda n, bits: n * bits).message
    assert "round up" in check.code_memory(lambda n, bits: n * bits / 8).message
    assert "round up" in check.code_memory(lambda n, bits: math.ceil(n * bits / 8)).message
    assert "float32" in check.code_memory(lambda n, bits: n * bits * 4).message
    assert not check.code_memory(lambda n, bits: n * 8)
    assert "raised" in check.code_memory(lambda n, bits: 1 / 0).message
    assert not check.code_memory(lambda n, bits: "lots")


def _least_squares(features, x):
    design = np.concatenate([features, np.ones((len(features), 1))], 1)
    return np.linalg.lstsq(design, x, rcond=None)[0]


def test_least_squares_decoder_check():
    assert check.least_squares_decoder(_least_squares)
    assert check.least_squares_decoder(lambda f, x: np.linalg.pinv(np.c_[f, np.ones(len(f))]) @ x)

    def normal_equations(f, x):
        design = np.c_[f, np.ones(len(f))]
        return np.linalg.inv(design.T @ design) @ design.T @ x
    message = check.least_squares_decoder(normal_equations).message
    assert not check.least_squares_decoder(normal_equations) and ("lstsq" in message or "pinv" in message)
    no_bias = check.least_squares_decoder(lambda f, x: np.linalg.lstsq(f, x, rcond=None)[0])
    assert not no_bias and "bias" in no_bias.message
    half = check.least_squares_decoder(lambda f, x: 0.5 * _least_squares(f, x))
    assert not half and "MSE" in half.message
    assert "shape" in check.least_squares_decoder(lambda f, x: _least_squares(f, x).T).message


def test_the_least_squares_check_agrees_with_linear_decoder():
    class Via:  # the package's decoder gives an A that passes the check
        def __call__(self, features, x):
            from vitedu.codes.decoders import LinearDecoder

            class Identity:  # an "encoder" whose codes are already the features
                d = x.shape[1]

                def features(self, codes):
                    return codes.astype(np.float64)

                def encode(self, v):
                    raise AssertionError("codes are given")
            return LinearDecoder(Identity()).fit(x, features.astype(np.int64)).A
    assert check.least_squares_decoder(Via())


def _recall(queries, database, decoded, R):
    _, truth = search(queries, database, 1)
    _, found = search(queries, decoded, R)
    return recall_at(found, truth, (R,))[R]


def test_recall_check():
    assert check.recall_against_brute_force(_recall)

    def brute(queries, database, decoded, R):
        nearest = ((queries[:, None] - database[None]) ** 2).sum(-1).argmin(1)
        ranked = np.argsort(((queries[:, None] - decoded[None]) ** 2).sum(-1), axis=1)[:, :R]
        return (ranked == nearest[:, None]).any(1).mean()
    assert check.recall_against_brute_force(brute)
    wrong_truth = check.recall_against_brute_force(lambda q, db, dec, R: _recall(q, dec, dec, R))
    assert not wrong_truth and "raw database" in wrong_truth.message

    def r_recall(queries, database, decoded, R):
        _, truth = search(queries, database, R)
        _, found = search(queries, decoded, R)
        return np.mean([len(set(t) & set(f)) / R for t, f in zip(truth, found)])
    assert "R-recall" in check.recall_against_brute_force(r_recall).message
    assert "off by one" in check.recall_against_brute_force(lambda q, db, dec, R: _recall(q, db, dec, R + 1)).message
    assert "percentage" in check.recall_against_brute_force(lambda q, db, dec, R: 100 * _recall(q, db, dec, R)).message
    assert not check.recall_against_brute_force(lambda q, db, dec, R: 0.5)


def test_the_recall_check_has_no_ties_among_decoded_vectors():
    # with duplicate decoded vectors, which tied neighbour comes first is a convention; the check avoids the question
    rng = np.random.default_rng(0)
    database = rng.standard_normal((400, 8)).astype(np.float32)
    pq = ProductQuantizer(8, 4, 5, seed=0).fit(database)
    assert len(np.unique(pq.decode(pq.encode(database)).astype(np.float32), axis=0)) == len(database)


def test_rank_agreement_is_one_for_exact_vectors_and_lower_for_codes():
    from vitedu.experiments.codes_study import rank_agreement

    rng = np.random.default_rng(0)
    database = rng.standard_normal((300, 8))
    queries = rng.standard_normal((20, 8))
    assert rank_agreement(queries, database, database) == pytest.approx(1.0)
    assert rank_agreement(queries, database, database, top=10) == pytest.approx(1.0)
    assert rank_agreement(queries, database, -database) < 0.5  # mirrored vectors: the order is lost
    lsh = LSH(8, 6, seed=0).fit(database)
    coded = rank_agreement(queries, database, lsh.decode(lsh.encode(database)))
    assert 0.2 < coded < 0.99
    with pytest.raises(ValueError, match="top"):
        rank_agreement(queries, database, database, top=1)
    with pytest.raises(ValueError, match="tied"):
        rank_agreement(queries, database, np.zeros_like(database))
