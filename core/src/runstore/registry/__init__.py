"""Finding backends: the plugin manager (:mod:`~.plugins`) and config strings (:mod:`~.config`).

Imports the model and the SPI; nothing above them.
"""
