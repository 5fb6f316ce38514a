"""The matrix-nio and matrix-js-sdk end-to-end tests, unchanged, against the cluster
behind nginx (conftest.py): the clients cannot tell it from one process."""
from tests.e2e.test_nio_flows import *  # noqa: F401,F403  (collected here with this package's `server`)
from tests.test_js_sdk import test_js_sdk_sync_loop, test_js_sdk_sync_loop_with_rust_crypto  # noqa: F401
