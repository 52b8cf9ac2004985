"""The package metadata in pyproject.toml builds without setuptools warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_the_project_metadata_raises_no_setuptools_warning() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings():
        # A `project.license` TOML table, for one, is a SetuptoolsDeprecationWarning.
        warnings.simplefilter("error")
        distribution = apply_configuration(Distribution(), str(PYPROJECT))
    assert distribution.metadata.license_expression == "Apache-2.0"
    assert distribution.get_name() == "mlfactory"
