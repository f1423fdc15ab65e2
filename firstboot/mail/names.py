"""Names the mail parts share, in a module that loads nothing: status and the backup need
them without the renderer (jinja2) and the container's keys (cryptography) that
container.py and render.py load (issue 19: status starts often)."""

MAIL_SERVICE = "mail"  # the mail container's service name (containers/naming.py)
# rspamd's controller in the mail image (image/recipes/mail/rspamd-override): rspamc's
# health and learning answer there, on the container's loopback only.
RSPAMD_CONTROLLER = "127.0.0.1:11334"
