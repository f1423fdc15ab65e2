"""Encrypted off-site backups with borg: the day-2 commands and what the steps share.

borg.py     argv and environment builders (pure)
client.py   the client key, known_hosts, running borg with clear errors, backups.json
backup.py   one backup: dumps streamed, paused services' volumes, the base archive; prune
restore.py  find the latest complete backup, extract beside the data, verify, swap in
timer.py    the systemd timer that runs `arkbox-installer backup`
cli.py      `arkbox-installer backup | list | check | restore`
"""
