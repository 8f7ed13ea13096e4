"""CLI verbs of the service: ``screening serve``, ``submit``, ``status``, ``cancel``, ``resume``, and the
server mode of ``query`` and ``export`` (``--server URL``; token from ``--token-file`` or ``$SCREENING_TOKEN``).

Registered by :func:`screening.cli._parser` through :func:`add_service_commands`; nothing heavy is
imported until a verb runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Callable

from screening.core.errors import ScreeningError

__all__ = ["add_service_commands"]

SERVER_ENV = "SCREENING_SERVER"


class ClientSetupError(ScreeningError, ValueError):
    """No server or no token given for a server-mode command."""


def _token(args: argparse.Namespace) -> str:
    if getattr(args, "token_file", None):
        from screening.service.auth import read_token_file

        path = Path(args.token_file)
        if not path.is_file():
            raise ClientSetupError(f"--token-file {path} does not exist")
        tokens = read_token_file(path)
        if not tokens:
            raise ClientSetupError(f"--token-file {path} holds no token")
        return tokens[0]
    token = os.environ.get("SCREENING_TOKEN")
    if not token:
        raise ClientSetupError("no token: give --token-file FILE or set SCREENING_TOKEN")
    return token


def _client(args: argparse.Namespace):
    from screening.client import Client

    server = args.server or os.environ.get(SERVER_ENV)
    if not server:
        raise ClientSetupError(f"no server: give --server URL or set {SERVER_ENV}")
    return Client(server, _token(args))


def _server_options(parser: argparse.ArgumentParser, required_help: str = "") -> None:
    parser.add_argument("--server", help=f"service URL (default ${SERVER_ENV}){required_help}")
    parser.add_argument("--token-file", help="file holding the bearer token (default $SCREENING_TOKEN)")


def _print_status(status: dict) -> None:
    progress = status.get("progress") or {}
    line = f"{status['id']}  {status['name']}  {status['state']}"
    if progress.get("units_total"):
        line += f"  {progress['units_done']}/{progress['units_total']} units"
        if progress.get("perturbations_total"):
            line += f", {progress['perturbations_done']:,}/{progress['perturbations_total']:,} perturbations"
        if progress.get("rate"):
            line += f", {progress['rate']:.2f}/s"
        if progress.get("eta_s"):
            line += f", ETA {progress['eta_s']:.0f} s"
    print(line)
    for error in status.get("errors") or []:
        print(f"  error: {error}")


# --------------------------------------------------------------------------- verbs


def cmd_serve(args: argparse.Namespace) -> int:
    """Start Ray (or join ``--address``) and serve the API until interrupted."""
    import ray
    from ray import serve

    from screening.service.app import build_app
    from screening.service.config import ServiceConfig

    settings = {
        "store_roots": args.store_root, "input_roots": args.input_root, "token_file": args.token_file,
        "registry": args.registry, "max_perturbations": args.max_perturbations,
    }
    settings = {k: v for k, v in settings.items() if v}
    app = build_app(settings)  # settings errors before Ray starts
    app_config = ServiceConfig.from_args(settings)
    if args.address:
        from workers.driver import connect_ray

        # an unreachable cluster fails in seconds, not minutes; a token-auth one takes RAY_AUTH_TOKEN
        connect_ray(args.address, field="--address", logging_level="WARNING")
    else:
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app, name="screening", route_prefix="/")
    print(f"screening service on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a TERM stops the screens as Ctrl-C does
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        _stop_screens(app_config.namespace)
        serve.shutdown()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_screens(namespace: str) -> None:
    """Kill the running screens' drivers (their workers die with them) and the job manager, which are
    detached and would otherwise outlive the service; the screens stay resumable (``interrupted``)."""
    import ray

    from screening.service.jobs import MANAGER_NAME

    try:
        manager = ray.get_actor(MANAGER_NAME, namespace=namespace)
    except ValueError:
        return  # no screen was ever submitted
    try:
        stopped = ray.get(manager.shutdown.remote(), timeout=60)
        print(f"stopped {stopped} running screen(s); resume them after the next start", flush=True)
    finally:
        ray.kill(manager, no_restart=True)


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a spec file; with ``--wait``, follow it to the end."""
    client = _client(args)
    screen = client.submit(args.config)
    print(f"submitted {screen.id} ({screen.last_status['n_perturbations']:,} perturbations, store {screen.last_status['store']})")
    if args.wait:
        status = screen.wait(progress=not args.no_progress)
        _print_status(status)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One screen's status, or the list of screens."""
    client = _client(args)
    statuses = [client.screen(args.screen).last_status] if args.screen else client.screens(state=args.state)
    if args.json:
        print(json.dumps(statuses[0] if args.screen else statuses, indent=2))
        return 0
    for status in statuses:
        _print_status(status)
    if not statuses:
        print("(no screens)")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a running screen."""
    status = _client(args).screen(args.screen).cancel()
    _print_status(status)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume a cancelled, failed or interrupted screen."""
    status = _client(args).screen(args.screen).resume()
    _print_status(status)
    return 0


def cmd_query_remote(args: argparse.Namespace) -> int:
    """``query`` against a service: the ``store`` argument is a screen id (``--motifs`` refused: it reads the store
    and the genome locally)."""
    from screening.cli.query import print_frame
    from screening.store.reader import dataset_to_frame

    if getattr(args, "motifs", False):
        from screening.interpret.motifs.core import MotifError

        raise MotifError("--motifs reads the store and genome locally; it cannot be used with --server")

    ds = _client(args).screen(args.store).query(args.region, analysis=args.analysis)
    frame = dataset_to_frame(ds)
    print_frame(frame, args.format)
    return 0


def cmd_export_remote(args: argparse.Namespace) -> int:
    """``export`` against a service: the ``store`` argument is a screen id."""
    from screening.store.export import export_format

    out = Path(args.output)
    fmt = export_format(out, args.format)
    screen = _client(args).screen(args.store)
    writer = screen.to_bigwig if fmt == "bigwig" else screen.to_bedgraph
    writer(out, score=args.score, analysis=args.analysis, region=args.region)
    print(f"wrote {fmt} of {args.score or 'the first score'} to {out}")
    return 0


def _either(remote: Callable[[argparse.Namespace], int], local: Callable[[argparse.Namespace], int]):
    def run(args: argparse.Namespace) -> int:
        return remote(args) if args.server else local(args)

    run.__doc__ = local.__doc__
    return run


def add_service_commands(sub, query: argparse.ArgumentParser, export: argparse.ArgumentParser) -> None:
    """Add the service verbs to the ``screening`` parser, and ``--server`` to ``query`` and ``export``."""
    serve = sub.add_parser("serve", help="run the screening service (Ray Serve + FastAPI) on this machine or a Ray cluster")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--store-root", action="append", help="where stores may live (repeatable; default $SCREENING_STORE_ROOTS)")
    serve.add_argument("--input-root", action="append", help="where spec inputs may be read (repeatable; default: the store roots)")
    serve.add_argument("--token-file", help="bearer tokens, one per line (default $SCREENING_TOKEN_FILE; or $SCREENING_API_TOKENS)")
    serve.add_argument("--registry", help="where job records are kept (default <first store root>/.screening-jobs)")
    serve.add_argument("--max-perturbations", type=int, help="largest screen accepted")
    serve.add_argument("--address", help="Ray cluster address, or auto for the one on this machine (default: start a new "
                       "local Ray); a cluster with token authentication takes its token from $RAY_AUTH_TOKEN")
    serve.set_defaults(func=cmd_serve)

    submit = sub.add_parser("submit", help="submit a spec to a screening service")
    submit.add_argument("config", help="screen spec (YAML or JSON); its paths are paths on the server")
    _server_options(submit)
    submit.add_argument("--wait", action="store_true", help="follow the screen until it ends")
    submit.add_argument("--no-progress", action="store_true")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="status of a screen of a service (or all screens)")
    status.add_argument("screen", nargs="?", help="screen id (default: list the screens)")
    status.add_argument("--state", help="list only screens in this state")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    _server_options(status)
    status.set_defaults(func=cmd_status)

    for verb, func, text in (("cancel", cmd_cancel, "cancel a running screen"),
                             ("resume", cmd_resume, "resume a cancelled, failed or interrupted screen")):
        parser = sub.add_parser(verb, help=text)
        parser.add_argument("screen", help="screen id")
        _server_options(parser)
        parser.set_defaults(func=func)

    for parser, remote in ((query, cmd_query_remote), (export, cmd_export_remote)):
        parser.add_argument("--server", help="query a screening service instead: STORE is then a screen id")
        parser.add_argument("--token-file", help="with --server: file holding the bearer token (default $SCREENING_TOKEN)")
        parser.set_defaults(func=_either(remote, parser.get_default("func")))
