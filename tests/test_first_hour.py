"""What a new user meets in the first hour: errors are one line that says what to do.

Each case runs the real command (or the library call) and checks for one
line, no traceback, and the documented exit code (docs/cli.md, "Exit codes").
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from bqspool.buffer import Buffer

from .loader_support import BQSPOOL
from .loader_support import run_in as run


def one_line(res) -> str:
    """The one line a failed command printed on stderr."""
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_an_unknown_stream_says_the_nearest_one_and_keeps_the_event(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bqspool.buffer"), Buffer(tmp_path / "b.db", "leafloaf") as buf:
        buf.append("user_serach_events", {"query": "x"})
        (dead,) = buf.dead_letters()
    want = "unknown stream 'user_serach_events' (did you mean user_search_events?)"
    assert want in dead["reason"]
    assert any(want in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_usage_errors_exit_2_and_nothing_else_does(tmp_path):
    res = run(["drain", "--no-such-flag"], tmp_path)
    assert res.returncode == 2 and "No such option" in res.stderr
    from bqspool.loader import exit_codes

    ours = [code for code, _ in exit_codes.TABLE if code != exit_codes.USAGE]
    assert exit_codes.USAGE == 2 and 2 not in ours and len(set(ours)) == len(ours)


def no_google_env(tmp_path) -> dict:
    """An environment with no Google credentials anywhere and no local stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BQSPOOL_", "GOOGLE_", "CLOUDSDK_"))}
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.pop("BIGQUERY_EMULATOR_HOST", None)
    env.update(HOME=str(tmp_path), NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9")
    return env


def test_no_google_credentials_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / "bqspool.toml").write_text('schemas = "leafloaf"\nproject = "p-x"\ndataset = "d"\nbucket = "some-b"\n')
    for args in (["setup"], ["drain"], ["commit"]):
        res = subprocess.run(
            [BQSPOOL, *args], capture_output=True, text=True, env=no_google_env(tmp_path), cwd=tmp_path, timeout=120
        )
        assert res.returncode == 1, (args, res.stderr)
        line = one_line(res)
        assert "no Google credentials" in line and "gcloud auth application-default login" in line
        assert 'eval "$(bqspool local up)"' in line


def test_a_missing_bucket_is_named_before_anything_says_ready(stack, tmp_path):
    env = {"BQSPOOL_BUCKET": "no-such-bucket-here", "BQSPOOL_SCHEMAS": "leafloaf", "BQSPOOL_DATASET": "d_missing"}
    env.update({k: v for k, v in os.environ.items() if k in ("BQSPOOL_PROJECT", "BQSPOOL_LOCATION")})
    res = run(["setup"], tmp_path, env=env)
    assert res.returncode == 1 and res.stdout == "", res.stdout  # nothing was said to be ready
    assert one_line(res) == "error: bucket no-such-bucket-here does not exist (create it, or set bucket)"
    with Buffer(tmp_path / "b.db", "leafloaf") as buf:
        buf.append("user_search_events", {"user_id": "u", "query": "q", "timestamp": 1_700_000_000})
    res = run(["ship", "--buffer", str(tmp_path / "b.db")], tmp_path, env=env)
    assert res.returncode == 1
    assert one_line(res) == "error: bucket no-such-bucket-here does not exist (create it, or set bucket)"


def test_a_missing_dataset_is_one_line_that_says_run_setup(stack, tmp_path):
    env = {"BQSPOOL_SCHEMAS": "leafloaf", "BQSPOOL_DATASET": "never_created"}
    env.update({k: v for k, v in os.environ.items() if k in ("BQSPOOL_PROJECT", "BQSPOOL_LOCATION")})
    res = run(["query", "recent-activity"], tmp_path, env=env)
    assert res.returncode == 1
    line = one_line(res)
    assert line.startswith("error: dataset ") and "never_created does not exist in location US" in line, line
    assert "(run `bqspool setup`, or set dataset and location to the dataset's)" in line


def test_an_unreachable_endpoint_is_named_once_with_a_hint_and_each_wait_said(tmp_path):
    env = {
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9",
        "BQSPOOL_BUCKET": "some-bucket",
        "BQSPOOL_PROJECT": "p-x",
        "BQSPOOL_SCHEMAS": "leafloaf",
        "BQSPOOL_RETRY_INITIAL": "1",
        "BQSPOOL_RETRY_MAXIMUM": "2",
        "BQSPOOL_RETRY_DEADLINE": "6",
    }
    with Buffer(tmp_path / "b.db", "leafloaf") as buf:
        buf.append("user_search_events", {"user_id": "u", "query": "q", "timestamp": 1_700_000_000})
    res = run(["ship", "--buffer", str(tmp_path / "b.db")], tmp_path, env=env)
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    first = [x for x in res.stderr.splitlines() if "retrying for up to 6s" in x]
    assert len(first) == 1 and "cannot reach 127.0.0.1:9 (the local stack: is it running?" in first[0], res.stderr
    assert "still failing after" in res.stderr  # the wait is said, not silent
    assert "nothing was lost" in res.stderr


def test_config_show_aligns_every_key_as_the_file_spells_it(tmp_path):
    (tmp_path / "bqspool.toml").write_text('schemas = "eixa"\n[ship]\nmax_delay = "4m"\n')
    res = run(["config", "show"], tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(x.startswith("ship.max_delay ") and "4m" in x and x.endswith("(bqspool.toml)") for x in lines)
    sources = {x.rindex("(") for x in lines if len(x) - x.rindex("(") < 40}  # where the source column starts
    values = {len(x) - len(x[x.index(" ") :].lstrip()) for x in lines}  # where the value column starts
    assert len(values) == 1, res.stdout
    assert len(sources) <= 2, res.stdout  # values longer than the column push only their own source


# Response bodies as Google sends them (the errors' message and reason), one per kind of
# refusal no retry and no role of bqspool's fixes.
DENIALS = [
    (
        "Forbidden",
        "VPC Service Controls: Request is prohibited by organization's policy. "
        "vpcServiceControlsUniqueIdentifier: XlFLBBM_Wstu6u3Qn5s1K",
        "vpcServiceControls",
        "VPC Service Controls refused the request",
    ),
    (
        "Forbidden",
        "BigQuery API has not been used in project 1234 before or it is disabled. Enable it by visiting "
        "https://console.developers.google.com/apis/api/bigquery.googleapis.com/overview?project=1234 then retry.",
        "accessNotConfigured",
        "BigQuery is disabled in project 1234: gcloud services enable bigquery.googleapis.com",
    ),
    (
        "Forbidden",
        "Billing has not been enabled for this project. Enable billing at https://console.cloud.google.com/billing.",
        "billingNotEnabled",
        "billing is disabled for the project",
    ),
    (
        "BadRequest",
        "Constraint constraints/gcp.restrictNonCmekServices violated for projects/p attempting to create a "
        "table without a customer-managed encryption key.",
        "invalid",
        "(constraints/gcp.restrictNonCmekServices) requires customer-managed encryption keys",
    ),
]


@pytest.mark.parametrize(("kind", "message", "reason", "said"), DENIALS, ids=[d[2] for d in DENIALS])
def test_a_denial_is_one_line_naming_its_cause_and_fix(kind, message, reason, said, caplog):
    from bqspool.loader.backends.google_clients import retry_policy
    from bqspool.loader.config import Config
    from bqspool.schemas.errors import ConfigError
    from google.api_core import exceptions as gexc

    exc = getattr(gexc, kind)(message, errors=[{"reason": reason, "message": message}])

    def refused():
        raise exc

    with caplog.at_level(logging.DEBUG, logger="bqspool.loader"), pytest.raises(ConfigError) as got:
        retry_policy(Config(retry_deadline=1.0)).call("load a job", refused)
    assert said in str(got.value) and "\n" not in str(got.value)
    assert message[:40] in caplog.text  # the raw response, at debug level
