"""pytest configuration shared by ``tests/`` and the docstring examples under ``src/``.

``pytest --doctest-modules src`` (run by ``nox -s tests``) collects no conftest from ``tests/``, so
the toolkit's plugin (offline guard, ``HF_HUB_OFFLINE``) is loaded here for the examples too.
"""

pytest_plugins = ["geo_transforms.testing.plugin"]
