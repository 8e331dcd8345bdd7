"""Shared pytest configuration.

Hypothesis runs under the ``ci`` profile unless ``HYPOTHESIS_PROFILE`` (or pytest's
``--hypothesis-profile``) names another. The suite runs on loaded, shared machines, where the
time an example takes says nothing about the code under test, so the profile turns off the
per-example deadline and the health checks that only measure speed or generated size. It
changes no strategy and no example count: every property checks exactly what it states.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
