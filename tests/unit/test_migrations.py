"""The migrations folder's rules (service/migrations): numbered 1, 2, 3..., named NNNN_name.sql.

Two branches that each add "the next" migration leave a repeat; a file named otherwise would be
skipped without a word. Both must fail at load, long before a deploy.
"""

from pathlib import Path

import pytest

from service.migrations import FOLDER, MIGRATIONS, MigrationError, load


def _folder(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).write_text(f"-- {name}\nSELECT 1;\n")
    return tmp_path


def test_the_shipped_migrations_start_with_the_baseline() -> None:
    assert MIGRATIONS[0].label == "0001_baseline"
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert {p.name for p in FOLDER.glob("*.sql")} == {f"{m.label}.sql" for m in MIGRATIONS}


def test_migrations_load_in_version_order(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "0002_add_waits.sql", "0010_last.sql", "0001_baseline.sql")
    for version in range(3, 10):
        (folder / f"{version:04d}_step_{version}.sql").write_text("SELECT 1;")
    loaded = load(folder)
    assert [m.label for m in loaded[:2]] == ["0001_baseline", "0002_add_waits"]
    assert loaded[-1].label == "0010_last" and loaded[-1].version == 10
    assert loaded[0].sql == "-- 0001_baseline.sql\nSELECT 1;\n"


@pytest.mark.parametrize(
    "names",
    [
        ("0001_baseline.sql", "0003_skips_two.sql"),
        ("0001_baseline.sql", "0002_mine.sql", "0002_theirs.sql"),
        ("0002_no_baseline.sql",),
    ],
    ids=["gap", "repeat", "no-first"],
)
def test_a_gap_or_a_repeat_is_refused(tmp_path: Path, names: tuple[str, ...]) -> None:
    with pytest.raises(MigrationError, match="numbered 1, 2, 3"):
        load(_folder(tmp_path, *names))


@pytest.mark.parametrize("name", ["2_short.sql", "0002-dash.sql", "0002_Upper.sql", "0002.sql"])
def test_a_misnamed_file_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(MigrationError, match=r"NNNN_lower_case_name\.sql"):
        load(_folder(tmp_path, "0001_baseline.sql", name))
