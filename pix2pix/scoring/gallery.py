"""index.html for an evaluation: one row per image (input | generated | target) with its
metrics; clicking a column header sorts by it. Self-contained, relative links only."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from pix2pix.track.files import write_text

METRIC_COLUMNS = (
    ("l1", "L1", "lower is better"),
    ("psnr", "PSNR (dB)", "higher is better"),
    ("ssim", "SSIM", "higher"),
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: center; }}
th.sortable {{ cursor: pointer; background: #eef; }}
img {{ width: {thumb}px; image-rendering: auto; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p>Click a metric's header to sort by it (again to reverse).</p>
<table id="gallery"><thead><tr>
<th class="sortable" data-key="name">image</th><th>input</th><th>generated</th><th>target</th>
{metric_headers}
</tr></thead><tbody>
{rows}
</tbody></table>
<script>
document.querySelectorAll("th.sortable").forEach(function (th) {{
  th.addEventListener("click", function () {{
    var key = th.dataset.key, body = document.querySelector("#gallery tbody");
    var rows = Array.from(body.rows), dir = th.dataset.dir === "asc" ? -1 : 1;
    rows.sort(function (a, b) {{
      var x = a.dataset[key], y = b.dataset[key];
      var nx = parseFloat(x), ny = parseFloat(y);
      return dir * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y, undefined, {{numeric: true}}) : nx - ny);
    }});
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    rows.forEach(function (r) {{ body.appendChild(r); }});
  }});
}});
</script>
</body></html>
"""


def _cell_image(path: str) -> str:
    url = quote(path)
    return f'<td><a href="{url}"><img src="{url}" alt="{html.escape(path)}"></a></td>'


def write_gallery(path: Path, rows: list[dict], title: str, summary: str, thumb: int = 192) -> Path:
    """`rows`: dicts with name, input, generated, target (paths relative to `path`'s folder) and the metrics."""
    metric_headers = "\n".join(
        f'<th class="sortable" data-key="{key}" title="{hint}">{label}</th>' for key, label, hint in METRIC_COLUMNS
    )
    body = []
    for row in rows:
        data = " ".join(f'data-{key}="{row[key]:.6g}"' for key, _, _ in METRIC_COLUMNS)
        cells = "".join(_cell_image(row[col]) for col in ("input", "generated", "target"))
        metrics = "".join(f"<td>{row[key]:.4f}</td>" for key, _, _ in METRIC_COLUMNS)
        name = html.escape(row["name"])
        body.append(f'<tr data-name="{name}" {data}><td>{name}</td>{cells}{metrics}</tr>')
    page = PAGE.format(
        title=html.escape(title),
        summary=html.escape(summary),
        thumb=thumb,
        metric_headers=metric_headers,
        rows="\n".join(body),
    )
    return write_text(path, page)
