"""The `numcast` command: `control`, `worker`, `up` and `tail`.

This is the process entry point, and the only place that may monkey-patch: it must happen before anything
imports socket or threading, so this module imports nothing else at the top.
"""

import importlib
import os
import sys

USAGE = """usage: numcast {control,worker,alerter,up,tail,relay} [options]

  control   run the control-plane (configured by env vars; see docs/configuration.md)
  worker    run a worker (configured by env vars; see docs/configuration.md)
  alerter   run the alerter: rules on the stream, alerts to Alertmanager and the dashboards (see docs/monitoring.md)
  up        run the whole pipeline locally: Redis, the control-plane, two workers and the alerter
  tail      print the channel's messages, decoded (like `redis-cli subscribe numbers`)
  relay     scrape a Prometheus exporter on a schedule and push what matches to the control-plane (docs/push.md)

`numcast up --help`, `numcast tail --help` and `numcast relay --help` list their options."""


# The long-running services: each package has `Settings`, `create_app(settings)` and `socketio`.
SERVICES = {"control": "numcast_control", "worker": "numcast_worker", "alerter": "numcast_alerter"}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    if command in SERVICES:
        if len(argv) > 1:
            print(
                f"numcast {command} takes no arguments; it is configured by env vars (see docs/configuration.md)",
                file=sys.stderr,
            )
            return 2
        if os.environ.get("ASYNC_MODE", "eventlet").strip().lower() in ("eventlet", ""):
            import warnings

            # Eventlet warns on import that it is in maintenance mode; docs/configuration.md says so and why we stay.
            warnings.filterwarnings("ignore", message="\nEventlet is deprecated")
            import eventlet

            eventlet.monkey_patch()
        return _serve(command)
    if command == "up":
        from numcast import stack

        return stack.main(argv[1:])
    if command == "tail":
        from numcast import tail

        return tail.main(argv[1:])
    if command == "relay":
        from numcast.push import relay

        return relay.main(argv[1:])
    print(USAGE, file=sys.stderr if command not in ("-h", "--help") else sys.stdout)
    return 0 if command in ("-h", "--help") else 2


def _serve(command: str) -> int:
    from numcast import logs, serve
    from numcast.settings import SettingsError, from_env

    package = importlib.import_module(SERVICES[command])
    try:
        settings = from_env(package.Settings)
    except SettingsError as exc:
        print(f"numcast {command}: invalid setting {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, getattr(settings, "worker_name", command))
    try:
        app = package.create_app(settings)
    except SettingsError as exc:  # a setting that names a file, checked when the service reads it (ALERT_RULES)
        print(f"numcast {command}: invalid setting {exc}", file=sys.stderr)
        return 2
    try:
        serve.run(app, package.socketio, settings.host, settings.port)
    except OSError as exc:
        print(f"numcast {command}: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
