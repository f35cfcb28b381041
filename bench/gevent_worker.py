"""`numcast worker` under gevent, for `bench/clients.py --gevent` only: gevent is measured, not a supported mode.

It builds the worker exactly as `numcast worker` does, with Flask-SocketIO's gevent mode (gevent's WSGI server,
WebSockets through simple-websocket), and serves until killed: a bench needs no graceful shutdown.
"""

from gevent import monkey

monkey.patch_all()  # first, before anything imports socket or threading

import dataclasses  # noqa: E402
import os  # noqa: E402

import numcast_worker  # noqa: E402
from numcast import logs  # noqa: E402
from numcast.settings import from_env  # noqa: E402


def main() -> None:
    """Serve a worker configured by the environment, in gevent mode."""
    os.environ["ASYNC_MODE"] = "threading"  # passes validation; replaced just below
    settings = dataclasses.replace(from_env(numcast_worker.Settings), async_mode="gevent")
    logs.setup(settings.log_level, settings.worker_name)
    app = numcast_worker.create_app(settings)
    app.extensions["numcast"].start(numcast_worker.socketio)
    numcast_worker.socketio.run(app, host=settings.host, port=settings.port, log_output=False)


if __name__ == "__main__":
    main()
