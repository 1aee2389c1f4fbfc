"""The status page in a real browser: Debian's Chromium, headless, driven by Selenium.

``mvgraph web`` (a subprocess) serves the demo's database; the test loads the page once and
watches it change without a reload: every relation of the demo drawn, a view turning stale
after a write to its input and fresh after a refresh, and a background job's progress bar
moving while a worker runs it (two of its steps wait for locks the test holds and then lets
go: no timing is assumed). Every wait polls the DOM with a timeout.

A screenshot of the page goes to ``$MVGRAPH_WEB_SCREENSHOT`` when set (the documentation's
``docs/img/status-page.png`` is made that way), else to the test's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

import mvgraph
from mvgraph.commands.demo import demo_files
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_files
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from tests.e2e.test_web_cli import web
from tests.integration.test_jobs import worker

Conn = psycopg.Connection[tuple[object, ...]]
CHROMIUM = os.environ.get("MVGRAPH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MVGRAPH_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 30.0

# Outside .ci/run (which installs them and sets MVGRAPH_REQUIRE_BROWSER), a machine without
# Debian's Chromium skips this file, saying why; under .ci/run their absence fails it.
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())
    and not os.environ.get("MVGRAPH_REQUIRE_BROWSER"),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")

@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=2200,1350", "--force-device-scale-factor=1",
                "--lang=en-US", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def demo(conn: Conn, db_dsn: str) -> Conn:
    """What ``mvgraph demo`` loads: both example schemas, every table tracked, every view
    refreshed once, mv6's schedule (paused)."""
    run_files(conn, demo_files())
    mvgraph.track(conn, every=True)
    report = mvgraph.refresh(conn, "*", parallel=2)
    assert report.status == "ok"
    mvgraph.add_schedule("mv6", every="1 hour", behavior="cascade backward", dsn=db_dsn)
    mvgraph.pause_schedule("mv6", dsn=db_dsn)
    return conn


def drawable(graph: MVGraph) -> set[str]:
    """What the page draws: every view and materialized view and what each reads."""
    views = {n for n in graph.nodes() if graph.kind(n) in (Kind.VIEW, Kind.MATVIEW)}
    return {str(n) for n in views | {i for v in views for i in graph.inputs(v)}}


def wait(driver: Any, what: Callable[[Any], Any], message: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(what, message)


def nodes(driver: Any) -> dict[str, str | None]:
    """Each drawn relation and the state it is painted in (None: not a materialized view)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#graph-svg g.node'))"
        ".map(g => [g.dataset.name, g.dataset.state || null])")
    return {str(name): state for name, state in rows}


def painted(driver: Any, names: set[str], state: str) -> Callable[[Any], bool]:
    return lambda d: all(nodes(d).get(n) == state for n in names)


def bar(driver: Any, job: int) -> float | None:
    """The percent the job's progress bar shows while it is in flight (None: not shown)."""
    value = driver.execute_script(
        "const f = document.querySelector(`.job[data-job='${arguments[0]}'] .fill`);"
        "return f ? f.dataset.percent : null", job)
    return None if value is None else float(value)


def test_the_page_follows_the_database_without_a_reload(
        demo: Conn, db_dsn: str, browser: Any, tmp_path: Path) -> None:
    graph = mvgraph.load_graph(conn=demo)
    expected = drawable(graph)
    mvs = {str(n) for n in graph.nodes() if graph.kind(n) is Kind.MATVIEW}
    assert len(mvs) > 30

    with web(db_dsn, "--poll", "0.5") as url:
        browser.get(url)
        wait(browser, lambda d: set(nodes(d)) == expected, "every relation of the demo drawn")
        wait(browser, lambda d: all(nodes(d)[m] is not None for m in mvs),
             "every materialized view painted with its state")
        assert nodes(browser)["public.mv1"] == "fresh"
        assert nodes(browser)['"Reporting".kpi_snapshot'] == "stale"  # reads now()
        browser.execute_script("window.loadedOnce = 'yes'")  # gone if the page reloads

        # a write makes its readers stale; a refresh makes them fresh again
        gauss = {"public.mv1", "public.mv5", "public.mv6"}
        demo.execute("INSERT INTO public.test_table (id, grp, val) VALUES (100, 1, 5)")
        wait(browser, painted(browser, gauss, "stale"), "mv1, mv5, mv6 stale after the write")
        tip = browser.execute_script(
            "return document.querySelector(`g.node[data-name='public.mv1'] title`)"
            ".textContent")
        assert "input public.test_table changed" in tip
        browser.execute_script(
            "document.querySelector(`g.node[data-name='public.mv5']`)"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        wait(browser, lambda d: d.execute_script(
            "const p = document.getElementById('detail');"
            "return !p.hidden && p.dataset.showing === 'public.mv5'"
            " && p.textContent.includes('public.mv1')"
            " && p.textContent.includes('input public.test_table changed')"),
             "mv5's detail: its inputs and why it is stale")
        browser.execute_script("document.getElementById('detail-close').click()")
        mvgraph.refresh(demo, "+mv6")
        wait(browser, painted(browser, gauss, "fresh"), "mv1, mv5, mv6 fresh after the refresh")
        assert browser.execute_script("return window.loadedOnce") == "yes"

        # a background job (every view, one after the other, each REFRESH taking its view's
        # ACCESS EXCLUSIVE lock); two of its views are read in open transactions here, so the
        # job waits at the first of them it reaches, then at the other (the executor orders
        # independent steps by their past durations, not by their listed order)
        job = mvgraph.submit_refresh(db_dsn, "*", force=True, concurrently="never",
                                     lock_timeout="120s")
        steps = [str(r[0]) for r in demo.execute(
            "SELECT name FROM mvgraph.job_step WHERE job_id = %s ORDER BY seq", [job])]
        held = [steps[len(steps) // 3], steps[2 * len(steps) // 3]]
        holders = [connect(db_dsn, autocommit=False) for _ in range(2)]
        try:
            for holder, name in zip(holders, held, strict=True):
                holder.execute(f"SELECT FROM {name} LIMIT 0")  # ACCESS SHARE until rollback
            with worker(db_dsn):
                wait(browser, lambda d: any(nodes(d)[n] == "refreshing" for n in held)
                     and bar(d, job) is not None, f"job {job} waiting at one of {held}")
                first_at = next(n for n in held if nodes(browser)[n] == "refreshing")
                then_at = next(n for n in held if n != first_at)
                first = bar(browser, job)
                assert first is not None and 0 < first < 100
                done, total = demo.execute(  # nothing moves while the job waits
                    "SELECT done_steps, total_steps FROM mvgraph.jobs WHERE id = %s",
                    [job]).fetchone() or (None, None)
                assert total == len(steps) and 0 < done < total
                assert f"{done}/{total}" in browser.execute_script(
                    f"return document.querySelector(`.job[data-job='{job}']`).textContent")
                wait(browser, lambda d: d.execute_script(
                    "return document.querySelectorAll('#workers tbody tr').length") >= 1,
                     "the worker listed")
                shot = Path(os.environ.get("MVGRAPH_WEB_SCREENSHOT") or tmp_path / "page.png")
                shot.parent.mkdir(parents=True, exist_ok=True)
                assert browser.save_screenshot(str(shot))
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

                holders[held.index(first_at)].rollback()  # that lock goes: on to the other
                wait(browser, lambda d: nodes(d)[then_at] == "refreshing"
                     and (bar(d, job) or 0) > first, f"job {job} moved on to {then_at}")
                second = bar(browser, job)
                assert second is not None and first < second < 100
                holders[held.index(then_at)].rollback()
                wait(browser, lambda d: bar(d, job) is None and d.execute_script(
                    f"const r = document.querySelector(`#history tr[data-job='{job}']`);"
                    "return r !== null && r.textContent.includes('done')"),
                     f"job {job} done and in the history")
        finally:
            for holder in holders:
                holder.close()
        assert nodes(browser)["public.mv1"] == "fresh"
        assert browser.execute_script("return window.loadedOnce") == "yes"
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"] \
            if hasattr(browser, "get_log") else []
        assert not errors, errors
