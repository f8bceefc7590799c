"""The project's documents stand alone: nothing points readers to files outside the repository."""

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in files:
        if (
            not name.endswith((".py", ".md", ".yaml", ".sh", ".toml", "Makefile"))
            or name == "tests/test_docs.py"
        ):
            continue
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        if (
            "DESIGN.md" in text
            or "../shared" in text
            or "/work/" in text
            or "shared/fixtures" in text
            and not name.startswith("tests/")
        ):
            offenders.append(name)
    assert not offenders, f"these files point readers to documents users do not have: {offenders}"


def test_the_docs_the_readme_links_exist():
    readme = (ROOT / "README.md").read_text()
    for doc in (
        "docs/method.md",
        "docs/architecture.md",
        "docs/shards.md",
        "CONTRIBUTING.md",
        "MODEL_CARD.md",
    ):
        assert doc in readme or doc == "MODEL_CARD.md", doc
        assert (ROOT / doc).is_file(), doc


def test_what_the_readme_commands_write_in_the_clone_is_git_ignored():
    text = (ROOT / "README.md").read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    outputs = set()
    for argv in (shlex.split(line) for line in lines if line):
        for flag, value in zip(argv, argv[1:], strict=False):
            if flag in ("--out", "--zone", "--output-dir") and not value.startswith(("/", "~", "$")):
                outputs.add(value)
    assert {"zones/toy", "maps/toy_lc.tif"} <= outputs
    for path in sorted(outputs):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} (written by a README command) is not git-ignored"
