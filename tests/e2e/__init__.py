"""Browser tests (a package, so this folder's conftest does not shadow the one in tests/)."""
