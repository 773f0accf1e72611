"""Scripts and helpers outside the package: presets, parked runs, and the transport to a lent machine."""
