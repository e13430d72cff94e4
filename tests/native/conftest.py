"""What the tests of pisa_jax.native share."""
import pytest


@pytest.fixture
def fresh_load():
    """fresh_load(module): forgets the module's cached build and registration (its `_loaded`)
    now and again after the test, so that what the test patches (the environment, the build)
    is what the module sees, and no later test sees it."""
    modules = []

    def forget(module):
        module._loaded.cache_clear()
        modules.append(module)
        return module

    yield forget
    for module in modules:
        module._loaded.cache_clear()
