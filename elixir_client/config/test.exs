import Config

# The test suite calls the sidecar's test methods (sleep, echo, crash).
config :zarr_bridge, :sidecar,
  workers: 2,
  env: [{"PYBRIDGE_TEST_METHODS", "1"}]
