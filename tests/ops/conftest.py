import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """admin_client creates a user per test: hash its password cheaply (PBKDF2 costs about a second here)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
