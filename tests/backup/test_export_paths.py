"""An export's member paths fit what Windows' own extractor can create (``fit_path``):
short paths untouched, long ones shortened so that distinct files stay distinct, every
file of a folder stays in one folder, and extensions and portability survive."""

from __future__ import annotations

import random
import string

from safekeep.backup.export.zipper import MAX_PATH_CHARS, fit_path, safe_name


def _name(rng: random.Random, low: int, high: int) -> str:
    alphabet = string.ascii_letters + string.digits + " .-_()é"
    return safe_name("".join(rng.choice(alphabet) for _ in range(rng.randint(low, high))))


def test_a_path_that_fits_is_left_alone() -> None:
    path = "alice@contoso.com/onedrive/Projects/2025/plan.docx"
    assert fit_path(path) == path
    exact = "a/" + "b" * (MAX_PATH_CHARS - 2)
    assert fit_path(exact) == exact


def test_long_paths_fit_stay_distinct_and_keep_their_folders_together() -> None:
    rng = random.Random(7)
    top = "someone.with.a.long.name@a-client-with-a-long-domain.onmicrosoft.com/onedrive"
    folders: list[str] = []
    for _ in range(60):  # folder chains 1 to 12 deep, components up to 150 characters
        depth = rng.randint(1, 12)
        folders.append("/".join([top, *(_name(rng, 1, 150) for _ in range(depth))]))
    # a few folders that differ only past what a shortened folder keeps of its name
    base = folders[0]
    folders += [f"{base}/Quarterly report drafts {n}" for n in range(5)]
    paths = {
        f"{folder}/{_name(rng, 1, 150)}{rng.choice(['.docx', '.eml', '', '.tar.gz'])}"
        for folder in folders
        for _ in range(4)
    }
    fitted = {path: fit_path(path) for path in paths}
    assert all(len(p) <= MAX_PATH_CHARS for p in fitted.values())
    assert len({p.lower() for p in fitted.values()}) == len(paths)  # distinct on Windows too
    by_folder: dict[str, set[str]] = {}
    for path, short in fitted.items():
        by_folder.setdefault(path.rsplit("/", 1)[0], set()).add(short.rsplit("/", 1)[0])
    assert all(len(dirs) == 1 for dirs in by_folder.values())  # a folder's files stay together
    assert len({next(iter(d)).lower() for d in by_folder.values()}) == len(by_folder)
    for path, short in fitted.items():
        name, short_name = path.rsplit("/", 1)[1], short.rsplit("/", 1)[1]
        ext = name.rsplit(".", 1)[1] if "." in name.strip(".") else ""
        if 0 < len(ext) <= 16:  # longer: a sentence with a dot in it, not an extension
            assert short_name.endswith("." + ext)  # the extension kept
        for part in short.split("/"):
            assert part and part == part.strip(" ."), short  # Windows keeps every part as is
    assert sum(short != path for path, short in fitted.items()) > len(paths) // 2


def test_a_chain_too_deep_to_shorten_part_by_part_is_folded() -> None:
    path = "a@b.c/onedrive/" + "/".join(f"level {n:03d}" for n in range(40)) + "/notes.txt"
    short = fit_path(path)
    assert len(short) <= MAX_PATH_CHARS
    parts = short.split("/")
    assert parts[:2] == ["a@b.c", "onedrive"] and parts[-2:] == ["level 039", "notes.txt"]
    assert len(parts) == 5 and parts[2].startswith("~")
