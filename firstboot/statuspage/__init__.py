"""The status page: the admin's web view of `arkbox-installer status --json`, served by a
small HTTP server on a unix socket that only the proxy reaches (docs/status-page.md)."""
