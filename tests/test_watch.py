"""monitor's rules and notifications, the metrics, the logs and the status page."""

import dataclasses
import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from bqspool.buffer import Buffer
from bqspool.loader.backends.webhook import Webhook
from bqspool.loader.clients import make_object_store, make_warehouse
from bqspool.loader.interfaces import QueryStat, TableStorage
from bqspool.loader.retry import RetryPolicy
from bqspool.loader.testing import MemoryObjectStore, MemoryWarehouse
from bqspool.loader.watch.cycle import cycle
from bqspool.loader.watch.monitor import Monitor
from bqspool.schemas import load_schema_set

from .loader_support import Env

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"


class Receiver:
    """A webhook on loopback that keeps what it is sent; ``fail_first`` POSTs answer 500."""

    def __init__(self, fail_first: int = 0):
        self.notes: list[dict] = []
        self.failed = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.failed < fail_first:
                    outer.failed += 1
                    self.send_response(500)
                else:
                    outer.notes.append(body)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def by_key(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in self.notes:
            out.setdefault(n["alert"]["key"], []).append(n["status"])
        return out


def task(i: int) -> dict:
    return {"user_id": "u1", "task_id": f"t{i}", "created_at": NOW.isoformat()}


def interaction(i: int, error_code=None) -> dict:
    return {
        "user_id": "u1",
        "interaction_id": f"i{i}",
        "timestamp": NOW.isoformat(),
        "error_code": error_code,
    }


def test_every_rule_fires_once_and_resolves_once_with_one_notification_each(stack, tmp_path):
    hook = Receiver(fail_first=1)  # the first delivery fails: it is retried, never doubled
    env = Env(tmp_path, "eixa", quota_jobs_per_table_day=3)
    clock = [time.time()]
    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(10):
            buf.append("tasks", task(i))
        buf.append("tasks", {"user_id": "u1"})  # no task_id, no created_at: a dead letter
        for i in range(2):
            buf.append("user_interactions", interaction(i))  # error_code NULL
    env.drainer(commit=False).ship_once()
    with Buffer(env.config.buffer, "eixa") as buf:
        buf.append("tasks", task(99))
        stats = buf.stats()
    cap = int((stats["pending_bytes"] + stats["dead_bytes"]) / 0.95)
    cfg = dataclasses.replace(
        env.config,
        monitor_state=str(tmp_path / "monitor.json"),
        monitor_webhook=hook.url,
        monitor_null_columns="user_interactions.error_code",
        monitor_delay_p95_minutes=0.001,
        monitor_job_budget=0.3,
        monitor_daily_cost_usd=1e-9,
        buffer_max_bytes=cap,
    )
    store, wh = make_object_store(cfg), make_warehouse(cfg)
    mon = Monitor(cfg, load_schema_set("eixa"), store, wh, Path(cfg.buffer), clock=lambda: clock[0])
    webhook = Webhook(hook.url, RetryPolicy(initial=0.05, maximum=0.2, deadline=10))

    def keys(findings):
        return {a.key for a in findings.alerts}

    clock[0] = time.time() + 16 * 60  # shipped 16 minutes ago, nothing loaded since
    first, _ = cycle(mon, webhook)
    assert {"no-data:tasks", "no-data:user_interactions", "error-rate:tasks", "buffer-full:*"} <= keys(first)
    assert first.exit_code == 9  # critical
    assert "slow-query" in first.unavailable and "no job history" in first.unavailable["slow-query"]
    a = next(a for a in first.alerts if a.key == "error-rate:tasks")
    assert a.table == "tasks" and a.threshold == 0.01 and a.value == pytest.approx(1 / 2)  # 1 dead, 1 pending

    env.drainer().drain_once()  # everything loads
    clock[0] = time.time() + 16 * 60
    second, _ = cycle(mon, webhook)
    fired = keys(second)
    assert not {"no-data:tasks", "no-data:user_interactions", "buffer-full:*"} & fired
    assert {"error-rate:tasks", "delay-p95:tasks", "job-budget:tasks", "null-rate:user_interactions"} <= fired
    assert "daily-cost:*" in fired
    assert "table-size" in second.unavailable  # the emulator reports 0 bytes for tables with rows
    again, _ = cycle(mon, webhook)  # nothing changed: no new notification
    assert keys(again) == fired

    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(60):
            buf.append("user_interactions", interaction(100 + i, error_code="E0"))
    env.drainer().drain_once()
    mon.config = dataclasses.replace(cfg, monitor_daily_cost_usd=1e6)
    third, _ = cycle(mon, webhook)
    assert "null-rate:user_interactions" not in keys(third) and "daily-cost:*" not in keys(third)

    clock[0] = time.time() + 25 * 3600  # the window and the day have passed
    last, _ = cycle(mon, webhook)
    assert last.alerts == [] and last.exit_code == 0

    from bqspool.loader.cli import main
    from click.testing import CliRunner

    cli = CliRunner(env=env.env(BQSPOOL_MONITOR_STATE=str(tmp_path / "cli.json")))
    now = cli.invoke(main, ["monitor", "--json"])  # the real clock, the default thresholds
    assert now.exit_code == json.loads(now.stdout)["exit_code"] == 9, now.output
    assert [a["key"] for a in json.loads(now.stdout)["alerts"]] == ["error-rate:tasks"]  # the dead letter
    nulls = cli.invoke(
        main,
        ["monitor"],
        env={"BQSPOOL_MONITOR_NULL_RATE": "0.001", "BQSPOOL_MONITOR_NULL_COLUMNS": "user_interactions.error_code"},
    )
    assert (
        nulls.exit_code == 9
        and "WARNING  null-rate" in nulls.stdout
        and "CRITICAL error-rate" in nulls.stdout
        and "threshold 0.1%" in nulls.stdout
    )

    notes = hook.by_key()
    assert hook.failed == 1
    for key in [
        "no-data:tasks",
        "no-data:user_interactions",
        "error-rate:tasks",
        "buffer-full:*",
        "delay-p95:tasks",
        "job-budget:tasks",
        "null-rate:user_interactions",
        "daily-cost:*",
    ]:
        assert notes.get(key) == ["firing", "resolved"], (key, notes.get(key))
    text = next(n["text"] for n in hook.notes if n["alert"]["key"] == "error-rate:tasks")
    assert text.startswith("[bqspool] FIRING critical error-rate: tasks:") and "threshold 1.0%" in text


class _Sized(MemoryWarehouse):
    """Faults the emulator cannot produce: a table's size and the job history."""

    size = 0
    history: list = []

    def table_storage(self, table):
        return TableStorage(1, self.size, 0) if table == "tasks" else super().table_storage(table)

    def query_history(self, since):
        return [q for q in self.history if q.started >= since]


def test_table_size_and_slow_query_fire_and_resolve_and_a_dead_webhook_never_stops_the_monitor(tmp_path):
    sset = load_schema_set("eixa")
    store = MemoryObjectStore()
    wh = _Sized(store, sset)
    from bqspool.loader.config import load_config

    cfg = dataclasses.replace(load_config(env={}), schemas="eixa", monitor_state=str(tmp_path / "m.json"))
    now = [2_000_000_000.0]
    mon = Monitor(cfg, sset, store, wh, None, clock=lambda: now[0])
    dead = Webhook("http://127.0.0.1:9/nothing-listens", RetryPolicy(initial=0.01, maximum=0.02, deadline=0.2))
    wh.size, wh.history = 2 * 10**12, [QueryStat(now[0] - 60, "job_slow", 10**9, 45.0)]
    findings, state = cycle(mon, dead)
    assert {a.key for a in findings.alerts} == {"table-size:tasks", "slow-query:*"}
    assert len(state["unsent"]) == 2  # kept for the next cycle
    assert next(a for a in findings.alerts if a.rule == "slow-query").value == 45.0
    hook = Receiver()
    wh.size, wh.history = 10, []
    findings, state = cycle(mon, Webhook(hook.url))
    assert findings.alerts == [] and state["unsent"] == []
    assert hook.by_key() == {"table-size:tasks": ["firing", "resolved"], "slow-query:*": ["firing", "resolved"]}
    from bqspool.loader.watch.monitor import Alert, Findings

    warn = Alert("job-budget", "warning", "tasks", 0.9, 0.8, "tasks: ...")
    assert Findings([warn], {}, {}).exit_code == 8
    assert Findings([warn, Alert("no-data", "critical", "tasks", 20, 15, "...")], {}, {}).exit_code == 9


# -- metrics ---------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_metrics_agree_with_what_was_appended_shipped_and_loaded(stack, tmp_path):
    from bqspool.buffer.metrics import expose
    from bqspool.loader.scheduler import record
    from bqspool.loader.watch.metrics import LoaderMetrics
    from prometheus_client import CollectorRegistry, generate_latest

    env = Env(tmp_path, "eixa", batch_rows=4)
    registry = CollectorRegistry()
    with Buffer(env.config.buffer, "eixa") as buf:
        expose(buf, registry=registry)
        for i in range(9):
            buf.append("tasks", task(i))
        buf.append("tasks", {"user_id": "u1"})  # a dead letter
        for i in range(3):
            buf.append("user_interactions", interaction(i))
        writer = _samples(generate_latest(registry).decode())
    label = lambda t: (("stream", t), ("table", t))
    assert writer[("bqspool_appended_events_total", label("tasks"))] == 9
    assert writer[("bqspool_appended_events_total", label("user_interactions"))] == 3
    assert writer[("bqspool_dead_lettered_events_total", label("tasks"))] == 1
    assert writer[("bqspool_pending_events", label("tasks"))] == 9
    assert writer[("bqspool_dead_letters", label("*"))] == 1
    assert writer[("bqspool_commit_seconds_count", ())] >= 1
    assert writer[("bqspool_commit_group_events_sum", ())] == 13

    metrics = LoaderMetrics()
    record(metrics, env.drainer().drain_once())
    got = _samples(metrics.text().decode())
    assert got[("bqspool_shipped_events_total", label("tasks"))] == 9
    assert got[("bqspool_shipped_batches_total", label("tasks"))] == 3
    assert got[("bqspool_loaded_events_total", label("tasks"))] == 9
    assert got[("bqspool_loaded_events_total", label("user_interactions"))] == 3
    assert got[("bqspool_load_jobs_total", (("outcome", "done"), *label("tasks")))] >= 1
    assert got[("bqspool_load_jobs_24h", label("tasks"))] >= 1
    assert got[("bqspool_load_job_budget", label("tasks"))] == env.config.quota_jobs_per_table_day
    assert got[("bqspool_delay_seconds_count", label("tasks"))] == 3  # one per object
    assert got[("bqspool_stage_seconds_count", (("stage", "ship"), *label("*")))] == 1

    # bqspool run serves the same on metrics_address
    import socket
    import subprocess
    import urllib.request

    from .loader_support import BQSPOOL

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = subprocess.Popen(
        [BQSPOOL, "run"],
        env=env.env(BQSPOOL_METRICS_ADDRESS=f"127.0.0.1:{port}", BQSPOOL_SCHEDULE="1s"),
        stderr=subprocess.DEVNULL,
    )
    try:
        served = {}
        for _ in range(100):
            try:
                served = _samples(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode())
                if ("bqspool_load_job_budget", label("tasks")) in served:  # set last in a tick
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert served[("bqspool_load_job_budget", label("tasks"))] == env.config.quota_jobs_per_table_day
        assert served[("bqspool_load_jobs_24h", label("routines"))] == 0  # run's metrics start with quiet tables
    finally:
        runner.terminate()
        runner.wait(30)

    # drain --once from cron: the same figures in a textfile for node_exporter
    from bqspool.loader.cli import main
    from click.testing import CliRunner

    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(5):
            buf.append("tasks", task(100 + i))
    textfile = tmp_path / "bqspool.prom"
    done = CliRunner(env=env.env(BQSPOOL_METRICS_TEXTFILE=str(textfile))).invoke(main, ["drain", "--once"])
    assert done.exit_code == 0, done.output
    assert _samples(textfile.read_text())[("bqspool_loaded_events_total", label("tasks"))] == 5


# -- logs ---------------------------------------------------------------------------------------


def test_json_logs_carry_fields_and_an_outage_logs_one_line_per_retry_sequence_without_secrets(stack, tmp_path):
    import subprocess

    from bqspool.loader.backends import localstack

    from .loader_support import BQSPOOL

    env = Env(tmp_path, "eixa", batch_rows=5)
    secret = "payload-marker-0451"
    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(6):
            buf.append("tasks", {**task(i), "description": secret})
    fake_key = "-----BEGIN PRIVATE KEY-----token-7781"
    extra = {"BQSPOOL_LOG_FORMAT": "json", "GOOGLE_OAUTH_ACCESS_TOKEN": fake_key}
    ok = subprocess.run([BQSPOOL, "-v", "drain", "--once"], env=env.env(**extra), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # The command's own summary lines are text on stderr; every log record is one JSON object.
    lines = [json.loads(x) for x in ok.stderr.splitlines() if x.startswith("{")]
    assert lines and all({"time", "level", "message", "logger"} <= set(x) for x in lines)
    loaded = [x for x in lines if x["message"].startswith("load job") and "loaded" in x["message"]]
    assert loaded and all(x["table"] == "tasks" and x["job_id"].startswith("bqspool_tasks_") for x in loaded)
    assert all("attempt" in x for x in loaded)
    assert secret not in ok.stderr and fake_key not in ok.stderr

    with Buffer(env.config.buffer, "eixa") as buf:
        buf.append("tasks", {**task(50), "description": secret})
    hook = Receiver()
    cfg = dataclasses.replace(env.config, monitor_state=str(tmp_path / "m.json"), retry_deadline=1.0)
    mon = Monitor(cfg, load_schema_set("eixa"), make_object_store(cfg), make_warehouse(cfg), Path(cfg.buffer))
    localstack.stop_service("gcs", stack["folder"])
    try:
        during, _ = cycle(mon, Webhook(hook.url))
        down = subprocess.run(
            [BQSPOOL, "-v", "ship", "--once"],
            env=env.env(BQSPOOL_RETRY_DEADLINE="2", BQSPOOL_RETRY_MAXIMUM="0.3"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        localstack.start_service("gcs", stack["folder"])
    assert down.returncode == 3
    assert [a.key for a in during.alerts] == ["unreachable:*"] and during.exit_code == 9
    assert "/storage/v1/" not in during.alerts[0].message  # what failed and which kind, not the request
    after, _ = cycle(mon, Webhook(hook.url))
    assert "unreachable:*" not in {a.key for a in after.alerts}
    assert hook.by_key()["unreachable:*"] == ["firing", "resolved"]
    warnings = [x for x in down.stderr.splitlines() if " WARNING " in x]
    starts = [x for x in warnings if "retrying for up to" in x]
    ends = [x for x in warnings if "gave up after" in x]
    assert len(starts) == 1 and len(ends) == 1, down.stderr
    assert "http://" not in down.stderr and "/storage/v1/" not in down.stderr and "Traceback" not in down.stderr
    assert "nothing was lost" in down.stderr and "ConnectionError" in down.stderr
    assert secret not in down.stderr


# -- the status page ------------------------------------------------------------------------------


def _browser():
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromium-driver are installed by scripts/bootstrap.sh (apt-get); run it as root")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_the_status_page_shows_what_was_loaded_in_a_real_browser(stack, tmp_path):
    """At 1280 px, in headless Chromium: nothing overflows, every chart has its axes, the
    figures are `status --json`'s, quiet tables take one line, and before the first cycle
    the page says it is waiting (not "no active alerts")."""
    import json
    import subprocess
    import urllib.error
    import urllib.request

    from bqspool.loader.watch.metrics import MonitorGauges
    from bqspool.loader.watch.statuspage import StatusServer
    from selenium.webdriver.common.by import By

    from .loader_support import BQSPOOL

    env = Env(tmp_path, "eixa", batch_rows=5)
    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(12):
            buf.append("tasks", task(i))
        for i in range(4):
            buf.append("user_interactions", interaction(i))
    env.drainer().drain_once()
    with Buffer(env.config.buffer, "eixa") as buf:
        for i in range(3):
            buf.append("tasks", task(100 + i))  # waiting: the backlog
        buf.append("tasks", {"user_id": "u1"})  # a dead letter in the buffer
    cfg = dataclasses.replace(env.config, monitor_state=str(tmp_path / "m.json"), monitor_no_data_minutes=0.001)
    store = make_object_store(cfg)
    mon = Monitor(cfg, load_schema_set("eixa"), store, make_warehouse(cfg), Path(cfg.buffer))
    gauges = MonitorGauges()
    title = f"{cfg.project}.{cfg.dataset}"
    server = StatusServer("127.0.0.1:0", gauges.text, refresh_s=5, title=title).start()
    browser = _browser()
    try:
        browser.get(server.address)  # before the first cycle
        assert browser.find_element(By.ID, "waiting").text == "waiting for the first monitoring cycle"
        assert "no active alerts" not in browser.page_source and f"bqspool: {title}" in browser.page_source
        early = _samples(urllib.request.urlopen(server.address + "metrics").read().decode())
        assert early[("bqspool_monitor_last_cycle_timestamp_seconds", ())] == 0
        time.sleep(0.1)  # the pending events are older than the (tiny) no-data threshold
        findings, state = cycle(mon, None)
        page = mon.page_figures(findings)
        gauges.update(state, page)
        server.update(state, page)
        browser.get(server.address)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width  # no horizontal overflow at 1280 px
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-table="tasks"]')
        assert row.find_element(By.CSS_SELECTOR, ".loaded-24h").text == "12"
        assert row.find_element(By.CSS_SELECTOR, ".backlog-now").text == "3"
        assert row.find_element(By.CSS_SELECTOR, ".jobs-24h").text == "1"  # three objects, one load job
        assert row.find_element(By.CSS_SELECTOR, ".last-load").text != "-"
        ui = browser.find_element(By.CSS_SELECTOR, 'tr[data-table="user_interactions"] .loaded-24h')
        assert ui.text == "4"
        bars = row.find_elements(By.CSS_SELECTOR, "svg rect title")
        assert sum(int(b.get_attribute("textContent")) for b in bars) == 12  # the chart's bars add up
        for chart in browser.find_elements(By.CSS_SELECTOR, "svg.chart"):  # every chart has its axes, labelled
            labels = {
                t.get_attribute("class"): t.get_attribute("textContent")
                for t in chart.find_elements(By.TAG_NAME, "text")
            }
            assert labels.keys() >= {"y-max", "y-zero", "x-start", "x-end"} and labels["x-end"] == "now", labels
        quiet = browser.find_element(By.ID, "quiet").text  # tables that never had data: one line, no charts
        assert all(t in quiet for t in ("projects", "routines", "emotional_memories")), quiet
        assert len(browser.find_elements(By.CSS_SELECTOR, "#tables tr[data-table]")) == 2
        # The figures are `bqspool status --json`'s.
        status = json.loads(
            subprocess.run([BQSPOOL, "status", "--json"], env=env.env(), capture_output=True, text=True).stdout
        )
        panel = {
            k: browser.find_element(By.CSS_SELECTOR, f"#buffer .buffer-{k}").text
            for k in ("pending", "dead-letters", "dropped")
        }
        assert panel == {
            "pending": f"{status['pending']:,}",
            "dead-letters": f"{status['dead_letters']:,}",
            "dropped": f"{status['dropped']:,}",
        }
        assert status["dead_letters"] == 1
        waiting = status["commit"]["tables"]["tasks"]["waiting"] + status["streams"]["tasks"]["pending"]
        assert row.find_element(By.CSS_SELECTOR, ".backlog-now").text == f"{waiting:,}"
        alerts = browser.find_elements(By.CSS_SELECTOR, "#alerts tr.critical")
        assert any("no-data" in a.text and "tasks" in a.text and "bqspool drain --once" in a.text for a in alerts)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "status-page.png"))
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(server.address + "healthz")
        assert unhealthy.value.code == 503  # a critical alert is active
        metrics = _samples(urllib.request.urlopen(server.address + "metrics").read().decode())
        key = (
            "bqspool_alert_active",
            (("rule", "no-data"), ("severity", "critical"), ("stream", "tasks"), ("table", "tasks")),
        )
        assert metrics[key] == 1
        env.drainer().drain_once()
        findings, state = cycle(mon, None)
        server.update(state, page)
        assert not [k for k in state["active"] if k.startswith("no-data")]  # loaded: resolved
        critical = {a["rule"] for a in state["active"].values() if a["severity"] == "critical"}
        if not critical:  # the buffer's dead letter may keep the error rate critical
            assert urllib.request.urlopen(server.address + "healthz").status == 200
    finally:
        browser.quit()
        server.stop()


def test_the_page_separates_thousands():
    from bqspool.loader.watch.statuspage import render

    figures = {"backlog": 1234567, "hourly": [0] * 23 + [12345], "jobs_24h": 1, "budget": 1000}
    page = {"tables": {"t": {**figures, "quarantined": 0, "dead_letters": 2500}}, "dataset": "p.d"}
    text = render({"evaluated": time.time(), "active": {}}, page, 30)
    assert "1,234,567" in text and "12,345" in text and "2,500" in text
