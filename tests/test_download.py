"""lspc/data/download.py: the order of sources (dsrl's cache, DSRL's server, the Hugging Face mirror),
against two loopback HTTP servers standing in for DSRL's host and the Hub."""
import hashlib
import http.server
import os
import socket
import threading

import huggingface_hub.constants
import pytest

from lspc import LSPCError
from lspc.data.dataset import load_dataset
from lspc.data.download import HF_MIRROR_REPO, HF_REPO_ENV, dataset_url, fetch_dsrl_file
from lspc.envs import make_env

NAME = "SafetyBallRun-v0-80-940.hdf5"  # dsrl.infos' file name for BallRun
BODY = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 40  # the downloader never parses the file
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Host:
    """A loopback HTTP server in a thread; ``mode`` says how it answers, ``requests`` what it got."""

    def __init__(self, label, log, answer):
        self.mode, self.body = "ok", BODY
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                log.append((label, "HEAD", self.path))
                answer(host, self, head=True)

            def do_GET(self):
                log.append((label, "GET", self.path))
                answer(host, self, head=False)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def answer_dsrl(host, handler, head):
    if host.mode == "500":
        handler.send_error(500)
        return
    if handler.path != f"/download/{NAME}":
        handler.send_error(404)
        return
    handler.send_response(200)
    # "truncated" promises more bytes than it sends, as a connection cut mid-file does
    handler.send_header("Content-Length", str(len(host.body) + (1000 if host.mode == "truncated" else 0)))
    handler.end_headers()
    if not head:
        handler.wfile.write(host.body)
        handler.close_connection = True


def answer_hub(host, handler, head):
    """Just enough of the Hub's resolve endpoint for hf_hub_download: the commit and ETag headers."""
    if host.mode != "ok" or handler.path != f"/datasets/{HF_MIRROR_REPO}/resolve/main/{NAME}":
        handler.send_error(404)
        return
    handler.send_response(200)
    handler.send_header("X-Repo-Commit", COMMIT)
    handler.send_header("ETag", f'"{hashlib.sha256(host.body).hexdigest()}"')
    handler.send_header("Content-Length", str(len(host.body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(host.body)


@pytest.fixture
def hosts(monkeypatch):
    log = []
    dsrl, hub = Host("dsrl", log, answer_dsrl), Host("hub", log, answer_hub)
    hub.body = BODY[::-1]  # tells the two copies apart
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv(HF_REPO_ENV, raising=False)
    # huggingface_hub 2.x otherwise asks the endpoint for its agent registry (telemetry); constants are
    # read at import, so the environment variable would come too late
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    yield dsrl, hub, log
    dsrl.close()
    hub.close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/download/{NAME}"  # nothing listens there: connection refused


def cache_files(cache):
    """Every file left in the cache folder, the Hub client's bookkeeping under .cache aside."""
    return sorted(name for name in os.listdir(cache) if name != ".cache")


def test_dsrl_server_first(hosts, tmp_path, capsys):
    dsrl, hub, log = hosts
    path, source = fetch_dsrl_file(f"{dsrl.url}/download/{NAME}", cache_dir=str(tmp_path))
    assert (path, source) == (str(tmp_path / NAME), "dsrl")
    assert open(path, "rb").read() == BODY
    assert log == [("dsrl", "GET", f"/download/{NAME}")]  # the mirror is never asked
    assert "DSRL's server" in capsys.readouterr().out
    assert cache_files(tmp_path) == [NAME]


@pytest.mark.parametrize("failure", ["500", "refused"])
def test_hugging_face_mirror_when_dsrl_fails(hosts, tmp_path, capsys, failure):
    dsrl, hub, log = hosts
    dsrl.mode = failure
    url = closed_port_url() if failure == "refused" else f"{dsrl.url}/download/{NAME}"
    path, source = fetch_dsrl_file(url, cache_dir=str(tmp_path), timeout=5)
    assert (path, source) == (str(tmp_path / NAME), "huggingface")  # at dsrl's path: found there next time
    assert open(path, "rb").read() == hub.body
    expected = [] if failure == "refused" else [("dsrl", "GET", f"/download/{NAME}")]
    assert [entry for entry in log if entry[0] == "dsrl"] == expected
    hub_paths = {p for label, _, p in log if label == "hub"}
    assert hub_paths == {f"/datasets/{HF_MIRROR_REPO}/resolve/main/{NAME}"}
    assert log.index(next(e for e in log if e[0] == "hub")) == len(expected)  # DSRL first, then the Hub
    out = capsys.readouterr().out
    assert f"Hugging Face mirror {hub.url}/datasets/{HF_MIRROR_REPO}" in out
    assert ("HTTP 500" if failure == "500" else "refused") in out
    assert cache_files(tmp_path) == [NAME]


def test_cached_file_needs_no_request(hosts, tmp_path, capsys):
    dsrl, hub, log = hosts
    (tmp_path / NAME).write_bytes(b"cached")
    path, source = fetch_dsrl_file(f"{dsrl.url}/download/{NAME}", cache_dir=str(tmp_path))
    assert (path, source) == (str(tmp_path / NAME), "cache")
    assert log == []
    assert "cached" in capsys.readouterr().out


def test_mirror_repo_from_the_environment(hosts, tmp_path, monkeypatch):
    dsrl, hub, log = hosts
    dsrl.mode = "500"
    monkeypatch.setenv(HF_REPO_ENV, "someone/elsewhere")
    with pytest.raises(LSPCError, match="someone/elsewhere"):
        fetch_dsrl_file(f"{dsrl.url}/download/{NAME}", cache_dir=str(tmp_path))
    assert {p for label, _, p in log if label == "hub"} == {f"/datasets/someone/elsewhere/resolve/main/{NAME}"}


@pytest.mark.parametrize("dsrl_mode", ["500", "truncated"])
def test_both_fail_one_line_and_nothing_left(hosts, tmp_path, dsrl_mode):
    dsrl, hub, log = hosts
    dsrl.mode, hub.mode = dsrl_mode, "404"
    with pytest.raises(LSPCError) as caught:
        fetch_dsrl_file(f"{dsrl.url}/download/{NAME}", cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    for needle in ("--dataset_path", "DSRL_DATASET_DIR", "scripts/collect_dataset.py",
                   dsrl.url, f"{hub.url}/datasets/{HF_MIRROR_REPO}"):
        assert needle in message
    assert "(HTTP 404)" in message  # the Hub's answer, not huggingface_hub's generic wrapper
    assert ("HTTP 500" if dsrl_mode == "500" else f"cut off after {len(BODY)} of {len(BODY) + 1000} bytes") in message
    assert [label for label, _, _ in log][0] == "dsrl" and "hub" in {label for label, _, _ in log}
    assert cache_files(tmp_path) == []  # no partial download


def test_truncated_dsrl_download_is_not_kept(hosts, tmp_path):
    dsrl, hub, log = hosts
    dsrl.mode = "truncated"
    path, source = fetch_dsrl_file(f"{dsrl.url}/download/{NAME}", cache_dir=str(tmp_path))
    assert source == "huggingface" and open(path, "rb").read() == hub.body  # the cut DSRL copy was dropped
    assert cache_files(tmp_path) == [NAME]


def test_bad_input_is_one_line():
    with pytest.raises(LSPCError, match="names no file"):
        fetch_dsrl_file("http://127.0.0.1/")
    with pytest.raises(LSPCError, match="unknown task"):
        fetch_dsrl_file("OfflineNoSuchTask-v0")


def test_task_ids_name_dsrls_files():
    assert dataset_url("OfflineBallRun-v0").endswith(f"/{NAME}")
    assert dataset_url("OfflineAntVelocityGymnasium-v1").endswith("/SafetyAntVelocityGymnasium-v1-250-2249.hdf5")
    assert dataset_url("OfflineMetadrive-easysparse-v0").endswith("/SafeMetaDrive-easysparse-v0-85-1000.hdf5")


def test_load_dataset_fetches_through_the_fallback(hosts, tmp_path, monkeypatch, ballrun_file):
    """End to end: dsrl's own server fails, the mirror serves a real DSRL-layout file, dsrl reads it."""
    import dsrl.offline_env

    dsrl_host, hub, log = hosts
    dsrl_host.mode = "500"
    hub.body = open(ballrun_file, "rb").read()
    monkeypatch.setattr(dsrl.offline_env, "DATASET_PATH", str(tmp_path))
    env = make_env("OfflineBallRun-v0")
    monkeypatch.setattr(env.unwrapped, "dataset_url", f"{dsrl_host.url}/download/{NAME}")
    data = load_dataset(env)
    assert len(data["observations"]) == 1200
    assert (tmp_path / NAME).read_bytes() == hub.body
    log.clear()
    assert len(load_dataset(env)["observations"]) == 1200  # the second time from dsrl's cache
    assert log == []
    env.close()
