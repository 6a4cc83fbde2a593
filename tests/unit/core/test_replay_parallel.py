"""The two-process replay must give exactly what the one-process replay gives."""

import orjson

from driftline.core.config import load_config
from driftline.core.replay import replay
from driftline.scenarios import generate, write_jsonl

CFG = load_config(env={})


def same(a, b):
    assert [orjson.dumps(x) for x in a.alerts] == [orjson.dumps(x) for x in b.alerts]
    assert a.models == b.models
    assert (a.records, a.error_count, a.orphan_outcomes) == (
        b.records,
        b.error_count,
        b.orphan_outcomes,
    )
    assert [str(e) for e in a.errors] == [str(e) for e in b.errors]


def test_two_processes_give_the_same_alerts_and_counts(tmp_path):
    path = tmp_path / "covid.jsonl"
    write_jsonl(
        path, generate("covid", models=4, events=6000, change_at=3000, seed=3, missing_labels=0.1)
    )
    one, two = replay([path], CFG, parallel=False), replay([path], CFG, parallel=True)
    assert one.alerts
    same(one, two)


def test_several_ordered_files_merge_while_streaming(tmp_path):
    records = list(generate("abrupt", models=2, events=5000, change_at=2500, seed=5))
    preds, outs = tmp_path / "p.jsonl", tmp_path / "o.jsonl.gz"
    write_jsonl(preds, [r for r in records if "prediction" in r])
    write_jsonl(outs, [r for r in records if "outcome" in r])
    same(replay([outs, preds], CFG, parallel=False), replay([outs, preds], CFG, parallel=True))


def test_unordered_input_falls_back_to_sorting_and_reports_each_bad_line_once(tmp_path):
    records = list(generate("abrupt", models=1, events=4000, change_at=2000, seed=2))
    lines = [orjson.dumps(r) for r in records]
    lines.insert(10, b"{broken")
    lines.append(lines.pop(200))  # one record far out of order, near the end
    path = tmp_path / "shuffled.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    seen = []
    two = replay([path], CFG, parallel=True, on_error=seen.append)
    one = replay([path], CFG, parallel=False)
    same(one, two)
    assert [e.line for e in seen] == [11]
    assert one.alerts
