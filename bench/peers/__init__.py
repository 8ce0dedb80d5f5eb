"""The peers a user would pick instead of us, measured on our sandbox image by ``bench/toolcall.py``.

``env.py`` (run by the bench, in our venv) makes the peers' own environment: a venv under the bench directory
with ``llm-sandbox`` and ``swe-rex`` from PyPI, and for SWE-ReX an image derived from our sandbox image with
``swerex-remote`` copied in (our image has no pip and its containers no network, so the package tree is
installed on the host and copied; nothing is pulled from a registry). ``measure.py`` runs in that venv, so
neither peer is ever imported by our code, and prints its samples as JSON.
"""
