"""The guard on service/core/databases_patch.py: it patches private internals of `databases`
(archived upstream, pinned), so a different installed version, or a private attribute gone,
fails here by name rather than as stuck connections in production."""

from __future__ import annotations

from service.core import databases_patch


def test_the_databases_patch_still_fits_the_installed_databases() -> None:
    problems = databases_patch.private_api_problems()
    assert not problems, (
        "service/core/databases_patch.py patches private internals of `databases` "
        f"(written for {databases_patch.PATCHED_VERSION}); read the installed version's "
        "source, then update the patch, PATCHED_VERSION and the pin in pyproject.toml: "
        + "; ".join(problems)
    )
