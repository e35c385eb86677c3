"""Open a Snakemake HTML report in headless Chromium and check that every figure and table is listed in it.

Usage: python .ci/report_in_browser.py results/demo/report.html results/demo/figures results/demo/tables OUT_DIR
Needs Debian's chromium (/usr/bin/chromium) and the playwright package (no browser download). Writes screenshots
of the home page and of the Figures and Tables lists to OUT_DIR; exits 1 naming what is missing.
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def listed(page, category: str, out: Path) -> str:
    page.get_by_text(category, exact=True).first.click()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out / f"report_{category.lower()}.png"))
    text = page.inner_text("body")
    page.get_by_text("Results", exact=True).first.click()
    page.wait_for_timeout(500)
    return text


def main(report: str, figures: str, tables: str, out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted_figures = sorted(p.stem for p in Path(figures).glob("*.png"))
    wanted_tables = sorted(p.name for p in Path(tables).glob("*.md"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(Path(report).resolve().as_uri())
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "report_home.png"))
        home = page.inner_text("body")
        figure_list = listed(page, "Figures", out)
        table_list = listed(page, "Tables", out)
        browser.close()
    missing = [f"figure {n}" for n in wanted_figures if n not in figure_list]
    missing += [f"table {n}" for n in wanted_tables if Path(n).stem not in table_list]
    if "synthetic demo cohort" not in home:
        missing.append("the home page's statement that the cohort is synthetic")
    if missing:
        print("missing from the report:", ", ".join(missing))
        return 1
    print(f"report lists all {len(wanted_figures)} figures and {len(wanted_tables)} tables; screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
