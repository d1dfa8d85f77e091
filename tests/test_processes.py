"""Beyond one process (issue 17 items 1-2): os._exit keeps the report and the status, and Python
children (multiprocessing spawn/fork/forkserver, subprocess) are followed unless --no-follow."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import tfdiag
from tfdiag import output
from tfdiag.analysis import analyze
from tfdiag.capture import patching, processes
from tfdiag.options import Options
from tfdiag.recording import Recording, RecordingError, load, loads

from .conftest import run_tfdiag

OS_EXIT = """
    import os
    import tensorflow as tf
    double = tf.function(lambda x: x * 2.0)
    for _ in range(4):
        double(tf.ones((2, 2)))
    print("before os._exit")
    os._exit(7)
"""

# Two spawn workers run a tf.function (4 tasks x 3 calls), a subprocess child exits 5, and a
# child killed with SIGKILL once it has started (its marker is there) leaves no recording.
POOL = """
    import multiprocessing as mp, os, subprocess, sys, time

    def work(n):
        import tensorflow as tf
        global step
        if "step" not in globals():
            step = tf.function(lambda x: x + 1.0)
        for _ in range(3):
            step(tf.ones((1, n)))
        return os.getpid()

    if __name__ == "__main__":
        with mp.get_context("spawn").Pool(2) as pool:
            pids = pool.map(work, [2, 2, 2, 2], chunksize=1)
        here = os.path.dirname(os.path.abspath(__file__))
        status = subprocess.run([sys.executable, os.path.join(here, "child.py"), "5"]).returncode
        assert status == 5, status
        doomed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        marker = os.path.join(sys.argv[1], "processes", str(doomed.pid), "started.json")
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        doomed.kill()
        doomed.wait()
        print("PIDS", *sorted(set(pids)))
"""

CHILD = """
    import sys
    print("child", sys.argv[1:])
    sys.exit(int(sys.argv[1]))
"""

SUBPROCESS = """
    import os, subprocess, sys
    here = os.path.dirname(os.path.abspath(__file__))
    assert subprocess.run([sys.executable, os.path.join(here, "child.py"), "5"]).returncode == 5
"""

# Forked children (no TensorFlow: TF is not fork-safe once used): each keeps its exit status.
FORKS = """
    import multiprocessing as mp, os, sys

    def job(code):
        sys.exit(code)

    if __name__ == "__main__":
        p = mp.get_context("fork").Process(target=job, args=(4,))
        p.start(); p.join()
        assert p.exitcode == 4, p.exitcode
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
        p = mp.get_context("forkserver").Process(target=job, args=(6,))
        p.start(); p.join()
        assert p.exitcode == 6, p.exitcode
        with mp.get_context("fork").Pool(2) as pool:
            assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/true", ["/bin/true"])
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
"""


def _write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _children(recording: Recording) -> list[dict]:
    return recording.extra.get("processes") or []


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    script = _write(folder, "pool_script.py", POOL)
    _write(folder, "child.py", CHILD)
    out = folder / "out"
    result = run_tfdiag("analyze", "--no-tf-profiler", "-o", str(out), str(script), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    pids = next(line.split()[1:] for line in result.stdout.splitlines() if line.startswith("PIDS"))
    return out, result, load(out / "recording.json"), {int(p) for p in pids}


@pytest.mark.tf
def test_os_exit_keeps_the_report_and_the_status(tmp_path):
    script = _write(tmp_path, "ends_hard.py", OS_EXIT)
    result = run_tfdiag("analyze", "--no-tf-profiler", "-o", str(tmp_path / "out"), str(script))
    assert result.returncode == 7, result.stderr[-3000:]
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "profile.prof").is_file()
    recording = load(tmp_path / "out" / "recording.json")
    assert recording.run["ended_by"] == "os._exit" and recording.run["exit_status"] == 7
    assert sum(c["count"] for c in recording.calls if c["api"] == "tf.function") == 4
    assert "report.html" in result.stderr  # the CLI's summary is still printed
    assert "called os._exit" in (tmp_path / "out" / "report.html").read_text()


def test_os_exit_inside_diagnose_writes_first(tmp_path):
    code = textwrap.dedent(f"""
        import os, tfdiag
        with tfdiag.diagnose(out={str(tmp_path / "out")!r}):
            os._exit(5)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 5, result.stderr[-2000:]
    assert (tmp_path / "out" / "report.html").is_file()
    assert load(tmp_path / "out" / "recording.json").run["ended_by"] == "os._exit"


@pytest.mark.tf
def test_spawn_pool_children_appear_with_their_call_counts(pool_run):
    out, result, recording, pids = pool_run
    spawned = [c for c in _children(recording) if c["role"] == "spawn"]
    assert len(spawned) == 2 and all(c["status"] == "recorded" for c in spawned), spawned
    assert pids <= {c["pid"] for c in spawned}  # the workers that did the tasks are the ones listed
    counts = {c["pid"]: sum(call["count"] for call in c["calls"] if call["api"] == "tf.function") for c in spawned}
    assert sum(counts.values()) == 12, counts  # 4 tasks x 3 calls, however the pool shared them
    assert all(counts[pid] > 0 for pid in pids)
    for child in spawned:
        own = load(out / child["recording"])  # each child's own recording, as the parent lists it
        assert own.run["role"] == "spawn" and own.run["pid"] == child["pid"]
        assert own.extra.get("processes") is None and not (out / "processes" / str(child["pid"]) / "report.html").exists()
    view = analyze(recording).processes
    merged = [m for m in view["merged"] if m["api"] == "tf.function"]
    assert len(merged) == 1 and merged[0]["count"] == 12 and merged[0]["call_site"].endswith("pool_script.py:10")
    assert view["rows"][0]["role"] == "main" and len(view["rows"]) == 1 + len(_children(recording))


@pytest.mark.tf
def test_subprocess_child_is_followed(pool_run):
    out, result, recording, _ = pool_run
    child = next(c for c in _children(recording) if c["role"] == "subprocess" and c["status"] == "recorded")
    assert child["exit_status"] == 5 and child["ended_by"] == "exited"  # its status, as the parent reaped it
    assert child["argv"][-2].endswith("child.py") and child["parent_pid"] == recording.run["pid"]
    assert (out / child["recording"]).is_file()


@pytest.mark.tf
def test_child_killed_before_writing_is_reported(pool_run):
    out, result, recording, _ = pool_run
    lost = [c for c in _children(recording) if c["status"] == "no-recording"]
    assert len(lost) == 1 and lost[0]["argv"][-1] == "import time; time.sleep(120)", lost
    assert lost[0]["signal"] == "SIGKILL" and lost[0]["exit_status"] == 128 + 9  # as the parent reaped it
    page = (out / "report.html").read_text()
    assert 'id="processes"' in page and "killed by SIGKILL: left no recording" in page
    assert "1 left no recording" in result.stderr  # the terminal summary says so too
    # recording.json alone, in a folder without the children's files, re-renders the same section.
    alone = out.parent / "alone"
    alone.mkdir()
    shutil.copy(out / "recording.json", alone / "recording.json")
    rendered = output.write_report(analyze(load(alone / "recording.json")), alone / "report.html")

    def section(text):
        return re.search(r'<section id="processes">.*?</section>', text, re.S).group(0)

    assert section(open(rendered, encoding="utf-8").read()) == section(page)


def test_no_follow_stops_following(tmp_path):
    script = _write(tmp_path, "runs_a_child.py", SUBPROCESS)
    _write(tmp_path, "child.py", CHILD)
    followed = run_tfdiag("analyze", "-o", str(tmp_path / "on"), str(script))
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert [c["role"] for c in _children(load(tmp_path / "on" / "recording.json"))] == ["subprocess"]
    result = run_tfdiag("analyze", "--no-follow", "-o", str(tmp_path / "off"), str(script))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "processes" not in load(tmp_path / "off" / "recording.json").extra
    assert not (tmp_path / "off" / "processes").exists()


def test_tfdiag_run_by_a_followed_child_writes_its_own_report(tmp_path):
    _write(tmp_path, "child.py", CHILD)
    script = _write(tmp_path, "nested.py", f"""
        import subprocess, sys
        inner = [sys.executable, "-m", "tfdiag", "analyze", "--quiet", "-o", {str(tmp_path / "inner")!r},
                 {str(tmp_path / "child.py")!r}, "4"]
        assert subprocess.run(inner).returncode == 4
    """)
    result = run_tfdiag("analyze", "-o", str(tmp_path / "outer"), str(script))
    assert result.returncode == 0, result.stderr[-2000:]
    assert load(tmp_path / "inner" / "recording.json").run["exit_status"] == 4  # the child's own diagnosis won
    assert "processes" not in load(tmp_path / "outer" / "recording.json").extra  # ... and is not listed twice


def test_forked_children_keep_their_exit_status(tmp_path):
    script = _write(tmp_path, "forks.py", FORKS)
    result = run_tfdiag("analyze", "-o", str(tmp_path / "out"), str(script))
    assert result.returncode == 0, result.stderr[-3000:]  # the script's own asserts on its children's statuses
    children = _children(load(tmp_path / "out" / "recording.json"))
    statuses = sorted((c["role"], c["exit_status"]) for c in children if c["status"] == "recorded")
    assert ("fork", 4) in statuses and ("fork", 3) in statuses and ("forkserver", 6) in statuses, children
    assert [(c["status"], c["exec_argv"], c["exit_status"]) for c in children if c["status"] != "recorded"] == [
        ("exec", ["/bin/true"], 0)]  # a fork that runs another program: listed so, not as lost
    assert {c["role"] for c in children} <= {"fork", "forkserver"}  # the fork server itself is not listed


def test_diagnose_in_process_restores_the_environment(tmp_path):
    before = {name: os.environ.get(name) for name in (processes.ENV, "PYTHONPATH")}
    child = _write(tmp_path, "child.py", CHILD)
    with tfdiag.diagnose(out=tmp_path / "out", cprofile=False, tf_profiler=False) as d:
        assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == processes.BOOT_DIR
        assert subprocess.run([sys.executable, str(child), "3"]).returncode == 3
    assert {name: os.environ.get(name) for name in before} == before
    assert patching.installed() == [] and processes.on_fork_child is None and os._exit.__module__ == "posix"
    assert [(c["role"], c["exit_status"]) for c in _children(d.recording)] == [("subprocess", 3)]
    with tfdiag.diagnose(follow=False, cprofile=False, tf_profiler=False):
        assert os.environ.get(processes.ENV) == before[processes.ENV]
    with pytest.raises(tfdiag.DiagnoseError, match="follow"):
        tfdiag.diagnose(follow="no")


def test_processes_view_merges_call_sites_from_a_saved_recording():
    """Pure: a relative main-script call site matches the absolute one a spawn child reports."""
    call = {"api": "predict", "target": "m", "input_signature": "float32[1, 4]", "median_s": 0.01, "p95_s": 0.02,
            "first_s": 0.1, "phases": {}}
    recording = Recording(run={"pid": 10, "ended_by": "returned", "exit_status": 0, "wall_s": 2.0},
                          calls=[dict(call, call_site="job.py:7", count=2, total_s=0.2)])
    recording.extra["processes"] = [
        {"pid": 11, "parent_pid": 10, "role": "spawn", "status": "recorded", "exit_status": 0, "ended_by": "sys.exit",
         "wall_s": 1.5, "recording": "processes/11/recording.json", "argv": [], "top_finding": None, "functions": [],
         "calls": [{"api": "predict", "target": "m", "call_site": "/home/u/job.py:7", "count": 5, "total_s": 0.5}]},
        {"pid": 12, "parent_pid": 10, "role": "subprocess", "status": "no-recording", "argv": ["python", "x.py"],
         "calls": [], "functions": []}]
    view = analyze(Recording.from_dict(json.loads(json.dumps(recording.to_dict())))).processes
    assert [m["count"] for m in view["merged"]] == [7] and view["merged"][0]["processes"] == 2
    assert view["lost"] == 1 and [r["pid"] for r in view["rows"]] == [10, 11, 12]
    assert view["summary"] == "2 child processes followed (spawn, subprocess): 5 calls; 1 left no recording"


def test_os_exit_in_a_thread_waits_for_the_finish_under_way(tmp_path):
    """A daemon thread's os._exit while the script's normal end is being written (here: during the
    analysis) waits for that finish: one report, written once, never two writers at once."""
    script = _write(tmp_path, "race.py", """
        import os, threading
        import tfdiag.analysis as analysis
        real = analysis.analyze

        def analyze_while_a_thread_exits(recording):
            killer = threading.Thread(target=os._exit, args=(9,), daemon=True)
            killer.start()
            killer.join(0.5)  # it would exit here, mid-finish, if it did not wait
            return real(recording)

        analysis.analyze = analyze_while_a_thread_exits
    """)
    result = run_tfdiag("analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(tmp_path / "out"), str(script))
    assert result.returncode == 0, result.stderr[-2000:]  # as recorded: the program had returned
    assert result.stderr.count("files written:") == 1, result.stderr[-2000:]
    assert "could not" not in result.stderr and (tmp_path / "out" / "report.html").is_file()
    assert load(tmp_path / "out" / "recording.json").run["ended_by"] == "returned"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


# A SIGALRM handler calls os._exit(5) in the middle of the finish (its analysis), in a followed
# child (from its atexit write) and then in the parent (from the CLI's __exit__).
HANDLER_EXIT = '''
    import os, signal, subprocess, sys
    SETUP = """if True:
        import os, signal
        import tfdiag.analysis as analysis
        signal.signal(signal.SIGALRM, lambda *_: os._exit(5))
        real = analysis.analyze
        def analyze_then_alarm(recording):
            os.kill(os.getpid(), signal.SIGALRM)  # the handler runs here, in the thread that finishes
            return real(recording)
        analysis.analyze = analyze_then_alarm
    """
    print("child", subprocess.run([sys.executable, "-c", SETUP], timeout=30).returncode, flush=True)
    exec(SETUP)
'''


def test_os_exit_from_a_signal_handler_during_the_finish_exits_at_once(tmp_path):
    """The thread that holds the finish calls os._exit from a handler: it exits with that status at
    once (files are written atomically, so none is left half-written), in a child and in the parent."""
    script = _write(tmp_path, "alarm.py", HANDLER_EXIT)
    result = run_tfdiag("analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(tmp_path / "out"), str(script),
                        timeout=90)
    assert "child 5" in result.stdout, (result.stdout, result.stderr[-2000:])
    assert result.returncode == 5, result.stderr[-2000:]
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_os_exit_in_a_thread_as_the_program_returns_keeps_its_status(tmp_path):
    """os._exit(9) in a thread while the main thread returns: the status is 9, as without tfdiag,
    whichever thread reaches the finish first, and the recording says so too."""
    script = _write(tmp_path, "e5.py", """
        import os, threading
        ready = threading.Event()
        def killer():
            ready.set()
            os._exit(9)
        threading.Thread(target=killer, daemon=True).start()
        ready.wait()
    """)
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        result = run_tfdiag("analyze", "--no-cprofile", "--no-tf-profiler", "-o", str(out), str(script), timeout=60)
        assert result.returncode == 9, (attempt, result.stderr[-2000:])
        run = load(out / "recording.json").run
        assert (run["ended_by"], run["exit_status"]) == ("os._exit", 9), (attempt, run)


OWN_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(3)))
print("ready", flush=True)
time.sleep(30)
"""


def _terminate_blocked_child(code: str) -> tuple[int, int, float]:
    """Start ``code`` (which prints "ready", then blocks in a C call) as a child in its own session,
    SIGTERM it once ready: (its pid, its exit status, seconds from SIGTERM to its end)."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        started = time.monotonic()
        child.terminate()
        status = child.wait(timeout=60)
        return child.pid, status, time.monotonic() - started
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the shell's sleep, left behind as it would be without tfdiag
        child.stdout.close()


def test_sigterm_reaches_a_child_blocked_in_c(tmp_path):
    """A followed child stuck in a C call (here libc's system()) still writes its recording and
    dies at once on SIGTERM, instead of when the call returns."""
    code = "import ctypes; print('ready', flush=True); ctypes.CDLL(None).system(b'sleep 30')"
    with tfdiag.diagnose(out=tmp_path / "out", cprofile=False, tf_profiler=False) as d:
        pid, status, took = _terminate_blocked_child(code)
        own = subprocess.Popen([sys.executable, "-c", OWN_SIGTERM], stdout=subprocess.PIPE)
        assert own.stdout.readline().strip() == b"ready"
        own.terminate()
        own_status = own.wait(timeout=60)
        own.stdout.close()
    assert status == 128 + signal.SIGTERM and took < 15, (status, took)  # ended by the watcher, not by sleep's end
    entry = next(c for c in _children(d.recording) if c["pid"] == pid)
    assert entry["status"] == "recorded" and entry["ended_by"] == "terminated", entry
    assert own_status == 3  # a handler the child set itself decides how it ends


ASYNC_THEN_C = """if True:
    import asyncio, ctypes, signal
    async def main():
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, lambda: None)  # its own wakeup fd
        await asyncio.sleep(0.01)
    asyncio.run(main())  # closing the loop takes its wakeup fd off again
    assert signal.set_wakeup_fd(-1) == -1  # as without tfdiag: none set
    print("ready", flush=True)
    ctypes.CDLL(None).system(b"sleep 30")
"""


def test_sigterm_reaches_a_child_blocked_in_c_after_asyncio_used_the_wakeup_fd(tmp_path):
    with tfdiag.diagnose(out=tmp_path / "out", cprofile=False, tf_profiler=False):
        _, status, took = _terminate_blocked_child(ASYNC_THEN_C)
    assert status == 128 + signal.SIGTERM and took < 15, (status, took)


def test_children_belong_to_their_own_run(tmp_path, monkeypatch):
    """A child that outlives its run writes nothing and is never listed by the next run in the
    same folder; a relative ``out`` still catches a child running in another folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    outlives = [sys.executable, "-c", "import time; time.sleep(1.0)"]
    with tfdiag.diagnose(out="rel", cprofile=False, tf_profiler=False) as first:
        late = subprocess.Popen(outlives)
        marker = tmp_path / "rel" / "processes" / str(late.pid) / "started.json"
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    with tfdiag.diagnose(out="rel", cprofile=False, tf_profiler=False) as second:
        assert late.wait() == 0  # ends while the second run lasts
        here = subprocess.Popen([sys.executable, "-c", "pass"], cwd=tmp_path / "elsewhere")
        assert here.wait() == 0
    assert [(c["pid"], c["status"]) for c in _children(first.recording)] == [(late.pid, "running")]
    assert [(c["pid"], c["status"]) for c in _children(second.recording)] == [(here.pid, "recorded")]
    assert not (tmp_path / "rel" / "processes" / str(late.pid) / "recording.json").exists()
    assert not (tmp_path / "elsewhere" / "rel").exists()


def test_children_exit_statuses_are_the_real_ones(tmp_path):
    codes = {"raise SystemExit(4)": ("exited", 4, None), "import sys\ntry:\n    sys.exit(3)\nexcept SystemExit:\n    pass":
             ("exited", 0, None), "import os, signal; os.kill(os.getpid(), signal.SIGINT)": ("interrupted", 130, "SIGINT")}
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        pids = [subprocess.run([sys.executable, "-c", code], capture_output=True).returncode for code in codes]
        polled = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)  # polled"])
        while polled.poll() is None:  # reaped by poll(), which binds os.waitpid at import
            time.sleep(0.02)
    assert pids == [4, 0, -signal.SIGINT] and polled.returncode == 5
    seen = {c["argv"][-1]: (c["ended_by"], c["exit_status"], c["signal"]) for c in _children(d.recording)}
    assert seen.pop("raise SystemExit(5)  # polled") == ("exited", 5, None)
    assert seen == codes


WAKEUP_PIPE = """if True:
    import os, time
    from tfdiag.capture import process_exits
    assert process_exits.Terminator(lambda outcome: True, lambda: False).install()
    _, read_fd, write_fd = process_exits._WAKEUP
    pid = os.fork()
    if pid == 0:  # no watcher came through the fork: both ends are closed here
        process_exits.drop_inherited_sigterm()
        os._exit(sum(os.path.exists(f"/proc/self/fd/{fd}") for fd in (read_fd, write_fd)))
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "fds left open in the fork"
    process_exits.drop_inherited_sigterm()  # stepping aside: the watcher closes its end on the closed pipe
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/self/fd/{read_fd}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(os.path.exists(f"/proc/self/fd/{fd}") for fd in (read_fd, write_fd)), "fds left open"
    print("closed")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
def test_dropping_the_sigterm_watch_closes_its_pipe():
    result = subprocess.run([sys.executable, "-c", WAKEUP_PIPE], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "closed", result.stderr[-2000:]


def test_child_settings_keep_the_path_and_the_options():
    assert processes.boot_path(None) == processes.BOOT_DIR
    assert processes.boot_path(f"a{os.pathsep}{os.pathsep}b{os.pathsep}") == os.pathsep.join(
        [processes.BOOT_DIR, "a", "", "b", ""])  # empty entries (the working folder) kept
    assert processes.boot_path(processes.BOOT_DIR + os.pathsep + "a") == os.pathsep.join([processes.BOOT_DIR, "a"])
    settings = processes.Settings("/x", processes.child_options(Options(memory=False, phase_every=3)), 1, "r")
    chosen = processes.options_of(settings)
    assert chosen.memory is False and chosen.phase_every == 3 and chosen.cprofile is False


def test_clear_removes_only_children_and_only_when_following(tmp_path):
    folder = tmp_path / "out" / "processes"
    for name, content in (("12/started.json", "{}"), ("34/notes.txt", "x"), ("mine.txt", "x")):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    with tfdiag.diagnose(out=tmp_path / "out", follow=False, cprofile=False, tf_profiler=False):
        pass
    assert (folder / "12" / "started.json").exists()  # --no-follow leaves the folder alone
    with tfdiag.diagnose(out=tmp_path / "out", cprofile=False, tf_profiler=False):
        pass
    assert not (folder / "12").exists() and (folder / "34" / "notes.txt").exists() and (folder / "mine.txt").exists()


def test_a_corrupt_processes_entry_is_one_line():
    base = {"schema_version": 1, "run": {}}
    with pytest.raises(RecordingError, match=r"processes\[0\]\.pid"):
        loads(json.dumps(dict(base, processes=[{"pid": [1]}])))
    with pytest.raises(RecordingError, match=r"processes\[0\]\.calls\[0\]\.count"):
        loads(json.dumps(dict(base, processes=[{"pid": 1, "calls": [{"count": "7"}]}])))


def test_the_users_sitecustomize_runs_and_stays(tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITECUSTOMIZE = True\n")
    monkeypatch.setenv("PYTHONPATH", str(user))
    probe = "import builtins, sitecustomize; print(builtins.USER_SITECUSTOMIZE, sitecustomize.__file__)"
    with tfdiag.diagnose(cprofile=False, tf_profiler=False) as d:
        ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        (user / "sitecustomize.py").write_text("import no_such_module_for_tfdiag_test\n")
        failing = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, text=True)
    assert ran.stdout.split() == ["True", str(user / "sitecustomize.py")], ran.stderr[-1000:]
    assert "no_such_module_for_tfdiag_test" in failing.stderr  # reported by site.py, as without tfdiag
    assert len(_children(d.recording)) == 2
