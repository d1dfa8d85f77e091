"""`tfdiag analyze --profiler-port P` and `tfdiag capture grpc://...`: a trace pulled from two running
processes through TensorFlow's own profiler service, on loopback only, into a logdir that
TensorBoard's profile plugin lists (its runs and both hosts, asked over HTTP as a user's browser would)."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tfdiag import cli, remote

from .test_profilers import SERVER_READY_TIMEOUT_S, _free_port, _get, _start, _stop

READY_TIMEOUT_S = 300  # two processes importing TensorFlow on a loaded machine: a bound on a hang

LOOP = """
    import os, time
    import tensorflow as tf

    @tf.function
    def step(x):
        return tf.reduce_sum(tf.matmul(x, x))

    x = tf.random.normal((64, 64))
    step(x)
    open(os.environ["READY_FILE"], "w").close()
    end = time.time() + 600  # a bound on a test that died; the fixture ends the loop with STOP_FILE
    while not os.path.exists(os.environ["STOP_FILE"]) and time.time() < end:
        step(x)
        time.sleep(0.002)
"""


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Two processes under `tfdiag analyze --profiler-port`, traced together for 500 ms."""
    root = tmp_path_factory.mktemp("remote")
    script = root / "loop.py"
    script.write_text(textwrap.dedent(LOOP))
    ports = [_free_port(), _free_port()]
    stop = root / "stop"
    procs = []
    for index, port in enumerate(ports):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", STOP_FILE=str(stop), READY_FILE=str(root / f"ready-{index}"))
        log = open(root / f"worker-{index}.log", "w")
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "tfdiag", "analyze", "--no-cprofile", "--no-tf-profiler", "--profiler-port",
             str(port), "-o", str(root / f"worker-{index}"), str(script)], env=env, stdout=log, stderr=log), log))
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all((root / f"ready-{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p, _ in procs), \
                (root / "worker-0.log").read_text()[-2000:]
            time.sleep(0.2)
        out = root / "capture"
        status = cli.main(["capture", ",".join(f"grpc://127.0.0.1:{p}" for p in ports), "--duration-ms", "500",
                           "-o", str(out)])
    finally:
        stop.touch()
        for proc, log in procs:
            try:
                proc.wait(timeout=READY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return root, out, ports, status, [p.returncode for p, _ in procs]


@pytest.mark.tf
def test_capture_writes_one_trace_per_host_and_their_op_time(captured):
    root, out, ports, status, returncodes = captured
    assert status == 0 and returncodes == [0, 0]
    section = json.loads((out / "capture.json").read_text())
    assert section["traced"] == 2 and section["duration_ms"] == 500 and section["run"]
    files = sorted(p.name for p in (out / "tensorboard" / "plugins" / "profile" / section["run"]).glob("*.xplane.pb"))
    assert files == sorted(f"127.0.0.1_{p}.xplane.pb" for p in ports)
    for host, port in zip(section["hosts"], ports):
        assert host["address"] == f"127.0.0.1:{port}" and host["error"] is None
        assert (out / host["file"]).is_file() and host["bytes"] > 0
        ops = {op["type"]: op for op in host["top_ops"]}
        # The loop's MatMul, on every host. (Its Sum, a tenth of the op time, is missing from one host's
        # op table in about half the runs on this 2-core machine, before this release as after: xprof's
        # reading of a 500 ms window on a loaded host, not tfdiag's.)
        matmul = [op for kind, op in ops.items() if "MatMul" in kind]
        assert matmul and matmul[0]["occurrences"] > 10, host["top_ops"]
        assert 0 < host["op_s"] < 0.5 and host["op_s_by_where"]["Host"] == host["op_s"]
        assert host["collective_s"] == 0  # no collective ops in these loops
    # each host is read on its own (xprof's saved tables of one host never stand for the other's)
    assert section["hosts"][0]["top_ops"] != section["hosts"][1]["top_ops"]
    # the workers' own runs went on to the end and wrote their reports
    assert all((root / f"worker-{i}" / "report.html").is_file() for i in range(2))


@pytest.mark.tf
def test_tensorboard_profile_plugin_lists_the_run_and_both_hosts(captured, tmp_path):
    _, out, ports, _, _ = captured
    run = json.loads((out / "capture.json").read_text())["run"]
    port = _free_port()
    board = _start(tmp_path / "tensorboard.log", "tensorboard", str(out), "--port", str(port))
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
        runs = json.loads(_get(f"http://127.0.0.1:{port}/data/plugin/profile/runs", deadline, board))
        assert run in runs
        hosts = json.loads(_get(f"http://127.0.0.1:{port}/data/plugin/profile/hosts?run={run}&tag=trace_viewer",
                                deadline, board))
        names = {h["hostname"] if isinstance(h, dict) else h for h in hosts}
        assert {f"127.0.0.1_{p}" for p in ports} <= names
    finally:
        _stop(board)


# -- without a server -------------------------------------------------------------------------------
def test_addresses_are_checked():
    assert remote.addresses("grpc://127.0.0.1:6009,localhost:6010") == [("127.0.0.1", 6009), ("localhost", 6010)]
    for bad in ("127.0.0.1", "grpc://h:0", "http://h:1", "h:1,h:1", "h:1,"):
        with pytest.raises(remote.CaptureError):
            remote.addresses(bad)


def test_nothing_listening_is_one_line_and_exit_1_bad_input_is_2(tmp_path, capsys):
    port = _free_port()
    assert cli.main(["capture", f"grpc://127.0.0.1:{port}", "--duration-ms", "100", "-o", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no profiler server at 127.0.0.1:{port}" in err[0] and "--profiler-port" in err[0]
    assert not (tmp_path / "c" / "capture.json").exists()
    assert cli.main(["capture", "grpc://127.0.0.1:1", "--duration-ms", "0", "-o", str(tmp_path / "c")]) == 2
    assert cli.main(["capture", "nonsense", "-o", str(tmp_path / "c")]) == 2


def test_collective_time_counts_every_op_not_only_the_top_ones():
    # read_trace's section with all_ops: 25 ops, the all-reduce the 25th by self time
    ops = [{"type": f"MatMul{i}", "name": f"m{i}", "where": "Host", "self_s": 0.1 + i / 100, "occurrences": 5}
           for i in range(24)] + [{"type": "CollectiveReduceV2", "name": "allreduce", "where": "Host",
                                   "self_s": 0.004, "occurrences": 5}]
    top = sorted(ops, key=lambda op: op["self_s"], reverse=True)[:20]
    row = remote.host_summary({"converter": "xprof", "ops": ops, "top_ops": top,
                               "self_s_by_where": {"Host": sum(op["self_s"] for op in ops)},
                               "steps": [{"step_s": 0.2}, {"step_s": 0.4}]}, ["w"])
    assert row["collective_s"] == pytest.approx(0.004) and len(row["top_ops"]) == remote.TOP_OPS
    assert row["op_s"] == pytest.approx(sum(op["self_s"] for op in ops)) and row["step_s_average"] == pytest.approx(0.3)
    assert row["steps"] == 2 and row["warnings"] == ["w"]
    assert remote.host_summary({}, [])["collective_s"] is None  # not read: not claimed to be 0


def test_profiler_port_with_the_local_tf_profiler_windows_is_warned(tmp_path):
    from tfdiag.options import Options
    from tfdiag.session import Diagnoser

    with socket.socket() as busy:  # a port in use: TensorFlow's server is never started in this process
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        said = {}
        for tf_profiler in (True, False):
            with Diagnoser(None, options=Options(profiler_port=port, tf_profiler=tf_profiler)) as diagnoser:
                pass
            said[tf_profiler] = [w["message"] for w in diagnoser.recording.warnings]
    assert any("--profiler-port" in m and "--no-tf-profiler" in m and "one profiling session" in m
               for m in said[True])
    assert not any("--no-tf-profiler" in m for m in said[False])


def test_a_busy_profiler_port_is_a_warning_and_no_server(tmp_path):
    from tfdiag.capture import worker

    said = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        worker.serve_profiler(busy.getsockname()[1], said.append)
    assert len(said) == 1 and "the port is in use" in said[0] and worker._SERVING == []


def test_profiler_port_out_of_range_is_a_usage_error(tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    assert cli.main(["analyze", "--profiler-port", "70000", "-o", str(tmp_path / "o"), str(script)]) == 2
    assert "--profiler-port takes a TCP port" in capsys.readouterr().err
