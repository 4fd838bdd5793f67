"""Index stage: locking, crash safety (SIGKILL mid-add), snapshots, checksums, manifest validation."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import xtrieve
from xtrieve.errors import IndexFormatError, IndexLockedError
from xtrieve.index.lock import WriterLock
from xtrieve.index.manifest import _checksum

DIM = 8


def rand(n, seed=0, rows=4):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((rows, DIM)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "ix"
    xtrieve.Index.build_from_embeddings(p, [f"d{i}" for i in range(20)], rand(20), [{"n": i} for i in range(20)])
    return p


def rewrite_manifest(path, change):
    body = json.loads((path / "manifest.json").read_text())
    change(body)
    body["checksum"] = _checksum(body)
    (path / "manifest.json").write_text(json.dumps(body))


@contextlib.contextmanager
def another_writer(path):
    """Another writer (a thread) holding the lock of ``path`` until the block ends."""
    held, done = threading.Event(), threading.Event()

    def write():
        with WriterLock(path):
            held.set()
            done.wait()

    thread = threading.Thread(target=write)
    thread.start()
    held.wait()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_second_writer_gets_locked_error(path):
    idx = xtrieve.Index.open(path)
    with another_writer(path):
        with pytest.raises(IndexLockedError, match="locked by another writer"):
            idx.add_embeddings(["x"], rand(1, 5))
        with pytest.raises(IndexLockedError):
            idx.compact()
        assert len(xtrieve.Index.open(path)) == 20  # readers never lock
    idx.add_embeddings(["x"], rand(1, 5))
    assert len(idx) == 21


def test_a_write_inside_a_write_of_the_same_index_fails_at_once(path):
    idx = xtrieve.Index.open(path, wait=math.inf)

    def docs():  # a generator of embeddings that writes to the index it is being added to
        idx.delete(["d1"])
        yield rand(1, 5)[0]

    t0 = time.perf_counter()
    with pytest.raises(IndexLockedError, match="this same thread"):
        idx.add_embeddings(["x"], docs())
    assert time.perf_counter() - t0 < 10 and len(xtrieve.Index.open(path)) == 20
    idx.delete(["d1"])  # the lock was let go
    assert len(idx) == 19


def _writer_for(path, seconds: float):
    """Another writer (a thread) that holds the lock for ``seconds``, returned once it holds it."""
    held = threading.Event()

    def write():
        with WriterLock(path):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=write)
    thread.start()
    held.wait()
    return thread


def test_a_writer_given_wait_waits_for_the_lock(path):
    from xtrieve.errors import InputError

    idx = xtrieve.Index.open(path, wait=30)
    other = _writer_for(path, 0.3)
    t0 = time.perf_counter()
    assert idx.delete(["d1"]) == 1  # waited instead of failing
    assert time.perf_counter() - t0 >= 0.25 and len(idx) == 19
    other.join()
    with another_writer(path):
        t0 = time.perf_counter()
        with pytest.raises(IndexLockedError, match=r"waited 0.2 s"):
            xtrieve.Index.open(path, wait=0.2).compact()
        assert time.perf_counter() - t0 >= 0.15
        with pytest.raises(IndexLockedError, match="--wait SECONDS"):  # no wait: at once, with the way to wait
            xtrieve.Index.build_from_embeddings(path, ["a"], rand(1), overwrite=True)
    assert xtrieve.Index.open(path, wait=np.int64(5))._wait == 5.0
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(InputError, match="wait must be a number of seconds"):
            xtrieve.Index.open(path, wait=bad)
    assert len(xtrieve.Index.open(path)) == 19


def test_cli_writers_wait(path):
    from click.testing import CliRunner

    from xtrieve.cli.main import main

    with another_writer(path):
        r = CliRunner().invoke(main, ["delete", str(path), "d2"])
    assert r.exit_code != 0 and "--wait SECONDS" in r.output
    other = _writer_for(path, 0.3)
    r = CliRunner().invoke(main, ["delete", str(path), "d2", "--wait", "30"])
    other.join()
    assert r.exit_code == 0, r.output
    assert len(xtrieve.Index.open(path)) == 19
    r = CliRunner().invoke(main, ["compact", str(path), "--wait", "-1"])
    assert r.exit_code != 0 and "-1" in r.output


def test_lock_held_by_another_process(path):
    code = f"from xtrieve.index.lock import WriterLock; import pathlib, time\nwith WriterLock(pathlib.Path({str(path)!r})):\n    print('held', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(IndexLockedError):
            xtrieve.Index.open(path).delete(["d1"])
    finally:
        proc.kill()
        proc.wait()
    xtrieve.Index.open(path).delete(["d1"])  # the dead process's lock is gone


CRASH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, xtrieve
    idx = xtrieve.Index.open(sys.argv[1])
    rng = np.random.default_rng(1)
    n = 40000
    embs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(n)]
    idx.add_embeddings([f"new{i}" for i in range(n)], embs)
""")


def test_sigkill_mid_add_keeps_last_commit_and_next_writer_cleans(tmp_path):
    path = tmp_path / "ix"
    xtrieve.Index.build_from_embeddings(path, [f"d{i}" for i in range(20)], rand(20),
                                        config={"docs_per_segment": 1000, "batch_size": 500})
    committed = {p.name for p in path.glob("seg-*")}
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(path)], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:  # wait until the writer has finished at least one new segment
            new = [p for p in path.glob("seg-*") if p.name not in committed]
            if any((p / "docs.arrow").exists() for p in new) and len(new) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)
        else:
            pytest.fail("the writer never started a segment")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    orphans = {p.name for p in path.glob("seg-*")} - committed
    assert orphans  # the crash left uncommitted files behind
    idx = xtrieve.Index.open(path)  # the last commit, checksums verified
    assert len(idx) == 20 and idx.snapshot.generation == 1
    assert idx.search(rand(20)[7], k=1, exhaustive=True)[0].doc_id == "d7"
    idx.add_embeddings(["after"], rand(1, 9))  # the next writer removes the orphans first
    assert {p.name for p in path.glob("seg-*")} == {s.name for s in idx.snapshot.segments}
    assert not list(path.rglob("*.tmp"))
    assert len(idx) == 21


def _interrupted_after_the_rename(monkeypatch):
    """write_manifest that puts the new manifest in place, then meets a Ctrl-C (during the folder fsync)."""
    import xtrieve.index.writer as writer

    real = writer.write_manifest

    def write_then_interrupt(root, manifest):
        real(root, manifest)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_manifest", write_then_interrupt)


def test_an_interrupt_after_the_manifest_rename_keeps_that_commit(path, monkeypatch):
    reader = xtrieve.Index.open(path)
    _interrupted_after_the_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        xtrieve.Index.build_from_embeddings(path, ["new0", "new1"], rand(2, seed=5), overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        xtrieve.Index.build_from_embeddings(path.parent / "fresh", ["f0"], rand(1, seed=6))
    monkeypatch.undo()
    # the commit stands and its files with it (the cleanup used to delete them: the index could not be opened)
    assert sorted(xtrieve.Index.open(path).snapshot.live_ids()) == ["new0", "new1"]
    assert len(reader.refresh()) == 2
    assert len(xtrieve.Index.open(path.parent / "fresh")) == 1


def test_a_write_that_fails_after_its_commit_leaves_the_object_on_that_commit(path, monkeypatch, caplog):
    from xtrieve.index.writer import WriteSession

    idx = xtrieve.Index.open(path)
    _interrupted_after_the_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        idx.add_embeddings(["x0"], rand(1, seed=7))
    monkeypatch.undo()
    assert len(idx) == 21 and idx.get("x0") is not None  # a retry would be told it is there: so is the object
    with pytest.raises(xtrieve.InputError, match="duplicate"):
        idx.add_embeddings(["x0"], rand(1, seed=7))
    _interrupted_after_the_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        idx.delete(["d0"])
    monkeypatch.undo()
    assert len(idx) == 20 and idx.get("d0") is None
    # a merge after the commit that fails (even for memory) leaves the add done: a warning, no error
    monkeypatch.setattr(WriteSession, "maybe_merge", lambda self: (_ for _ in ()).throw(MemoryError()))
    assert idx.add_embeddings(["x1"], rand(1, seed=8)) == ["x1"] and idx.get("x1") is not None
    assert "merging segments" in caplog.text and "MemoryError" in caplog.text


def test_links_planted_in_an_index_folder_lead_no_write_outside_it(tmp_path):
    """An index folder from elsewhere may hold links named as the files a write makes next:
    the write replaces the link, never writes or deletes through it."""
    import os

    from helpers import WordHashEncoder

    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "notes.txt").write_text("precious")
    (outside / "backbone").mkdir()
    (outside / "backbone" / "thesis.tex").write_text("precious")
    enc = WordHashEncoder(8)
    ix = tmp_path / "downloaded"
    xtrieve.Index.build(ix, ["moon tides", "vaccines", "glaciers"], encoder=enc)
    gen = json.loads((ix / "manifest.json").read_text())["generation"]
    (ix / f"encoder-g{gen + 1:06d}").symlink_to(outside)  # where an overwrite saves its model
    (ix / f"ivf_template-g{gen + 1:06d}.faiss").symlink_to(outside / "notes.txt")
    (ix / f"manifest.json.tmp-{os.getpid()}").symlink_to(outside / "notes.txt")
    seg = sorted(p for p in ix.iterdir() if p.name.startswith("seg-"))[0]
    (seg / f"deleted-g{gen + 1:06d}.arrow").symlink_to(outside / "made.arrow")  # dangling: would be created
    xtrieve.Index.open(ix, encoder=enc).delete(["0"])
    assert sorted(p.name for p in outside.iterdir()) == ["backbone", "notes.txt"]
    xtrieve.Index.build(ix, ["new one", "new two"], encoder=enc, overwrite=True,
                        config={"faiss_factory": "IVF1,Flat"})
    assert (outside / "notes.txt").read_text() == "precious" and (outside / "backbone" / "thesis.tex").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["backbone", "notes.txt"]
    assert len(xtrieve.Index.open(ix, encoder=enc)) == 2


def test_text_offsets_past_the_data_are_an_index_format_error_not_a_crash(path):
    """A crafted docs.arrow (its checksum made to match) whose string offsets point far past the
    data: reading its ids crashed the process (SIGSEGV)."""
    import pyarrow as pa

    docs_file = sorted(path.glob("seg-*/docs.arrow"))[0]
    ids = pa.ipc.open_file(pa.memory_map(str(docs_file))).read_all().column("doc_id").chunk(0)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + len(ids) + 1]
    data = docs_file.read_bytes()
    assert data.count(offsets.tobytes()) == 1
    bad = offsets.copy()
    bad[-1] = 1 << 24
    docs_file.write_bytes(data.replace(offsets.tobytes(), bad.tobytes()))  # (pyarrow writes no such file itself)
    sha = hashlib.sha256(docs_file.read_bytes()).hexdigest()
    rel = docs_file.relative_to(path).as_posix()
    rewrite_manifest(path, lambda body: [seg["files"].__setitem__(rel, sha) for seg in body["segments"]
                                         if rel in seg["files"]])
    for verify in (True, False):
        with pytest.raises(xtrieve.IndexFormatError, match="docs.arrow: .*offset"):
            xtrieve.Index.open(path, verify=verify).search(rand(1)[0], k=3)


def test_a_token_index_asking_for_more_memory_than_there_is_is_an_index_format_error(path, monkeypatch):
    """FAISS allocates what a token index's header claims (a crafted one: any size)."""
    from xtrieve.faiss_loader import load_faiss

    faiss = load_faiss()

    def claims_too_much(data):
        raise MemoryError

    idx = xtrieve.Index.open(path)
    monkeypatch.setattr(faiss, "deserialize_index", claims_too_much)
    with pytest.raises(xtrieve.IndexFormatError, match="corrupt token index .*asks for more memory than is free"):
        idx.warm_up()  # (reads every token index)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name", ["manifest.json", "tokens.faiss"])
def test_a_fifo_in_place_of_a_file_is_an_index_format_error_not_a_hang(path, name):
    target = path / name if name == "manifest.json" else sorted(path.glob(f"seg-*/{name}"))[0]
    target.unlink()
    os.mkfifo(target)  # (a tarball can carry one: reading it would wait for a writer forever)
    for verify in (True, False):
        with pytest.raises(xtrieve.IndexFormatError, match="is not a regular file"):
            xtrieve.Index.open(path, verify=verify).warm_up()


def test_a_refused_manifest_replace_is_tried_again(path, monkeypatch):
    """Windows refuses to replace a file a reader holds open for a moment: the commit waits it out."""
    import os

    from xtrieve.index import fsio

    real, refusals = os.replace, []

    def busy(src, dst):
        if str(dst).endswith("manifest.json") and len(refusals) < 3:
            refusals.append(dst)
            raise PermissionError(13, "The process cannot access the file because it is being used")
        return real(src, dst)

    monkeypatch.setattr(fsio.os, "replace", busy)
    monkeypatch.setattr(fsio, "REPLACE_RETRY_S", 2.0)
    idx = xtrieve.Index.open(path)
    idx.add_embeddings(["w0"], rand(1, seed=9))
    assert len(refusals) == 3 and idx.get("w0") is not None
    refusals.clear()
    monkeypatch.setattr(fsio, "REPLACE_RETRY_S", 0.0)  # (elsewhere a refusal is an error at once)
    with pytest.raises(PermissionError):
        idx.add_embeddings(["w1"], rand(1, seed=10))
    assert idx.get("w1") is None and len(refusals) == 1


def test_orphans_and_temp_manifests_removed_by_compact(path):
    (path / "seg-999999").mkdir()
    (path / "seg-999999" / "vectors.f16.tmp").write_bytes(b"x" * 10)
    (path / "manifest.json.tmp-1234").write_text("{trunc")
    (path / "ivf_template-g000009.faiss").write_bytes(b"junk")
    (path / "notes.txt").write_text("user file, not ours")
    idx = xtrieve.Index.open(path)
    idx.compact()
    assert not (path / "seg-999999").exists() and not (path / "manifest.json.tmp-1234").exists()
    assert not (path / "ivf_template-g000009.faiss").exists() and (path / "notes.txt").exists()
    assert len(xtrieve.Index.open(path)) == 20


def test_reader_snapshot_survives_writer_add_and_compact(path):
    reader = xtrieve.Index.open(path)
    q = rand(20)[3]
    before = reader.search(q, k=5, exhaustive=True)
    writer = xtrieve.Index.open(path)
    writer.add_embeddings([f"w{i}" for i in range(5)], rand(5, 3))
    writer.delete(["d3"])
    writer.compact()  # rewrites everything and removes the old segment files
    assert not (path / "seg-000001").exists()
    assert reader.search(q, k=5, exhaustive=True) == before  # same immutable snapshot
    assert reader.search(q, k=5)[0].doc_id == "d3"  # FAISS loaded lazily from a file now unlinked
    assert len(reader) == 20 and reader.info().generation == 1
    reader.refresh()
    assert len(reader) == 24 and "d3" not in {h.doc_id for h in reader.search(q, k=30, exhaustive=True)}


def test_checksum_mismatch_names_the_file(path):
    target = next(path.glob("seg-*/vectors.arrow"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"checksum mismatch for .*{target.parent.name}/vectors.arrow"):
        xtrieve.Index.open(path)
    xtrieve.Index.open(path, verify=False)  # opt out


def test_compact_does_not_carry_a_corrupt_file_over(path):
    idx = xtrieve.Index.open(path)
    idx.add_embeddings(["extra"], rand(1, 3))  # two segments: compact merges them
    target = next(path.glob("seg-*/tokens.faiss"))
    target.write_bytes(target.read_bytes() + b"\0")  # still readable, no longer what was committed
    generation = idx.info().generation
    with pytest.raises(IndexFormatError, match="checksum mismatch"):
        xtrieve.Index.open(path, verify=False).compact()
    assert xtrieve.Index.open(path, verify=False).info().generation == generation  # nothing committed


def test_a_full_disk_while_writing_codes_is_an_os_error_and_commits_nothing(path, monkeypatch):
    import errno

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    idx = xtrieve.Index.open(path)
    with pytest.raises(OSError, match="No space") as caught:
        idx.add_embeddings(["x1"], rand(1, 7))
    assert caught.value.filename == str(path)  # (the OS's error names no file: which disk filled up?)
    monkeypatch.undo()
    assert len(xtrieve.Index.open(path)) == 20 and not list(path.glob("seg-*/*.tmp"))
    idx.add_embeddings(["x1"], rand(1, 7))  # the next writer cleans up and goes on
    assert len(xtrieve.Index.open(path)) == 21
    monkeypatch.delattr(os, "posix_fallocate", raising=False)  # macOS: the blocks are written instead
    idx.add_embeddings(["x2"], rand(1, 8))
    assert len(xtrieve.Index.open(path)) == 22 and idx.search(rand(1, 8)[0], k=1)[0].doc_id == "x2"


def test_a_damaged_tombstone_file_is_named_without_verification(path):
    xtrieve.Index.open(path).delete(["d1"])
    target = next(path.glob("seg-*/deleted-*.arrow"))
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupt tombstone file .*deleted-"):
        xtrieve.Index.open(path, verify=False)


def test_info_of_an_open_index_whose_folder_moved(path):
    idx = xtrieve.Index.open(path)
    path.rename(path.parent / "moved")
    assert idx.info().n_docs == 20 and idx.search(rand(1)[0], k=1)[0].doc_id == "d0"


def test_unreadable_segment_file_is_named_without_verification(path):
    target = next(path.glob("seg-*/vectors.arrow"))
    target.write_bytes(target.read_bytes()[:-20])  # the footer cut off
    with pytest.raises(IndexFormatError, match="corrupt segment file .*vectors.arrow"):
        xtrieve.Index.open(path, verify=False)


def test_missing_file_is_named(path):
    next(path.glob("seg-*/tokens.faiss")).unlink()
    with pytest.raises(IndexFormatError, match="tokens.faiss"):
        xtrieve.Index.open(path)


@pytest.mark.parametrize("content", [b"", b'{"format": "xtrieve-index", "segm', b"\x00\xff garbage"])
def test_corrupt_manifest_is_named(path, content):
    (path / "manifest.json").write_bytes(content)
    with pytest.raises(IndexFormatError, match=r"corrupt manifest .*manifest\.json"):
        xtrieve.Index.open(path)


def test_edited_manifest_fails_its_checksum(path):
    body = json.loads((path / "manifest.json").read_text())
    body["segments"][0]["n_docs"] = 5
    (path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(IndexFormatError, match="corrupt manifest .*checksum"):
        xtrieve.Index.open(path)


@pytest.mark.parametrize("bad", ["../outside/docs.arrow", "/etc/passwd", "seg-000001/../../x"])
def test_manifest_path_escape_rejected(path, bad):
    def change(body):
        files = body["segments"][0]["files"]
        files[bad] = files.pop(next(iter(files)))

    rewrite_manifest(path, change)
    with pytest.raises(IndexFormatError, match="outside the index folder"):
        xtrieve.Index.open(path)


def test_segment_name_escape_rejected(path):
    rewrite_manifest(path, lambda b: b["segments"][0].update(name="seg-../../x"))
    with pytest.raises(IndexFormatError):
        xtrieve.Index.open(path)


def test_unknown_format_version(path):
    rewrite_manifest(path, lambda b: b.update(format_version=99))
    with pytest.raises(IndexFormatError, match="format_version 99"):
        xtrieve.Index.open(path)


def test_an_index_checks_its_stored_encoder_files(pylate_folder, tmp_path):
    """The manifest lists INDEX/encoder's files with their checksums: an altered file (here the
    backbone copy's config, which the head checksum does not cover) is named on first use."""
    from xtrieve.encode.encoder import Encoder

    xtrieve.Index.build(tmp_path / "ix", ["a first text", "a second one"], encoder=Encoder.load(pylate_folder[0]))
    files = xtrieve.Index.open(tmp_path / "ix").snapshot.encoder_identity["files"]
    assert "encoder/head.safetensors" in files and any(f.startswith("encoder/backbone/") for f in files)
    assert xtrieve.Index.open(tmp_path / "ix").search("a text", k=1)[0].doc_id in ("0", "1")
    config = tmp_path / "ix" / "encoder" / "backbone" / "config.json"
    config.write_text(config.read_text().replace("{", '{"note": "edited", ', 1))
    with pytest.raises(IndexFormatError, match="checksum mismatch .*config.json"):
        xtrieve.Index.open(tmp_path / "ix").search("a text", k=1)
    assert len(xtrieve.Index.open(tmp_path / "ix", verify=False).search("a text", k=1)) == 1  # opted out


def test_threads_refreshing_one_index_never_go_back_to_an_older_commit(path, monkeypatch):
    idx = xtrieve.Index.open(path)
    real, slow, started = idx._store.snapshot, threading.Event(), threading.Event()

    def slow_snapshot():
        snap = real()  # read before the commit below
        if threading.current_thread().name == "slow":
            started.set()
            slow.wait(10)
        return snap

    monkeypatch.setattr(idx._store, "snapshot", slow_snapshot)
    xtrieve.Index.open(path).add_embeddings(["n1"], rand(1, 5))  # a commit the first refresh will not see...
    first = threading.Thread(target=idx.refresh, name="slow")
    first.start()
    started.wait(10)
    xtrieve.Index.open(path).add_embeddings(["n2"], rand(1, 6))  # ...and one it has not seen either
    second = threading.Thread(target=idx.refresh)
    second.start()
    time.sleep(0.2)
    slow.set()
    first.join()
    second.join()
    assert len(idx) == 22 and idx.search(rand(1, 6)[0], k=1)[0].doc_id == "n2"


def test_a_refresh_without_a_new_commit_reads_nothing(path, monkeypatch):
    idx = xtrieve.Index.open(path)
    monkeypatch.setattr(idx._store, "snapshot", lambda: pytest.fail("read the index again"))
    assert idx.refresh() is idx and len(idx) == 20


def test_closing_an_index_releases_its_files(path):
    def open_fds():
        return sum(1 for f in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{f}").startswith(str(path)))

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc here")
    with xtrieve.Index.open(path) as idx:
        assert idx.search(rand(1)[0], k=1)[0].doc_id == "d0" and open_fds() > 0
    assert open_fds() == 0 and "closed" in repr(idx)
    with pytest.raises(xtrieve.InputError, match="is closed"):
        idx.search(rand(1)[0], k=1)
    assert xtrieve.Index.open(path).search(rand(1)[0], k=1)[0].doc_id == "d0"  # the folder is as it was


def test_a_token_index_is_read_without_moving_the_shared_file_position(tmp_path):
    # workers forked after opening share each file's position: a seek and a read could interleave
    import numpy as np

    from xtrieve.faiss_loader import load_faiss
    from xtrieve.index.faiss_build import read_index_from

    faiss = load_faiss()
    flat = faiss.IndexFlatIP(8)
    flat.add(np.random.default_rng(0).standard_normal((5, 8)).astype("f4"))
    faiss.write_index(flat, str(tmp_path / "t.faiss"))
    with open(tmp_path / "t.faiss", "rb") as f:
        f.seek(7)
        assert read_index_from(f).ntotal == 5 and f.tell() == 7


def test_an_index_of_links_opens(path, tmp_path):
    import shutil

    linked = tmp_path / "linked"
    linked.mkdir()
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    for entry in path.iterdir():  # a segment moved to another disk, the rest links to the files
        if entry.name.startswith("seg-") and not any(elsewhere.iterdir()):
            shutil.copytree(entry, elsewhere / entry.name)
            (linked / entry.name).symlink_to(elsewhere / entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, linked / entry.name, copy_function=os.symlink)
        else:
            (linked / entry.name).symlink_to(entry)
    with xtrieve.Index.open(path) as a, xtrieve.Index.open(linked) as b:
        q = np.random.default_rng(0).standard_normal((4, a.dim)).astype("f4")
        assert [(h.doc_id, h.score) for h in a.search(q, k=3)] == [(h.doc_id, h.score) for h in b.search(q, k=3)]


def test_damage_that_only_checksums_would_name_is_still_an_index_format_error_without_them(path, tmp_path):
    import shutil

    xtrieve.Index.open(path).add_embeddings(["x0", "x1"], rand(2))
    xtrieve.Index.open(path).delete(["d3"])
    segs = sorted(p for p in path.iterdir() if p.name.startswith("seg-"))

    def damaged(how):
        copy = tmp_path / how
        shutil.copytree(path, copy)
        seg0, _ = sorted(p for p in copy.iterdir() if p.name.startswith("seg-"))
        if how == "a token index of other vectors":  # (Flat files are written empty: swapping two changes nothing)
            import faiss

            other = faiss.IndexFlatIP(DIM)
            other.add(rand(1)[0][:3])
            (seg0 / "tokens.faiss").write_bytes(faiss.serialize_index(other).tobytes())
        elif how == "emptied tombstones":
            tomb = next(seg0.glob("deleted-g*.arrow"))
            import pyarrow as pa

            with pa.ipc.new_file(str(tomb), pa.schema([("doc", pa.int32())])) as w:
                w.write_table(pa.table({"doc": pa.array([], pa.int32())}))
        return copy

    assert len(segs) == 2
    for how, message in (("a token index of other vectors", "token index of segment .* holds 3 vectors"),
                         ("emptied tombstones", "tombstone files delete 0 documents, the manifest says 1")):
        with pytest.raises(IndexFormatError, match=message):
            xtrieve.Index.open(damaged(how), verify=False).warm_up()  # (reads the token indexes)
