"""The build pipeline: straight-line stages over a BuildContext (build.py reads top to bottom).
It imports the installer's core (the config model) and never the rig."""
