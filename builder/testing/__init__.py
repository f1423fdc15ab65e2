"""arkbox's pytest plugin: operators test their own appliance in their own pytest suite.

`plugin` is what pytest loads (entry point `pytest11`, name `arkbox`); `choice` decides
which config and where its build goes (pure); `boxes` is the one module that drives the
rig (builder.rig) and the build; `https` asks the box over its published 443.
See docs/testing-your-appliance.md.
"""
