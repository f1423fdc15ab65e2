"""arkbox's build pipeline: one config in, bootable images out."""
