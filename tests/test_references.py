"""Every reference in the repository's text resolves inside the repository (issue 9): markdown links,
paths under docs/, image/, tests/, components/, scripts/ and bench/ named in code, comments and docs,
and the doc sections they cite; and nothing points at notes that live outside it.

Each test lists every broken reference as `file:line: reference`, so one run shows them all.
"""

from __future__ import annotations

import glob
import re
from functools import cache
from pathlib import Path

from tests.repo_files import tracked_and_new_files

ROOT = Path(__file__).resolve().parents[1]

# Recorded tool output (compiler logs, QEMU console logs): data quoted verbatim, not our references.
RECORDED_SUFFIXES = {".log"}
RECORDED_FILES = {"go.sum"}

PREFIXES = ("docs", "image", "tests", "components", "scripts", "bench")
# A path under one of the prefixes, not part of a longer path or URL (`/opt/...`, `github.com/x/docs/`).
PATH_RE = re.compile(rf"(?<![\w./$~-])((?:{'|'.join(PREFIXES)})/[\w./*<>{{}},-]*)")
LINK_RE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SECTION_RE = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md),? (?:section )?\"([^\"]+)\"")
# Pointers to notes nobody else can read. Written so this file does not match itself.
OUT_OF_REPO = [
    re.compile(r"\.\./shared\b"),
    re.compile(r"\b(?:domain|lab|private|personal|team|internal|design)\s+notes?\b", re.IGNORECASE),
    re.compile(r"\bnotes?,\s+section\s+\d", re.IGNORECASE),
]
PLACEHOLDER_RE = re.compile(r"<[^>]*>|\{[^}]*\}")


@cache
def _text_files() -> tuple[Path, ...]:
    """Files git tracks plus untracked ones it does not ignore, that are UTF-8 text and ours."""
    files = []
    for path in tracked_and_new_files():
        if path.suffix in RECORDED_SUFFIXES or path.name in RECORDED_FILES:
            continue
        if path == Path(__file__).resolve():
            continue  # its samples of broken references are broken on purpose
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return tuple(sorted(files))


@cache
def _lines(path: Path) -> tuple[tuple[int, str], ...]:
    return tuple(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def _where(path: Path, line: int, what: str) -> str:
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{name}:{line}: {what}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings(path: Path) -> list[str]:
    return [m.group(1).strip() for _, line in _lines(path) if (m := re.match(r"^#{1,6}\s+(.*)$", line))]


def path_exists(reference: str) -> bool:
    """Whether a root-relative path mentioned in text names something in the repository.

    `<name>` and `{a,b}` are placeholders and `*` a glob: some file must match. `dir/module.attr`
    (a Python attribute) resolves when `dir/module.py` exists.
    """
    ref = reference.rstrip(".,:;")
    if PLACEHOLDER_RE.search(ref) or "*" in ref:
        pattern = PLACEHOLDER_RE.sub("*", ref)
        return bool(glob.glob(str(ROOT / pattern)))
    if (ROOT / ref).exists():
        return True
    module, dot, _attr = ref.rpartition(".")
    return bool(dot) and "/" in module and (ROOT / f"{module}.py").is_file()


def broken_paths(path: Path) -> list[str]:
    return [
        _where(path, number, m.group(1).rstrip(".,:;"))
        for number, line in _lines(path)
        for m in PATH_RE.finditer(line)
        if not path_exists(m.group(1))
    ]


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of a markdown file that leave the repository, name nothing, or a missing heading."""
    out = []
    for number, line in _lines(path):
        for m in LINK_RE.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.is_relative_to(root):
                out.append(_where(path, number, f"{target} (outside the repository)"))
            elif not resolved.exists():
                out.append(_where(path, number, target))
            elif (
                anchor and resolved.suffix == ".md" and anchor not in {_slug(h) for h in _headings(resolved)}
            ):
                out.append(_where(path, number, f"{target} (no such heading)"))
    return out


def broken_sections(path: Path) -> list[str]:
    """`docs/x.md, "Section"`: the document exists and has a heading starting with that name."""
    out = []
    for number, line in _lines(path):
        for m in SECTION_RE.finditer(line):
            doc = ROOT / m.group(1)
            if not doc.is_file():
                doc = path.parent / m.group(1)
            if not doc.is_file():
                out.append(_where(path, number, f"{m.group(1)} (no such file)"))
            elif not any(h.startswith(m.group(2)) for h in _headings(doc)):
                out.append(_where(path, number, f'{m.group(1)}, "{m.group(2)}" (no such section)'))
    return out


def out_of_repo_notes(path: Path) -> list[str]:
    return [
        _where(path, number, line.strip())
        for number, line in _lines(path)
        if any(pattern.search(line) for pattern in OUT_OF_REPO)
    ]


def _report(found: list[str], what: str) -> str:
    return f"{len(found)} {what}:\n" + "\n".join(found)


def test_the_scan_sees_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _text_files()}
    assert {"README.md", "docs/architecture.md", "image/Dockerfile", "components/specs.py"} <= names
    assert not any(n.endswith(".log") for n in names)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The detectors themselves, on text with one good and one bad reference of each kind."""
    sample = tmp_path / "sample.md"
    sample.write_text(
        "[ok](https://example.com) [bad](docs/nope.md) [out](../../../../x.md)\n"
        "see docs/architecture.md and docs/missing.md, image/build/*.sh, image/build/*.nope,\n"
        "components/specs.image_tag, tests/<tier>/conftest.py, /opt/docs/not-ours, github.com/a/docs/x\n"
        'docs/architecture.md, "Installer pod" and docs/architecture.md, "No such part"\n'
        "CUDA searches lib64 (domain notes, section 5) and " + "../" + "shared/gpu.md\n"
    )
    assert [r.split(": ", 1)[1] for r in broken_paths(sample)] == [
        "docs/nope.md",
        "docs/missing.md",
        "image/build/*.nope",
    ]
    assert [r.split(": ", 1)[1] for r in broken_links(sample, root=tmp_path)] == [
        "docs/nope.md",
        "../../../../x.md (outside the repository)",
    ]
    assert [r.split(": ", 1)[1] for r in broken_sections(sample)] == [
        'docs/architecture.md, "No such part" (no such section)'
    ]
    assert [r.split(":")[1] for r in out_of_repo_notes(sample)] == ["5"]


def test_markdown_links_resolve() -> None:
    found = [r for p in _text_files() if p.suffix == ".md" for r in broken_links(p)]
    assert found == [], _report(found, "markdown links that do not resolve inside the repository")


def test_repository_paths_in_text_exist() -> None:
    found = [r for p in _text_files() for r in broken_paths(p)]
    assert found == [], _report(found, "paths that name nothing in the repository")


def test_cited_doc_sections_exist() -> None:
    found = [r for p in _text_files() for r in broken_sections(p)]
    assert found == [], _report(found, 'doc sections cited as `docs/x.md, "Section"` that do not exist')


def test_nothing_points_at_notes_outside_the_repository() -> None:
    found = [r for p in _text_files() for r in out_of_repo_notes(p)]
    assert found == [], _report(found, "pointers to notes outside the repository (say the fact here instead)")
