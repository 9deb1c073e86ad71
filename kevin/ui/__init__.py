"""The operations workbench: server-rendered pages under ``/ui/`` (kevin.ui.pages)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from kevin.ui import pages
from kevin.ui.filters import FILTERS

STATIC = Path(__file__).parent / "static"


def create_workbench() -> web.Application:
    """The ``/ui`` sub-application. It reads the service, the feed and the sessions from
    the parent application (``request.config_dict``)."""
    ui = web.Application(middlewares=[pages.page_errors])
    env = aiohttp_jinja2.setup(
        ui, loader=jinja2.PackageLoader("kevin.ui", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined)
    env.filters.update(FILTERS)
    ui.add_routes(pages.routes)
    ui.router.add_static("/static/", STATIC, name="static")
    return ui


def install_workbench(app: web.Application) -> None:
    app.add_subapp("/ui", create_workbench())
    app.router.add_get("/ui", pages.to_workbench)
