"""Tests of timm_longtail.losses (a package so the test module names do not clash with others)."""
