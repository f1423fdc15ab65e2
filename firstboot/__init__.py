"""arkbox first-boot installer and the appliance config model.

`builder/` imports this package; this package never imports `builder/`.
"""

__version__ = "0.1.0"
