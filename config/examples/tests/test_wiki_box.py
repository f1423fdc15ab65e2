"""An operator's tests of their own appliance, through arkbox's pytest plugin only.

The box is config/examples/minimal-test.yaml (a wiki, no mail, backups over ssh://),
built once, booted in the rig `arkbox try` uses — beside its backup server and a test
ACME CA — and removed after this module. Copy this file next to your appliance.yaml,
point the marker at it, and run: pytest PATH/TO/tests (docs/testing-your-appliance.md).
"""

from __future__ import annotations

import base64
import http.client
import secrets

import pytest

pytestmark = [pytest.mark.arkbox_config("../minimal-test.yaml"), pytest.mark.slow]

WIKI_PAGES = "/var/lib/dokuwiki/data/pages"  # the wiki's data volume, inside its container


def test_my_wiki_answers_on_its_route_over_https(arkbox_appliance):
    # Through the published 443, the certificate checked for wiki.wiki-box.test against
    # the test CA's root: the proxy, the certificate and the wiki all work.
    answer = arkbox_appliance.https("wiki", "/doku.php?id=start")
    assert answer.status == 200, answer.text[:500]
    assert "DokuWiki" in answer.text


def test_plain_http_redirects_to_https(arkbox_appliance):
    # Port 80 only redirects (and answers ACME challenges).
    connection = http.client.HTTPConnection("127.0.0.1", arkbox_appliance.port("80/tcp"),
                                            timeout=30)
    try:
        connection.request("GET", "/doku.php", headers={"Host": "wiki.wiki-box.test"})
        response = connection.getresponse()
    finally:
        connection.close()
    assert response.status == 301
    assert response.getheader("Location") == "https://wiki.wiki-box.test/doku.php"


def test_the_box_status_says_every_step_passed(arkbox_appliance):
    status = arkbox_appliance.status()
    assert status["result"] == "ok", status.get("failures")
    states = {step["name"]: step["state"] for step in status["steps"]}
    assert not {name for name, state in states.items() if state in {"failed", "not run"}}
    assert states["services"] in {"changed", "unchanged", "ok"}
    assert status["certificate"]["source"] == "acme"  # from the rig's test CA


def test_a_backup_reaches_my_backup_server(arkbox_appliance, arkbox_backup_server):
    archive = arkbox_appliance.backup_now()
    assert archive is not None and archive.startswith("wiki-box-")
    assert arkbox_backup_server.repository_exists()


def test_my_wiki_page_survives_a_disaster(arkbox_appliance, arkbox_rig):
    text = f"====== Survivor ======\nwritten before the disaster: {secrets.token_hex(8)}\n"
    encoded = base64.b64encode(text.encode()).decode()
    arkbox_appliance.sh(f"docker exec arkbox-wiki sh -c 'mkdir -p {WIKI_PAGES} && "
                        f"echo {encoded} | base64 -d > {WIKI_PAGES}/survivor.txt'")
    page = "/doku.php?id=survivor&do=export_raw"
    assert arkbox_appliance.https("wiki", page).text == text

    disaster = arkbox_rig.disaster()  # back up, destroy the box, boot a blank one, restore

    assert disaster.restored == disaster.backed_up  # the backup made just before
    answer = arkbox_appliance.https("wiki", page)  # now the restored box
    assert answer.status == 200
    assert answer.text == text
