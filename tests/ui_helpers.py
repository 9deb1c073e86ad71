"""Helpers for the workbench tests: a browser-like session over the test client."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


async def login(client: TestClient, credential: str) -> ClientResponse:
    """The login form, then its post; the client's own cookie jar is left empty, so that
    several sessions can share one client."""
    client.session.cookie_jar.clear()
    form = await client.get("/ui/login")
    assert form.status == 200
    token = csrf_of(await form.text())
    resp = await client.post("/ui/login", data={"csrf_token": token, "api_key": credential,
                                                "next": "/ui/exceptions"},
                             allow_redirects=False)
    client.session.cookie_jar.clear()
    return resp


class Browser:
    """One logged-in session: its cookie sent explicitly, its CSRF token at hand."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token
        self.csrf = ""

    @classmethod
    async def login(cls, client: TestClient, credential: str) -> Browser:
        resp = await login(client, credential)
        assert resp.status == 303, await resp.text()
        browser = cls(client, resp.cookies["kevin_session"].value)
        page = await browser.get("/ui/exceptions")
        browser.csrf = csrf_of(await page.text())
        return browser

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": f"kevin_session={self.token}"}

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        headers = {**self.cookie, **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, allow_redirects=False, **kwargs)

    async def post_form(self, path: str, data: dict[str, Any] | list[tuple[str, str]],
                        csrf: bool = True, **kwargs: Any) -> ClientResponse:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf_token", self.csrf))
        headers = {**self.cookie, **kwargs.pop("headers", {})}
        return await self.client.post(path, data=fields, headers=headers,
                                      allow_redirects=False, **kwargs)

    async def page(self, path: str) -> str:
        resp = await self.get(path)
        assert resp.status == 200, (resp.status, await resp.text())
        return await resp.text()
