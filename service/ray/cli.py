"""``dnabert-serve ray``: deploy the service on a Ray cluster and stay in the foreground.

    dnabert-serve ray [--address HOST:PORT] [--replicas N | --min-replicas A --max-replicas B]
                      [--host H] [--port P] [--num-cpus C] [--num-gpus G] [--models-dir DIR] ...

With ``--address`` it connects to a running cluster (``ray start --head`` there first); without,
it starts a local one on 127.0.0.1 for this machine. It starts Serve's HTTP proxy on
``--host``/``--port`` (every node of the cluster gets one), deploys the application, waits until
every replica has loaded and warmed up its models, prints where it serves, and stays in the
foreground like ``serve run``: Ctrl-C or SIGTERM deletes the application (and stops the local
cluster it started). ``DNABERT_*`` variables of this process are passed to the replicas.

Ray is imported only when the command runs (the ``ray`` extra).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid

from pydantic import ValidationError

from service.ray.config import RayConfig, forwarded_environment
from service.settings import Settings


def add_parser(sub) -> None:
    s = sub.add_parser("ray", help="serve on a Ray cluster with Ray Serve: replicas, autoscaling, GPUs "
                                   "(needs the ray extra)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--address", help="HOST:PORT of a running Ray cluster's head (or 'auto' for the one on this "
                                     "machine); default: start a local cluster on 127.0.0.1")
    s.add_argument("--host", help="where Serve's HTTP proxy listens (default: DNABERT_HOST, else 0.0.0.0)")
    s.add_argument("--port", type=int, help="Serve's HTTP port (default: DNABERT_PORT, else 8000)")
    s.add_argument("--app-name", default="dnabert", help="Serve application name (default: dnabert)")
    s.add_argument("--replicas", type=int, default=1, help="fixed number of replicas (default: 1)")
    s.add_argument("--min-replicas", type=int, help="autoscaling: fewest replicas (default 1)")
    s.add_argument("--max-replicas", type=int, help="autoscaling: most replicas; giving it turns autoscaling on")
    s.add_argument("--target-ongoing-requests", type=float, default=16.0,
                   help="autoscaling: ongoing requests per replica aimed at (default 16)")
    s.add_argument("--upscale-delay-s", type=float, default=30.0)
    s.add_argument("--downscale-delay-s", type=float, default=300.0)
    s.add_argument("--metrics-interval-s", type=float, default=10.0,
                   help="autoscaling: how often replicas report their load (default 10)")
    s.add_argument("--look-back-period-s", type=float, default=30.0,
                   help="autoscaling: the window the load is averaged over (default 30)")
    s.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica, fractions allowed "
                                                               "(default 1)")
    s.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs per replica, e.g. 0.5: two replicas share a GPU; > 0 serves on CUDA (default 0)")
    s.add_argument("--max-ongoing-requests", type=int, default=64,
                   help="requests one replica holds at once (default 64)")
    s.add_argument("--max-queued-requests", type=int, default=256,
                   help="requests waiting for a replica per proxy before 429 (default 256; -1: no limit)")
    s.add_argument("--batching", choices=["dynamic", "serve"], default="dynamic",
                   help="dynamic: the service's batcher (default); serve: Ray's @serve.batch (comparison)")
    s.add_argument("--models-dir")
    s.add_argument("--device", choices=["auto", "cpu", "gpu"])
    s.set_defaults(func=cmd_ray)


def config_from(args) -> RayConfig:
    overrides = {}
    if args.models_dir:
        overrides["models_dir"] = args.models_dir
    if args.device:
        overrides["device"] = args.device
    autoscale = args.max_replicas is not None
    return RayConfig(
        app_name=args.app_name, replicas=args.replicas, min_replicas=args.min_replicas if autoscale else None,
        max_replicas=args.max_replicas, target_ongoing_requests=args.target_ongoing_requests,
        upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s,
        metrics_interval_s=args.metrics_interval_s, look_back_period_s=args.look_back_period_s,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests, batching=args.batching,
        env=forwarded_environment(), settings=overrides)


def cmd_ray(args) -> int:
    # A local cluster's own token is set up before Ray is imported: Ray reads RAY_AUTH_* once, at
    # import, and a driver that read none cannot talk to a cluster started with a token.
    token_dir = _private_token() if not args.address else None
    try:
        return _deploy(args)
    finally:
        if token_dir is not None:
            shutil.rmtree(token_dir, ignore_errors=True)


def _deploy(args) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        print("dnabert-serve: error: Ray Serve is not installed; install the ray extra: "
              "pip install 'dnabert-serve[ray]' (with the cpu or gpu extra)", file=sys.stderr)
        return 2
    from service.ray.app import application

    try:
        config = config_from(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"dnabert-serve: error: {'.'.join(map(str, first['loc'])) or 'options'}: {first['msg']}",
              file=sys.stderr)
        return 2
    defaults = Settings()
    host = args.host or defaults.host
    port = args.port or defaults.port

    local = not args.address
    try:
        if local:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level="warning")
        else:
            ray.init(address=args.address, logging_level="warning")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"dnabert-serve: error: cannot {'start a local Ray cluster' if local else 'connect to ' + args.address}:"
              f" {exc}", file=sys.stderr)
        return 2
    # after ray.init, which installs handlers of its own
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = False
    try:
        serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": int(defaults.keep_alive_s)})
        where = "a local Ray cluster" if local else f"the Ray cluster at {args.address}"
        replicas = (f"{config.min_replicas or 1}-{config.max_replicas} replicas (autoscaling)" if config.autoscaling
                    else f"{config.replicas} replica{'s' if config.replicas != 1 else ''}")
        print(f"dnabert-serve: deploying {args.app_name} on {where}: {replicas}, "
              f"{config.num_gpus or config.num_cpus} {'GPU' if config.num_gpus else 'CPU'} each", flush=True)
        t0 = time.monotonic()
        try:
            serve.run(application(config), name=config.app_name, route_prefix=config.route_prefix, blocking=False)
        except Exception as exc:  # noqa: BLE001 - Serve reports a failed deploy with several types
            print(f"dnabert-serve: error: the deployment failed: {exc}", file=sys.stderr)
            return 3
        started = True
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        print(f"dnabert-serve: serving on http://{host}:{port} (API docs: http://{shown}:{port}/docs), ready in "
              f"{time.monotonic() - t0:.0f} s; Ctrl-C stops", flush=True)
        while not stop.wait(1.0):
            pass
        return 0
    finally:
        if started:
            print("dnabert-serve: deleting the application", file=sys.stderr, flush=True)
            try:
                serve.delete(config.app_name)
            except Exception as exc:  # noqa: BLE001 - the cluster may be gone already
                print(f"dnabert-serve: could not delete {config.app_name}: {exc}", file=sys.stderr)
        if local:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        else:
            ray.shutdown()


def _private_token() -> str | None:
    """A local cluster of this command gets token authentication with a token of its own, in a
    temporary folder removed at exit, unless ``RAY_AUTH_*`` say otherwise (Ray's default would
    write ``~/.ray/auth_token``, which every later cluster of this user then takes up)."""
    if any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return None
    folder = tempfile.mkdtemp(prefix="dnabert-ray-")
    token = os.path.join(folder, "auth_token")
    with open(os.open(token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(uuid.uuid4().hex)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token})
    return folder
