"""scripts/mutation.py's test server: a mutant's verdict is the exit status of pytest run on the source as it is on
disk at that moment, an unreachable server never counts as a kill, and a run mutmut gives up on is stopped."""
import os
import shlex
import subprocess
import sys
import time

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import mutation  # noqa: E402

TEST = """import time
import target


def test_target():
    time.sleep(target.SLEEP)
    open("finished", "w").close()
    assert target.VALUE == 1
"""


def write_target(project, value, sleep=0.0):
    (project / "target.py").write_text(f"VALUE = {value}\nSLEEP = {sleep}\n")


def runner(project):
    """The command mutmut runs per mutant, run in ``project`` (mutmut passes it as one shell-quoted string)."""
    return subprocess.Popen(shlex.split(mutation.runner_command(["tests/test_target.py"])), cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_target.py").write_text(TEST)
    write_target(tmp_path, 1)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "mutation.py"), "serve",
                               mutation.SERVER_SOCKET], cwd=tmp_path, env=env)
    deadline = time.time() + 60
    while not (tmp_path / mutation.SERVER_SOCKET).exists():
        assert server.poll() is None and time.time() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield tmp_path
    server.kill()
    server.wait()


def test_each_run_imports_the_source_on_disk(project):
    assert runner(project).wait(60) == 0
    write_target(project, 2)  # a mutant: the test fails
    assert runner(project).wait(60) == 1
    assert "assert 2 == 1" in (project / mutation.SERVER_LOG).read_text()
    write_target(project, 1)
    assert runner(project).wait(60) == 0
    (project / "target.py").write_text("VALUE = (\n")  # a mutant that does not import: pytest exits 2, a kill
    assert runner(project).wait(60) == 1


def test_an_unreachable_server_is_never_a_kill(tmp_path):
    (tmp_path / "tests").mkdir()
    done = runner(tmp_path)
    assert done.wait(60) == 3 and "mutation test server" in done.stderr.read()


def test_a_run_given_up_on_is_stopped_and_the_next_one_answered(project):
    write_target(project, 1, sleep=3.0)
    slow = runner(project)
    time.sleep(1.0)
    slow.kill()  # what mutmut does at its timeout
    slow.wait()
    time.sleep(3.5)
    assert not (project / "finished").exists()  # the forked pytest run was killed with its runner
    write_target(project, 2)
    assert runner(project).wait(60) == 1
