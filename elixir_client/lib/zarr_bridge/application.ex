defmodule ZarrBridge.Application do
  @moduledoc """
  The OTP application: a `:one_for_one` supervisor that starts the default
  sidecar, registered as `ZarrBridge.Sidecar`.

  ## Configuration

      # the default sidecar's options (see ZarrBridge.Sidecar.start_link/1)
      config :zarr_bridge, :sidecar, workers: 4, allowed_roots: ["/data"]

      # do not start it (start your own sidecars under your supervisor)
      config :zarr_bridge, start_default_sidecar: false

  The environment variable `ZARR_BRIDGE_NO_DEFAULT_SIDECAR=1` also keeps the
  default sidecar from starting.
  """

  use Application

  @impl true
  def start(_type, _args) do
    children =
      if start_default_sidecar?() do
        options =
          Keyword.put(Application.get_env(:zarr_bridge, :sidecar, []), :name, ZarrBridge.Sidecar)

        [{ZarrBridge.Sidecar, options}]
      else
        []
      end

    # Reads of handoff files (ZarrBridge.Sidecar.Handoff) run under it.
    children = [{Task.Supervisor, name: ZarrBridge.HandoffTasks} | children]

    Supervisor.start_link(children, strategy: :one_for_one, name: ZarrBridge.Supervisor)
  end

  defp start_default_sidecar? do
    Application.get_env(:zarr_bridge, :start_default_sidecar, true) and
      System.get_env("ZARR_BRIDGE_NO_DEFAULT_SIDECAR") != "1"
  end
end
