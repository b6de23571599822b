"""PyAirbyte with the real source-faker into destination-redis, end to end.

Run by scripts/pyairbyte.sh (which makes the virtualenvs and starts redis-server):

    python test_faker.py <destination binary> <source-faker executable> <redis port>

The destination runs through a small wrapper that copies its stdin to a file, so every check
compares Redis with exactly the records PyAirbyte sent: ids 1..N per stream in arrival order,
`_airbyte_ab_id`, `_airbyte_emitted_at` and `_airbyte_data` of each.
"""

import json
import os
import stat
import sys
import tempfile
import time

os.environ["AIRBYTE_OFFLINE_MODE"] = "1"  # no registry download, no telemetry

import airbyte as ab  # noqa: E402
import redis  # noqa: E402

COUNT = int(os.environ.get("FAKER_COUNT", "2000"))
STREAMS = ["users", "products", "purchases"]


def wrapper(binary: str, capture: str, directory: str) -> str:
    """An executable that runs the destination, copying the stdin of `write` to `capture`."""
    path = os.path.join(directory, "destination-redis")
    with open(path, "w") as f:
        f.write(
            "#!/bin/sh\n"
            'if [ "$1" = write ]; then\n'
            f'  tee "{capture}" | "{binary}" "$@"\n'
            "else\n"
            f'  exec "{binary}" "$@"\n'
            "fi\n"
        )
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def sent_records(capture: str) -> dict:
    """stream -> the `data` of its RECORD messages, in the order the destination received them."""
    records = {s: [] for s in STREAMS}
    with open(capture) as f:
        for line in f:
            message = json.loads(line)
            if message.get("type") == "RECORD":
                record = message["record"]
                assert record.get("namespace") is None, record.get("namespace")
                records[record["stream"]].append(record["data"])
    return records


def stream_in_redis(r: redis.Redis, stream: str) -> list:
    """The stream's records, checking the counter, the id sequence and every field."""
    counter = r.get(f":{stream}")
    assert counter is not None, f"no counter for {stream}"
    n = int(counter)
    ids = sorted(int(k.rsplit(":", 1)[1]) for k in r.scan_iter(match=f":{stream}:*", count=1000))
    assert ids == list(range(1, n + 1)), f"{stream}: ids are not 1..{n}"
    pipe = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        pipe.hgetall(f":{stream}:{i}")
    now_ms = time.time() * 1000
    datas = []
    for i, h in enumerate(pipe.execute(), start=1):
        assert set(h) == {"_airbyte_ab_id", "_airbyte_emitted_at", "_airbyte_data"}, h
        assert h["_airbyte_ab_id"] == str(i), h
        emitted = int(h["_airbyte_emitted_at"])
        assert now_ms - 3_600_000 < emitted <= now_ms + 60_000, f"emitted_at {emitted}"
        datas.append(json.loads(h["_airbyte_data"]))
    return datas


CURSOR = "updated_at"  # source-faker's cursor on every stream
KEY = "id"  # and its primary key


def latest_by_key(datas: list) -> dict:
    """primary key -> the winning record: greatest cursor (null lowest), ties to the later one."""
    winners = {}
    for d in datas:
        key = json.dumps([d[KEY]])
        old = winners.get(key)
        if old is None or (d.get(CURSOR) or "") >= (old.get(CURSOR) or ""):
            winners[key] = d
    return winners


def dedup_in_redis(r: redis.Redis, stream: str) -> dict:
    """primary key text -> record data, through the stream's index; every indexed record exists."""
    index = r.hgetall(f"_airbyte_redis:index::{stream}")
    out = {}
    for key, entry in index.items():
        rid = int(entry.split(":", 1)[0])
        assert rid > 0, f"{stream}: no deletes were sent, yet {key} is deleted"
        h = r.hgetall(f":{stream}:{rid}")
        assert h["_airbyte_ab_id"] == str(rid), h
        out[json.dumps(json.loads(key))] = json.loads(h["_airbyte_data"])
    records = sum(1 for _ in r.scan_iter(match=f":{stream}:*", count=1000))
    assert records == len(out), f"{stream}: {records} record keys for {len(out)} keys"
    return out


def snapshot(r: redis.Redis) -> dict:
    """Every key of the three streams with its counter value or record id set."""
    return {s: (r.get(f":{s}"), sorted(r.scan_iter(match=f":{s}:*", count=1000))) for s in STREAMS}


def main() -> int:
    binary, faker, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    work = tempfile.mkdtemp(prefix="pyairbyte-")
    capture = os.path.join(work, "stdin.jsonl")
    source = ab.get_source(
        "source-faker",
        config={"count": COUNT, "seed": 42, "parallelism": 1, "records_per_slice": 500},
        local_executable=faker,
        streams=STREAMS,
    )
    executable = wrapper(binary, capture, work)

    def destination(**extra):
        return ab.get_destination(
            "destination-redis",
            config={"host": "127.0.0.1", "port": port, **extra},
            local_executable=executable,
        )

    # PyAirbyte stamps every stream with generation_id = minimum_generation_id = 1, which the
    # protocol reads as a truncate refresh: by default (truncate_refreshes: true) even its
    # "append" replaces the stream; with truncate_refreshes: false, "append" appends.
    appending = destination(truncate_refreshes=False)
    refreshing = destination()
    refreshing.check()

    expected = {s: [] for s in STREAMS}
    runs = [
        ("append", appending, True),
        ("append", appending, True),
        ("append (truncate refresh)", refreshing, False),
        ("replace", appending, False),
    ]
    for run, (name, dest, appends) in enumerate(runs, start=1):
        started = time.monotonic()
        strategy = name.split()[0]
        result = dest.write(source, cache=False, state_cache=False, write_strategy=strategy)
        sent = sent_records(capture)
        assert sent["users"], "source-faker sent no users"
        for s in STREAMS:
            expected[s] = (expected[s] if appends else []) + sent[s]
            assert stream_in_redis(r, s) == expected[s], f"run {run}: {s} differs from what was sent"
        counts = {s: len(sent[s]) for s in STREAMS}
        print(
            f"run {run} ({name}): sent {counts}, Redis now holds "
            f"{ {s: len(expected[s]) for s in STREAMS} }, {time.monotonic() - started:.1f} s,"
            f" PyAirbyte counted {result.processed_records} records"
        )
        if run == 2:
            assert len(expected["users"]) == 2 * COUNT, "the second append must add a copy"
    assert len(expected["users"]) == COUNT, "replace must leave exactly one copy"

    # PyAirbyte's default strategy asks for append_dedup on streams with a primary key (all of
    # faker's). Over the records the replace left (written without a primary-key index) it is
    # refused with a config_error, and Redis is left as it was.
    before = snapshot(r)
    try:
        appending.write(source, cache=False, state_cache=False, write_strategy="auto")
    except Exception as e:  # PyAirbyte raises AirbyteConnectorWriteError; the TRACE is in its log
        log_file = getattr(e, "log_file", None)
        log = open(log_file).read() if log_file else ""
        traces = [
            json.loads(line[line.index("{") :])["trace"]["error"]
            for line in log.splitlines()
            if '"trace"' in line and '"error"' in line
        ]
        assert traces, f"no TRACE error in the connector's log: {e!r}"
        assert traces[0]["failure_type"] == "config_error", traces[0]
        assert "without a primary-key index entry" in traces[0]["message"], traces[0]
        print(f"run 5 (auto -> append_dedup over appended records): refused: {traces[0]['message']}")
    else:
        raise AssertionError("append_dedup over records without an index was accepted")
    assert snapshot(r) == before, "the refused run changed Redis"

    # From an empty database: "auto" twice and "merge" once, the same seed each time: every
    # stream holds exactly one record per primary key, the source's latest (greatest cursor,
    # ties to the later arrival), found through the index.
    r.flushdb()
    sent_all = {s: [] for s in STREAMS}
    # Runs 9 and 10 with the default truncate_refreshes: PyAirbyte's generation 1 makes them
    # truncate refreshes of append_dedup streams: the first stages and publishes, the second finds
    # generation 1 published and upserts into it.
    plan = [("auto", appending), ("auto", appending), ("merge", appending)]
    plan += [("auto (truncate refresh)", refreshing), ("auto (refresh, published)", refreshing)]
    for run, (strategy, dest) in enumerate(plan, start=6):
        started = time.monotonic()
        dest.write(source, cache=False, state_cache=False, write_strategy=strategy.split()[0])
        sent = sent_records(capture)
        for s in STREAMS:
            sent_all[s] += sent[s]
            assert dedup_in_redis(r, s) == latest_by_key(sent_all[s]), f"run {run}: {s} differs"
        print(
            f"run {run} ({strategy} -> append_dedup): sent {({s: len(sent[s]) for s in STREAMS})},"
            f" Redis holds { {s: len(latest_by_key(sent_all[s])) for s in STREAMS} } keys,"
            f" {time.monotonic() - started:.1f} s"
        )
    print("PyAirbyte + source-faker: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
