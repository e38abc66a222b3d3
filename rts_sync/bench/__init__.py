"""rts-bench: throughput, latency, fan-out, idle-cost and server-capacity workloads for rts_sync,
optionally side by side with paho-mqtt through a mosquitto broker (``--compare mqtt``).

Run ``rts-bench --help`` (or ``python -m rts_sync.bench``); the figures and how to reproduce
them are in docs/performance.md. Needs the optional extra ``bench`` (``pip install
'rts_sync[bench]'``: aiohttp for the server it starts, paho-mqtt for the comparison) and, for
``--compare mqtt``, the mosquitto broker (Debian: ``apt-get install mosquitto``); ``--plot``
needs matplotlib.
"""

__all__ = ["main"]


def main() -> int:
    """The ``rts-bench`` console script."""
    from .__main__ import main as _main

    return _main()
