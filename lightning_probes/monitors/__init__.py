"""Lightning callbacks, one thin monitor per measure, all built on :class:`~lightning_probes.monitors.base.Monitor`."""
