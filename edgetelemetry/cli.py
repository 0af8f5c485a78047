"""The ``edgetelemetry`` command: the demo, the self-hosted endpoint and its fleet view, and the
overhead benchmark.  Library users import ``edgetelemetry``; this is the operator's side."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

DESCRIPTION = """\
Per-inference telemetry for edge devices.  A program records each inference with the
edgetelemetry library (Python, or C/C++ through the native SDK); an agent closes a window
every interval, keeps it in a durable spool on the device and sends it as SageMaker Edge
Manager SendHeartbeat requests to an endpoint.  This command runs the device agent that every
process of a device records into, the demo, the self-hosted Edge Manager endpoint and its
fleet view, and the overhead benchmark."""

EPILOG = """\
examples:
  edgetelemetry demo --seconds 20          the main job on loopback: workload, agent, endpoint
  edgetelemetry agent --config agent.json  the device agent: every process records into it
  edgetelemetry serve --credentials-file keys.json --store fleet.sqlite3
  edgetelemetry fleet status --store fleet.sqlite3
  edgetelemetry store migrate --store postgresql://edge@db/fleet
  edgetelemetry bench --quick

'edgetelemetry COMMAND --help' describes each command."""

# Subcommands with their own parser: everything after the name is theirs (``--help`` included).
# Their modules are imported only when they run.


def _serve(argv: Sequence[str]) -> int:
    from .server import main as serve_main

    return serve_main(argv)


def _register(argv: Sequence[str]) -> int:
    from .server import register_main

    return register_main(argv)


def _fleet_status(argv: Sequence[str]) -> int:
    from .server.cli import fleet_status_main

    return fleet_status_main(argv)


def _agent(argv: Sequence[str]) -> int:
    from .agent.daemon import main as agent_main

    return agent_main(argv)


def _store_migrate(argv: Sequence[str]) -> int:
    from .server.store_cli import migrate_main

    return migrate_main(argv)


def _store_compact(argv: Sequence[str]) -> int:
    from .server.store_cli import compact_main

    return compact_main(argv)


def _bench(argv: Sequence[str]) -> int:
    from .bench import main as bench_main

    return bench_main(list(argv))


_DELEGATED: dict[tuple[str, ...], Callable[[Sequence[str]], int]] = {
    ("agent",): _agent,
    ("bench",): _bench,
    ("serve",): _serve,
    ("register",): _register,
    ("fleet", "status"): _fleet_status,
    ("store", "migrate"): _store_migrate,
    ("store", "compact"): _store_compact,
}


def _delegated(argv: Sequence[str]) -> tuple[Callable[[Sequence[str]], int], list[str]] | None:
    for words, run in _DELEGATED.items():
        if tuple(argv[: len(words)]) == words:
            return run, list(argv[len(words) :])
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    words = list(argv)
    verbose = False
    while words and words[0] in ("-v", "--verbose"):  # the one option placed before a command
        verbose, words = True, words[1:]
    delegated = _delegated(words)
    if delegated is not None:
        run, rest = delegated
        if verbose:
            logging.basicConfig(
                level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
        return run(rest)

    parser = argparse.ArgumentParser(
        prog="edgetelemetry",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"edgetelemetry {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="the main job: an instrumented inference loop reporting to a local endpoint"
    )
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (20)")
    demo.add_argument("--keep", metavar="DIR", help="keep the endpoint store and spool in DIR")
    commands.add_parser(
        "agent",
        help="run the device agent every process records into (see 'agent --help')",
    )
    commands.add_parser(
        "serve", help="run the self-hosted Edge Manager endpoint (see 'serve --help')"
    )
    commands.add_parser(
        "register", help="apply a registry document to an endpoint's store (see 'register --help')"
    )
    commands.add_parser(
        "bench", help="measure the overhead on this machine (see 'bench --help')"
    )
    fleet = commands.add_parser(
        "fleet",
        help="the fleet as an endpoint's store knows it (see 'fleet status --help')",
        description="The fleet as a self-hosted endpoint's store knows it.",
    )
    fleet_commands = fleet.add_subparsers(dest="fleet_command", metavar="COMMAND")
    fleet_commands.add_parser(
        "status",
        help="devices connected or offline, models active, latency (see 'fleet status --help')",
    )
    store = commands.add_parser(
        "store",
        help="upkeep of an endpoint's store: migrate, compact (see 'store migrate --help')",
        description="Upkeep of a self-hosted endpoint's store (SQLite file or PostgreSQL).",
    )
    store_commands = store.add_subparsers(dest="store_command", metavar="COMMAND")
    store_commands.add_parser(
        "migrate", help="upgrade the store's schema to this version (see 'store migrate --help')"
    )
    store_commands.add_parser(
        "compact",
        help="roll old heartbeats up into hourly aggregates, drop expired ones "
        "(see 'store compact --help')",
    )

    args = parser.parse_args(argv)
    if args.command is None:  # nothing to do: say what there is
        parser.print_help()
        return 2
    if args.command == "fleet":  # a fleet command of its own would have been delegated
        fleet.print_help()
        return 2
    if args.command == "store":
        store.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from . import demo as demo_module

        if not 0 < args.seconds <= 3600:
            parser.error("--seconds must be in (0, 3600]")
        return demo_module.main(seconds=args.seconds, keep=args.keep)
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
