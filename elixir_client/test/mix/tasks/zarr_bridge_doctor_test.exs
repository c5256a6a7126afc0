defmodule Mix.Tasks.ZarrBridge.DoctorTest do
  # `mix zarr_bridge.doctor` run for real: in this VM (Mix.Task.rerun) for
  # what it prints, and as `mix` in a subprocess for its exit status. The
  # expected values come from the Python the sidecar runs.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias ZarrBridge.Test.{JSON, Python}

  @moduletag timeout: 180_000

  setup do
    dir = Path.join(System.tmp_dir!(), "zb-doctor-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    sidecar_config = Application.get_env(:zarr_bridge, :sidecar)
    python_env = System.get_env("ZARR_BRIDGE_PYTHON")

    on_exit(fn ->
      Application.put_env(:zarr_bridge, :sidecar, sidecar_config)
      restore_env("ZARR_BRIDGE_PYTHON", python_env)
      File.rm_rf!(dir)
    end)

    {:ok, dir: dir}
  end

  defp restore_env(name, nil), do: System.delete_env(name)
  defp restore_env(name, value), do: System.put_env(name, value)

  # The output and how the task ended: :ok, or {:exit, reason}.
  defp doctor do
    parent = self()

    out =
      capture_io(fn ->
        result =
          try do
            Mix.Task.rerun("zarr_bridge.doctor", [])
            :ok
          catch
            :exit, reason -> {:exit, reason}
          end

        send(parent, {:doctor, result})
      end)

    assert_received {:doctor, result}
    {out, result}
  end

  # "  label  value" -> value, for the first row with that label.
  defp row(out, label) do
    case Regex.run(~r/^  #{Regex.escape(label)}  +(\S.*)$/m, out) do
      [_, value] -> value
      nil -> flunk("no row #{inspect(label)} in:\n#{out}")
    end
  end

  # A row's value with its continuation lines (indented past the label).
  defp block(out, label) do
    [first | rest] =
      String.split(out, "\n") |> Enum.drop_while(&(not String.starts_with?(&1, "  #{label}  ")))

    more = Enum.take_while(rest, &String.starts_with?(&1, "    "))

    Enum.map_join([first | more], "\n", &String.trim/1)
    |> String.replace_prefix(label, "")
    |> String.trim()
  end

  defp facts do
    Python.run!(
      Python.prelude() <>
        """
        import pybridge, msgpack
        from pybridge.codecs import list_codecs
        st = os.statvfs('/dev/shm')
        print(json.dumps({
            'version': sys.version.split()[0], 'prefix': sys.prefix,
            'pybridge': pybridge.__version__, 'zarr': zarr.__version__,
            'numcodecs': numcodecs.__version__, 'numpy': np.__version__,
            'available': [c['id'] for c in list_codecs(False) if c['available']],
            'unavailable': [c['id'] for c in list_codecs(False) if not c['available']],
            'shm_total': st.f_blocks * st.f_frsize, 'euid': os.geteuid()}))
        """
    )
    |> JSON.decode!()
  end

  test "a sidecar that serves: the Python and why, versions, codecs, /dev/shm and settings" do
    {out, result} = doctor()
    assert result == :ok, out
    facts = facts()
    {:ok, %{python: python, why: why}} = ZarrBridge.Sidecar.Launcher.resolve()

    assert row(out, "executable") == python
    assert row(out, "chosen by") == why

    assert row(out, "version") == facts["version"]
    assert row(out, "environment") =~ facts["prefix"]
    assert out =~ ~r/^  status +serving \(os pid \d+, 2 workers\)$/m
    assert row(out, "pybridge") =~ facts["pybridge"]
    assert row(out, "protocol") == "1.0 (this client speaks 1.0)"
    assert row(out, "zarr") == facts["zarr"]
    assert row(out, "numcodecs") == facts["numcodecs"]
    assert row(out, "numpy") == facts["numpy"]

    # every available codec is listed, in the "available" block
    listed = out |> block("available") |> String.split(~r/[,\s]+/, trim: true)
    assert listed == facts["available"]
    for id <- facts["unavailable"], do: assert(out =~ ~r/^  unavailable +#{id} \(/m)
    assert row(out, "refused") =~ "pickle"

    assert row(out, "usage") =~ "used of #{facts["shm_total"]} bytes"
    assert row(out, "handoff") == "on, for results of 4194304 bytes (4.0 MiB) and more"
    assert row(out, "workers") == "2"
    assert row(out, "env") == "PYBRIDGE_TEST_METHODS=1"
    assert row(out, "max_in_flight") == "10000"

    if facts["euid"] == 0 do
      assert out =~ "warning: running as root"
      assert out =~ "The sidecar can serve (1 warning)."
    else
      assert out =~ "No problems found: the sidecar can serve."
    end
  end

  test "a codec that cannot be imported is a warning with the command that installs it",
       %{dir: dir} do
    # A zfpy module that fails to import hides the real one from numcodecs.
    File.write!(Path.join(dir, "zfpy.py"), "raise ImportError('zfpy is hidden by the test')\n")
    config = Application.get_env(:zarr_bridge, :sidecar)
    env = [{"PYTHONPATH", dir} | Keyword.get(config, :env, [])]
    Application.put_env(:zarr_bridge, :sidecar, Keyword.put(config, :env, env))

    {out, result} = doctor()
    assert result == :ok, out
    {:ok, %{python: python}} = ZarrBridge.Sidecar.Launcher.resolve()
    assert out =~ ~r/^  unavailable +zfpy \(.+\)$/m
    assert out =~ "warning: codec zfpy is unavailable"
    assert out =~ "fix: `#{python} -m pip install 'numcodecs[zfpy]'`"
    refute out |> block("available") |> String.contains?("zfpy")
    assert out =~ "PYTHONPATH=#{dir}"
    assert out =~ "The sidecar can serve"
  end

  test "a Python without pybridge: the error, the fix, and the exit", %{dir: dir} do
    # The sidecar's own Python with its site-packages (and so pybridge) off.
    {:ok, %{python: real}} = ZarrBridge.Sidecar.Launcher.resolve()
    bare = Path.join(dir, "python")
    File.write!(bare, "#!/bin/sh\nexec #{real} -S \"$@\"\n")
    File.chmod!(bare, 0o755)
    System.put_env("ZARR_BRIDGE_PYTHON", bare)

    {out, result} = doctor()
    assert result == {:exit, {:shutdown, 1}}, out
    assert row(out, "executable") == bare
    assert row(out, "chosen by") == "$ZARR_BRIDGE_PYTHON names #{bare}"
    assert row(out, "pybridge") =~ "cannot be imported: ModuleNotFoundError"
    assert out =~ "ERROR: #{bare} cannot import pybridge (ModuleNotFoundError"
    assert out =~ "fix: run `mix zarr_bridge.install`"
    assert out =~ "The sidecar cannot serve (1 error"
  end

  test "as a command: no Python exits with status 1 and prints the fix; a good one exits 0" do
    root = Path.expand("../../..", __DIR__)
    env = [{"MIX_ENV", "test"}]

    {out, status} =
      System.cmd("mix", ["zarr_bridge.doctor"],
        cd: root,
        env: [{"ZARR_BRIDGE_PYTHON", "/nonexistent/python"} | env],
        stderr_to_stdout: true
      )

    assert status == 1, out

    assert out =~
             ~s(ERROR: no Python for the sidecar: $ZARR_BRIDGE_PYTHON names "/nonexistent/python")

    assert out =~ "fix: run `mix zarr_bridge.install`, or set ZARR_BRIDGE_PYTHON"

    {out, status} =
      System.cmd("mix", ["zarr_bridge.doctor"], cd: root, env: env, stderr_to_stdout: true)

    assert status == 0, out
    assert out =~ "the sidecar can serve" or out =~ "The sidecar can serve"
  end
end
