"""The read-only run viewer behind ``runstore view`` (needs ``pip install 'runstore[view]'``).

:mod:`runstore.cli.view` is the click command (imports no web
dependency); :mod:`runstore.viewer.app` is the Starlette application, whose
:func:`~runstore.viewer.app.create_app` can also be served by any ASGI server.
"""
