defmodule ZarrBridge.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :zarr_bridge,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      # :zarr_bridge_python copies ../pybridge into priv/python (see
      # Mix.Tasks.Compile.ZarrBridgePython); it runs after :elixir built it.
      compilers: Mix.compilers() ++ [:zarr_bridge_python],
      deps: [],
      docs: [main: "ZarrBridge"],
      description: "Zarr arrays and numcodecs codecs for the BEAM, through a Python sidecar",
      package: package()
    ]
  end

  # The Hex package carries the sidecar's Python source (priv/python, made by
  # `mix compile` from ../pybridge), so an application never needs this
  # repository: `mix zarr_bridge.install` installs it from there.
  defp package do
    [
      files: ["lib", "priv/python", "mix.exs"]
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {ZarrBridge.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
