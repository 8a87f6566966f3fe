"""Carries a local MLflow store to another folder or machine, run ids intact.

A local store here is a folder (`paths.root_dir`) with the SQLite tracking
database `mlruns.db`, the artifact folder `mlartifacts/` and the engine's
`checkpoints/`. `save` copies the three into a snapshot folder (the
database through SQLite's online backup, so a store in use is copied
consistently) and records the store's folder in `snapshot.json`;
`restore` copies a snapshot into another folder and rewrites the absolute
artifact paths that MLflow keeps in the database. Training then resumes
exactly as on the first machine: finished runs are skipped, the run in
progress continues from its last checkpoint into the same MLflow run.

Why: the long tier (`make imagenet-table SCALE=mini-long`) needs ~10 CPU
hours, more than a working session on a machine that does not outlive it.
Its snapshot (`results/imagenet_table/mini-long/store/`) carries the
finished runs, whose ids the results files cite, and the checkpoint of the
run in progress to the next machine; anyone can restore it and open the
runs behind the table in the MLflow UI.

Considered: `mlflow-export-import` (a separate package) re-creates runs
under new ids, which would break the ids the results cite; MLflow itself
stores absolute artifact paths in the SQLite store and has no command to
move them (mlflow/mlflow#3144, #8226 are open requests). So this copies
the files and rewrites the path columns.

Usage:
    python -m convnet_repro.experiments.store_snapshot save \
        --root /work/longstore --to results/imagenet_table/mini-long/store
    python -m convnet_repro.experiments.store_snapshot restore \
        --from results/imagenet_table/mini-long/store --root /work/longstore
"""

import argparse
import datetime
import json
import pathlib
import shutil
import sqlite3

DATABASE = "mlruns.db"
ARTIFACTS = "mlartifacts"
CHECKPOINTS = "checkpoints"
MANIFEST = "snapshot.json"
# MLflow's columns that hold an absolute artifact path (SQLite store).
PATH_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


def _copy_database(source, target):
    """Copies a SQLite database with the online backup API, then compacts it."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("VACUUM")
    finally:
        src.close()
        dst.close()


def _copy_folder(source, target):
    """Copies a folder without lock files; a missing source copies nothing."""
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))


def _drop_finished_checkpoints(checkpoints, database):
    """Removes the checkpoints of finished runs from a snapshot.

    A finished run is skipped on a rerun and its model is an artifact, so
    only the checkpoints of unfinished runs are carried: a step folder
    names its run in `state.json`, the early-stopping folder is named by
    its run id.
    """
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        finished = {
            run_id
            for (run_id,) in db.execute(
                "SELECT run_uuid FROM runs WHERE status = 'FINISHED'"
            )
        }
    for state in list(checkpoints.rglob("state.json")):
        if json.loads(state.read_text()).get("run_id") in finished:
            shutil.rmtree(state.parent)
    for folder in list(checkpoints.glob("*/*")):
        if folder.is_dir() and folder.name in finished:
            shutil.rmtree(folder)


def _run_counts(database):
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return dict(
            db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")
        )


def save(root, to):
    """Copies the store in `root` into the snapshot folder `to`.

    The snapshot replaces what `to` held, so it holds exactly the store's
    files (a run deleted from the store leaves the snapshot too).

    Args:
        root: the store's folder (holds `mlruns.db`).
        to: the snapshot folder.

    Returns:
        The manifest written to `to/snapshot.json`.

    Raises:
        FileNotFoundError: `root` holds no `mlruns.db`.
    """
    root, to = pathlib.Path(root).resolve(), pathlib.Path(to)
    if not (root / DATABASE).is_file():
        raise FileNotFoundError(
            f"No MLflow store to save: {root / DATABASE} does not exist; "
            "pass --root, the folder holding mlruns.db (the run's "
            "paths.root_dir)."
        )
    if to.exists():
        shutil.rmtree(to)
    to.mkdir(parents=True)
    _copy_database(root / DATABASE, to / DATABASE)
    _copy_folder(root / ARTIFACTS, to / ARTIFACTS)
    _copy_folder(root / CHECKPOINTS, to / CHECKPOINTS)
    _drop_finished_checkpoints(to / CHECKPOINTS, to / DATABASE)
    manifest = {
        "root": str(root),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "runs": _run_counts(to / DATABASE),
    }
    (to / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _relocate(database, old_root, new_root):
    """Rewrites the artifact paths under `old_root` to `new_root`."""
    with sqlite3.connect(database) as db:
        tables = {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        for table, column in PATH_COLUMNS:
            if table in tables:
                db.execute(
                    f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)",
                    (old_root.rstrip("/") + "/", new_root.rstrip("/") + "/"),
                )


def restore(source, root):
    """Copies the snapshot `source` into the folder `root`, as a store.

    Args:
        source: a snapshot folder written by `save`.
        root: the store's new folder (created if missing). It must not hold
            a store already: restoring never overwrites runs.

    Returns:
        The snapshot's manifest.

    Raises:
        FileNotFoundError: `source` is not a snapshot.
        FileExistsError: `root` already holds a store.
    """
    source, root = pathlib.Path(source), pathlib.Path(root).resolve()
    if not (source / MANIFEST).is_file():
        raise FileNotFoundError(
            f"Not a store snapshot: {source / MANIFEST} does not exist; "
            "pass --from, a folder written by `store_snapshot save`."
        )
    existing = [
        p for p in (DATABASE, ARTIFACTS, CHECKPOINTS) if (root / p).exists()
    ]
    if existing:
        raise FileExistsError(
            f"{root} already holds a store ({', '.join(existing)}); restore "
            "into an empty folder, or move those away first (nothing is "
            "overwritten)."
        )
    manifest = json.loads((source / MANIFEST).read_text())
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / DATABASE, root / DATABASE)
    _copy_folder(source / ARTIFACTS, root / ARTIFACTS)
    _copy_folder(source / CHECKPOINTS, root / CHECKPOINTS)
    if manifest["root"] != str(root):
        _relocate(root / DATABASE, manifest["root"], str(root))
    return manifest


def main(argv=None):
    """CLI: `save --root DIR --to SNAP`, `restore --from SNAP --root DIR`."""
    parser = argparse.ArgumentParser(
        prog="python -m convnet_repro.experiments.store_snapshot",
        description=__doc__.splitlines()[0],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save", help="store folder -> snapshot folder")
    p.add_argument("--root", required=True, help="folder holding mlruns.db")
    p.add_argument("--to", required=True, help="snapshot folder (replaced)")
    p = sub.add_parser("restore", help="snapshot folder -> new store folder")
    p.add_argument("--from", dest="source", required=True)
    p.add_argument("--root", required=True, help="empty or new folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "save":
            manifest = save(args.root, args.to)
            where = args.to
        else:
            manifest = restore(args.source, args.root)
            where = args.root
    except (FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"store_snapshot: {error}") from None
    runs = ", ".join(
        f"{n} {s.lower()}" for s, n in sorted(manifest["runs"].items())
    )
    print(f"{args.command}: {runs or 'no'} runs -> {where}")


if __name__ == "__main__":
    main()
