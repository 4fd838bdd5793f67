"""The default offline model on real text."""
import numpy as np
import pytest

import xtrieve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def enc():
    return xtrieve.Encoder.load()


def test_default_model_shapes_and_norms(enc):
    docs = enc.encode_documents(["The cat sat on the mat.", "Late interaction compares every query token with every document token."])
    qs = enc.encode_queries(["what is late interaction?"])
    for a in docs + qs:
        assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 128 and a.shape[0] >= 2
        assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-4)


def test_default_model_ranks_the_relevant_text_first(enc):
    docs = ["Photosynthesis turns light into chemical energy in plants.",
            "The stock market fell sharply on Monday.",
            "A marathon is a long-distance running race."]
    q = enc.encode_queries(["how do plants use sunlight"])[0]
    scores = [(q @ d.T).max(axis=1).sum() for d in enc.encode_documents(docs)]
    assert int(np.argmax(scores)) == 0


def test_pooling_stores_fewer_vectors(enc):
    text = ["Coral reefs are built by colonies of tiny animals that secrete calcium carbonate, and they bleach in warm "
            "water. Their fish, crabs and sponges find food and shelter among the branches, and storms break them."]
    full, counts = enc.encode_documents_with_counts(text, pool_factor=1)
    pooled = enc.encode_documents(text, pool_factor=3)
    assert counts[0] == full[0].shape[0] > 24
    assert pooled[0].shape[0] == -(-full[0].shape[0] // 3)


def test_default_model_keeps_eight_vectors_of_a_short_document(enc):
    assert enc.config.pool_factor == 4 and enc.config.pool_min_vectors == 8
    short = ["Coral reef bleaching in warm water", "Coral reefs are built by colonies of tiny animals that secrete calcium carbonate"]
    full, counts = enc.encode_documents_with_counts(short, pool_factor=1)
    pooled = enc.encode_documents(short)
    assert counts[0] <= 8 and np.array_equal(pooled[0], full[0])  # kept as it is
    assert 8 < counts[1] < 32 and pooled[1].shape[0] == 8  # x4 alone would keep ceil(n / 4) < 8


def test_dense_embedding_is_the_sentence_transformers_embedding(enc):
    """The default model adds the backbone's own sentence embedding (mean pooling) to MaxSim."""
    from sentence_transformers import SentenceTransformer

    texts = ["how do plants use sunlight", "Coral reefs bleach in warm water."]
    assert enc.config.dense_weight > 0 and enc.fuses_dense
    st = SentenceTransformer(str(enc.spec.backbone_dir), device="cpu")
    want = st.encode(texts, normalize_embeddings=True)
    for is_query in (True, False):
        got = enc.encode(texts, is_query)
        assert got.dense.shape == want.shape and np.allclose(got.dense, want, atol=1e-5)
        assert [v.shape[0] for v in got.vectors] == [v.shape[0] for v in (
            enc.encode_queries(texts) if is_query else enc.encode_documents(texts))]


def test_no_file_is_read_or_written_in_the_locale_encoding(tmp_path):
    """Model files (tokenizer.json: Windows' cp1252 fails on it, cp1256 garbles the vocabulary),
    index files and the CLI name their encoding: Python's EncodingWarning finds any that does not."""
    import subprocess
    import sys
    from pathlib import Path

    code = f"""
import warnings, xtrieve
warnings.simplefilter("always", EncodingWarning)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always", EncodingWarning)
    enc = xtrieve.Encoder.load()
    enc.save({str(tmp_path / "model")!r})
    idx = xtrieve.Index.build({str(tmp_path / "ix")!r}, [{{"id": "a", "text": "the moon and the tides", "y": 1}},
                              {{"id": "b", "text": "vaccines", "y": 2}}], encoder=xtrieve.Encoder.load({str(tmp_path / "model")!r}))
    idx.search("moon", k=1, filter="y >= 1")
    xtrieve.Index.open({str(tmp_path / "ix")!r}).info()
for w in seen:
    print(w.filename, w.lineno)
"""
    out = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    package = Path(xtrieve.__file__).resolve().parent.parent
    ours = [line for line in out.stdout.splitlines() if line.startswith(str(package)) and "/.venv/" not in line]
    assert ours == []
