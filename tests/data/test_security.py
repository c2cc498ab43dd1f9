"""Files from elsewhere are data: a checkpoint never makes convcore import or
call code, every malformed file is a ValueError naming it, the command line
answers bad files and options with one line and exit status 2, and saved
files follow the umask and leave no temporary files behind."""
import io
import json
import os
import random
import stat
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import convcore as cc
from convcore.cli import main
from convcore.nn import _io
from convcore.train import (TrainConfig, _check_stored_model, _split, build_model, check_config, read_checkpoint,
                            save_checkpoint)
from _synthetic import write_idx_dataset

TINY = "_tiny_model:tiny"
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("idx")), n_train=128, n_test=32)


@pytest.fixture(scope="module")
def tiny_run(data_dir, tmp_path_factory):
    """A real one-epoch run of the tiny test model."""
    out = str(tmp_path_factory.mktemp("run") / "r")
    assert main(["train", "--model", TINY, "--data-dir", data_dir, "--epochs", "1",
                 "--out", out, "--threads", "1"]) == 0
    return out


def _members(path):
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _write_zip(path, members):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # duplicate names, on purpose
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for name, data in members:
                z.writestr(name, data)


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _with_meta(src, dst, meta_text):
    """A copy of checkpoint `src` whose 'meta' member holds `meta_text`."""
    _write_zip(dst, [(n, _npy(np.array(meta_text)) if n == "meta.npy" else d)
                     for n, d in _members(src)])
    return dst


def _meta(path):
    return json.loads(str(np.load(path, allow_pickle=False)["meta"]))


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    assert "pickle" not in err.lower(), err
    return err


# ------------------------------------------------------ names are data, not code

EVIL_MODULE = "convcore_evil_probe"


@pytest.mark.parametrize("model", [
    "os:abort", "this:x", f"{EVIL_MODULE}:build", "os:getcwd", "builtins:eval",
    "__import__", "../../../etc/passwd:x", "x" * 100000, 123, None, ["os", "abort"],
    {"module": "os"}, "lenet5\n:evil", "__class__", "get_model", "vgg"])
def test_a_checkpoint_never_imports_the_model_it_names(tiny_run, data_dir, tmp_path,
                                                       monkeypatch, capsys, model):
    # a module that would leave a mark if anything imported it, next to the
    # checkpoint and in the working directory
    marker = tmp_path / "imported"
    (tmp_path / f"{EVIL_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\ndef build(**kw):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    src = os.path.join(tiny_run, "checkpoint.npz")
    meta = _meta(src)
    meta["config"]["model"] = model
    bad = _with_meta(src, str(tmp_path / "checkpoint.npz"), json.dumps(meta))
    had_this = "this" in sys.modules
    rc = main(["evaluate", bad, "--data-dir", data_dir])
    _one_line_error(capsys, rc, "checkpoint.npz")
    rc = main(["train", "--resume", bad, "--data-dir", data_dir, "--epochs", "2"])
    _one_line_error(capsys, rc)
    assert not marker.exists()
    assert EVIL_MODULE not in sys.modules
    assert ("this" in sys.modules) == had_this


def test_a_custom_model_run_says_how_to_rebuild_it(tiny_run, data_dir, capsys):
    rc = main(["evaluate", tiny_run, "--data-dir", data_dir])
    _one_line_error(capsys, rc, "custom model", f"--model {TINY}")
    rc = main(["train", "--resume", tiny_run, "--data-dir", data_dir])
    _one_line_error(capsys, rc, "custom model", f"--model {TINY}")
    # named by the user, it is rebuilt
    assert main(["evaluate", tiny_run, "--data-dir", data_dir, "--model", TINY]) == 0


def test_build_model_refuses_import_specs_unless_allowed():
    with pytest.raises(ValueError, match="custom model"):
        build_model("os:getcwd", 1, 10, 28, 0, allow_import=False)
    with pytest.raises(ValueError, match="not a model"):
        build_model("os:getcwd", 1, 10, 28, 0, allow_import=True)
    assert build_model("lenet5", 1, 10, 28, 0, allow_import=False) is not None


def test_model_function_that_returns_no_model_is_a_clear_error(data_dir, tmp_path, capsys):
    rc = main(["train", "--model", "os:getcwd", "--data-dir", data_dir,
               "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, "not a model")


@pytest.mark.parametrize("typo, suggested", [("vgg166", "vgg16"), ("lenet", "lenet5"),
                                              ("resnet-18", "resnet18")])
def test_model_typos_suggest_only_real_models(data_dir, tmp_path, capsys, typo, suggested):
    rc = main(["train", "--model", typo, "--data-dir", data_dir, "--out", str(tmp_path)])
    err = _one_line_error(capsys, rc, "unknown model", suggested)
    for helper in ("get_model", "MODELS", "VGG_CONFIGS", "GoogLeNet", "as_int", "vgg,"):
        assert helper not in err


# ------------------------------------------------------ malformed checkpoints

@pytest.mark.parametrize("meta_text, match", [
    ("[1, 2]", "JSON object"),
    ("{not json", "not valid JSON"),
    ('{"format": 1}', "lacks config"),
    ("MISSING-epoch", "lacks epoch"),
    ("MISSING-classes", "lacks classes"),
    ('"just a string"', "JSON object"),
    ("CONFIG-list", "'config' must be an object"),
    ("CONFIG-unknown", "unknown configuration keys"),
    ("CONFIG-epochs-str", "'epochs' must be"),
    ("EPOCH-negative", "'epoch' must be"),
    ("[" * 100000, "not valid JSON"),
])
def test_malformed_metadata_is_a_value_error_naming_the_file(tiny_run, tmp_path, meta_text,
                                                             match, data_dir, capsys):
    src = os.path.join(tiny_run, "checkpoint.npz")
    meta = _meta(src)
    if meta_text.startswith("MISSING-"):
        del meta[meta_text[8:]]
        meta_text = json.dumps(meta)
    elif meta_text == "CONFIG-list":
        meta["config"] = [1]
        meta_text = json.dumps(meta)
    elif meta_text == "CONFIG-unknown":
        meta["config"]["__init__"] = 1
        meta_text = json.dumps(meta)
    elif meta_text == "CONFIG-epochs-str":
        meta["config"]["epochs"] = "3"
        meta_text = json.dumps(meta)
    elif meta_text == "EPOCH-negative":
        meta["epoch"] = -1
        meta_text = json.dumps(meta)
    bad = _with_meta(src, str(tmp_path / "bad.npz"), meta_text)
    with pytest.raises(ValueError, match=match) as e:
        read_checkpoint(bad)
    assert "bad.npz" in str(e.value)
    rc = main(["evaluate", bad, "--data-dir", data_dir, "--model", TINY])
    _one_line_error(capsys, rc, "bad.npz")


def test_meta_that_is_not_a_string_array(tiny_run, tmp_path):
    members = [(n, _npy(np.arange(3)) if n == "meta.npy" else d)
               for n, d in _members(os.path.join(tiny_run, "checkpoint.npz"))]
    _write_zip(str(tmp_path / "m.npz"), members)
    with pytest.raises(ValueError, match="JSON string"):
        read_checkpoint(str(tmp_path / "m.npz"))


def test_resume_without_rng_state_is_a_clear_error(tiny_run, tmp_path, data_dir, capsys):
    members = [(n, d) for n, d in _members(os.path.join(tiny_run, "checkpoint.npz"))
               if not n.startswith("rng/")]
    run = tmp_path / "run"
    run.mkdir()
    _write_zip(str(run / "checkpoint.npz"), members)
    rc = main(["train", "--resume", str(run), "--model", TINY, "--data-dir", data_dir,
               "--epochs", "2"])
    _one_line_error(capsys, rc, "random-generator state")


def test_out_naming_an_existing_file(data_dir, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc = main(["train", "--model", TINY, "--data-dir", data_dir, "--out", str(f)])
    _one_line_error(capsys, rc, "existing file")


@pytest.mark.parametrize("argv", [["--threads", "1099511627776"], ["--threads", "0"],
                                  ["--blas-threads", "100000"]])
def test_thread_options_are_bounded(data_dir, tmp_path, capsys, argv):
    rc = main(["train", "--model", TINY, "--data-dir", data_dir, "--out", str(tmp_path)]
              + argv)
    _one_line_error(capsys, rc, "threads")


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"\x93NUMPY\x01\x00garbage",
                                     b"", b"PK\x05\x06" + b"\0" * 18])
def test_evaluate_a_file_that_is_not_a_checkpoint(tmp_path, capsys, content):
    p = tmp_path / "notes.npz"
    p.write_bytes(content)
    rc = main(["evaluate", str(p)])
    _one_line_error(capsys, rc, "notes.npz")


def test_evaluate_an_object_array_file_gives_no_pickle_advice(tmp_path, capsys):
    p = tmp_path / "obj.npz"
    np.savez(p, meta=np.array([{"a": 1}], dtype=object))
    rc = main(["evaluate", str(p)])
    err = capsys.readouterr().err
    assert rc == 2 and "obj.npz" in err and "allow_pickle" not in err


def test_evaluate_a_directory_without_checkpoint(tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path)])
    _one_line_error(capsys, rc, "no checkpoint")


# ------------------------------------------------------ weights files (Module.load)

def _net():
    return cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, rng=0), cc.nn.ReLU(), cc.nn.Flatten(),
                            cc.nn.Linear(4 * 6 * 6, 120, rng=1), cc.nn.Linear(120, 3, rng=2))


def _header_span(data: bytes, member: str):
    """(start, end) of the header text of `member` inside the archive bytes."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(member)
    # local header: 30 bytes + name + extra, then the member's bytes
    n, e = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + n + e
    hlen = int.from_bytes(data[start + 8:start + 10], "little")
    return start + 10, start + 10 + hlen


def test_every_one_character_header_mutation_is_a_value_error_or_a_correct_load(tmp_path):
    net = _net()
    p = tmp_path / "w.npz"
    net.save(p)
    data = p.read_bytes()
    a, b = _header_span(data, "3.weight.npy")         # 'shape': (120, 144)
    rng = random.Random(20)
    outcomes = {"error": 0, "load": 0}
    for i in range(a, b):
        for ch in {ord("0"), ord("("), ord(" "), ord("'"), ord("9"), ord(","), ord("}"),
                   rng.randrange(256)}:
            if data[i] == ch:
                continue
            q = tmp_path / "m.npz"
            q.write_bytes(data[:i] + bytes([ch]) + data[i + 1:])
            m = _net()
            try:
                m.load(q)
            except ValueError as e:
                assert "m.npz" in str(e)
                outcomes["error"] += 1
            else:
                outcomes["load"] += 1
                for k, v in net.state_dict().items():
                    np.testing.assert_array_equal(m.state_dict()[k], v)
    # every mutation changes the CRC-checked bytes: none may load
    assert outcomes["load"] == 0 and outcomes["error"] > 300


def test_header_of_a_large_member_is_crc_checked(tmp_path):
    net = cc.nn.Linear(400, 120, rng=0)        # 192,000-byte weight: beyond read-ahead
    p = tmp_path / "w.npz"
    net.save(p)
    data = bytearray(p.read_bytes())
    a, b = _header_span(bytes(data), "weight.npy")
    i = bytes(data).index(b" ", a + 40, b)     # a padding space: the header still parses
    data[i] = ord("\t")
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="w.npz.*(CRC|corrupt)"):
        cc.nn.Linear(400, 120, rng=0).load(p)


# ------------------------------------------------------ file modes, leftovers

@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_saved_files_follow_the_umask(tmp_path, umask022, tiny_run):
    p = tmp_path / "w.npz"
    _net().save(p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    meta, arrays = read_checkpoint(tiny_run)
    assert stat.S_IMODE(os.stat(os.path.join(tiny_run, "checkpoint.npz")).st_mode) == 0o644


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.skipif(os.name != "posix", reason="process liveness probe is POSIX-only")
def test_leftover_temporary_files_are_removed_at_the_next_save(tmp_path):
    dead = tmp_path / f".tmp-{_dead_pid()}-0123abcd.npz"
    legacy = tmp_path / ".tmp-ab_cd123.npz"
    mine = tmp_path / f".tmp-{os.getpid()}-feedbeef.npz"      # a write in progress
    other = tmp_path / ".tmp-notes.txt"
    for f in (dead, legacy, mine, other):
        f.write_bytes(b"partial")
    _net().save(tmp_path / "w.npz")
    assert not dead.exists() and not legacy.exists()
    assert mine.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, other.name, "w.npz"])


@pytest.mark.skipif(os.name != "posix", reason="process liveness probe is POSIX-only")
def test_leftover_temporary_files_are_removed_at_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", TINY, "--data-dir", data_dir, "--epochs", "1",
                 "--out", str(out), "--threads", "1"]) == 0
    dead = out / f".tmp-{_dead_pid()}-0123abcd.npz"
    dead.write_bytes(b"partial")
    assert main(["train", "--resume", str(out), "--model", TINY, "--data-dir", data_dir,
                 "--epochs", "1"]) == 0              # nothing left to train, still cleans
    capsys.readouterr()
    assert not dead.exists()


# ------------------------------------------------------ fuzzing real checkpoints

def _lenet_checkpoint(path):
    from convcore.train import build_optimizer
    cfg = TrainConfig(model="lenet5", epochs=2)
    model = build_model("lenet5", 1, 10, 28, 0, allow_import=False)
    opt, sched = build_optimizer(cfg, model)
    from dataclasses import asdict
    meta = {"format": 1, "config": asdict(cfg), "epoch": 1, "history": [],
            "classes": [str(i) for i in range(10)], "mean": [0.5], "std": [0.25],
            "threads": 1, "train_counts": [1] * 10}
    save_checkpoint(str(path), model, opt, sched, meta)
    return model


def _load_like_evaluate(path):
    meta, arrays = read_checkpoint(str(path))
    cfg = TrainConfig(**meta["config"])
    check_config(cfg)
    _check_stored_model(cfg.model, str(path))        # as evaluate and resume do
    model = build_model(cfg.model, 1, len(meta["classes"]), 28, cfg.seed,
                        allow_import=False)
    model.load_state_dict(_split(arrays, "model/"))
    return model


def _mutate_meta(meta, r):
    m = json.loads(json.dumps(meta))
    junk = [None, -1, 2**70, 1e308, float("nan"), "", "x" * 5000, [], {}, [1, "a"],
            {"a": {"b": []}}, True, "os:system", "__import__('os')", "../x"]
    target = m if r.random() < 0.5 else m["config"]
    keys = list(target)
    op = r.randrange(4)
    if op == 0 and keys:
        del target[r.choice(keys)]
    elif op == 1 and keys:
        target[r.choice(keys)] = r.choice(junk)
    elif op == 2:
        target[r.choice(["model", "__class__", "epoch", "zz"])] = r.choice(junk)
    else:
        m = r.choice(junk)
    try:
        return json.dumps(m, allow_nan=True)
    except ValueError:
        return "{"


def test_fuzz_checkpoints_give_only_clean_value_errors_or_a_correct_load(tmp_path):
    """Derandomized: a fixed seed, a few hundred mutations of a real LeNet-5
    checkpoint's bytes, headers, metadata and archive members."""
    src = tmp_path / "checkpoint.npz"
    model = _lenet_checkpoint(src)
    data = src.read_bytes()
    members = _members(str(src))
    meta = json.loads(str(np.load(src, allow_pickle=False)["meta"]))
    spans = [_header_span(data, n) for n, _ in members]
    r = random.Random(2026)
    q = tmp_path / "fuzz.npz"
    loads = errors = 0
    for case in range(360):
        kind = case % 6
        if kind == 0:                                   # a byte anywhere
            i = r.randrange(len(data))
            blob = data[:i] + bytes([r.randrange(256)]) + data[i + 1:]
        elif kind == 1:                                 # a byte of a .npy header
            a, b = r.choice(spans)
            i = r.randrange(a - 10, b)
            blob = data[:i] + bytes([r.randrange(256)]) + data[i + 1:]
        elif kind == 2:                                 # truncated
            blob = data[:r.randrange(len(data))]
        elif kind == 3:                                 # metadata
            _with_meta(src, q, _mutate_meta(meta, r))
            blob = None
        elif kind == 4:                                 # members dropped / renamed / added
            ms = list(members)
            op = r.randrange(4)
            j = r.randrange(len(ms))
            if op == 0:
                del ms[j]
            elif op == 1:
                ms[j] = (r.choice(["x.npy", "meta.npy", "../evil.npy", "a/b", "model/"])
                         + "", ms[j][1])
            elif op == 2:
                ms.append(ms[j])
            else:
                ms[j] = (ms[j][0], _npy(np.zeros(r.choice([(0,), (3, 3), (2**20,)]),
                                                 r.choice([np.float32, np.int8, bool]))))
            try:
                _write_zip(q, ms)
            except Exception:
                continue
            blob = None
        else:                                           # a header rewritten
            ms = list(members)
            j = r.randrange(len(ms))
            name, d = ms[j]
            hl = int.from_bytes(d[8:10], "little")
            head = d[10:10 + hl].decode("latin1")
            head = r.choice([head.replace("'<f4'", "'|O'"), head.replace("(", "((", 1),
                             head.replace("False", "True"), head.replace("'shape'", "'shap'"),
                             head.replace(")", ", 99999999999)", 1),
                             "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                             head.replace("'descr': '", "'descr': 'x")])
            head = head.ljust(hl)[:max(hl, len(head))]
            nd = d[:8] + len(head).to_bytes(2, "little") + head.encode("latin1") + d[10 + hl:]
            ms[j] = (name, nd)
            _write_zip(q, ms)
            blob = None
        if blob is not None:
            q.write_bytes(blob)
        try:
            got = _load_like_evaluate(q)
        except ValueError as e:
            assert "fuzz.npz" in str(e) or "state dict" in str(e), str(e)
            errors += 1
        else:
            loads += 1
            if kind in (0, 1, 2, 3):     # weights' bytes untouched or CRC-protected
                for k, v in model.state_dict().items():
                    np.testing.assert_array_equal(got.state_dict()[k], v, err_msg=k)
    assert errors > 250


@pytest.mark.parametrize("change", [
    ("sched/last_epoch.npy", None), ("optim/lr.npy", np.array(np.nan)),
    ("optim/step_count.npy", np.zeros((3, 3))), ("rng/legacy_has_gauss.npy", np.array(2**62)),
    ("optim/state.0.momentum_buffer.npy", np.zeros((2, 2), np.float32)),
    ("optim/lr.npy", None)])
def test_resume_from_damaged_optimizer_state_is_a_clear_error(tiny_run, tmp_path, data_dir,
                                                              capsys, change):
    name, value = change
    members = [(n, d if n != name else _npy(value))
               for n, d in _members(os.path.join(tiny_run, "checkpoint.npz"))
               if not (n == name and value is None)]
    run = tmp_path / "run"
    run.mkdir()
    _write_zip(str(run / "checkpoint.npz"), members)
    rc = main(["train", "--resume", str(run), "--model", TINY, "--data-dir", data_dir,
               "--epochs", "2"])
    _one_line_error(capsys, rc, "checkpoint.npz")
