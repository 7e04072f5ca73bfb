"""vitedu.codes: LSH, ITQ and PQ as encoders, their implicit and learned decoders, search and recall; faiss parity."""

import struct

import faiss
import numpy as np
import pytest

from vitedu.codes import (
    ITQ,
    LSH,
    LinearDecoder,
    ProductQuantizer,
    evaluate,
    kmeans,
    load_sift1m,
    pack_bits,
    read_vecs,
    recall_at,
    reconstruction_mse,
    search,
    unpack_bits,
    write_vecs,
)
from vitedu.codes.bench import speed_vs_faiss
from vitedu.codes.decoders import MLPDecoder



@pytest.fixture(autouse=True)
def one_faiss_thread():
    """faiss on one thread (the test machine's cores are shared), then the thread count it had back: faiss and torch
    share one OpenMP runtime, so a count left changed would also change torch's for every later test."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


def correlated(n, d=16, seed=0):
    """Gaussian vectors with a decaying spectrum and a non-zero mean: structure for PCA / ITQ / PQ to find."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) * np.linspace(1.0, 0.1, d)[:, None]
    return (rng.standard_normal((n, d)) @ mix + 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    return correlated(2000)


def encoders(d=16):
    return {
        "lsh": LSH(d, 24, seed=1),
        "lsh_thresholds": LSH(d, 8, seed=1, train_thresholds=True),
        "itq": ITQ(d, 8, n_iter=30, seed=1),
        "pq": ProductQuantizer(d, 4, nbits=4, seed=1),
    }


# ---- encoders and implicit decoders

def test_itq_objective_decreases_monotonically(x):
    itq = ITQ(16, 8, n_iter=40, seed=3).fit(x)
    obj = np.array(itq.objective)
    assert len(obj) == 40
    assert np.all(np.diff(obj) <= 1e-9 * obj[0]), "the ITQ quantization loss went up in some iteration"
    assert obj[-1] < obj[0]
    # the learned rotation is orthogonal and the codes are the signs of the rotated PCA projections
    assert np.allclose(itq.R @ itq.R.T, np.eye(8), atol=1e-10)
    V = (x - x.mean(0)) @ itq.P.T
    assert np.array_equal(itq.encode(x), (V @ itq.R >= 0).astype(np.uint8))


def test_itq_beats_its_initial_random_rotation(x):
    """ITQ's learned rotation has a lower quantization loss than the random rotation it starts from."""
    itq = ITQ(16, 8, n_iter=1, seed=5).fit(x)
    assert ITQ(16, 8, n_iter=30, seed=5).fit(x).objective[-1] < itq.objective[0]


def test_pq_error_decreases_with_more_centroids(x):
    mses = [reconstruction_mse(x, (pq := ProductQuantizer(16, 4, nbits=b, seed=0).fit(x)).decode(pq.encode(x)))
            for b in (1, 2, 4, 6)]
    assert all(a > b for a, b in zip(mses, mses[1:])), mses


def test_pq_encode_is_nearest_centroid_and_deterministic(x):
    pq = ProductQuantizer(16, 2, nbits=3, seed=7).fit(x)
    assert np.array_equal(pq.centroids, ProductQuantizer(16, 2, nbits=3, seed=7).fit(x).centroids)
    codes = pq.encode(x[:50])
    for i in range(50):
        for m in range(2):
            sub = x[i, 8 * m:8 * (m + 1)].astype(np.float64)
            assert codes[i, m] == np.argmin(((pq.centroids[m] - sub) ** 2).sum(1))
    # a vector made of centroids decodes to itself
    assert np.allclose(pq.decode(codes), np.concatenate([pq.centroids[m][codes[:, m]] for m in range(2)], 1))
    assert np.array_equal(pq.encode(pq.decode(codes).astype(np.float32)), codes)


def test_kmeans_lowers_the_error_of_its_initialisation(x):
    c0 = kmeans(x, 8, n_iter=1, seed=0)
    c = kmeans(x, 8, n_iter=20, seed=0)
    err = [((x[:, None, :] - cc[None]) ** 2).sum(-1).min(1).mean() for cc in (c0, c)]
    assert err[1] < err[0]


def test_hamming_ranking_equals_implicit_decoder_ranking_for_orthonormal_lsh(x):
    """With orthonormal projections and zero thresholds, the implicit decoder is an isometry of the sign vectors:
    the distance between decoded database vectors is alpha^2 times 4 times the Hamming distance."""
    lsh = LSH(16, 12, seed=0).fit(x)
    b = lsh.encode(x[:40])
    dec = lsh.decode(b)
    ham = (b[:, None, :] != b[None, :, :]).sum(-1)
    dd = ((dec[:, None, :] - dec[None, :, :]) ** 2).sum(-1)
    assert np.allclose(dd, 4 * lsh.alpha ** 2 * ham)


# ---- learned decoders

@pytest.mark.parametrize("name", ["lsh", "lsh_thresholds", "itq", "pq"])
def test_linear_decoder_never_worse_than_implicit_on_training_set(x, name):
    enc = encoders()[name].fit(x)
    codes = enc.encode(x)
    implicit = reconstruction_mse(x, enc.decode(codes))
    learned = reconstruction_mse(x, LinearDecoder(enc).fit(x, codes).decode(codes))
    assert learned <= implicit * (1 + 1e-9), (name, learned, implicit)
    assert learned < implicit, "the least-squares decoder should find something better than the implicit one"


def test_linear_decoder_is_exact_least_squares(x):
    """The learned PQ decoder equals numpy's least squares on the explicit one-hot design matrix."""
    pq = ProductQuantizer(16, 2, nbits=2, seed=0).fit(x)
    codes = pq.encode(x)
    dec = LinearDecoder(pq, chunk=300).fit(x, codes)
    F = np.concatenate([pq.features(codes), np.ones((len(x), 1))], 1)
    ref = F @ np.linalg.lstsq(F, x.astype(np.float64), rcond=None)[0]
    assert np.allclose(dec.decode(codes), ref, atol=1e-6)


def test_learned_decoder_generalises_on_held_out_vectors():
    """With enough training data the learned decoder also reconstructs unseen vectors better (the paper's claim,
    small scale): same codes, better MSE."""
    train, base = correlated(4000, seed=0), correlated(5000, seed=0)[4000:]  # same distribution, unseen rows
    for enc in (LSH(16, 16, seed=0), ProductQuantizer(16, 4, nbits=3, seed=0)):
        enc.fit(train)
        dec = LinearDecoder(enc).fit(train)
        codes = enc.encode(base)
        assert reconstruction_mse(base, dec.decode(codes)) < reconstruction_mse(base, enc.decode(codes))


@pytest.mark.parametrize("name", ["lsh", "pq"])
def test_mlp_decoder_starts_at_linear_and_never_ends_worse_on_training_set(x, name):
    enc = encoders()[name].fit(x)
    codes = enc.encode(x)
    linear = reconstruction_mse(x, LinearDecoder(enc).fit(x, codes).decode(codes))
    mlp = MLPDecoder(enc, hidden=64, epochs=4, seed=0).fit(x, codes)
    assert mlp.train_mse[0] == pytest.approx(linear, rel=1e-9)  # zero-initialised MLP on top of least squares
    final = reconstruction_mse(x, mlp.decode(codes))
    assert final == pytest.approx(min(mlp.train_mse), rel=1e-9)
    assert final < linear, "four epochs of Adam should lower the training MSE below least squares"
    again = MLPDecoder(enc, hidden=64, epochs=4, seed=0).fit(x, codes)
    assert np.array_equal(again.decode(codes[:10]), mlp.decode(codes[:10]))


# ---- search and metrics

def brute_force_recall(queries, database, decoded, ranks):
    """Reference recall@R with plain loops and full sorts."""
    hits = {r: 0 for r in ranks}
    for q in queries.astype(np.float64):
        true_nn = int(np.argmin([((q - v) ** 2).sum() for v in database.astype(np.float64)]))
        order = sorted(range(len(decoded)), key=lambda j: (((q - decoded[j]) ** 2).sum(), j))
        for r in ranks:
            hits[r] += true_nn in order[:r]
    return {r: hits[r] / len(queries) for r in ranks}


def test_recall_equals_brute_force_reference(x):
    base, queries = x[:300], correlated(30, seed=9)
    pq = ProductQuantizer(16, 4, nbits=3, seed=0).fit(x)
    decoded = pq.decode(pq.encode(base))
    result = evaluate(pq, pq, base, queries, ranks=(1, 10, 100))
    assert result["recall"] == brute_force_recall(queries, base, decoded, (1, 10, 100))
    assert result["mse"] == pytest.approx(((base - decoded) ** 2).sum(1).mean())


def test_search_matches_faiss_flat(x):
    base, queries = x[:500], correlated(20, seed=4)
    D, I = search(queries, base, 10)  # noqa: E741
    index = faiss.IndexFlatL2(16)
    index.add(base)
    Df, If = index.search(queries, 10)
    assert np.array_equal(I, If)
    assert np.allclose(D, Df, rtol=1e-4, atol=1e-3)


def test_recall_at_counts_true_neighbour_in_top_r():
    I = np.array([[3, 1, 2], [0, 2, 1], [2, 0, 1]])  # noqa: E741
    assert recall_at(I, np.array([1, 0, 5]), ranks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}
    assert recall_at(I, np.array([[3, 9], [1, 9], [1, 9]]), ranks=(1,)) == {1: 1 / 3}


# ---- faiss parity

def test_pq_with_faiss_centroids_matches_faiss(x):
    fpq = faiss.ProductQuantizer(16, 4, 8)
    fpq.verbose = False
    fpq.train(x)
    pq = ProductQuantizer(16, 4, nbits=8).set_centroids(faiss.vector_to_array(fpq.centroids))
    queries = correlated(500, seed=11)
    codes = pq.encode(queries)
    assert np.array_equal(codes, fpq.compute_codes(queries))
    assert np.allclose(pq.decode(codes), fpq.decode(codes), atol=1e-6)


def test_pq_trained_by_vitedu_is_as_good_as_faiss(x):
    """Not the same centroids (different k-means initialisations), but the same quality within 5%."""
    fpq = faiss.ProductQuantizer(16, 4, 4)
    fpq.train(x)
    pq = ProductQuantizer(16, 4, nbits=4, seed=0).fit(x)
    ours = reconstruction_mse(x, pq.decode(pq.encode(x)))
    theirs = reconstruction_mse(x, fpq.decode(fpq.compute_codes(x)).astype(np.float64))
    assert ours < 1.05 * theirs, (ours, theirs)


@pytest.mark.parametrize("nbits, train_thresholds", [(12, False), (12, True), (40, False), (40, True)])
def test_lsh_with_faiss_rotation_matches_faiss_index_lsh(x, nbits, train_thresholds):
    index = faiss.IndexLSH(16, nbits, True, train_thresholds)  # rotate_data=True: random projections
    index.train(x)  # len(x) is even: the median is the mean of the two middle values, in vitedu and faiss alike
    A = faiss.vector_to_array(index.rrot.A).reshape(nbits, 16)
    lsh = LSH(16, nbits, train_thresholds=train_thresholds)
    if train_thresholds:  # vitedu's own training, with faiss's projections, gives faiss's thresholds
        lsh.fit(x, projection=A)
        assert np.allclose(lsh.thresholds, faiss.vector_to_array(index.thresholds), atol=1e-5)
    lsh.set_transform(A, thresholds=faiss.vector_to_array(index.thresholds) if train_thresholds else None)
    queries = correlated(300, seed=12)
    assert np.array_equal(pack_bits(lsh.encode(queries)), index.sa_encode(queries))


def test_lsh_ties_give_bit_one_as_in_faiss():
    x = np.array([[0, 1, -1, 0, 2, 0, -3, 0]], dtype=np.float32)
    index = faiss.IndexLSH(8, 8, False, False)  # no rotation: the bits are the signs of the components
    assert np.array_equal(pack_bits(LSH(8, 8).set_transform(np.eye(8)).encode(x)), index.sa_encode(x))


def test_itq_with_faiss_transform_matches_faiss_itq(x):
    transform = faiss.ITQTransform(16, 8, True)
    transform.train(x)
    A = faiss.vector_to_array(transform.pca_then_itq.A).reshape(8, 16)
    itq = ITQ(16, 8).set_transform(A, mean=faiss.vector_to_array(transform.mean))
    queries = correlated(300, seed=13)
    assert np.array_equal(itq.encode(queries), (transform.apply(queries) >= 0).astype(np.uint8))


def test_itq_trained_by_vitedu_is_as_good_as_faiss(x):
    """faiss L2-normalises before its PCA, so its rotation differs; compare what the codes are for: both ITQ
    encoders, decoded by least squares, reconstruct the training set about equally well."""
    transform = faiss.ITQTransform(16, 8, True)
    transform.train(x)
    theirs = ITQ(16, 8).set_transform(faiss.vector_to_array(transform.pca_then_itq.A).reshape(8, 16),
                                       mean=faiss.vector_to_array(transform.mean))
    ours = ITQ(16, 8, seed=0).fit(x)
    mse = [reconstruction_mse(x, LinearDecoder(e).fit(x).decode(e.encode(x))) for e in (ours, theirs)]
    assert mse[0] < 1.1 * mse[1], mse


def test_pack_bits_roundtrip():
    bits = (np.random.default_rng(0).random((7, 13)) > 0.5).astype(np.uint8)
    packed = pack_bits(bits)
    assert packed.shape == (7, 2)
    assert np.array_equal(unpack_bits(packed, 13), bits)


# ---- bad input

def test_bad_inputs_get_clear_errors(x):
    with pytest.raises(ValueError, match="divisible by the number of sub-quantizers"):
        ProductQuantizer(30, 4)
    with pytest.raises(ValueError, match="needs at least 256 training vectors"):
        ProductQuantizer(16, 4, nbits=8).fit(x[:100])
    with pytest.raises(ValueError, match="at least 10 training vectors"):
        kmeans(x[:5], 10)
    with pytest.raises(TypeError, match="float32 or float64"):
        LSH(16, 8).fit(x.astype(np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        LSH(16, 8).fit(x.tolist())
    with pytest.raises(ValueError, match="2-D"):
        ITQ(16, 8).fit(x[0])
    with pytest.raises(ValueError, match="dimension 15"):
        ProductQuantizer(16, 4, nbits=2).fit(x[:, :15])
    with pytest.raises(ValueError, match="NaN"):
        LSH(16, 8).fit(np.full((4, 16), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nbits"):
        ITQ(16, 32)
    with pytest.raises(RuntimeError, match="not trained"):
        ProductQuantizer(16, 4, nbits=2).encode(x)
    with pytest.raises(RuntimeError, match="not trained"):
        ITQ(16, 8).decode(np.zeros((1, 8), dtype=np.uint8))
    lsh = LSH(16, 8).set_transform(np.eye(8, 16))
    with pytest.raises(RuntimeError, match="fit_scale"):
        lsh.decode(lsh.encode(x))
    assert lsh.fit_scale(x).decode(lsh.encode(x)).shape == x.shape
    pq = ProductQuantizer(16, 4, nbits=2).fit(x)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 4\)"):
        pq.decode(np.full((2, 4), 4))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        pq.decode(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="integers"):
        pq.decode(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="search with k >= 10"):
        recall_at(np.zeros((3, 5), dtype=int), np.zeros(3, dtype=int), ranks=(10,))
    with pytest.raises(ValueError, match="larger than the database"):
        search(x[:2], x[:5], 10)
    with pytest.raises(TypeError, match="LSH, ITQ or ProductQuantizer"):
        LinearDecoder(object())
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        MLPDecoder(pq, hidden=0)
    with pytest.raises(ValueError, match="same vectors"):
        LinearDecoder(pq).fit(x, pq.encode(x[:10]))


def test_search_on_pq_decoded_vectors_matches_faiss_index_pq(x):
    """Asymmetric distance: faiss's IndexPQ (lookup tables) ranks like an exhaustive search of the decoded vectors."""
    fpq = faiss.ProductQuantizer(16, 4, 4)
    fpq.train(x)
    index = faiss.IndexPQ(16, 4, 4)
    index.pq = fpq
    index.is_trained = True
    index.add(x)
    pq = ProductQuantizer(16, 4, nbits=4).set_centroids(faiss.vector_to_array(fpq.centroids))
    queries = correlated(50, seed=14)
    D, I = search(queries, pq.decode(pq.encode(x)), 5)  # noqa: E741
    Df, If = index.search(queries, 5)
    assert np.allclose(D, Df, rtol=1e-4, atol=1e-3)
    assert (I == If).mean() > 0.95  # equal up to ties between identical decoded vectors


# ---- .fvecs / .bvecs / .ivecs

def test_vecs_files_round_trip_and_match_the_texmex_layout(tmp_path):
    rng = np.random.default_rng(0)
    f = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    i = rng.integers(0, 10**6, (3, 7), dtype=np.int32)
    # an independent writer: int32 dimension then the components, little endian
    (tmp_path / "ref.fvecs").write_bytes(b"".join(struct.pack("<i", 5) + struct.pack("<5f", *row) for row in f))
    assert np.array_equal(read_vecs(tmp_path / "ref.fvecs"), f)
    for name, arr in (("a.fvecs", f), ("a.bvecs", b), ("a.ivecs", i)):
        write_vecs(tmp_path / name, arr)
        back = read_vecs(tmp_path / name)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
        assert np.array_equal(read_vecs(tmp_path / name, count=2, offset=1), arr[1:3])
    assert (tmp_path / "a.fvecs").read_bytes() == (tmp_path / "ref.fvecs").read_bytes()
    assert (tmp_path / "a.bvecs").stat().st_size == 4 * (4 + 3)


def test_sift1m_loader_on_a_tiny_generated_copy(tmp_path):
    rng = np.random.default_rng(1)
    for name, arr in (("sift_learn.fvecs", rng.random((20, 8))), ("sift_base.fvecs", rng.random((30, 8))),
                      ("sift_query.fvecs", rng.random((5, 8)))):
        write_vecs(tmp_path / name, arr)
    with pytest.raises(FileNotFoundError, match="sift_groundtruth.ivecs"):
        load_sift1m(tmp_path)
    write_vecs(tmp_path / "sift_groundtruth.ivecs", np.zeros((5, 3)))
    data = load_sift1m(tmp_path)
    assert data["base"].shape == (30, 8) and data["groundtruth"].dtype == np.int32


def test_vecs_bad_files_get_clear_errors(tmp_path):
    write_vecs(tmp_path / "a.fvecs", np.ones((3, 4)))
    (tmp_path / "cut.fvecs").write_bytes((tmp_path / "a.fvecs").read_bytes()[:-2])
    with pytest.raises(ValueError, match="not a multiple of the record size"):
        read_vecs(tmp_path / "cut.fvecs")
    with pytest.raises(ValueError, match="unknown extension"):
        read_vecs(tmp_path / "a.npy")
    with pytest.raises(FileNotFoundError):
        read_vecs(tmp_path / "missing.fvecs")
    with pytest.raises(ValueError, match="outside that type"):
        write_vecs(tmp_path / "a.bvecs", np.full((2, 2), 300))
    # two 12-byte records, the second announcing dimension 1 instead of 2
    mixed = struct.pack("<i", 2) + struct.pack("<2f", 1, 2) + struct.pack("<i", 1) + struct.pack("<2f", 3, 4)
    (tmp_path / "mixed.fvecs").write_bytes(mixed)
    with pytest.raises(ValueError, match="vector 1 has dimension 1, expected 2"):
        read_vecs(tmp_path / "mixed.fvecs")


# ---- speed comparison

def test_speed_vs_faiss_runs_and_reports_ratios(x, capsys):
    rows = speed_vs_faiss(x, x[:500], x[:20], M=4, nbits=4, lsh_bits=16, k=10, repeats=1)
    assert [r["task"].split()[:2] for r in rows] == [["encode", "PQ"], ["encode", "LSH"], ["encode", "ITQ"],
                                                     ["search", "PQ"], ["search", "LSH"]]
    assert all(r["vitedu_s"] > 0 and r["faiss_s"] > 0 and r["ratio"] == r["vitedu_s"] / r["faiss_s"] for r in rows)
    assert "ratio" in capsys.readouterr().out
    with pytest.raises(ValueError, match="divisible"):
        speed_vs_faiss(x, x[:100], x[:5], M=3, verbose=False)


def test_speed_vs_faiss_leaves_torchs_thread_count_alone(x):
    import torch

    before = torch.get_num_threads()
    speed_vs_faiss(x, x[:200], x[:5], M=4, nbits=4, lsh_bits=16, k=5, repeats=1, threads=before + 1, verbose=False)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        speed_vs_faiss(x, x[:100], x[:5], M=3, threads=before + 1, verbose=False)
    assert torch.get_num_threads() == before
