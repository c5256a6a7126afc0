# :remote - the object-store tests (test/zarr_bridge/remote_stores_test.exs)
# run by default: they start their own servers on loopback.
ExUnit.start(exclude: [:soak])

# The suite runs real sidecars: stop at once, with the fix, when the Python
# side is missing instead of failing test after test.
sidecar_python_problem =
  case ZarrBridge.Sidecar.Launcher.resolve() do
    {:ok, launch} ->
      case ZarrBridge.Sidecar.Launcher.check_import(launch) do
        :ok -> nil
        {:error, output} -> "#{launch.python} cannot import pybridge (#{output})"
      end

    {:error, error} ->
      error.message
  end

if sidecar_python_problem do
  IO.puts(:stderr, """

  The ZarrBridge tests need a Python environment with pybridge installed.

  #{sidecar_python_problem}

  Fix: run `make setup` in the repository root (it creates .venv with
  pybridge installed), or point ZARR_BRIDGE_PYTHON at a Python that can
  `import pybridge` (for a source checkout also set PYTHONPATH to the
  repository root).
  """)

  System.halt(1)
end
