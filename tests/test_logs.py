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


def test_an_abuse_label_applies_from_its_since_time_and_earlier_events_stay_normal(tmp_path):
    log = tmp_path / "log.jsonl"  # a's own history, then the account taken over from 1700000060000
    log.write_text("".join(f'{{"user_id":"a","ts":{t},"type":"view"}}\n' for t in (1700000000000, 1700000030000,
                                                                                 1700000060000, 1700000061000)))
    labels = tmp_path / "labels.csv"
    labels.write_text("user_id,label,attack,since,at,verdict\na,1,takeover,1700000060000,1700000100000,abuse\n")
    (res,) = list(logs.iter_events(log, logs.LogSpec(labels=logs.read_labels(labels))))
    assert res.events.label.tolist() == [0, 0, 1, 1]
    assert [e.attack for e in res.events.events] == [None, None, "takeover", "takeover"]


def test_a_since_that_is_not_an_epoch_time_is_refused_with_its_line(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("user_id,label,since\na,1,1700000060000\nb,1,yesterday\n")
    with pytest.raises(logs.LogFormatError, match=r"labels.csv:3: since must be an event time"):
        logs.read_labels(labels)


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


def test_float_second_timestamps_are_read_in_any_unit(tmp_path):
    path = tmp_path / "yoochoose.tsv"
    path.write_text("session\tts\titem\n1\t1396321232.123\t214536502\n1\t1396321275.5\t214536500\n")
    spec = logs.LogSpec(columns={"session": "user_id", "item": "item_id"}, constants={"type": "click"})
    (res,) = list(logs.iter_events(path, spec))
    assert not res.rejects
    assert res.events.ts.tolist() == [1396321232123, 1396321275500]
    assert res.events.type == ["click", "click"]


@pytest.mark.parametrize("value", [1511544070, 1511544070000, 1511544070000000, 1511544070000000000, 1511544070.0])
def test_the_timestamp_unit_is_read_off_its_magnitude_by_default(tmp_path, value):
    path = tmp_path / "x.jsonl"
    path.write_text(f'{{"user_id": "u", "ts": {value}, "type": "view"}}\n')
    (res,) = list(logs.iter_events(path))
    assert res.events.ts.tolist() == [1511544070000]


def test_values_can_be_mapped_onto_the_models_names(tmp_path):
    path = tmp_path / "taobao.csv"
    path.write_text("1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n")
    spec = logs.LogSpec(column_names=["user_id", "item_id", "category_id", "type", "ts"],
                        value_maps=logs.parse_value_maps(["type:pv=view,buy=purchase"]))
    (res,) = list(logs.iter_events(path, spec))
    assert res.events.type == ["view", "purchase"]


def test_a_headerless_csv_read_without_columns_says_use_columns(tmp_path):
    path = tmp_path / "taobao.csv"
    path.write_text("1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n")
    with pytest.raises(logs.LogFormatError, match="--columns"):
        list(logs.iter_events(path))


def test_reject_tally_summarises_by_reason_and_refuses_a_mostly_rejected_run(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"user_id": "u", "ts": true, "type": "view"}\n' * 3 + '{"user_id": "u", "ts": 1700000000000, "type": "v"}\n')
    tally = logs.RejectTally()
    for _ in logs.iter_events(path, tally=tally):
        pass
    assert tally.seen == 4 and tally.by_reason == {"bad-type": 3}
    assert tally.summary()[0].startswith("rejected 3 of 4 records (75.0%): bad-type - e.g. ")
    tally.check(0.99)
    with pytest.raises(logs.LogFormatError, match="mostly bad-type"):
        tally.check(0.5)


@pytest.mark.parametrize("bad", [["type"], ["=x"], ["type="]])
def test_malformed_set_options_are_one_line_errors(bad):
    with pytest.raises(logs.LogFormatError, match="FIELD=VALUE"):
        logs.parse_constants(bad)


def test_a_jsonl_line_is_passed_on_as_the_options_rewrote_it(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"sid": 7, "ts": 1396321232.5, "type": "pv"}\n{"user_id": "u", "ts": 1700000000000, "type": "v"}\n')
    (chunk,) = list(logs.iter_chunks(path, logs.LogSpec(columns={"sid": "user_id"},
                                                         value_maps={"type": {"pv": "view"}})))
    assert chunk.raw[0] == b'{"user_id":7,"ts":1396321232500,"type":"view"}'


def test_iter_events_refuses_a_mostly_rejected_log_at_its_end(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"user_id": "u", "ts": "yesterday", "type": "view"}\n' * 3)
    with pytest.raises(logs.LogFormatError, match="mostly bad-timestamp"):
        list(logs.iter_events(path, tally=logs.RejectTally(), max_reject_share=0.5))
