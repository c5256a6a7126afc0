ExUnit.start(exclude: [:soak])

# The suite runs real sidecars: stop at once, with the fix, when the Python
# side is missing instead of failing test after test.
sidecar_python_problem =
  case ZarrBridge.Sidecar.resolve_python() do
    {:ok, python} ->
      case System.cmd(python, ["-c", "import pybridge"], stderr_to_stdout: true) do
        {_output, 0} -> nil
        {output, status} -> "#{python} cannot import pybridge (exit status #{status}):\n#{output}"
      end

    {:error, _reason, text} ->
      text
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
