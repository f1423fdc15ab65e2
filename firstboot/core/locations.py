"""Where the image puts the installer's program and the box's config (paths on the box).

Declared once for the units that run the installer, the update, the build and the tests;
a module of constants only, so the installer's start-up imports nothing more for them.
"""

INSTALLER_PROGRAM = "/usr/local/sbin/arkbox-installer"
INSTALLED_CONFIG = "/etc/arkbox/appliance.yaml"
