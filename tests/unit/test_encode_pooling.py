"""Post-hoc hierarchical pooling."""
import math

import numpy as np
import pytest

from xtrieve.encode.pooling import pool_document, pooled_size


@pytest.mark.parametrize("n, factor", [(10, 2), (11, 3), (7, 4), (1, 3), (50, 1)])
def test_pool_sizes_and_norms(n, factor):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, factor)
    assert out.shape == (max(1, math.ceil(n / factor)) if factor > 1 else n, 16)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_duplicates_merge_first():
    base = np.eye(4, dtype=np.float32)
    x = np.concatenate([base, base + 1e-3])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, 2)
    assert out.shape == (4, 4)
    assert np.allclose(np.sort(np.abs(out).max(axis=1)), 1, atol=1e-2)


@pytest.mark.parametrize("factor", [0, -2, True, 2.5, "3", float("nan"), None])
def test_pool_factor_must_be_a_positive_int(factor):
    from xtrieve.encode.pooling import pool_documents
    from xtrieve.errors import InputError

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(InputError, match="pool_factor must be an int >= 1"):
        pool_document(x, factor)
    with pytest.raises(InputError, match="pool_factor must be an int >= 1"):
        pool_documents([x], factor)
    assert pool_document(x, np.int64(2)).shape == (2, 8)


@pytest.mark.parametrize("spec", ["a=default:0", "a=default:1,-2", "a=default:x", "a=default:"])
def test_pooling_table_refuses_bad_pool_factors(spec, capsys):
    from xtrieve.eval.pooling_table import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", "unused", "--model", spec])
    assert exit_info.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_pooling_table_missing_folders_are_usage_errors(tmp_path, capsys):
    from xtrieve.eval.pooling_table import main

    data = tmp_path / "beir"
    data.mkdir()
    (data / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    for args, message in ((["--data-dir", str(tmp_path / "none"), "--model", "a=default:1"], "no such folder"),
                          (["--data-dir", str(data), "--model", f"a={tmp_path / 'no_model'}:1"], "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("n, factor", [(1, 2), (2, 2), (3, 2), (17, 2), (40, 3), (41, 4)])
def test_pylate_pooling_keeps_the_first_vector_and_averages_ward_clusters_of_cosine_distances(n, factor):
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, factor, "pylate")
    rest = x[1:]
    k = max((n - 1) // factor, 1)
    if k >= n - 1:
        assert out is x
        return
    labels = np.ones(n - 1, dtype=int) if k == 1 else fcluster(  # scipy < 1.15 cuts 2 points into 2 for t=1
        linkage((1 - rest @ rest.T)[np.triu_indices(n - 1, k=1)], method="ward"), t=k, criterion="maxclust")
    want = [rest[labels == c].mean(axis=0) for c in np.unique(labels)]  # plain means, not renormalised
    assert out.shape == (1 + len(want), 16) and np.array_equal(out[0], x[0])
    np.testing.assert_allclose(out[1:], np.stack(want), atol=1e-6)


def test_pylate_folders_pool_as_pylate(pylate_folder):
    from xtrieve.encode.encoder import Encoder

    enc = Encoder.load(pylate_folder[0])
    assert enc.config.pool_method == "pylate"
    texts = ["the cat sat on the mat with every dog that barked at the cat"]
    full = enc.encode_documents(texts)[0]
    pooled = enc.encode_documents(texts, pool_factor=2)[0]
    assert len(pooled) == 1 + (len(full) - 1) // 2 and np.allclose(pooled[0], full[0])


@pytest.mark.parametrize("method", ["ward", "pylate"])
@pytest.mark.parametrize("n, factor, floor", [(20, 4, 8), (6, 4, 8), (40, 4, 8), (9, 2, 8), (20, 4, 0), (3, 4, 1)])
def test_pooling_keeps_at_least_min_vectors(method, n, factor, floor):
    rng = np.random.default_rng(n + floor)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, factor, method, min_vectors=floor)
    if method == "ward":
        assert out.shape[0] == pooled_size(n, factor, floor) == min(n, max(math.ceil(n / factor), floor))
    else:  # PyLate's rule (the first vector, then (n - 1) // factor clusters), floored
        assert out.shape[0] == min(n, 1 + max((n - 1) // factor, 1, floor - 1))
    if out.shape[0] == n:
        assert out is x  # a document within the floor is stored as encoded
    assert np.allclose(pool_document(x, factor, method), pool_document(x, factor, method, min_vectors=0))


@pytest.mark.parametrize("floor", [-1, True, 2.0, "8", None])
def test_min_vectors_must_be_a_whole_number(floor):
    from xtrieve.config import EncoderConfig
    from xtrieve.errors import ConfigError, InputError

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(InputError, match="min_vectors must be an int >= 0"):
        pool_document(x, 2, min_vectors=floor)
    with pytest.raises(ConfigError, match="pool_min_vectors must be an int >= 0"):
        EncoderConfig(pool_min_vectors=floor)
