"""The sidecar as a process: dispatch, errors, streams, cancel, exit.

Every test talks to a real ``python -m pybridge`` over real pipes.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import msgpack
import pytest
from helpers import REPO, SidecarProcess, frame, pack, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybridge import PROTOCOL_VERSION
from pybridge.settings import Settings, SettingsError, parse_size

ERROR_CODES = {
    "invalid_message", "unknown_method", "invalid_params", "frame_too_large", "overloaded",
    "protocol_mismatch", "internal", "worker_crashed", "codec_unavailable", "codec_forbidden",
    "invalid_codec_config", "decode_failed", "encode_failed", "unsupported_dtype", "not_found",
    "already_exists", "read_only", "invalid_selection", "data_size_mismatch",
    "invalid_metadata", "store_error", "forbidden_path", "too_large",
}


def assert_error(reply, code, **details):
    assert reply.error is not None, f"expected {code}, got result {reply.result}"
    assert reply.result is None
    assert reply.error["code"] == code, reply.error
    assert isinstance(reply.error["message"], str) and reply.error["message"]
    for key, value in details.items():
        assert reply.error["details"].get(key) == value, reply.error


# -- hello and ping ---------------------------------------------------------------

def test_hello_contents(sidecar):
    result = sidecar.call("hello", {"protocol": PROTOCOL_VERSION, "client": "pytest"}).unwrap()
    assert result["protocol"] == "1.0"
    assert set(result["versions"]) == {"pybridge", "zarr", "numcodecs", "numpy", "msgpack",
                                       "python"}
    assert all(isinstance(v, str) and v for v in result["versions"].values())
    assert result["versions"]["python"] == sys.version.split()[0]
    assert result["versions"]["msgpack"] == ".".join(map(str, msgpack.version))
    assert result["limits"] == {"max_frame_bytes": 64 << 20, "stream_frame_bytes": 256 << 10,
                                "max_in_flight": 10_000, "max_request_bytes": 16 << 30,
                                "handoff_threshold": 4 << 20}
    assert set(result["capabilities"]) >= {"stream", "codec", "array", "handoff",
                                           "test_methods"}
    assert result["pid"] == sidecar.pid
    assert result["workers"] == 1


def test_hello_reports_the_versions_installed():
    from importlib import metadata

    with SidecarProcess() as sc:
        versions = sc.call("hello").unwrap()["versions"]
    for name in ("zarr", "numcodecs", "numpy"):
        assert versions[name] == metadata.version(name)


def test_hello_reports_settings_and_no_test_methods(sidecar_factory):
    sc = sidecar_factory(["--max-frame-bytes", "1MiB", "--stream-frame-bytes", "1000",
                          "--max-in-flight", "7", "--max-request-bytes", "3GiB",
                          "--handoff-threshold", "1MiB"],
                         workers=3, test_methods=False)
    result = sc.call("hello", {}).unwrap()
    assert result["limits"] == {"max_frame_bytes": 1 << 20, "stream_frame_bytes": 1000,
                                "max_in_flight": 7, "max_request_bytes": 3 << 30,
                                "handoff_threshold": 1 << 20}
    assert result["workers"] == 3
    assert "test_methods" not in result["capabilities"]
    assert_error(sc.call("sleep", {"ms": 1}), "unknown_method", method="sleep")


@pytest.mark.parametrize("client", ["2.0", "0.9", "banana", ""])
def test_hello_protocol_mismatch(sidecar, client):
    reply = sidecar.call("hello", {"protocol": client})
    assert_error(reply, "protocol_mismatch", client=client, sidecar="1.0")
    sidecar.ping()


def test_hello_accepts_another_minor_version(sidecar):
    assert sidecar.call("hello", {"protocol": "1.7"}).unwrap()["protocol"] == "1.0"


def test_ping(sidecar):
    assert sidecar.call("ping", {}).unwrap() == {"pong": True}


def test_fd34_mode_leaves_stdout_alone(sidecar_factory):
    """The Port's mode: the channel is fds 3/4, and fd 1 never carries a frame."""
    sc = sidecar_factory(fd34=True)
    sc.ping()
    assert sc.call("echo", {"data": b"through fd 4"}).unwrap() == {"data": b"through fd 4"}
    sc.close_input()
    assert sc.wait(5) == 0
    assert sc.stdout_bytes() == b""


def test_without_fds_3_and_4_it_explains(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pybridge"], env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30, cwd=tmp_path,
                          pass_fds=())
    assert proc.returncode == 2
    assert b"--stdio" in proc.stderr


def test_a_pool_that_cannot_start_ends_the_sidecar_with_its_cause(sidecar_factory, tmp_path):
    """A broken ``zarr`` on the import path: hello and ping still work (they do not
    import it), but no worker can run a task. The sidecar must say why in a
    ``sidecar.failed`` notification and exit with status 78, not keep
    answering ping while every array call fails."""
    broken = tmp_path / "zarr"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this zarr is broken on purpose')\n")
    sc = sidecar_factory(env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}, workers=1)
    sc.call("hello", {}).unwrap()
    notes = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            msg = sc.recv(timeout=max(deadline - time.monotonic(), 0.1))
        except EOFError:
            break
        notes.append(msg)
    assert sc.wait(10) == 78, sc.stderr_text()
    assert len(notes) == 1, notes
    kind, method, error = notes[0]
    assert (kind, method) == (2, "sidecar.failed")
    assert error["message"].startswith("the worker pool cannot start")
    assert "this zarr is broken on purpose" in error["message"]
    assert error["python_type"] == "ImportError"
    assert "the worker pool cannot start" in sc.stderr_text()


def test_the_sidecar_ignores_modules_in_its_working_directory(tmp_path):
    """Started as the client starts it (``-P``), a ``numpy.py`` in the working
    directory is never imported, by the sidecar or by its workers."""
    (tmp_path / "numpy.py").write_text("raise RuntimeError('the numpy.py in the cwd')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYBRIDGE_TEST_METHODS": "1"}
    sc = SidecarProcess(workers=1, env=env, python_flags=["-P"], cwd=tmp_path)
    try:
        sc.call("hello", {}).unwrap()
        reply = sc.call("codec.encode", {"codec": {"id": "zlib"}, "data": b"x" * 1000},
                        timeout=60)
        assert reply.ok, (reply.error, sc.stderr_text())
    finally:
        assert sc.close() == 0, sc.stderr_text()


# -- concurrency and cancel --------------------------------------------------------

def test_slow_request_does_not_delay_ping(sidecar):
    sleep_id = sidecar.request("sleep", {"ms": 2000})
    started = time.monotonic()
    ping_id = sidecar.request("ping")
    first = sidecar.recv(timeout=10)
    elapsed = time.monotonic() - started
    assert first == [1, ping_id, None, {"pong": True}]
    assert elapsed < 1.5  # generous: the sleep takes 2 s
    assert sidecar.response(sleep_id, timeout=10).unwrap() == {"slept_ms": 2000}


def test_slow_requests_run_concurrently(sidecar):
    ids = [sidecar.request("sleep", {"ms": 1500}) for _ in range(6)]
    started = time.monotonic()
    for rid in ids:
        assert sidecar.response(rid, timeout=10).unwrap() == {"slept_ms": 1500}
    assert time.monotonic() - started < 6  # serially it would take 9 s


def test_replies_come_in_completion_order(sidecar):
    slow = sidecar.request("sleep", {"ms": 800})
    fast = sidecar.request("sleep", {"ms": 1})
    first, second = sidecar.recv(), sidecar.recv()
    assert (first[1], second[1]) == (fast, slow)


def test_cancel_sleep_sends_no_reply(sidecar):
    rid = sidecar.request("sleep", {"ms": 10_000})
    sidecar.cancel(rid)
    sidecar.ping()
    # The call leaves the in-flight table: its id can be used again.
    deadline = time.monotonic() + 5
    while True:
        reply = sidecar.response(sidecar.request("sleep", {"ms": 1}, id=rid), timeout=5)
        if reply.ok or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reply.unwrap() == {"slept_ms": 1}
    assert sidecar.pending(wait=0.3) == []  # nothing for the cancelled sleep


def test_cancel_unknown_id_is_ignored(sidecar):
    sidecar.cancel(123456)
    sidecar.ping()
    assert sidecar.pending(wait=0.2) == []


def test_overloaded_beyond_max_in_flight(sidecar_factory):
    sc = sidecar_factory(["--max-in-flight", "2"])
    a = sc.request("sleep", {"ms": 5000})
    b = sc.request("sleep", {"ms": 5000})
    assert_error(sc.call("sleep", {"ms": 1}), "overloaded", limit=2)
    sc.ping()  # inline methods are never refused
    sc.cancel(a)
    sc.cancel(b)
    assert wait_for(lambda: sc.call("sleep", {"ms": 0}).ok, timeout=5)


# -- bad input: an error reply, and the sidecar keeps serving -----------------------

@pytest.mark.parametrize(("body", "rid"), [
    (b"\xc1\xff\x00garbage", 0),
    (os.urandom(64), 0),
    (b"", 0),
    (pack({"a": 1}), 0),
    (pack("just a string"), 0),
    (pack([1, 9, None, {}]), 0),
    (pack([0, 9, "ping"]), 9),
    (pack([0, 10, 5, {}]), 10),
    (pack([0, 11, "ping", []]), 11),
    (pack([0, -1, "ping", {}]), 0),
    (pack([0, 2**32, "ping", {}]), 0),
    (pack([0, 12, "ping", {1: 2}]), 12),  # a map key that is not a str
    (pack([0, 13, "ping", {}]) + b"\x00", 13),  # trailing bytes
    (pack([0, 14, "echo", {"data": b"x" * 100}])[:-10], 14),  # truncated inside the frame
])
def test_malformed_frames_get_invalid_message(sidecar, body, rid):
    sidecar.send_frame(body)
    reply = sidecar.response(rid)
    assert_error(reply, "invalid_message")
    sidecar.ping()


def test_unknown_method(sidecar):
    assert_error(sidecar.call("no.such.method", {}), "unknown_method", method="no.such.method")
    sidecar.ping()


@pytest.mark.parametrize(("method", "params", "param"), [
    ("sleep", {"ms": "100"}, "ms"),
    ("sleep", {"ms": -1}, "ms"),
    ("sleep", {"ms": 1.5}, "ms"),
    ("sleep", {"ms": True}, "ms"),
    ("sleep", {}, "ms"),
    ("echo", {"data": "text is not bin"}, "data"),
    ("echo", {}, "data"),
    ("echo", {"data": b"x", "stream": {"bytes": 1}}, "data"),
    ("echo", {"stream": {"bytes": -1}}, "stream"),
    ("echo", {"stream": {"size": 1}}, "stream"),
    ("echo", {"stream": 5}, "stream"),
    ("ping", {"extra": 1}, "extra"),
    ("hello", {"protocol": 1}, "protocol"),
    ("hello", {"client": "x", "clients": "y"}, "clients"),
])
def test_invalid_params(sidecar, method, params, param):
    assert_error(sidecar.call(method, params), "invalid_params", param=param)
    sidecar.ping()


def test_oversized_frame_gets_frame_too_large(sidecar_factory):
    sc = sidecar_factory(["--max-frame-bytes", "4096"])
    rid = sc.request("echo", {"data": b"x" * 10_000})
    assert_error(sc.response(rid), "frame_too_large", limit=4096)
    assert sc.call("echo", {"data": b"y" * 1000}).unwrap() == {"data": b"y" * 1000}
    # A body whose id cannot be read is answered to id 0.
    sc.send_frame(b"\xc1" * 5000)
    assert_error(sc.response(0), "frame_too_large", bytes=5000, limit=4096)
    sc.ping()


def test_oversized_frame_is_never_allocated(sidecar):
    """A 200 MiB frame over the default 64 MiB limit: memory does not grow by it."""
    sidecar.ping()
    rid = 4242
    head = pack([0, rid, "echo", {"data": b""}])[:-1]
    size = 200 << 20
    sidecar.send_raw(struct.pack(">I", size) + head)
    chunk = bytes(1 << 20)
    remaining = size - len(head)
    while remaining:
        n = min(remaining, len(chunk))
        sidecar.send_raw(chunk[:n])
        remaining -= n
    assert_error(sidecar.response(rid, timeout=30), "frame_too_large", bytes=size)
    sidecar.ping()
    status = open(f"/proc/{sidecar.pid}/status").read()
    peak_kib = int(next(line for line in status.splitlines()
                        if line.startswith("VmHWM")).split()[1])
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib} KiB"


def test_duplicate_in_flight_id(sidecar):
    rid = sidecar.request("sleep", {"ms": 700})
    sidecar.request("sleep", {"ms": 1}, id=rid)
    assert_error(sidecar.response(rid), "invalid_message", id=rid)
    assert sidecar.response(rid, timeout=10).unwrap() == {"slept_ms": 700}
    sidecar.ping()


def test_bad_notifications_get_errors_to_id_0(sidecar):
    sidecar.notify("no.such.notification", {})
    assert_error(sidecar.response(0), "unknown_method", method="no.such.notification")
    sidecar.notify("cancel", {"id": "x"})
    assert_error(sidecar.response(0), "invalid_params", param="id")
    sidecar.notify("stream.data", {"id": 5})
    assert_error(sidecar.response(0), "invalid_params", param="data")
    sidecar.ping()


def test_stream_data_for_unknown_id_is_dropped(sidecar):
    sidecar.notify("stream.data", {"id": 999, "data": b"lost"})
    sidecar.ping()
    assert sidecar.pending(wait=0.2) == []


def test_internal_error_carries_type_and_traceback(sidecar):
    reply = sidecar.call("fail", {"message": "boom"})
    assert_error(reply, "internal")
    assert reply.error["python_type"] == "ValueError"
    assert "ValueError: boom" in reply.error["traceback"]
    assert reply.error["message"] == "ValueError: boom"
    sidecar.ping()


# -- streams ---------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024])
def test_echo_inline(sidecar, size):
    data = os.urandom(size)
    reply = sidecar.call("echo", {"data": data})
    assert reply.unwrap() == {"data": data}
    assert reply.stream == []


@pytest.mark.parametrize("size", [256 * 1024 + 1, 3 * 1024 * 1024, 3 * 1024 * 1024 + 17])
def test_echo_streams_large_results(sidecar, size):
    data = os.urandom(size)
    reply = sidecar.call("echo", {"data": data}, timeout=30)
    result = reply.unwrap()
    assert "data" not in result
    frames = -(-size // (256 * 1024))
    assert result["stream"] == {"frames": frames, "bytes": size}
    assert len(reply.stream) == frames
    assert all(len(piece) <= 256 * 1024 for piece in reply.stream)
    assert all(n <= 256 * 1024 + 64 for n in reply.frame_sizes)
    assert reply.data == data


def test_stream_frame_bytes_setting(sidecar_factory):
    sc = sidecar_factory(["--stream-frame-bytes", "1000"])
    data = os.urandom(4500)
    reply = sc.call("echo", {"data": data})
    assert reply.unwrap()["stream"] == {"frames": 5, "bytes": 4500}
    assert [len(p) for p in reply.stream] == [1000, 1000, 1000, 1000, 500]
    assert reply.data == data


def test_upload_stream(sidecar):
    data = os.urandom(3 * 1024 * 1024 + 5)
    rid = sidecar.request("echo", {"stream": {"bytes": len(data)}})
    sidecar.upload(rid, data)
    reply = sidecar.response(rid, timeout=30)
    assert reply.unwrap()["stream"]["bytes"] == len(data)
    assert reply.data == data


def test_small_and_empty_uploads(sidecar):
    rid = sidecar.request("echo", {"stream": {"bytes": 0}})
    assert sidecar.response(rid).unwrap() == {"data": b""}
    rid = sidecar.request("echo", {"stream": {"bytes": 6}})
    sidecar.upload(rid, b"abcdef", piece=4)
    assert sidecar.response(rid).unwrap() == {"data": b"abcdef"}


def test_upload_larger_than_declared(sidecar):
    rid = sidecar.request("echo", {"stream": {"bytes": 4}})
    sidecar.upload(rid, b"abcdefgh")
    assert_error(sidecar.response(rid), "invalid_params", param="stream")
    sidecar.ping()


def test_upload_back_pressure_and_cancel(sidecar):
    """An upload whose data never completes: cancel frees it, and the channel works."""
    rid = sidecar.request("echo", {"stream": {"bytes": 100 << 20}})
    sidecar.upload(rid, os.urandom(1 << 20))
    sidecar.cancel(rid)
    sidecar.upload(rid, os.urandom(20 << 20))  # dropped: more than the queue holds
    sidecar.ping()
    assert sidecar.pending(wait=0.3) == []


# -- exit ------------------------------------------------------------------------

def test_crash_exits_with_70(sidecar):
    sidecar.ping()
    rid = sidecar.request("crash")
    assert sidecar.wait(10) == 70
    with pytest.raises(EOFError):
        sidecar.response(rid, timeout=5)


@pytest.mark.parametrize("in_flight", [False, True])
def test_eof_exits_promptly(sidecar, in_flight):
    sidecar.call("hello").unwrap()
    if in_flight:
        sidecar.request("sleep", {"ms": 60_000})
        sidecar.request("echo", {"stream": {"bytes": 1000}})
    time.sleep(0.5)  # let the worker pool start in the background
    started = time.monotonic()
    sidecar.close_input()
    assert sidecar.wait(10) == 0
    assert time.monotonic() - started < 2.0


def test_eof_mid_frame_exits(sidecar):
    sidecar.ping()
    sidecar.send_raw(b"\x00\x00\x01\x00\x94\x00")
    sidecar.close_input()
    assert sidecar.wait(10) == 0


def test_sigterm_exits_cleanly(sidecar):
    sidecar.ping()
    sidecar.proc.terminate()
    assert sidecar.wait(10) == 128 + 15


# -- start-up, CLI and settings -------------------------------------------------------

def test_startup_imports_nothing_heavy():
    """zarr, numcodecs and numpy stay unimported until a handler needs them."""
    code = (
        "import sys\n"
        "from pybridge import cli\nfrom pybridge.rpc import server\n"
        "from pybridge.settings import Settings\n"
        "from pybridge.methods import method_table\n"
        "from pybridge.methods.basic import versions\n"
        "method_table(Settings(workers=1, test_methods=True)); versions()\n"
        "print(sorted(m for m in ('zarr', 'numcodecs', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_doctor_prints_versions_settings_and_codecs():
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYBRIDGE_MAX_IN_FLIGHT": "77"}
    proc = subprocess.run([sys.executable, "-m", "pybridge", "doctor", "--workers", "3"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("pybridge", "zarr", "numcodecs", "numpy", "msgpack", "python"):
        assert f"  {name} " in out
    assert "max_in_flight       77" in out
    assert "workers             3" in out
    assert "zstd" in out and "pickle" in out and "forbidden" in out


@pytest.mark.parametrize("argv", [["bogus"], ["--workers", "0"], ["--max-frame-bytes", "x"],
                                  ["--stream-frame-bytes", "64MiB"], ["--nope"]])
def test_bad_command_lines_exit_2(argv):
    proc = subprocess.run([sys.executable, "-m", "pybridge", *argv],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr


def test_settings_defaults():
    s = Settings.from_argv([], {})
    assert s.workers == (os.cpu_count() or 1)
    assert (s.max_frame_bytes, s.stream_frame_bytes, s.max_in_flight) == (64 << 20, 256 << 10,
                                                                        10_000)
    assert (s.allow_pickle, s.test_methods, s.stdio, s.allowed_roots) == (False, False, False,
                                                                        ())
    assert s.handoff_threshold == 4 << 20


def test_settings_env_and_cli_precedence(tmp_path):
    env = {"PYBRIDGE_WORKERS": "5", "PYBRIDGE_MAX_FRAME_BYTES": "2MiB",
           "PYBRIDGE_ALLOW_PICKLE": "1", "PYBRIDGE_ALLOWED_ROOTS": f"{tmp_path}:/tmp",
           "PYBRIDGE_TEST_METHODS": "1", "PYBRIDGE_HANDOFF_THRESHOLD": "1k"}
    s = Settings.from_argv([], env)
    assert (s.workers, s.max_frame_bytes, s.allow_pickle, s.test_methods) == (5, 2 << 20, True,
                                                                            True)
    assert s.allowed_roots == (os.path.realpath(tmp_path), os.path.realpath("/tmp"))
    assert s.handoff_threshold == 1024
    s = Settings.from_argv(["--workers", "2", "--max-frame-bytes", "8192", "--allowed-root",
                            "/srv", "--stdio"], env)
    assert (s.workers, s.max_frame_bytes, s.allowed_roots, s.stdio) == (2, 8192, ("/srv",), True)


@pytest.mark.parametrize("argv", [
    [],
    ["--workers=3", "--stdio", "--allowed-root", "/a", "--allowed-root=/b"],
    ["--max-frame-bytes", "1MiB", "--stream-frame-bytes=1000", "--max-in-flight", "9",
     "--handoff-threshold", "0", "--allow-pickle"],
])
def test_fast_option_parser_agrees_with_argparse(argv):
    from pybridge.settings import _fast_parse, _parser

    assert _fast_parse(argv) == vars(_parser().parse_args(argv))


def test_abbreviated_options_still_work():
    assert Settings.from_argv(["--work", "3"], {}).workers == 3


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, "-m", "pybridge", "--help"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0
    for flag in ("--workers", "--max-frame-bytes", "--stream-frame-bytes", "--max-in-flight",
                 "--allow-pickle", "--allowed-root", "--handoff-threshold", "--stdio"):
        assert flag in proc.stdout


@pytest.mark.parametrize(("argv", "env"), [
    ([], {"PYBRIDGE_WORKERS": "many"}),
    ([], {"PYBRIDGE_ALLOW_PICKLE": "perhaps"}),
    ([], {"PYBRIDGE_ALLOWED_ROOTS": "relative/dir"}),
    (["--max-frame-bytes", "100"], {}),
    (["--max-in-flight", "0"], {}),
])
def test_settings_errors(argv, env):
    with pytest.raises(SettingsError):
        Settings.from_argv(argv, env)


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("262144", 262144), ("256KiB", 262144),
                                             ("64M", 64 << 20), ("1g", 1 << 30),
                                             ("1_000", 1000)])
def test_parse_size(text, value):
    assert parse_size(text) == value


# -- fuzzing -------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=12) | st.binary(max_size=24),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=5),
    max_leaves=16,
)
message_like = st.one_of(
    st.tuples(st.sampled_from([0, 1, 2, 3, -1]), st.integers(0, 2000),
              st.sampled_from(["ping", "hello", "sleep", "echo", "fail", "nope", "cancel",
                               "stream.data"]),
              st.dictionaries(st.sampled_from(["ms", "data", "id", "protocol", "stream", "x"]),
                              msgpack_values, max_size=3)).map(list),
    st.tuples(st.just(2), st.sampled_from(["cancel", "stream.data", "nope"]),
              st.fixed_dictionaries({"id": st.integers(0, 2000)},
                                    optional={"data": st.binary(max_size=8)})).map(list),
)
frame_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=4097, max_size=6000),  # over the fuzz sidecar's limit
    msgpack_values.map(pack),
    message_like.map(pack),
)


@pytest.fixture(scope="module")
def fuzz_sidecar():
    sc = SidecarProcess(["--max-frame-bytes", "4096", "--stream-frame-bytes", "512"])
    try:
        yield sc
    finally:
        sc.close()


def _check_message(msg):
    if isinstance(msg, list) and len(msg) == 3 and msg[0] == 2:
        assert msg[1] == "stream.data"
        return
    assert isinstance(msg, list) and len(msg) == 4 and msg[0] == 1, msg
    _, rid, error, result = msg
    assert isinstance(rid, int) and 0 <= rid < 2**32
    assert (error is None) != (result is None), msg
    if error is not None:
        assert error["code"] in ERROR_CODES
        assert isinstance(error["message"], str)
        assert isinstance(error["details"], dict)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=st.lists(frame_bodies, min_size=1, max_size=6))
def test_fuzz_frames_never_stop_the_sidecar(fuzz_sidecar, bodies):
    sc = fuzz_sidecar
    sc.send_raw(b"".join(frame(b) for b in bodies))
    ping_id = 10**9 + sc.next_id()
    sc.request("ping", id=ping_id)
    reply = sc.response(ping_id, timeout=20)
    assert reply.result == {"pong": True}
    for msg in sc.pending():
        _check_message(msg)
    sc._inbox.clear()
