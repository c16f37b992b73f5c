#!/usr/bin/env python3
"""Tests for the fake BigQuery: gfake/bqsql/ (SQL) and gfake/bigquery.py
(REST handlers).  Run: python3 tests/fake/test_bqsql.py -v"""

import datetime as dt
import os
import sys
import unittest
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gfake import bqsql                       # noqa: E402
from gfake.bigquery import BigQueryService    # noqa: E402

UTC = dt.timezone.utc
T = "`proj.ds.registry`"

SCHEMA = [
    {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
    {"name": "command", "type": "STRING"},
    {"name": "timestamp", "type": "DATETIME"},
    {"name": "source", "type": "STRING", "mode": "REQUIRED"},
    {"name": "status", "type": "STRING"},
    {"name": "run_id", "type": "INT64"},
    {"name": "updated_at", "type": "TIMESTAMP"},
    {"name": "schema_name", "type": "STRING"},
    {"name": "table_name", "type": "STRING"},
    {"name": "ok", "type": "BOOL"},
    {"name": "ratio", "type": "FLOAT64"},
    {"name": "amount", "type": "NUMERIC"},
]


def P(name, typ, value):
    """A named QueryParameter; value None -> SQL NULL."""
    return {"name": name, "parameterType": {"type": typ},
            "parameterValue": {} if value is None else {"value": value}}


def PP(typ, value):
    """A positional QueryParameter."""
    return {"parameterType": {"type": typ},
            "parameterValue": {} if value is None else {"value": value}}


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, s):
        self.t += s


class Base(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.svc = BigQueryService(store_clock=self.clock,
                                   stream_buffer_seconds=1800)
        st, _ = self.svc.handle("POST", "projects/proj/datasets", {}, {
            "datasetReference": {"projectId": "proj", "datasetId": "ds"}})
        self.assertEqual(st, 200)
        st, _ = self.svc.handle("POST", "projects/proj/datasets/ds/tables",
                                {}, {"tableReference": {
                                    "projectId": "proj", "datasetId": "ds",
                                    "tableId": "registry"},
                                    "schema": {"fields": SCHEMA}})
        self.assertEqual(st, 200)

    # -- helpers
    def query(self, sql, params=(), **extra):
        body = {"query": sql, "useLegacySql": False,
                "queryParameters": list(params)}
        body.update(extra)
        return self.svc.handle("POST", "projects/proj/queries", {}, body)

    def ok(self, sql, params=(), **extra):
        st, body = self.query(sql, params, **extra)
        self.assertEqual(st, 200, body)
        self.assertTrue(body["jobComplete"])
        return body

    def err(self, sql, params=(), **extra):
        st, body = self.query(sql, params, **extra)
        self.assertEqual(st, 400, body)
        return body["error"]

    def affected(self, sql, params=()):
        return int(self.ok(sql, params)["numDmlAffectedRows"])

    def rows(self, sql, params=()):
        b = self.ok(sql, params)
        return [[c["v"] for c in r["f"]] for r in b.get("rows", [])]

    def stream(self, rows, **extra):
        body = {"rows": rows}
        body.update(extra)
        return self.svc.handle(
            "POST", "projects/proj/datasets/ds/tables/registry/insertAll",
            {}, body)

    def dump(self):
        return self.svc.dump_table("proj", "ds", "registry")

    def insert(self, id_, source="h1", command="distcp", status=None):
        return self.affected(
            "INSERT INTO %s (id, source, command, status) VALUES "
            "(@id, @source, @command, @status)" % T,
            [P("id", "INT64", str(id_)), P("source", "STRING", source),
             P("command", "STRING", command),
             P("status", "STRING", status)])


# ---------------------------------------------------------------------------

class TestStatements(Base):
    def test_insert_values_multi_row_and_select(self):
        n = self.affected(
            "insert into %s (id, source, command) values "
            "(1, 'h1', \"a\"), (2, 'h1', 'b'), (3, 'h2', NULL)" % T)
        self.assertEqual(n, 3)
        self.assertEqual(self.rows("SELECT id, command FROM %s ORDER BY id" % T),
                         [["1", "a"], ["2", "b"], ["3", None]])

    def test_select_star_where_order_limit(self):
        for i in (3, 1, 2):
            self.insert(i)
        b = self.ok("SELECT * FROM %s WHERE id >= 2 ORDER BY id DESC LIMIT 1"
                    % T)
        names = [f["name"] for f in b["schema"]["fields"]]
        self.assertEqual(names, [f["name"] for f in SCHEMA])
        self.assertEqual(b["schema"]["fields"][0]["type"], "INTEGER")
        self.assertEqual(b["totalRows"], "1")
        self.assertEqual(b["rows"][0]["f"][0]["v"], "3")
        self.assertIsNone(b["rows"][0]["f"][4]["v"])     # status NULL

    def test_count_star(self):
        for i in (1, 2, 3):
            self.insert(i, status="done" if i < 3 else None)
        b = self.ok("SELECT COUNT(*) FROM %s WHERE status = 'done'" % T)
        self.assertEqual(b["schema"]["fields"][0]["name"], "f0_")
        self.assertEqual(b["rows"], [{"f": [{"v": "2"}]}])
        self.assertEqual(self.rows("SELECT COUNT(*) AS n FROM %s WHERE "
                                   "status IS NULL" % T), [["1"]])

    def test_update(self):
        self.insert(1)
        self.insert(2)
        n = self.affected(
            "UPDATE %s SET status = @status, run_id = @run, "
            "updated_at = CURRENT_TIMESTAMP() WHERE id = @id AND source = "
            "@source" % T,
            [P("status", "STRING", "done"), P("run", "INT64", "77"),
             P("id", "INT64", "2"), P("source", "STRING", "h1")])
        self.assertEqual(n, 1)
        row = [r for r in self.dump() if r["id"] == 2][0]
        self.assertEqual(row["status"], "done")
        self.assertEqual(row["run_id"], 77)
        self.assertEqual(row["updated_at"],
                         dt.datetime.fromtimestamp(self.clock.t, UTC))
        self.assertIsNone([r for r in self.dump() if r["id"] == 1][0]
                          ["status"])

    def test_update_arithmetic_and_alias(self):
        self.affected("INSERT INTO %s (id, source, run_id) VALUES (1, 'a', 5)"
                      % T)
        self.assertEqual(self.affected(
            "UPDATE %s r SET run_id = r.run_id + 1 WHERE r.id = 1" % T), 1)
        self.assertEqual(self.dump()[0]["run_id"], 6)

    def test_update_requires_where(self):
        e = self.err("UPDATE %s SET status = 'x'" % T)
        self.assertIn("UPDATE must have a WHERE clause", e["message"])

    def test_delete(self):
        for i in (1, 2, 3):
            self.insert(i)
        self.assertEqual(self.affected(
            "DELETE FROM %s WHERE id IN (1, 3)" % T), 2)
        self.assertEqual([r["id"] for r in self.dump()], [2])
        self.assertEqual(self.affected("DELETE %s WHERE id = 99" % T), 0)

    def test_idempotent_insert_where_not_exists(self):
        sql = ("INSERT INTO %s (id, command, timestamp, source) "
               "SELECT @id, @command, @ts, @source "
               "WHERE NOT EXISTS (SELECT 1 FROM %s WHERE id = @id AND "
               "source = @source)" % (T, T))
        params = [P("id", "INT64", "42"), P("command", "STRING", "distcp"),
                  P("ts", "DATETIME", "2026-01-02T03:04:05"),
                  P("source", "STRING", "hdfs-a")]
        self.assertEqual(self.affected(sql, params), 1)
        self.assertEqual(self.affected(sql, params), 0)
        other = params[:3] + [P("source", "STRING", "hdfs-b")]
        self.assertEqual(self.affected(sql, other), 1)
        rows = self.dump()
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["timestamp"], dt.datetime(2026, 1, 2, 3, 4, 5))

    def test_merge_both_branches(self):
        sql = ("MERGE %s T USING (SELECT @id AS id, @source AS source, "
               "@status AS status, @command AS command) S "
               "ON T.id = S.id AND T.source = S.source "
               "WHEN MATCHED THEN UPDATE SET status = S.status "
               "WHEN NOT MATCHED THEN INSERT (id, source, status, command) "
               "VALUES (S.id, S.source, S.status, S.command)" % T)

        def params(status):
            return [P("id", "INT64", "7"), P("source", "STRING", "h1"),
                    P("status", "STRING", status),
                    P("command", "STRING", "cp")]
        b = self.ok(sql, params("new"))
        self.assertEqual(b["numDmlAffectedRows"], "1")
        self.assertEqual(b["dmlStats"]["insertedRowCount"], "1")
        b = self.ok(sql, params("done"))
        self.assertEqual(b["dmlStats"]["updatedRowCount"], "1")
        rows = self.dump()
        self.assertEqual(len(rows), 1)
        self.assertEqual((rows[0]["status"], rows[0]["command"]),
                         ("done", "cp"))

    def test_merge_delete_and_conditions(self):
        self.insert(1, status="old")
        self.insert(2, status="keep")
        n = self.affected(
            "MERGE INTO %s AS t USING (SELECT 1 AS id) AS s ON t.id = s.id "
            "WHEN MATCHED AND t.status = 'old' THEN DELETE" % T)
        self.assertEqual(n, 1)
        self.assertEqual([r["id"] for r in self.dump()], [2])

    def test_merge_multiple_source_rows_error(self):
        self.insert(1)
        self.assertEqual(self.affected(
            "MERGE %s T USING %s S ON T.source = S.source "
            "WHEN MATCHED THEN UPDATE SET status = 'x'" % (T, T)), 1)
        self.insert(2)
        e = self.err("MERGE %s T USING %s S ON T.source = S.source "
                     "WHEN MATCHED THEN UPDATE SET status = 'x'" % (T, T))
        self.assertIn("must match at most one source row", e["message"])

    def test_conditions(self):
        for i, st in ((1, "a"), (2, "b"), (3, None), (4, "d")):
            self.insert(i, status=st)

        def ids(where, params=()):
            return [r[0] for r in self.rows(
                "SELECT id FROM %s WHERE %s ORDER BY id" % (T, where),
                params)]
        self.assertEqual(ids("id != 2 AND id <> 3"), ["1", "4"])
        self.assertEqual(ids("id < 2 OR id > 3"), ["1", "4"])
        self.assertEqual(ids("id <= 2"), ["1", "2"])
        self.assertEqual(ids("id >= 4"), ["4"])
        self.assertEqual(ids("NOT (id = 1 OR id = 2)"), ["3", "4"])
        self.assertEqual(ids("status IS NULL"), ["3"])
        self.assertEqual(ids("status IS NOT NULL AND NOT id = 1"),
                         ["2", "4"])
        self.assertEqual(ids("status IN ('a', 'd')"), ["1", "4"])
        self.assertEqual(ids("status NOT IN ('a', 'd')"), ["2"])  # NULL drops
        self.assertEqual(ids("status = NULL"), [])
        self.assertEqual(ids("(id = 1 OR id = 3) AND status IS NULL"), ["3"])
        self.assertEqual(ids("EXISTS (SELECT 1 FROM %s x WHERE x.id = 4)" % T),
                         ["1", "2", "3", "4"])
        self.assertEqual(ids("NOT EXISTS (SELECT 1 FROM %s x WHERE x.id = "
                             "registry.id + 1)" % T), ["4"])
        self.assertEqual(ids("status LIKE 'a%' OR id BETWEEN 3 AND 3"),
                         ["1", "3"])
        self.assertEqual(ids("TRUE AND NOT FALSE AND id = 2"), ["2"])
        self.assertEqual(ids("id IN (SELECT id FROM %s WHERE status = 'b')"
                             % T), ["2"])

    def test_keywords_case_insensitive_and_table_name_forms(self):
        self.insert(1)
        for name in ("`proj.ds.registry`", "`proj`.`ds`.`registry`",
                     "ds.registry", "`ds.registry`", "proj.ds.registry"):
            self.assertEqual(self.rows("sElEcT CoUnT(*) FrOm %s wHeRe ID = 1"
                                       % name), [["1"]], name)

    def test_comments_and_semicolon(self):
        self.insert(1)
        self.assertEqual(self.rows("-- hi\nSELECT id /* c */ FROM %s # x\n;"
                                   % T), [["1"]])


class TestParamsAndTypes(Base):
    def test_each_param_type_and_null(self):
        n = self.affected(
            "INSERT INTO %s (id, source, timestamp, updated_at, ok, ratio, "
            "amount, status) VALUES (@id, @src, @ts, @upd, @ok, @ratio, "
            "@amount, @status)" % T,
            [P("id", "INT64", "9007199254740993"),
             P("src", "STRING", "it's"),
             P("ts", "DATETIME", "2026-03-04 05:06:07.123456"),
             P("upd", "TIMESTAMP", "2026-03-04 05:06:07+01:00"),
             P("ok", "BOOL", "TRUE"), P("ratio", "FLOAT64", "0.25"),
             P("amount", "NUMERIC", "12.50"), P("status", "STRING", None)])
        self.assertEqual(n, 1)
        r = self.dump()[0]
        self.assertEqual(r["id"], 9007199254740993)
        self.assertEqual(r["source"], "it's")
        self.assertEqual(r["timestamp"],
                         dt.datetime(2026, 3, 4, 5, 6, 7, 123456))
        self.assertEqual(r["updated_at"],
                         dt.datetime(2026, 3, 4, 4, 6, 7, tzinfo=UTC))
        self.assertIs(r["ok"], True)
        self.assertEqual(r["ratio"], 0.25)
        self.assertEqual(r["amount"], Decimal("12.50"))
        self.assertIsNone(r["status"])
        out = self.rows("SELECT id, timestamp, updated_at, ok, ratio, amount, "
                        "status FROM %s" % T)
        self.assertEqual(out, [["9007199254740993",
                                "2026-03-04T05:06:07.123456", "1.772597167E9",
                                "true", "0.25", "12.5", None]])

    def test_int64_timestamp_format_option(self):
        self.affected("INSERT INTO %s (id, source, updated_at) VALUES "
                      "(1, 'a', TIMESTAMP '2026-01-01 00:00:00.5 UTC')" % T)
        b = self.ok("SELECT updated_at FROM %s" % T,
                    formatOptions={"useInt64Timestamp": True})
        self.assertEqual(b["rows"][0]["f"][0]["v"], "1767225600500000")

    def test_positional_params(self):
        self.affected("INSERT INTO %s (id, source) VALUES (?, ?)" % T,
                      [PP("INT64", "5"), PP("STRING", "pos")])
        self.assertEqual(self.rows("SELECT source FROM %s WHERE id = ?" % T,
                                   [PP("INT64", "5")]), [["pos"]])

    def test_array_param_in_unnest(self):
        for i in (1, 2, 3):
            self.insert(i)
        arr = {"name": "ids", "parameterType": {"type": "ARRAY",
                                                "arrayType": {"type": "INT64"}},
               "parameterValue": {"arrayValues": [{"value": "1"},
                                                  {"value": "3"}]}}
        self.assertEqual(self.affected(
            "UPDATE %s SET status = 'x' WHERE id IN UNNEST(@ids)" % T,
            [arr]), 2)
        self.assertEqual(self.rows("SELECT id FROM %s WHERE id NOT IN "
                                   "UNNEST(@ids)" % T, [arr]), [["2"]])

    def test_empty_result_has_no_rows_key(self):
        b = self.ok("SELECT id FROM %s" % T)
        self.assertEqual(b["totalRows"], "0")
        self.assertNotIn("rows", b)

    def test_param_names_case_insensitive(self):
        self.insert(1)
        self.assertEqual(self.rows("SELECT id FROM %s WHERE id = @ID" % T,
                                   [P("id", "INT64", "1")]), [["1"]])

    def test_string_params_coerce_to_datetime_types(self):
        self.affected("INSERT INTO %s (id, source, timestamp, updated_at) "
                      "VALUES (1, 'a', @d, @t)" % T,
                      [P("d", "STRING", "2026-01-01 10:00:00"),
                       P("t", "STRING", "2026-01-01T10:00:00Z")])
        self.assertEqual(self.rows(
            "SELECT id FROM %s WHERE timestamp < '2026-01-01 11:00:00' AND "
            "updated_at <= @t" % T,
            [P("t", "STRING", "2026-01-01 10:00:00")]), [["1"]])

    def test_current_datetime_and_interval(self):
        self.affected("INSERT INTO %s (id, source, timestamp) VALUES "
                      "(1, 'a', CURRENT_DATETIME())" % T)
        self.assertEqual(self.dump()[0]["timestamp"],
                         dt.datetime.fromtimestamp(self.clock.t, UTC)
                         .replace(tzinfo=None))
        self.assertEqual(self.rows(
            "SELECT id FROM %s WHERE timestamp > DATETIME_SUB("
            "CURRENT_DATETIME(), INTERVAL 30 MINUTE)" % T), [["1"]])
        self.assertEqual(self.rows(
            "SELECT id FROM %s WHERE TIMESTAMP(timestamp) < TIMESTAMP_SUB("
            "CURRENT_TIMESTAMP, INTERVAL 30 MINUTE)" % T), [])

    def test_null_int_param_into_nullable_column(self):
        self.affected("INSERT INTO %s (id, source, run_id) VALUES "
                      "(1, 'a', @r)" % T, [P("r", "INT64", None)])
        self.assertIsNone(self.dump()[0]["run_id"])

    def test_coalesce_ifnull_cast(self):
        self.insert(1)
        self.assertEqual(self.rows(
            "SELECT COALESCE(status, 'none'), IFNULL(run_id, -1), "
            "CAST(id AS STRING), SAFE_CAST('x' AS INT64) FROM %s" % T),
            [["none", "-1", "1", None]])


class TestErrors(Base):
    def test_unrecognized_name_position(self):
        e = self.err("SELECT foo FROM %s" % T)
        self.assertEqual(e["message"], "Unrecognized name: foo at [1:8]")
        self.assertEqual(e["errors"][0]["reason"], "invalidQuery")
        self.assertEqual(e["errors"][0]["location"], "q")
        self.assertEqual(e["status"], "INVALID_ARGUMENT")

    def test_position_on_second_line(self):
        e = self.err("SELECT id\nFROM %s\nWHERE  nope = 1" % T)
        self.assertEqual(e["message"], "Unrecognized name: nope at [3:8]")

    def test_missing_param(self):
        sql = "UPDATE %s SET status = 'x' WHERE id = @id" % T
        e = self.err(sql)
        col = sql.index("@id") + 1
        self.assertEqual(e["message"],
                         "Query parameter 'id' not found at [1:%d]" % col)

    def test_assign_type_mismatch(self):
        sql = "UPDATE %s SET id = @s WHERE id = 1" % T
        e = self.err(sql, [P("s", "STRING", "x")])
        self.assertEqual(e["message"], "Value of type STRING cannot be "
                         "assigned to id, which has type INT64 at [1:%d]"
                         % (sql.index("@s") + 1))

    def test_insert_type_mismatch(self):
        e = self.err("INSERT INTO %s (id, source) VALUES ('1', 'a')" % T)
        self.assertIn("Value has type STRING which cannot be inserted into "
                      "column id, which has type INT64", e["message"])

    def test_compare_type_mismatch(self):
        e = self.err("SELECT id FROM %s WHERE id = 'x'" % T)
        self.assertIn("No matching signature for operator = for argument "
                      "types: INT64, STRING", e["message"])

    def test_unknown_column_in_insert_and_set(self):
        e = self.err("INSERT INTO %s (id, nope) VALUES (1, 2)" % T)
        self.assertIn("Column nope is not present in table proj.ds.registry",
                      e["message"])
        e = self.err("UPDATE %s SET nope = 1 WHERE id = 1" % T)
        self.assertTrue(e["message"].startswith("Unrecognized name: nope"))

    def test_unknown_table_and_dataset(self):
        st, b = self.query("SELECT 1 FROM `proj.ds.nope`")
        self.assertEqual(st, 404)
        self.assertEqual(b["error"]["errors"][0]["reason"], "notFound")
        self.assertIn("Not found: Table proj:ds.nope", b["error"]["message"])
        st, b = self.query("SELECT 1 FROM `proj.nods.t`")
        self.assertEqual(st, 404)
        self.assertIn("Dataset proj:nods", b["error"]["message"])

    def test_syntax_error(self):
        e = self.err("SELECT id FROM %s WHERE" % T)
        self.assertIn("Syntax error", e["message"])
        e = self.err("UPDATE %s SET status = 'unterminated WHERE id = 1" % T)
        self.assertIn("Unclosed string literal", e["message"])

    def test_bad_param_value(self):
        e = self.err("SELECT id FROM %s WHERE id = @id" % T,
                     [P("id", "INT64", "abc")])
        self.assertIn("abc", e["message"])

    def test_required_column_null(self):
        e = self.err("INSERT INTO %s (id, source) VALUES (1, @s)" % T,
                     [P("s", "STRING", None)])
        self.assertIn("source", e["message"])
        self.assertEqual(self.dump(), [])

    def test_failed_statement_is_atomic(self):
        self.insert(1)
        self.insert(2)
        self.err("UPDATE %s SET run_id = 10 / (id - 2) WHERE TRUE" % T)
        self.assertEqual([r["run_id"] for r in self.dump()], [None, None])


class TestStreamingBuffer(Base):
    def stream_one(self, id_=1, source="h1"):
        st, b = self.stream([{"insertId": "r%d" % id_,
                              "json": {"id": id_, "source": source,
                                       "command": "c"}}])
        self.assertEqual(st, 200)
        self.assertNotIn("insertErrors", b)

    def test_update_fails_on_streamed_row_then_succeeds_later(self):
        self.stream_one()
        e = self.err("UPDATE %s SET status = 'done' WHERE id = 1" % T)
        self.assertEqual(e["message"],
                         "UPDATE or DELETE statement over table "
                         "proj.ds.registry would affect rows in the "
                         "streaming buffer, which is not supported")
        self.assertEqual(e["errors"][0]["reason"], "invalidQuery")
        self.assertIsNone(self.dump()[0]["status"])
        # DELETE and MERGE are refused too
        self.err("DELETE FROM %s WHERE id = 1" % T)
        e = self.err("MERGE %s T USING (SELECT 1 AS id) S ON T.id = S.id "
                     "WHEN MATCHED THEN UPDATE SET status = 'x'" % T)
        self.assertIn("streaming buffer", e["message"])
        # SELECT sees streamed rows immediately
        self.assertEqual(self.rows("SELECT COUNT(*) FROM %s" % T), [["1"]])
        self.clock.advance(1799)
        self.err("UPDATE %s SET status = 'done' WHERE id = 1" % T)
        self.clock.advance(2)
        self.assertEqual(self.affected(
            "UPDATE %s SET status = 'done' WHERE id = 1" % T), 1)

    def test_dml_inserted_row_is_updatable_immediately(self):
        self.insert(2)
        self.assertEqual(self.affected(
            "UPDATE %s SET status = 'done' WHERE id = 2" % T), 1)

    def test_only_matching_rows_count(self):
        self.insert(2)
        self.stream_one(1)
        self.assertEqual(self.affected(
            "UPDATE %s SET status = 'done' WHERE id = 2" % T), 1)
        self.assertEqual(self.affected(
            "MERGE %s T USING (SELECT 3 AS id, 'h9' AS source) S "
            "ON T.id = S.id WHEN NOT MATCHED THEN INSERT (id, source) "
            "VALUES (S.id, S.source)" % T), 1)

    def test_tables_get_reports_streaming_buffer(self):
        self.insert(2)
        self.stream_one(1)
        st, t = self.svc.handle("GET", "projects/proj/datasets/ds/tables/"
                                "registry", {}, None)
        self.assertEqual(st, 200)
        self.assertEqual(t["numRows"], "1")
        self.assertEqual(t["streamingBuffer"]["estimatedRows"], "1")
        self.clock.advance(3600)
        st, t = self.svc.handle("GET", "projects/proj/datasets/ds/tables/"
                                "registry", {}, None)
        self.assertNotIn("streamingBuffer", t)

    def test_window_is_configurable(self):
        self.svc.stream_buffer_seconds = 5
        self.stream_one()
        self.clock.advance(6)
        self.assertEqual(self.affected(
            "DELETE FROM %s WHERE id = 1" % T), 1)


class TestInsertAll(Base):
    def test_insert_id_dedup(self):
        row = {"insertId": "x1", "json": {"id": 1, "source": "h"}}
        for _ in range(3):
            st, b = self.stream([row])
            self.assertEqual(st, 200)
            self.assertEqual(b, {"kind": "bigquery#tableDataInsertAllResponse"})
        self.assertEqual(len(self.dump()), 1)
        # same id twice in one request
        self.stream([{"insertId": "x2", "json": {"id": 2, "source": "h"}},
                     {"insertId": "x2", "json": {"id": 2, "source": "h"}}])
        self.assertEqual(len(self.dump()), 2)
        # rows without insertId are never de-duplicated
        self.stream([{"json": {"id": 3, "source": "h"}}] * 2)
        self.assertEqual(len(self.dump()), 4)
        # remembered for 60 s
        self.clock.advance(61)
        self.stream([row])
        self.assertEqual(len(self.dump()), 5)

    def test_all_or_nothing_by_default(self):
        st, b = self.stream([
            {"insertId": "a", "json": {"id": 1, "source": "h"}},
            {"insertId": "b", "json": {"id": 2, "source": "h", "bogus": 1}},
            {"insertId": "c", "json": {"id": "notanint", "source": "h"}},
        ])
        self.assertEqual(st, 200)
        errs = {e["index"]: e["errors"] for e in b["insertErrors"]}
        self.assertEqual(errs[0][0]["reason"], "stopped")
        self.assertEqual(errs[1][0]["reason"], "invalid")
        self.assertEqual(errs[1][0]["location"], "bogus")
        self.assertIn("no such field", errs[1][0]["message"])
        self.assertEqual(errs[2][0]["reason"], "invalid")
        self.assertEqual(errs[2][0]["location"], "id")
        self.assertEqual(self.dump(), [])
        # the stopped row can be re-sent as-is (its insertId was not used)
        st, b = self.stream([{"insertId": "a",
                              "json": {"id": 1, "source": "h"}}])
        self.assertNotIn("insertErrors", b)
        self.assertEqual(len(self.dump()), 1)

    def test_skip_invalid_rows(self):
        st, b = self.stream([
            {"json": {"id": 1, "source": "h"}},
            {"json": {"id": 2, "source": "h", "bogus": 1}},
        ], skipInvalidRows=True)
        self.assertEqual([e["index"] for e in b["insertErrors"]], [1])
        self.assertEqual([r["id"] for r in self.dump()], [1])

    def test_ignore_unknown_values(self):
        st, b = self.stream([{"json": {"id": 1, "source": "h", "x": 1}}],
                            ignoreUnknownValues=True)
        self.assertNotIn("insertErrors", b)
        self.assertEqual(len(self.dump()), 1)

    def test_required_field_missing(self):
        st, b = self.stream([{"json": {"id": 1}}])
        self.assertIn("Missing required field: source",
                      b["insertErrors"][0]["errors"][0]["message"])

    def test_value_conversion(self):
        st, b = self.stream([{"json": {
            "id": "12", "source": "h", "timestamp": "2026-01-01T00:00:00",
            "updated_at": 1767225600, "ok": "true", "amount": "1.5"}}])
        self.assertNotIn("insertErrors", b)
        r = self.dump()[0]
        self.assertEqual(r["id"], 12)
        self.assertEqual(r["updated_at"],
                         dt.datetime(2026, 1, 1, tzinfo=UTC))
        self.assertIs(r["ok"], True)

    def test_unknown_table(self):
        st, b = self.svc.handle(
            "POST", "projects/proj/datasets/ds/tables/zz/insertAll", {},
            {"rows": [{"json": {}}]})
        self.assertEqual(st, 404)


class TestJobs(Base):
    def test_request_id_dedup(self):
        body = {"query": "INSERT INTO %s (id, source) VALUES (1, 'a')" % T,
                "useLegacySql": False, "requestId": "req-1"}
        st1, b1 = self.svc.handle("POST", "projects/proj/queries", {}, body)
        st2, b2 = self.svc.handle("POST", "projects/proj/queries", {}, body)
        self.assertEqual((st1, st2), (200, 200))
        self.assertEqual(b1, b2)
        self.assertEqual(len(self.dump()), 1)
        # a different requestId runs again
        body2 = dict(body, requestId="req-2")
        self.svc.handle("POST", "projects/proj/queries", {}, body2)
        self.assertEqual(len(self.dump()), 2)
        # and the memory expires after 15 minutes
        self.clock.advance(901)
        self.svc.handle("POST", "projects/proj/queries", {}, body)
        self.assertEqual(len(self.dump()), 3)

    def test_legacy_sql_default_rejected(self):
        st, b = self.svc.handle("POST", "projects/proj/queries", {},
                                {"query": "SELECT id FROM `p.d.t`"})
        self.assertEqual(st, 400)
        self.assertEqual(
            b["error"]["message"],
            "Invalid table name: `p.d.t` [Try using standard SQL "
            "(https://cloud.google.com/bigquery/docs/reference/standard-sql/"
            "enabling-standard-sql)].")
        self.assertEqual(b["error"]["errors"][0]["reason"], "invalidQuery")
        st, b = self.query("UPDATE ds.registry SET status = @s WHERE id = 1",
                           [P("s", "STRING", "x")], useLegacySql=True)
        self.assertEqual(st, 400)
        st, b = self.svc.handle("POST", "projects/proj/queries", {},
                                {"query": "DELETE FROM ds.registry WHERE "
                                          "id = 1"})
        self.assertEqual(st, 400)
        self.assertIn("standard SQL", b["error"]["message"])

    def test_standard_sql_prefix(self):
        self.insert(1)
        st, b = self.svc.handle("POST", "projects/proj/queries", {}, {
            "query": "#standardSQL\nSELECT COUNT(*) FROM %s" % T})
        self.assertEqual(st, 200, b)
        st, b = self.svc.handle("POST", "projects/proj/queries", {}, {
            "query": "#standardSQL\nSELECT 1", "useLegacySql": True})
        self.assertEqual(st, 400)

    def test_jobs_insert_get_and_duplicate(self):
        job = {"jobReference": {"projectId": "proj", "jobId": "sb_run_1",
                                "location": "US"},
               "configuration": {"query": {
                   "query": "INSERT INTO %s (id, source) VALUES (@id, 'a')"
                            % T,
                   "useLegacySql": False, "parameterMode": "NAMED",
                   "queryParameters": [P("id", "INT64", "1")]}}}
        st, b = self.svc.handle("POST", "projects/proj/jobs", {}, job)
        self.assertEqual(st, 200)
        self.assertEqual(b["status"]["state"], "DONE")
        self.assertNotIn("errorResult", b["status"])
        self.assertEqual(b["statistics"]["query"]["numDmlAffectedRows"], "1")
        st, b = self.svc.handle("POST", "projects/proj/jobs", {}, job)
        self.assertEqual(st, 409)
        self.assertEqual(b["error"]["message"],
                         "Already Exists: Job proj:US.sb_run_1")
        self.assertEqual(b["error"]["errors"][0]["reason"], "duplicate")
        self.assertEqual(len(self.dump()), 1)
        st, b = self.svc.handle("GET", "projects/proj/jobs/sb_run_1",
                                {"location": ["US"]}, None)
        self.assertEqual(st, 200)
        self.assertEqual(b["jobReference"]["jobId"], "sb_run_1")
        self.assertEqual(b["status"]["state"], "DONE")
        st, b = self.svc.handle("GET", "projects/proj/queries/sb_run_1", {},
                                None)
        self.assertEqual(st, 200)
        self.assertEqual(b["numDmlAffectedRows"], "1")
        st, b = self.svc.handle("GET", "projects/proj/jobs/nope", {}, None)
        self.assertEqual(st, 404)

    def test_failed_job_has_error_result(self):
        st, b = self.svc.handle("POST", "projects/proj/jobs", {}, {
            "jobReference": {"jobId": "bad1"},
            "configuration": {"query": {"query": "SELECT nope FROM %s" % T,
                                        "useLegacySql": False}}})
        self.assertEqual(st, 200)
        self.assertEqual(b["status"]["state"], "DONE")
        self.assertEqual(b["status"]["errorResult"]["reason"], "invalidQuery")
        st, b = self.svc.handle("GET", "projects/proj/jobs/bad1", {}, None)
        self.assertIn("errorResult", b["status"])
        st, b = self.svc.handle("GET", "projects/proj/queries/bad1", {}, None)
        self.assertEqual(st, 400)

    def test_slow_query_polling(self):
        self.insert(1)
        self.svc.slow_queries = 2
        st, b = self.query("SELECT id FROM %s" % T)
        self.assertEqual(st, 200)
        self.assertFalse(b["jobComplete"])
        self.assertNotIn("rows", b)
        jid = b["jobReference"]["jobId"]
        path = "projects/proj/queries/" + jid
        st, b = self.svc.handle("GET", path, {"timeoutMs": ["1000"]}, None)
        self.assertFalse(b["jobComplete"])
        self.assertEqual(b["kind"], "bigquery#getQueryResultsResponse")
        st, b = self.svc.handle("GET", path, {}, None)
        self.assertTrue(b["jobComplete"])
        self.assertEqual(b["rows"], [{"f": [{"v": "1"}]}])

    def test_slow_jobs_insert_reports_running(self):
        self.svc.slow_queries = 1
        st, b = self.svc.handle("POST", "projects/proj/jobs", {}, {
            "jobReference": {"jobId": "slow1"},
            "configuration": {"query": {"query": "SELECT 1",
                                        "useLegacySql": False}}})
        self.assertEqual(b["status"]["state"], "RUNNING")
        st, b = self.svc.handle("GET", "projects/proj/jobs/slow1", {}, None)
        self.assertEqual(b["status"]["state"], "DONE")

    def test_paging(self):
        for i in range(5):
            self.insert(i)
        b = self.ok("SELECT id FROM %s ORDER BY id" % T, maxResults=2)
        self.assertEqual(len(b["rows"]), 2)
        self.assertEqual(b["totalRows"], "5")
        st, b2 = self.svc.handle(
            "GET", "projects/proj/queries/" + b["jobReference"]["jobId"],
            {"pageToken": b["pageToken"], "maxResults": "10"}, None)
        self.assertEqual([r["f"][0]["v"] for r in b2["rows"]], ["2", "3", "4"])
        self.assertNotIn("pageToken", b2)


class TestResources(Base):
    def test_datasets_and_tables(self):
        st, b = self.svc.handle("GET", "projects/proj/datasets/ds", {}, None)
        self.assertEqual((st, b["id"]), (200, "proj:ds"))
        st, b = self.svc.handle("GET", "projects/proj/datasets/nope", {},
                                None)
        self.assertEqual(st, 404)
        st, b = self.svc.handle("POST", "projects/proj/datasets", {}, {
            "datasetReference": {"projectId": "proj", "datasetId": "ds"}})
        self.assertEqual(st, 409)
        self.assertEqual(b["error"]["errors"][0]["reason"], "duplicate")
        st, b = self.svc.handle("GET", "/bigquery/v2/projects/proj/datasets/"
                                "ds/tables/registry", {}, None)
        self.assertEqual(st, 200)
        self.assertEqual(b["schema"]["fields"][0]["name"], "id")
        st, b = self.svc.handle("POST", "projects/proj/datasets/ds/tables",
                                {}, {"tableReference": {"tableId": "registry"},
                                     "schema": {"fields": SCHEMA}})
        self.assertEqual(st, 409)
        st, b = self.svc.handle("POST", "projects/proj/datasets/zz/tables",
                                {}, {"tableReference": {"tableId": "t"}})
        self.assertEqual(st, 404)
        st, b = self.svc.handle("GET", "projects/proj/datasets/ds/tables/zz",
                                {}, None)
        self.assertEqual(st, 404)
        self.assertEqual(b["error"]["status"], "NOT_FOUND")

    def test_extra_schema_column_usable(self):
        self.svc.create_table("proj", "ds", "t2", [
            {"name": "id", "type": "INT64"}, {"name": "extra", "type": "STRING"}])
        self.ok("INSERT INTO ds.t2 (id, extra) VALUES (1, 'x')")
        self.assertEqual(self.rows("SELECT extra FROM ds.t2"), [["x"]])

    def test_raw_json_body_and_unknown_route(self):
        st, b = self.svc.handle("POST", "projects/proj/queries", {},
                                b'{"query": "SELECT 1", "useLegacySql": false}')
        self.assertEqual(st, 200)
        self.assertEqual(b["rows"], [{"f": [{"v": "1"}]}])
        st, b = self.svc.handle("GET", "projects/proj/whatever", {}, None)
        self.assertEqual(st, 404)


class TestThreads(Base):
    def test_concurrent_calls(self):
        import threading

        def worker(k):
            for i in range(20):
                self.stream([{"insertId": "w%d-%d" % (k, i),
                              "json": {"id": k * 100 + i, "source": "s"}}])
                self.query("INSERT INTO %s (id, source) SELECT @id, 'd' "
                           "WHERE NOT EXISTS (SELECT 1 FROM %s WHERE id = @id "
                           "AND source = 'd')" % (T, T),
                           [P("id", "INT64", str(i))])
        threads = [threading.Thread(target=worker, args=(k,))
                   for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = self.dump()
        self.assertEqual(len([r for r in rows if r["source"] == "s"]), 160)
        self.assertEqual(len([r for r in rows if r["source"] == "d"]), 20)


class TestEngineDirect(unittest.TestCase):
    """bqsql without the REST layer."""

    def test_store_execute(self):
        now = [100.0]
        store = bqsql.BigQueryStore(now=lambda: now[0])
        store.create_dataset("p", "d")
        store.create_table("p", "d", "t", [{"name": "a", "type": "INT64"}])
        r = store.execute("INSERT INTO `p.d.t` (a) VALUES (1), (2)",
                          project="p")
        self.assertEqual(r.affected, 2)
        r = store.execute("SELECT a FROM d.t WHERE a > @x ORDER BY a",
                          [P("x", "INT64", "1")], project="p")
        self.assertEqual(r.rows, [[2]])
        self.assertEqual(r.rows_json(), [{"f": [{"v": "2"}]}])

    def test_bqerror_fields(self):
        store = bqsql.BigQueryStore()
        with self.assertRaises(bqsql.BQError) as cm:
            store.execute("SELEC 1")
        self.assertEqual(cm.exception.reason, "invalidQuery")
        self.assertIn("[1:1]", cm.exception.message)



# ---------------------------------------------------------------------------
class TestUnionAndUnnest(Base):
    """Issue 12: UNION ALL, UNNEST(...) as a row source, STRUCT parameters
    and MERGE ... USING UNNEST(@rows), the natural registry upsert."""

    ROWS_TYPE = {"type": "ARRAY", "arrayType": {"type": "STRUCT", "structTypes": [
        {"name": "id", "type": {"type": "INT64"}},
        {"name": "source", "type": {"type": "STRING"}},
        {"name": "command", "type": {"type": "STRING"}}]}}

    def rows_param(self, rows):
        return {"name": "rows", "parameterType": self.ROWS_TYPE,
                "parameterValue": {"arrayValues": [
                    {"structValues": {"id": {"value": i}, "source": {"value": s},
                                      "command": {"value": c}}}
                    for i, s, c in rows]}}

    def test_union_all(self):
        self.assertEqual(self.rows("SELECT 2 AS x UNION ALL SELECT 1 UNION ALL SELECT 2 ORDER BY x"),
                         [["1"], ["2"], ["2"]])
        self.assertEqual(self.rows("SELECT 2 AS x UNION DISTINCT SELECT 2"), [["2"]])
        self.assertEqual(self.rows("SELECT 1 AS x UNION ALL SELECT 2.5 ORDER BY x DESC LIMIT 1"), [["2.5"]])
        self.insert(1)
        self.assertEqual(self.rows("SELECT id FROM %s UNION ALL SELECT 7 ORDER BY id" % T), [["1"], ["7"]])
        self.assertIn("column count", self.err("SELECT 1 UNION ALL SELECT 1, 2")["message"])
        self.assertIn("incompatible", self.err("SELECT 1 UNION ALL SELECT 'a'")["message"])
        self.assertIn("Different set operations",
                      self.err("SELECT 1 UNION ALL SELECT 2 UNION DISTINCT SELECT 3")["message"])
        self.assertIn("Expected keyword ALL", self.err("SELECT 1 UNION SELECT 2")["message"])

    def test_unnest_scalar_source(self):
        p = {"name": "xs", "parameterType": {"type": "ARRAY", "arrayType": {"type": "INT64"}},
             "parameterValue": {"arrayValues": [{"value": "3"}, {"value": "1"}, {"value": "2"}]}}
        self.assertEqual(self.rows("SELECT x FROM UNNEST(@xs) AS x WHERE x > 1 ORDER BY x", [p]),
                         [["2"], ["3"]])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM UNNEST(GENERATE_ARRAY(1, 10, 3))"), [["4"]])
        self.assertIn("must be arrays", self.err("SELECT * FROM UNNEST(1)")["message"])

    def test_unnest_struct_source_and_merge_upsert(self):
        self.insert(1, command="old")
        self.assertEqual(self.rows("SELECT r.id, command FROM UNNEST(@rows) r ORDER BY id",
                                   [self.rows_param([(2, "h", "b"), (1, "h", "a")])]),
                         [["1", "a"], ["2", "b"]])
        n = self.affected(
            "MERGE %s T USING UNNEST(@rows) S ON T.id = S.id "
            "WHEN MATCHED THEN UPDATE SET command = S.command "
            "WHEN NOT MATCHED THEN INSERT (id, source, command) VALUES (S.id, S.source, S.command)" % T,
            [self.rows_param([(1, "h1", "new"), (2, "h2", "two")])])
        self.assertEqual(n, 2)
        self.assertEqual([(r["id"], r["command"]) for r in self.dump()], [(1, "new"), (2, "two")])

    def test_merge_using_union_all(self):
        self.insert(1)
        n = self.affected(
            "MERGE %s T USING (SELECT 1 AS id UNION ALL SELECT 3) S ON T.id = S.id "
            "WHEN NOT MATCHED THEN INSERT (id, source) VALUES (S.id, 'u')" % T)
        self.assertEqual(n, 1)
        self.assertEqual(sorted(r["id"] for r in self.dump()), [1, 3])


# ---------------------------------------------------------------------------
class TestMergeIndex(unittest.TestCase):
    """MERGE finds matching rows through a hash index on ON's equality
    conjuncts (statements._equi_join); its result and its errors must be
    the nested loop's, row for row, whatever the keys hold."""

    FIELDS = [{"name": "id", "type": "INT64"}, {"name": "source", "type": "STRING"},
              {"name": "x", "type": "FLOAT64"}, {"name": "note", "type": "STRING"}]
    ROW_TYPE = {"type": "ARRAY", "arrayType": {"type": "STRUCT", "structTypes": [
        {"name": "id", "type": {"type": "INT64"}}, {"name": "source", "type": {"type": "STRING"}},
        {"name": "x", "type": {"type": "FLOAT64"}}, {"name": "note", "type": {"type": "STRING"}}]}}
    ONS = ["T.id = S.id AND T.source = S.source",
           "S.source = T.source AND T.id = S.id",
           "T.id = S.id AND T.note = 'n1'",
           "T.id = S.id OR T.source = S.source",
           "T.x = S.id",                       # INT64 coerced to FLOAT64
           "T.x = S.x",                        # NaN keys: no index
           "T.id + 0 = S.id",                  # not a plain column: no index
           "T.source = S.source"]              # duplicates: errors
    TAILS = ["WHEN MATCHED THEN UPDATE SET note = S.note "
             "WHEN NOT MATCHED THEN INSERT (id, source, x, note) VALUES (S.id, S.source, S.x, S.note)",
             "WHEN NOT MATCHED THEN INSERT ROW",
             "WHEN MATCHED AND S.note = 'n2' THEN DELETE WHEN NOT MATCHED BY SOURCE THEN UPDATE SET note = 'gone'"]

    def store(self, rows):
        st = bqsql.BigQueryStore(now=lambda: 1000.0)
        st.create_dataset("p", "d")
        st.create_table("p", "d", "t", self.FIELDS)
        if rows:
            st.execute("INSERT INTO `p.d.t` (id, source, x, note) SELECT * FROM UNNEST(@r)",
                       [self.param(rows)], project="p")
        return st

    def param(self, rows):
        def v(x):
            return {} if x is None else {"value": x}
        return {"name": "r", "parameterType": self.ROW_TYPE, "parameterValue": {"arrayValues": [
            {"structValues": {"id": v(i), "source": v(s), "x": v(x), "note": v(n)}} for i, s, x, n in rows]}}

    def outcome(self, rows, src, sql):
        st = self.store(rows)
        try:
            r = st.execute(sql, [self.param(src)], project="p")
            res = (r.affected, r.inserted, r.updated, r.deleted)
        except bqsql.BQError as e:
            res = ("error", e.reason, e.message)
        t = st.tables[("p", "d", "t")]
        # repr: a NaN is not equal to itself
        return repr((res, [sorted(r.values.items(), key=lambda kv: kv[0]) for r in t.rows]))

    def test_same_as_nested_loop(self):
        import random
        from gfake.bqsql import statements
        rnd = random.Random(14)

        def row():
            return (rnd.choice([None, 1, 2, 3, 4, 5]), rnd.choice([None, "onprem", "gcp"]),
                    rnd.choice([None, "1", "2.0", "NaN", "2.5"]), rnd.choice([None, "n1", "n2"]))
        real = statements._equi_join
        checked = 0
        for trial in range(150):
            rows = [row() for _ in range(rnd.randrange(0, 8))]
            src = [row() for _ in range(rnd.randrange(0, 6))]
            sql = "MERGE `p.d.t` T USING UNNEST(@r) S ON %s %s" % (rnd.choice(self.ONS), rnd.choice(self.TAILS))
            want = None
            try:
                statements._equi_join = lambda *a: None
                want = self.outcome(rows, src, sql)
            finally:
                statements._equi_join = real
            self.assertEqual(self.outcome(rows, src, sql), want, (sql, rows, src))
            checked += 1
        self.assertEqual(checked, 150)

    def test_index_is_used_for_the_registry_merge(self):
        from gfake.bqsql import statements
        calls = []
        real = statements._equi_join

        def spy(*a):
            out = real(*a)
            calls.append(out is not None)
            return out
        statements._equi_join = spy
        try:
            rows = [(i, s, None, "n") for i in range(300) for s in ("onprem", "gcp")]
            st = self.store(rows)
            r = st.execute("MERGE `p.d.t` T USING UNNEST(@r) S ON T.id = S.id AND T.source = S.source "
                           "WHEN NOT MATCHED THEN INSERT ROW",
                           [self.param([(5, "gcp", None, "u"), (999, "gcp", None, "new")])], project="p")
        finally:
            statements._equi_join = real
        self.assertEqual(calls, [True])
        self.assertEqual((r.affected, r.inserted), (1, 1))
        self.assertEqual(len(st.tables[("p", "d", "t")].rows), 601)


if __name__ == "__main__":
    unittest.main()
