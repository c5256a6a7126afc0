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
      deps: [],
      docs: [main: "ZarrBridge"]
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
