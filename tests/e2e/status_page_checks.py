"""A box's status page read from the test host, as a browser or Prometheus would."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import urllib3
from rig_fixtures import ROOT

PASSWORD = (ROOT / "config/secrets/status-page-password").read_text().strip()
SVG = {"s": "http://www.w3.org/2000/svg"}


def series_marks(svg: str, name: str) -> int:
    """The dots of the series called `name` in a pygal SVG."""
    root = ET.fromstring(svg)
    titles = [t.text for t in root.iterfind(".//s:g[@class='legends']//s:text", SVG)]
    index = titles.index(name)
    groups = root.iterfind(f".//s:g[@class='series serie-{index} color-{index}']", SVG)
    return sum(len(g.findall(".//s:circle", SVG)) for g in groups)


@dataclass
class StatusPage:
    """A logged-in session on the page at https://HOST/ of the box at `address`. SNI and Host
    name the box (its proxy refuses any other name); the certificate is not checked here:
    the browser test checks it."""

    pool: urllib3.HTTPSConnectionPool
    host: str
    cookie: str

    @classmethod
    def login(cls, address: str, host: str, password: str = PASSWORD) -> StatusPage:
        pool = urllib3.HTTPSConnectionPool(
            address, 443, server_hostname=host, assert_hostname=False, cert_reqs="CERT_NONE",
            timeout=urllib3.Timeout(total=30), retries=False)
        answer = pool.request(
            "POST", "/login", body=urlencode({"password": password}), redirect=False,
            headers={"Host": host, "Origin": f"https://{host}",
                     "Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status == 303, (answer.status, answer.data[:500])
        cookie = SimpleCookie(answer.headers["Set-Cookie"])
        return cls(pool, host, "; ".join(f"{k}={m.value}" for k, m in cookie.items()))

    def get(self, path: str) -> str:
        answer = self.pool.request("GET", path, redirect=False,
                                   headers={"Host": self.host, "Cookie": self.cookie})
        assert answer.status == 200, (path, answer.status, answer.data[:500])
        return answer.data.decode()
