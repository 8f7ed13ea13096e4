"""Joining a Ray cluster that uses token authentication (``RAY_AUTH_MODE=token``, Ray 2.60).

Ray sends its token only while ``RAY_AUTH_MODE=token`` is set in the driver and, for an explicit
address, never turns that on by itself: with just ``RAY_AUTH_TOKEN`` set, ``ray.init(address=...)``
retried "Authentication token is missing or incorrect" for 20 s and failed with a bare
ConnectionError. ``workers.driver.connect_ray`` asks the cluster first and joins it with the token
from the environment, or fails at once naming the setting to give.

The fast tests talk to a stand-in gRPC server that answers as a token-auth Ray does (UNAUTHENTICATED
before looking at the request); the ``slow`` one starts a real head with ``ray start --head --block``
(its own session, HOME, temp dir and ports; only that process group is stopped) and runs a screen on it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import pytest
import yaml

from helpers import free_port, toy_spec_dict
from screening.core.errors import ScreeningError
from workers import driver
from workers.driver import RayAuthError

TOKEN = "screening-test-token-0123456789abcdef"
RAY_SETTINGS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_USE_TLS", "RAY_ADDRESS")


class _AuthServer:
    """A gRPC server answering every method as a Ray GCS or Ray Client server with token auth does."""

    def __init__(self, token: str | None):
        import grpc

        def answer(request, context):
            sent = dict(context.invocation_metadata()).get("authorization")
            if token is not None and sent != f"Bearer {token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing or incorrect")
            return b""

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                return grpc.unary_unary_rpc_method_handler(answer)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Handler()])
        self.port = free_port()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def token_server():
    server = _AuthServer(TOKEN)
    yield server
    server.stop()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Ray token settings, and a HOME without ~/.ray/auth_token (a local ray.init writes one)."""
    for name in RAY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    enabled: list[bool] = []
    monkeypatch.setattr(driver, "_enable_token_mode", lambda: enabled.append(True))  # keep this process's Ray as it is
    return enabled


def test_the_error_is_a_user_error():
    assert issubclass(RayAuthError, ScreeningError)  # the CLI's exit 2, the service's 4xx


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_no_token_fails_at_once_naming_the_setting(token_server, clean_env, scheme):
    address = f"{scheme}127.0.0.1:{token_server.port}"
    began = time.perf_counter()
    with pytest.raises(RayAuthError) as caught:
        driver._prepare_ray_auth(address, "--address")
    message = str(caught.value)
    assert message.startswith("--address:") and address in message
    assert "token authentication" in message and "RAY_AUTH_TOKEN" in message and "RAY_AUTH_TOKEN_PATH" in message
    assert time.perf_counter() - began < 5
    assert not clean_env


@pytest.mark.parametrize("where", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "home"])
def test_a_wrong_token_is_refused_naming_where_it_came_from(token_server, clean_env, monkeypatch, tmp_path, where):
    token_file = tmp_path / ("home/.ray/auth_token" if where == "home" else "token")
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text("not-the-token\n")
    if where == "RAY_AUTH_TOKEN":
        monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
    elif where == "RAY_AUTH_TOKEN_PATH":
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    with pytest.raises(RayAuthError, match="refuses the authentication token") as caught:
        driver._prepare_ray_auth(f"127.0.0.1:{token_server.port}", "execution.address")
    assert (str(token_file) if where == "home" else where) in str(caught.value)
    assert "RAY_AUTH_TOKEN" in str(caught.value) and not clean_env


def test_an_unreadable_token_path_and_auth_mode_disabled_are_named(token_server, clean_env, monkeypatch, tmp_path):
    address = f"127.0.0.1:{token_server.port}"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(RayAuthError, match="RAY_AUTH_TOKEN_PATH names .*missing"):
        driver._prepare_ray_auth(address, "--address")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RayAuthError, match="RAY_AUTH_MODE is 'disabled'"):
        driver._prepare_ray_auth(address, "--address")
    assert not clean_env


@pytest.mark.parametrize("where", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "home"])
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_the_token_from_the_environment_turns_token_mode_on(token_server, clean_env, monkeypatch, tmp_path, where, scheme):
    if where == "RAY_AUTH_TOKEN":
        monkeypatch.setenv("RAY_AUTH_TOKEN", f"  {TOKEN} ")
    else:
        token_file = tmp_path / ("home/.ray/auth_token" if where == "home" else "token")
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(TOKEN + "\n")
        if where == "RAY_AUTH_TOKEN_PATH":
            monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    driver._prepare_ray_auth(f"{scheme}127.0.0.1:{token_server.port}", "--address")
    assert clean_env == [True]


def test_a_cluster_without_authentication_is_left_alone(clean_env, monkeypatch):
    server = _AuthServer(None)
    try:
        monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
        driver._prepare_ray_auth(f"127.0.0.1:{server.port}", "--address")
        driver._prepare_ray_auth("local", "--address")
    finally:
        server.stop()
    assert not clean_env  # no token sent where none is wanted


def _cli_env(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_SETTINGS}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), **settings}


def _run_cli(spec_path: Path, address: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from screening.cli import main; sys.exit(main())",
               "run", str(spec_path), "--no-progress", "--no-plots", "--address", address]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _spec(toy_paths, tmp_path: Path, name: str) -> Path:
    raw = toy_spec_dict(toy_paths, tmp_path / f"{name}.zarr", regions=["chr1:2,000-2,400"])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_cli_exits_2_naming_the_setting(token_server, toy_paths, tmp_path):
    done = _run_cli(_spec(toy_paths, tmp_path, "noauth"), f"127.0.0.1:{token_server.port}",
                    _cli_env(tmp_path / "home"), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "screening: error: --address:" in done.stderr or "execution.address" in done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "noauth.zarr").exists()


# --- a real head with token authentication ---------------------------------------------------------


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """``ray start --head --block`` with ``RAY_AUTH_MODE=token``: (GCS address, Ray Client address)."""
    root = tmp_path_factory.mktemp("rayauth")
    ports = {name: free_port() for name in (
        "port", "node-manager-port", "object-manager-port", "ray-client-server-port", "metrics-export-port",
        "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")}
    env = _cli_env(root / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=2",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={root / 'ray'}",
               *(f"--{name}={port}" for name, port in ports.items())]
    log = root / "ray-start.log"
    with open(log, "w") as out:  # its own session: stopping it signals that group alone, never others' Ray
        head = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{ports['port']}", f"ray://127.0.0.1:{ports['ray-client-server-port']}"
    finally:
        _stop_group(head)


def _stop_group(head: subprocess.Popen) -> None:
    """Stop the head and the Ray processes it started, which share its process group (its worker
    processes, in groups of their own, exit when their raylet goes). TERM drains for up to 30 s, so
    after a short grace the group is killed. The head is not reaped before that: its pid stays
    the group's id, and no other process can take it."""
    try:
        os.killpg(head.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, head.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break  # exited, not reaped
        time.sleep(0.2)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=30)


@pytest.mark.slow  # a Ray head of its own (about 10 s) and a screen on it
def test_a_screen_runs_on_a_token_auth_cluster_with_the_token_from_the_environment(token_head, toy_paths, tmp_path):
    from screening.store.reader import open_results

    gcs, client = token_head
    spec_path = _spec(toy_paths, tmp_path, "authed")
    for env in (_cli_env(tmp_path / "home"), _cli_env(tmp_path / "home", RAY_AUTH_TOKEN="wrong-token")):
        began = time.monotonic()
        refused = _run_cli(spec_path, gcs, env, timeout=120)
        assert refused.returncode == 2, refused.stderr
        assert "RAY_AUTH_TOKEN" in refused.stderr and gcs in refused.stderr and "Traceback" not in refused.stderr
        assert time.monotonic() - began < 60  # Ray alone retried for 20 s, then a bare ConnectionError
    assert not (tmp_path / "authed.zarr").exists()

    done = _run_cli(spec_path, gcs, _cli_env(tmp_path / "home", RAY_AUTH_TOKEN=TOKEN), timeout=300)
    assert done.returncode == 0, done.stderr
    assert open_results(tmp_path / "authed.zarr").is_complete

    # Ray Client (ray://) takes the token the same way
    probe = ("import ray; from workers.driver import connect_ray; connect_ray(__import__('sys').argv[1], "
             "logging_level='ERROR'); print(ray.get(ray.remote(lambda: 41).remote()) + 1)")
    joined = subprocess.run([sys.executable, "-c", probe, client], capture_output=True, text=True, timeout=120,
                            env=_cli_env(tmp_path / "home", RAY_AUTH_TOKEN=TOKEN))
    assert joined.returncode == 0 and joined.stdout.strip().endswith("42"), joined.stderr
