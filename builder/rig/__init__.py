"""The rig: the built appliance booted in containers next to its backup server, a test CA
and a DNS server. `arkbox try` and the end-to-end tests stand on it."""
