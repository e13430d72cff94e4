"""Shared test set-up.

Four simulated CPU devices, so pmap tests run anywhere. This must happen before JAX is
imported anywhere in the test session.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
