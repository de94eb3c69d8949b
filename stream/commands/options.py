"""Options and help formatting every command group shares: the Kafka connection (-b, -X)."""

from __future__ import annotations

import argparse
import os


def kafka_args(p: argparse.ArgumentParser, bootstrap_required: bool = True, nested: bool = False) -> None:
    """-b and -X. ``nested``: a sub-action's copies (`topics describe -b B`), which set a value only
    when given, so the same options given before the action (`topics -b B describe`) still count."""
    env = os.environ.get("SEQSENTRY_BOOTSTRAP")
    p.add_argument("--bootstrap", "-b", required=bootstrap_required and not env and not nested,
                   default=argparse.SUPPRESS if nested else env, help="Kafka bootstrap servers (env SEQSENTRY_BOOTSTRAP)")
    p.add_argument("-X", dest="kafka_options", action="append", default=argparse.SUPPRESS if nested else [],
                   metavar="KEY=VALUE",
                   help="librdkafka setting passed through, e.g. -X security.protocol=SASL_SSL (repeatable)")


def kafka_options(args: argparse.Namespace) -> dict[str, str]:
    from stream import kafka

    return kafka.parse_options(args.kafka_options)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends in its default, unless argparse's default is no value at all
    (None, an empty list): there "(default: None)" would be wrong for `run`'s settings, whose
    real defaults apply after SEQSENTRY_* and --config, and their help states them itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)
