import Config

# The default sidecar, started by ZarrBridge.Application and registered as
# ZarrBridge.Sidecar. Its options are those of ZarrBridge.Sidecar.start_link/1.
config :zarr_bridge, start_default_sidecar: true
config :zarr_bridge, :sidecar, []

if config_env() == :test do
  import_config "test.exs"
end
