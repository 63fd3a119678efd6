"""`zenml-compute-engines`: set this package up in a ZenML repository.

    zenml-compute-engines register      # every flavor of ours, idempotently; where pyspark
                                        # is installed, also the Spark class archive

(also `python -m zenml_compute_engines register`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import List, Optional


def register(record_class_archive: bool = True) -> int:
    """Register our flavors in the active ZenML store and, where pyspark is installed,
    record the Spark driver's class archive so that the first pipeline run starts as fast
    as later ones."""
    from zenml.client import Client

    from zenml_compute_engines.flavors.registration import FlavorNameTaken, register_flavors

    client = Client()
    where = client.root or "the global ZenML configuration (no `zenml init` here)"
    print(f"Registering the compute-engine flavors in {where} (store: {client.zen_store.url}):")
    try:
        done = register_flavors()
    except FlavorNameTaken as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for registration in done:
        print(f"  feature_store flavor {registration}")
    print(
        "Next: register a component, e.g. `zenml feature-store register spark_local --flavor=spark`, "
        "and put it on a stack (`zenml stack update -f spark_local`)."
    )
    if not record_class_archive:
        return 0
    if importlib.util.find_spec("pyspark") is None:
        print("pyspark is not installed here: no Spark class archive to record.")
        return 0
    from zenml_compute_engines.flavors.spark.class_cache import record

    return 0 if record() else 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zenml-compute-engines", description="Set up the compute-engine flavors in a ZenML repository."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    registering = commands.add_parser(
        "register",
        help="register every flavor of this package (idempotent) and record the Spark class archive",
    )
    registering.add_argument(
        "--no-class-archive", action="store_true", help="do not record the Spark driver's class archive"
    )
    arguments = parser.parse_args(argv)
    return register(record_class_archive=not arguments.no_class_archive)


if __name__ == "__main__":
    sys.exit(main())
