"""Table files: loading, validation errors that name file and field, mappings."""

import json

import pytest
from bqspool.schemas import EVENT_ID, SchemaError, bundled_names, load_schema_set, load_table_file
from bqspool.schemas.arrow import arrow_schema, field_from_arrow
from bqspool.schemas.bigquery import schema_to_json, table_from_json, table_to_json


def write_table(tmp_path, name, body):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(body) if not isinstance(body, str) else body)
    return path


BASE = [
    {"name": "user_id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "ts", "type": "TIMESTAMP"},
]


def test_bundled_sets_by_name_and_path(leafloaf, eixa):
    assert bundled_names() == ["eixa", "leafloaf"]
    assert set(leafloaf) == {
        "user_search_events",
        "product_interaction_events",
        "cart_modification_events",
        "order_transaction_events",
        "recommendation_impression_events",
        "user_events",
        "search_events",
        "cart_events",
        "order_events",
        "promotion_usage",
    }
    assert set(eixa) == {"user_interactions", "tasks", "emotional_memories", "projects", "routines"}
    by_path = load_schema_set(leafloaf.source)
    assert by_path["order_events"] == leafloaf["order_events"]


def test_leafloaf_design_points(leafloaf):
    search = leafloaf["user_search_events"]
    for col in ("user_id", "session_id", "timestamp", "query", "result_count", "search_latency_ms"):
        search.field(col)
    pie = leafloaf["product_interaction_events"]
    for col in ("user_id", "timestamp", "product_id", "product_name", "interaction_type"):
        pie.field(col)
    products = leafloaf["order_events"].field("products")
    assert (products.type, products.mode) == ("RECORD", "REPEATED")
    for table in leafloaf.tables():
        assert table.partitioning.field == "timestamp" and table.partitioning.type == "DAY"
        assert table.partitioning.expiration_days == 90
        assert table.clustering
        for f in table.fields:
            if f.name.endswith("latency_ms") or f.name == "response_time_ms":
                assert f.type == "INTEGER", (table.name, f.name)


def test_eixa_design_points(eixa):
    ui = eixa["user_interactions"]
    assert [f.name for f in ui.user_fields] == [
        "user_id",
        "interaction_id",
        "timestamp",
        "message_in",
        "message_out",
        "intent",
        "language",
        "duration_ms",
        "model_used",
        "tokens_in",
        "tokens_out",
        "error_code",
    ]
    assert ui.partitioning.field == "timestamp" and ui.clustering == ("user_id", "intent")
    tasks = eixa["tasks"]
    assert tasks.partitioning.field == "created_at"
    assert tasks.field("date").type == "DATE" and tasks.field("time").type == "TIME"
    assert tasks.field("completed").type == "BOOLEAN" and tasks.clustering == ("user_id",)
    assert eixa["emotional_memories"].field("emotional_valence").type == "FLOAT"


def test_event_id_is_first_and_required(leafloaf):
    for table in leafloaf.tables():
        first = table.fields[0]
        assert (first.name, first.type, first.mode) == (EVENT_ID, "STRING", "REQUIRED")
        assert EVENT_ID not in [f.name for f in table.user_fields]


BAD_TABLES = [
    ({"fields": []}, None, "non-empty"),
    ({"fields": [{"name": "1abc", "type": "STRING"}]}, "1abc", "invalid column name"),
    ({"fields": [{"name": "a-b", "type": "STRING"}]}, "a-b", "invalid column name"),
    ({"fields": [{"name": "x" * 301, "type": "STRING"}]}, "x" * 301, "longer than"),
    ({"fields": [{"name": "_PARTITIONTIME", "type": "STRING"}]}, "_PARTITIONTIME", "reserve"),
    ({"fields": [{"name": "a", "type": "VARCHAR"}]}, "a", "unknown type"),
    ({"fields": [{"name": "a", "type": "STRING", "mode": "OPTIONAL"}]}, "a", "unknown mode"),
    ({"fields": [{"name": "a", "type": "STRING"}, {"name": "A", "type": "INTEGER"}]}, "A", "duplicate"),
    ({"fields": [{"name": "r", "type": "RECORD"}]}, "r", "non-empty 'fields'"),
    (
        {
            "fields": [
                {
                    "name": "r",
                    "type": "RECORD",
                    "fields": [{"name": "x", "type": "STRING"}, {"name": "x", "type": "STRING"}],
                }
            ]
        },
        "r.x",
        "duplicate",
    ),
    ({"fields": [{"name": "s", "type": "STRING", "fields": [{"name": "x", "type": "STRING"}]}]}, "s", "only RECORD"),
    ({"fields": [{"name": "_event_id", "type": "STRING"}]}, "_event_id", "system column"),
    ({"fields": [{"name": "a", "type": "STRING", "color": "red"}]}, "a", "unknown keys"),
    ({"fields": BASE, "time_partitioning": {"field": "nope"}}, "nope", "names no column"),
    ({"fields": BASE, "time_partitioning": {"field": "user_id"}}, "user_id", "TIMESTAMP, DATE or DATETIME"),
    (
        {"fields": BASE + [{"name": "d", "type": "DATE"}], "time_partitioning": {"field": "d", "type": "HOUR"}},
        "d",
        "HOUR",
    ),
    ({"fields": BASE, "time_partitioning": {"field": "ts", "type": "WEEK"}}, "ts", "must be one of"),
    (
        {
            "fields": BASE + [{"name": "r", "type": "RECORD", "fields": [{"name": "t", "type": "TIMESTAMP"}]}],
            "time_partitioning": {"field": "r.t"},
        },
        "r.t",
        "top-level",
    ),
    (
        {
            "fields": BASE + [{"name": "tt", "type": "TIMESTAMP", "mode": "REPEATED"}],
            "time_partitioning": {"field": "tt"},
        },
        "tt",
        "non-repeated",
    ),
    ({"fields": BASE, "time_partitioning": {"field": "ts", "expiration_days": -1}}, "ts", "positive"),
    ({"fields": BASE, "clustering": ["user_id", "ts", "user_id"]}, None, "twice"),
    (
        {
            "fields": BASE + [{"name": f"c{i}", "type": "STRING"} for i in range(4)],
            "clustering": ["user_id", "c0", "c1", "c2", "c3"],
        },
        None,
        "at most 4",
    ),
    (
        {"fields": BASE + [{"name": "tags", "type": "STRING", "mode": "REPEATED"}], "clustering": ["tags"]},
        "tags",
        "cannot cluster",
    ),
    ({"fields": BASE, "clustering": ["missing"]}, "missing", "top-level column"),
    ({"fields": BASE, "labels": {"Team": "x"}}, None, "invalid label"),
    ({"fields": BASE, "partition": {}}, None, "unknown keys"),
    ({"fields": [{"name": "n", "type": "NUMERIC", "precision": 40, "scale": 2}]}, "n", "out of range"),
    ({"fields": [{"name": "n", "type": "STRING", "precision": 4}]}, "n", "NUMERIC and BIGNUMERIC"),
    ({"fields": [{"name": "n", "type": "INTEGER", "maxLength": 4}]}, "n", "STRING and BYTES"),
    ([1, 2], None, "JSON object"),
]


@pytest.mark.parametrize("body,field,message", BAD_TABLES)
def test_bad_table_names_file_and_field(tmp_path, body, field, message):
    path = write_table(tmp_path, "t", body)
    with pytest.raises(SchemaError) as err:
        load_table_file(path)
    text = str(err.value)
    assert str(path) in text and message in text
    assert err.value.source == str(path)
    if field:
        assert err.value.field == field


def test_nesting_depth_limit(tmp_path):
    field = {"name": "leaf", "type": "STRING"}
    for i in range(15):
        field = {"name": f"r{i}", "type": "RECORD", "fields": [field]}
    path = write_table(tmp_path, "deep", {"fields": [field]})
    with pytest.raises(SchemaError, match="nesting deeper than 15"):
        load_table_file(path)


def test_bad_json_and_bad_table_name(tmp_path):
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_table_file(write_table(tmp_path, "t", "{nope"))
    with pytest.raises(SchemaError, match="invalid table name"):
        load_table_file(write_table(tmp_path, "bad-name", {"fields": BASE}))


def test_set_errors(tmp_path):
    with pytest.raises(SchemaError, match="no schema set"):
        load_schema_set(tmp_path / "missing")
    with pytest.raises(SchemaError, match="no schema set 'nosuchset'.*bundled: eixa, leafloaf"):
        load_schema_set("nosuchset")
    with pytest.raises(SchemaError, match="no \\*.json"):
        load_schema_set(tmp_path)


@pytest.mark.parametrize("set_name", ["leafloaf", "eixa"])
def test_rest_json_round_trip(set_name):
    for table in load_schema_set(set_name).tables():
        body = json.loads(json.dumps(table_to_json(table, "proj", "ds")))
        back = table_from_json(body)
        assert back.fields == table.fields
        assert (back.partitioning, back.clustering, back.labels, back.description) == (
            table.partitioning,
            table.clustering,
            table.labels,
            table.description,
        )
        assert body["schema"]["fields"][0]["name"] == EVENT_ID
        if set_name == "leafloaf":
            assert body["timePartitioning"]["expirationMs"] == str(90 * 86_400_000)


def test_rest_json_of_parameterised_types(tmp_path):
    path = write_table(
        tmp_path,
        "p",
        {
            "fields": [
                {"name": "s", "type": "STRING", "maxLength": "10"},
                {"name": "n", "type": "NUMERIC", "precision": 10, "scale": 2},
            ]
        },
    )
    table = load_table_file(path)
    out = schema_to_json(table)
    assert out[1] == {"name": "s", "type": "STRING", "mode": "NULLABLE", "maxLength": "10"}
    assert out[2]["precision"] == "10" and out[2]["scale"] == "2"
    assert table_from_json(table_to_json(table, "p", "d")).fields == table.fields


def test_arrow_mapping_types_and_round_trip(leafloaf, eixa):
    import pyarrow as pa

    order = arrow_schema(leafloaf["order_events"])
    assert order.names[0] == EVENT_ID and not order.field(EVENT_ID).nullable
    assert order.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert order.field("total_amount").type == pa.decimal128(38, 9)
    products = order.field("products").type
    assert pa.types.is_list(products) and pa.types.is_struct(products.value_type)
    tasks = arrow_schema(eixa["tasks"])
    assert tasks.field("date").type == pa.date32()
    assert tasks.field("time").type == pa.time64("us")
    assert leafloaf["search_events"].field("agent_timings").type == "JSON"
    assert arrow_schema(leafloaf["search_events"]).field("agent_timings").type == pa.string()
    for sset in (leafloaf, eixa):
        for table in sset.tables():
            schema = arrow_schema(table)
            assert tuple(field_from_arrow(f) for f in schema) == table.fields


def test_arrow_datetime_and_bignumeric(tmp_path):
    import pyarrow as pa

    table = load_table_file(
        write_table(
            tmp_path,
            "x",
            {
                "fields": [
                    {"name": "dt", "type": "DATETIME"},
                    {"name": "b", "type": "BIGNUMERIC"},
                    {"name": "by", "type": "BYTES"},
                    {"name": "g", "type": "GEOGRAPHY"},
                ]
            },
        )
    )
    schema = arrow_schema(table)
    assert schema.field("dt").type == pa.timestamp("us")
    assert schema.field("b").type == pa.decimal256(76, 38)
    assert schema.field("by").type == pa.binary()
    assert tuple(field_from_arrow(f) for f in schema) == table.fields
