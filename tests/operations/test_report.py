"""The HTML report: self-contained, every plot a real image, the numbers of the simulation."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from reloop_cli.data.ingest import ingest
from reloop_cli.experiments.simulate import simulate
from reloop_cli.operations.report import save_simulation, write_report
from reloop_cli.store.registry import Registry


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.mark.slow
def test_report_embeds_decodable_plots_and_the_simulated_means(ws, tiny_logs, sample_spec):
    ingest(ws, sample_spec, tiny_logs)
    with Registry(ws) as registry:
        result = simulate(ws, registry, sample_spec, 2, ["bce", "reloop"])
    save_simulation(ws, result.to_dict())
    page = write_report(ws).read_text(encoding="utf-8")
    parser = Images()
    parser.feed(page)
    assert len(parser.sources) == 4  # AUC, Logloss, lift over bce, calibration
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2_000
    assert f"{result.arms['reloop'].mean_auc:.4f}" in page
    assert not re.search(r"src=\"(http|file)", page)  # nothing outside the page


def test_report_on_an_empty_workspace_says_what_is_missing(ws):
    page = write_report(ws).read_text(encoding="utf-8")
    assert "No simulation in this workspace yet" in page


def test_report_plots_render_in_headless_chromium(ws, tiny_logs, sample_spec, tmp_path):
    """Where a browser is installed (.ci/run installs Debian's chromium), open the page for real
    and read back each image's decoded size."""
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here; the parse-and-decode test above still ran")
    ingest(ws, sample_spec, tiny_logs)
    with Registry(ws) as registry:
        result = simulate(ws, registry, sample_spec, 2, ["bce", "reloop"])
    save_simulation(ws, result.to_dict())
    page = write_report(ws).read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { document.body.setAttribute("
        "'data-sizes', Array.from(document.images).map(i => i.naturalWidth + 'x' + "
        "i.naturalHeight).join(',')); });</script>"
    )
    probe.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    sizes = re.search(r'data-sizes="([^"]*)"', dom)
    assert sizes, dom[-500:]
    rendered = [tuple(map(int, s.split("x"))) for s in sizes.group(1).split(",")]
    assert len(rendered) == 4
    assert all(width > 200 and height > 200 for width, height in rendered)
