"""`python -m firstboot` and the PyInstaller entry point of `arkbox-installer`."""

from firstboot.cli import main

if __name__ == "__main__":
    main()
