"""``bqspool doctor``: can this host, with this configuration, do its job?"""

from __future__ import annotations

import json
import sys

import click

from .base import EXIT_ERROR, main, role_option, settings


@main.command()
@role_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the checks, and whether any failed.")
def doctor(role: str, as_json: bool) -> None:
    """Check credentials, the bucket (location, soft delete), IAM permissions, the clock,
    the dataset and its tables, the load-job quota and the buffer, one line each with
    what to do when it fails. Changes nothing. Exits 0 when nothing failed (warnings
    allowed), 1 otherwise."""
    from ..clients import make_doctor
    from ..operate.doctor import failed

    cfg = settings()
    cfg.require("bucket", *(("project", "dataset") if role != "ship" else ()))
    found = make_doctor(cfg, role).run()
    bad = failed(found)
    if as_json:
        click.echo(json.dumps({"role": role, "ok": not bad, "checks": [c.as_dict() for c in found]}, indent=2))
    else:
        for c in found:
            click.echo(c.line())
    sys.exit(EXIT_ERROR if bad else 0)
