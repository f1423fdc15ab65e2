"""The archive's state in the build's cache keys (`arkbox build --refresh`, issue 15)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.pipeline import archive_state, service_images
from builder.pipeline.service_images import BaseSpec, RecipeState
from firstboot.core.errors import ArkboxError

MIRROR = "http://mirror.test/debian"
DISTS = archive_state.release_dists("trixie", MIRROR, "http://security.test/debian-security")
HEAD = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian\n"
        "Suite: stable\nCodename: trixie\nDate: {date}\nValid-Until: Sat, 28 Nov 2026\n")


class Mirror:
    """A fake mirror's InRelease dates; counts what the build asked for."""

    def __init__(self, date: str) -> None:
        self.dates = dict.fromkeys(DISTS, date)
        self.asked: list[str] = []

    def fetch(self, dist: str) -> str:
        self.asked.append(dist)
        return archive_state.parse_release_date(HEAD.format(date=self.dates[dist]), dist)


def test_release_dists_follow_the_images_sources_list() -> None:
    assert [d.rsplit("/", 1)[-1] for d in DISTS] == [
        "trixie", "trixie-updates", "trixie-security"]
    assert archive_state.release_dists("trixie", MIRROR, None) == DISTS[:2]


def test_a_release_without_a_date_is_a_clear_error() -> None:
    with pytest.raises(ArkboxError) as failed:
        archive_state.parse_release_date("Origin: Debian\nSuite: stable\n", f"{DISTS[0]}/InRelease")
    assert f"{DISTS[0]}/InRelease has no Date:" in failed.value.message
    assert failed.value.hint and "build.mirror" in failed.value.hint


def test_first_build_reads_the_mirror_and_records_it(tmp_path: Path) -> None:
    mirror = Mirror("Fri, 04 Dec 2026 03:54:29 UTC")
    resolved = archive_state.resolve(tmp_path, DISTS, refresh=False, fetch=mirror.fetch)
    assert mirror.asked == DISTS
    assert resolved.state == dict.fromkeys(DISTS, "Fri, 04 Dec 2026 03:54:29 UTC")
    assert "first build with this cache" in resolved.note
    recorded = json.loads((tmp_path / archive_state.STATE_FILE).read_text())
    assert recorded == resolved.state


def test_without_refresh_the_recorded_state_is_reused_even_when_the_archive_moved(
        tmp_path: Path) -> None:
    mirror = Mirror("Fri, 04 Dec 2026 03:54:29 UTC")
    first = archive_state.resolve(tmp_path, DISTS, refresh=False, fetch=mirror.fetch)
    mirror.dates[DISTS[2]] = "Sat, 05 Dec 2026 10:00:00 UTC"
    mirror.asked.clear()
    again = archive_state.resolve(tmp_path, DISTS, refresh=False, fetch=mirror.fetch)
    assert mirror.asked == []  # no network at all
    assert again.state == first.state
    assert "reused: no --refresh" in again.note


def test_refresh_sees_the_archive_move_and_changes_every_key(tmp_path: Path) -> None:
    mirror = Mirror("Fri, 04 Dec 2026 03:54:29 UTC")
    before = archive_state.resolve(tmp_path, DISTS, refresh=False, fetch=mirror.fetch).state
    mirror.dates[DISTS[2]] = "Sat, 05 Dec 2026 10:00:00 UTC"
    after = archive_state.resolve(tmp_path, DISTS, refresh=True, fetch=mirror.fetch)
    assert after.state[DISTS[2]] == "Sat, 05 Dec 2026 10:00:00 UTC"
    assert after.note.startswith("refreshed: trixie-security moved; newest Sat, 05 Dec 2026")
    # The base image and every recipe get new keys: the next build rebuilds them.
    old, new = tuple(sorted(before.items())), tuple(sorted(after.state.items()))
    assert service_images.base_key(BaseSpec(archive=old)) != service_images.base_key(
        BaseSpec(archive=new))
    files = {"Dockerfile": "abc"}
    assert service_images.recipe_key("sha256:layer", files, old) != service_images.recipe_key(
        "sha256:layer", files, new)
    # ... and the build log says why.
    previous = RecipeState("k", "sha256:layer", files, before)
    assert service_images.rebuild_reason(previous, "sha256:layer", files, after.state) == (
        "the archive moved (trixie-security; --refresh)")
    # A refresh that finds nothing new keeps the keys, so the cache is reused.
    unchanged = archive_state.resolve(tmp_path, DISTS, refresh=True, fetch=mirror.fetch)
    assert unchanged.state == after.state
    assert "unchanged since the last refresh" in unchanged.note


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if not self.path.endswith("/dists/trixie/InRelease"):
            self.send_error(404)
            return
        self.send_response(200)  # ignores Range, as some mirrors do: the reader stops early
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def local_mirror() -> Iterator[str]:
    # A whole InRelease as big as Debian's (about 200 KB): only its start is read.
    _Handler.body = (HEAD.format(date="Sat, 21 Nov 2026 09:15:44 UTC")
                     + "SHA256:\n" + " 0123 456 main/x\n" * 12000).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_reads_the_date_over_http_and_names_a_missing_file(local_mirror: str) -> None:
    assert archive_state.fetch_release_date(f"{local_mirror}/dists/trixie") == (
        "Sat, 21 Nov 2026 09:15:44 UTC")
    with pytest.raises(ArkboxError) as failed:
        archive_state.fetch_release_date(f"{local_mirror}/dists/sid")
    assert f"could not read {local_mirror}/dists/sid/InRelease" in failed.value.message
    assert "404" in failed.value.message
