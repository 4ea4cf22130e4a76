"""docs/reliability.md names a test for each promise: every one of them must exist."""

import re

from conftest import REPO


def test_every_test_the_reliability_page_names_exists():
    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    named, last_file = [], None
    for ref in re.findall(r"`((?:tests/[\w/]+\.(?:py|train))?(?:::\w+)?)`", doc):
        path, _, name = ref.partition("::")
        last_file = path or last_file
        named.append((last_file, name))
    assert len(named) > 30
    for path, name in named:
        source = (REPO / path).read_text(encoding="utf-8")
        assert not name or re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} is named but missing"
