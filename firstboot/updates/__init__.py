"""Update bundles: what a running box needs to become a newer build (docs/updates.md)."""
