"""Replay of rejected events (SPEC §11): edits, the gateway's answer per row, exactly once.

The edits are pure functions; the replay itself runs against the real system: rejected
events repaired with `--set` are stored once, a second replay stores nothing twice, a dry
run changes nothing, and `/reports/rejected` shows the replay state.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from adfunnel import cli, replay, storage
from adfunnel.replay import UNSET, Edit, ReplayOptions, edited, parse_set, parse_unset
from adfunnel.storage import ReplaySelection
from adfunnel.testing import Deployed, db_fetch, run, wait_until
from adfunnel.tools.generator import Generator


def test_set_and_unset_parse_paths_and_json_values() -> None:
    assert parse_set('data.user.gender="female"') == Edit(("data", "user", "gender"), "female")
    assert parse_set("data.user.age=31") == Edit(("data", "user", "age"), 31)
    assert parse_set("tags.0=null") == Edit(("tags", 0), None)
    assert parse_unset("data.engagement.videoId") == Edit(("data", "engagement", "videoId"), UNSET)
    for bad in ("data.user.gender", "data..gender=1", "=1", 'data.user.gender="female'):
        with pytest.raises(ValueError, match=r"--set|path"):
            parse_set(bad)


def test_edits_change_a_copy_and_create_what_is_missing() -> None:
    event = {"data": {"user": {"gender": "alien", "age": 30}, "tags": ["a", "b"]}}
    edits = [
        parse_set('data.user.gender="female"'),
        parse_set('data.location.city="Kyiv"'),
        parse_set('data.tags.1="c"'),
        parse_unset("data.user.age"),
        parse_unset("data.nothing.here"),
    ]
    assert edited(event, edits) == {
        "data": {"user": {"gender": "female"}, "tags": ["a", "c"], "location": {"city": "Kyiv"}}
    }
    assert event["data"]["user"] == {"gender": "alien", "age": 30}  # the original is kept
    with pytest.raises(ValueError, match="no such place"):
        edited({"data": "text"}, [parse_set("data.user=1")])


def _rejected(database: str) -> list[Any]:
    return db_fetch(
        database,
        "SELECT event_id, reason, replayed_at, replay_correlation_id, replay_outcome"
        " FROM rejected_events ORDER BY id",
    )


@pytest.mark.integration
def test_repaired_rejections_are_stored_once_and_remember_their_replay(system: Deployed) -> None:
    database = system.settings["database_url"]
    generator = Generator(seed=61)
    valid = generator.batch(20)
    aliens = [generator.corrupt(generator.facebook(), "invalid_gender") for _ in range(5)]
    missing = [generator.corrupt(generator.event(), "missing_user") for _ in range(3)]
    with system.client() as client:
        answer = client.post("/webhook", json=valid + aliens + missing).json()
    assert (answer["accepted"], answer["rejected"]) == (20, 8)
    wait_until(lambda: len(_rejected(database)) == 8, what="the rejections stored")
    endpoint = f"{system.base_url}/webhook"
    gender = ReplaySelection(reason="gender")
    fix = (parse_set('data.user.gender="female"'),)

    def replayed(**options: Any) -> replay.ReplaySummary:
        return run(replay.replay(ReplayOptions(database, endpoint, **options)))

    # A dry run validates the edited events here and changes nothing.
    dry = replayed(selection=gender, edits=fix, dry_run=True)
    assert (dry.selected, dry.stored, dry.rejected, dry.sent) == (5, 5, 0, 0)
    assert all(row["replayed_at"] is None for row in _rejected(database))

    done = replayed(selection=gender, edits=fix)
    assert (done.selected, done.sent, done.stored, done.duplicates, done.rejected) == (
        5,
        5,
        5,
        0,
        0,
    )
    assert done.correlation_id.startswith("replay-")
    ids = [event["eventId"] for event in aliens]
    stored = db_fetch(
        database,
        "SELECT event_id, user_id, event_time, correlation_id, payload, payload_json"
        " FROM event_traces WHERE event_id = ANY($1)",
        ids,
    )
    assert sorted(row["event_id"] for row in stored) == sorted(ids)
    genders = {orjson.loads(storage.event_json(row))["data"]["user"]["gender"] for row in stored}
    assert genders == {"female"}
    assert {row["correlation_id"] for row in stored} == {done.correlation_id}
    rows = [row for row in _rejected(database) if row["event_id"] in ids]
    assert {(row["replay_correlation_id"], row["replay_outcome"]) for row in rows} == {
        (done.correlation_id, "stored")
    }

    # The same rows again: not selected by default; with `again`, duplicates, stored once.
    assert replayed(selection=gender, edits=fix).selected == 0
    again = replayed(selection=ReplaySelection(reason="gender", again=True), edits=fix)
    assert (again.selected, again.stored, again.duplicates) == (5, 0, 5)
    count = db_fetch(database, "SELECT count(*) AS n FROM events WHERE event_id = ANY($1)", ids)
    assert count[0]["n"] == 5
    assert db_fetch(database, "SELECT count(*) AS n FROM events")[0]["n"] == 25

    # Without a repair the others are rejected again, and say why.
    other = replayed(selection=ReplaySelection(reason="Field required"))
    assert (other.selected, other.rejected, other.stored) == (3, 3, 0)
    outcomes = {row["replay_outcome"] for row in _rejected(database) if "required" in row["reason"]}
    assert outcomes == {"rejected: data.user: Field required"}, outcomes

    with system.client() as client:
        report = client.get("/reports/rejected", params={"limit": 8}).json()
    assert report["total"] == 8
    assert report["replay"] == {"replayed": 8, "notReplayed": 0}
    states = [sample["replay"] for sample in report["samples"]]
    assert {state["outcome"] for state in states if state["outcome"] == "duplicate"} == {
        "duplicate"
    }
    assert all(state["correlationId"].startswith("replay-") for state in states)


@pytest.mark.integration
def test_the_command_prints_its_summary(
    system: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    database = system.settings["database_url"]
    generator = Generator(seed=62)
    aliens = [generator.corrupt(generator.facebook(), "invalid_gender") for _ in range(4)]
    with system.client() as client:
        assert client.post("/webhook", json=aliens).json()["rejected"] == 4
    wait_until(lambda: len(_rejected(database)) == 4, what="the rejections stored")
    argv = [
        "replay",
        "--database-url",
        database,
        "--endpoint",
        f"{system.base_url}/webhook",
        "--reason",
        "gender",
        "--set",
        'data.user.gender="male"',
    ]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "4 selected, 4 would be sent" in capsys.readouterr().out
    assert cli.main([*argv, "--limit", "3"]) == 0
    assert "stored 3, duplicates 0" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "1 selected, 1 sent" in capsys.readouterr().out
    assert cli.main(["replay", "--database-url", database, "--set", "nojson"]) == 2
