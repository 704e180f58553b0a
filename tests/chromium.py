"""Headless Chromium for the page tests (the report and its account pages): the DOM after
layout, and the boxes of every table's columns measured in the page at a given width."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)

# Runs at the end of <body>, after layout: per table, the visible box of its scroll container
# and the box of every column header, and the tallest cell of each column.
LAYOUT_SCRIPT = """
<script>
(function () {
  var tables = [];
  document.querySelectorAll("table").forEach(function (table) {
    var box = table.closest(".scroll") || table.parentElement;
    var seen = box.getBoundingClientRect();
    var section = table.closest("section");
    var heading = section && section.querySelector("h2");
    var rows = Array.from(table.querySelectorAll("tbody tr"));
    var columns = Array.from(table.querySelectorAll("thead th")).map(function (th, j) {
      var head = th.getBoundingClientRect();
      var heights = rows.map(function (tr) { return tr.children[j].getBoundingClientRect().height; });
      return {name: th.textContent, left: head.left, right: head.right, width: head.width,
              tallest_cell: Math.max.apply(null, heights.concat([0]))};
    });
    tables.push({section: heading ? heading.textContent : "", left: seen.left,
                 right: Math.min(seen.right, document.documentElement.clientWidth),
                 scroll_width: box.scrollWidth, client_width: box.clientWidth, columns: columns});
  });
  var out = document.createElement("pre");
  out.id = "table-layout";
  out.textContent = JSON.stringify({viewport: document.documentElement.clientWidth, tables: tables});
  document.body.appendChild(out);
})();
</script>
"""


def require_chromium() -> None:
    """Skip without /usr/bin/chromium, except in CI (.ci/run installs it), where it fails."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/usr/bin/chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium); CI runs this test")


def dump_dom(page: Path, profile: Path, width: int = 1400, height: int = 1000) -> str:
    """The page's DOM after load and layout in a ``width`` × ``height`` window."""
    require_chromium()
    try:
        result = subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def table_layout(page: Path, profile: Path, width: int = 1400) -> dict:
    """The column boxes of every table of ``page`` rendered ``width`` px wide (a copy of the
    page beside it, so its relative links still resolve, with ``LAYOUT_SCRIPT`` added)."""
    text = page.read_text(encoding="utf-8")
    assert text.count("</body>") == 1
    measured = page.with_name(page.stem + ".layout.html")
    measured.write_text(text.replace("</body>", LAYOUT_SCRIPT + "</body>"), encoding="utf-8")
    try:
        dom = dump_dom(measured, profile, width)
    finally:
        measured.unlink()
    found = re.search(r'<pre id="table-layout">(.*?)</pre>', dom, re.S)
    assert found, "the layout script did not run"
    return json.loads(html.unescape(found.group(1)))


def cut_columns(layout: dict) -> list[str]:
    """``section: column`` for every column whose header is not wholly inside its table's
    visible box (behind a horizontal scroll, or beyond the window)."""
    return [
        f"{table['section']}: {column['name']}"
        for table in layout["tables"]
        for column in table["columns"]
        if column["right"] > table["right"] + 1 or column["left"] < table["left"] - 1
    ]
