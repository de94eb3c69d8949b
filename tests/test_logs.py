"""Event logs: JSONL/CSV/Parquet (+gzip), column mapping, labels files, clear errors."""

from __future__ import annotations

import pytest

from stream import logs
from training.synth import generate_list

RECORDS = generate_list(events=2_000, seed=5)


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz", "x.csv", "x.csv.gz", "x.parquet"])
def test_write_then_read_gives_the_same_events(tmp_path, name):
    path = tmp_path / name
    assert logs.write_log(path, [RECORDS[:1000], RECORDS[1000:]]) == 2000
    got = [e for res in logs.iter_events(path, logs.LogSpec(chunk_size=700)) for e in res.events.events]
    assert [e.to_record() for e in got] == [{k: v for k, v in r.items() if v is not None} for r in RECORDS]


def test_real_column_names_are_mapped_onto_the_contract(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid\n1433221332117,257597,view,355908\n1433224214164,992329,addtocart,248676\n")
    spec = logs.LogSpec(columns=logs.parse_column_map(["visitorid=user_id", "event=type", "timestamp=ts", "itemid=item_id"]))
    (res,) = list(logs.iter_events(path, spec))
    assert not res.rejects
    assert res.events.user_id == ["257597", "992329"]
    assert res.events.type == ["view", "addtocart"]


def test_headerless_csv_with_second_timestamps(tmp_path):
    path = tmp_path / "taobao.csv"
    path.write_text("1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n")
    spec = logs.LogSpec(column_names=["user_id", "item_id", "category_id", "type", "ts"], ts_unit="s")
    (res,) = list(logs.iter_events(path, spec))
    assert res.events.ts.tolist() == [1511544070000, 1511561733000]
    assert res.events.events[0].item_id == "2268318"


def test_labels_can_come_from_a_separate_file(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"user_id":"a","ts":1700000000000,"type":"view"}\n{"user_id":"b","ts":1700000000001,"type":"view"}\n')
    labels = tmp_path / "labels.csv"
    labels.write_text("user_id,label,attack\nb,1,scraping\n")
    (res,) = list(logs.iter_events(log, logs.LogSpec(labels=logs.read_labels(labels))))
    assert res.events.label.tolist() == [0, 1]
    assert res.events.events[1].attack == "scraping"


def test_bad_lines_are_reported_with_reasons_not_raised(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"user_id":"a","ts":1700000000000,"type":"view"}\nnot json\n{"user_id":"a"}\n')
    (res,) = list(logs.iter_events(log))
    assert len(res.events) == 1
    assert [(r.index, r.reason) for r in res.rejects] == [(1, "not-json"), (2, "missing-field")]


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(logs.LogFormatError, match="--format"):
        logs.detect_format(tmp_path / "events.xlsx")


def test_unmapped_required_columns_are_a_clear_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("visitorid,event,timestamp\n1,view,1433221332117\n")
    with pytest.raises(logs.LogFormatError, match="--map"):
        list(logs.iter_events(path))


def test_mapping_onto_an_unknown_field_is_refused():
    with pytest.raises(logs.LogFormatError, match="unknown contract field"):
        logs.LogSpec(columns={"visitorid": "customer"})


def test_malformed_mapping_is_refused():
    with pytest.raises(logs.LogFormatError, match="SOURCE=FIELD"):
        logs.parse_column_map(["visitorid"])
