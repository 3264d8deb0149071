#!/usr/bin/env python3
"""Every link and path the documentation names must exist in the repository.

Scans every tracked Markdown file and checks:

* relative links and images, `[text](path)` and `[label]: path`, resolved
  from the file's folder (a leading `/` from the repository root); a
  `#fragment` pointing into a Markdown file must name one of its headings;
* backticked repository paths, such as `marketplace/src/http/error.rs` or
  `bus-core/src/outbox/`: a single word containing `/` that ends with a file
  extension or with `/`, or that starts with a top-level folder of the
  repository. They are resolved from the repository root or from the file's
  folder.

"Exists" means tracked by git (a fresh clone has it), so build outputs and
local files do not count. Paths git ignores (`performance-test/results/`,
`.venv/`, `*.db`) are what running the project produces, and are skipped, as
are URLs, absolute paths, fenced code blocks and words with placeholders
(`{id}`, `<node>`, `...`).

Usage: python3 .ci/check-links.py   (from anywhere in the repository)
Exit status 1, with one line per broken reference, when any is missing.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# [text](target "title") and ![alt](target); the text may hold one level of [].
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]*$")
# Characters that mark a word as a template or an example, not a path.
PLACEHOLDER = re.compile(r"[{}<>$%:=,;()\[\]|\"'\s]|\.\.\.|…")


@dataclass(frozen=True)
class Reference:
    """One link or path found in a Markdown file."""

    file: str
    line: int
    text: str
    kind: str  # "link" or "path"


def git(root: Path, *args: str, stdin: str | None = None) -> str:
    command = ["git", *args]
    return subprocess.run(command, cwd=root, input=stdin, capture_output=True, text=True).stdout


def repository_root() -> Path:
    here = Path(__file__).resolve().parent
    command = ["git", "rev-parse", "--show-toplevel"]
    top = subprocess.run(command, cwd=here, capture_output=True, text=True, check=True).stdout
    return Path(top.strip())


class Tree:
    """The tracked files and the folders that hold them."""

    def __init__(self, root: Path) -> None:
        self.files = set(git(root, "ls-files", "-z").split("\0")) - {""}
        self.dirs = {""}
        for file in self.files:
            parent = posixpath.dirname(file)
            while parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.top_level = {path.split("/", 1)[0] for path in self.files if "/" in path}

    def exists(self, path: str, want_dir: bool = False) -> bool:
        if any(c in path for c in "*?["):
            return any(fnmatch.fnmatchcase(f, path) for f in self.files | self.dirs)
        if want_dir:
            return path in self.dirs
        return path in self.files or path in self.dirs


def normalise(base: str, target: str) -> str | None:
    """`target` resolved from folder `base`, or None when it leaves the repository."""
    joined = posixpath.normpath(posixpath.join(base, target))
    if joined == ".":
        return ""
    if joined.startswith("../") or joined == "..":
        return None
    return joined


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def outside_code(lines: list[str]):
    """(number, line) of every line not inside a fenced code block."""
    fence: str | None = None
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if match:
            marker = match.group(1)
            if fence is None:
                fence = marker
                continue
            if marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
                continue
        if fence is None:
            yield number, line


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in outside_code(text.splitlines()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def blank_link_examples(span: re.Match[str]) -> str:
    """A code span showing link syntax is an example, not a link."""
    text = span.group(0)
    return " " * len(text) if "](" in text else text


def references(file: str, text: str, tree: Tree) -> list[Reference]:
    found = []
    for number, line in outside_code(text.splitlines()):
        definition = REFERENCE_DEFINITION.match(line)
        targets = [definition.group(1)] if definition else []
        targets += INLINE_LINK.findall(CODE_SPAN.sub(blank_link_examples, line))
        found += [Reference(file, number, target, "link") for target in targets]
        for _, span in CODE_SPAN.findall(line):
            word = span.strip()
            if looks_like_path(word, tree):
                found.append(Reference(file, number, word, "path"))
    return found


def looks_like_path(word: str, tree: Tree) -> bool:
    if "/" not in word or PLACEHOLDER.search(word) or URL_SCHEME.match(word):
        return False
    if word.startswith(("/", "~", "-")):
        return False  # absolute paths are the machine's, flags are not paths
    first = word.removeprefix("./").split("/", 1)[0]
    return word.endswith("/") or bool(EXTENSION.search(word)) or first in tree.top_level


@dataclass(frozen=True)
class Target:
    """Where a reference may point: any of `paths`, plus a heading for links."""

    ref: Reference
    paths: tuple[str, ...]
    fragment: str
    want_dir: bool

    def asked(self, path: str) -> str:
        # A trailing `/` lets git match folder-only patterns such as `results/`.
        return path + "/" if self.want_dir else path


def resolve(ref: Reference) -> Target | None:
    """The repository paths `ref` may name, or None when it is not ours to check."""
    folder = posixpath.dirname(ref.file)
    if ref.kind == "path":
        word = ref.text.removeprefix("./")
        paths = {normalise("", word), normalise(folder, word)} - {None}
        return Target(ref, tuple(sorted(paths)), "", word.endswith("/"))
    if URL_SCHEME.match(ref.text) or ref.text.startswith("//"):
        return None
    path, _, fragment = ref.text.partition("#")
    if not path:
        resolved = ref.file  # a heading of the same file
    elif path.startswith("/"):
        resolved = normalise("", path.lstrip("/"))
    else:
        resolved = normalise(folder, path)
    return Target(ref, (resolved,) if resolved is not None else (), fragment, path.endswith("/"))


def check(root: Path) -> list[str]:
    tree = Tree(root)
    markdown = sorted(f for f in tree.files if f.endswith(".md") and (root / f).is_file())
    texts = {f: (root / f).read_text(encoding="utf-8") for f in markdown}
    targets = [
        target
        for file, text in texts.items()
        for ref in references(file, text, tree)
        if (target := resolve(ref)) is not None
    ]

    # What running the project produces is named in the docs but never tracked.
    asked = sorted({t.asked(p) for t in targets for p in t.paths if p})
    answer = git(root, "check-ignore", "--no-index", "--stdin", stdin="\n".join(asked))
    ignored = set(answer.splitlines())

    problems = []
    headings: dict[str, set[str]] = {}
    for target in targets:
        ref = target.ref
        if any(target.asked(p) in ignored for p in target.paths if p):
            continue
        where = f"{ref.file}:{ref.line}: {ref.kind} `{ref.text}`"
        hits = [p for p in target.paths if tree.exists(p, target.want_dir)]
        if not hits:
            problems.append(f"{where} does not exist in the repository")
        elif target.fragment and hits[0].endswith(".md"):
            page = hits[0]
            if page not in headings:
                headings[page] = anchors(texts.get(page, ""))
            if target.fragment.lower() not in headings[page]:
                problems.append(f"{where}: no heading `#{target.fragment}` in {page}")
    return problems


def main() -> int:
    problems = check(repository_root())
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} broken link(s) or path(s) in the documentation", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
