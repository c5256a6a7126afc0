defmodule ZarrBridge.LauncherTest do
  # Not async: these tests start sidecars and BEAMs, and the machine has two cores.
  use ZarrBridge.Test.SidecarCase, async: false

  import ZarrBridge.Test.TmpDir

  import ExUnit.CaptureLog

  alias ZarrBridge.Sidecar.Launcher

  describe "resolving the sidecar's Python at run time" do
    test "this checkout's .venv is found, and the sidecar runs with -P" do
      assert {:ok, launch} = Launcher.resolve()
      assert launch.source == :checkout
      assert launch.python == Path.expand("../../../.venv/bin/python", __DIR__)
      assert ["-P", "-m", "pybridge"] = launch.args
    end

    test "the :python option and $ZARR_BRIDGE_PYTHON win" do
      python = System.find_executable("python3")
      assert {:ok, %{source: :option, python: ^python}} = Launcher.resolve(python: python)
    end

    test "a configured environment that does not exist: the error says to install" do
      dir = Path.join(tmp_dir("noenv"), "missing")

      assert {:error, %Error{code: :sidecar_unavailable} = error} =
               Launcher.resolve(python_env: dir)

      assert error.message =~ "mix zarr_bridge.install"
      assert error.message =~ dir
      assert {:no_python_env, ^dir} = error.details.reason
    end

    test "an installed environment of either layout is used" do
      dir = tmp_dir("site")
      File.mkdir_p!(Path.join(dir, "site"))
      {:ok, checkout} = Launcher.resolve()
      version = python_version(checkout.python)

      Launcher.write_manifest!(dir, [
        {"layout", "site"},
        {"python_version", version},
        {"python", checkout.python}
      ])

      assert {:ok, launch} = Launcher.resolve(python_env: dir)
      assert launch.source == :installed
      assert launch.python == checkout.python
      assert [{"PYTHONPATH", path}] = launch.env
      assert hd(String.split(path, ":")) == Path.join(dir, "site")

      # The :env option's PYTHONPATH comes first; the site directory stays.
      assert [{"PYTHONPATH", "/mine:" <> site}] =
               Launcher.merge_env(launch.env, [{"PYTHONPATH", "/mine"}])

      assert site == Path.join(dir, "site")
      assert [{"PYTHONPATH", ^site}] = Launcher.merge_env(launch.env, [{"PYTHONPATH", nil}])

      Launcher.write_manifest!(dir, [{"layout", "venv"}])
      assert {:error, %Error{message: message}} = Launcher.resolve(python_env: dir)
      assert message =~ "venv/bin/python"
    end
  end

  describe "the working directory is not on the sidecar's import path" do
    @tag timeout: 120_000
    test "a numpy.py that raises, in the BEAM's working directory: reads and writes work" do
      cwd = tmp_dir("cwd")
      data = tmp_dir("cwd-data")
      File.write!(Path.join(cwd, "numpy.py"), "raise RuntimeError('the numpy.py in the cwd')\n")
      ebin = Path.dirname(:code.which(ZarrBridge.Sidecar))
      script = Path.join(data, "child.exs")

      File.write!(script, """
      {:ok, _} = Application.ensure_all_started(:zarr_bridge)
      path = #{inspect(Path.join(data, "a"))}
      {:ok, array} = ZarrBridge.create(shape: {4}, chunks: {2}, dtype: :int32,
        storage: :filesystem, path: path, timeout: 60_000)
      :ok = ZarrBridge.Array.write(array, <<1::32-little, 2::32-little, 3::32-little, 4::32-little>>,
        timeout: 60_000)
      {:ok, back} = ZarrBridge.open(storage: :filesystem, path: path)
      IO.puts("RESULT=" <> inspect(ZarrBridge.Array.get_slice(back, timeout: 60_000)))
      """)

      {out, status} =
        System.cmd(System.find_executable("elixir"), ["-pa", ebin, script],
          cd: cwd,
          stderr_to_stdout: true
        )

      assert status == 0, out
      assert out =~ "RESULT={:ok, {1, 2, 3, 4}}", out
      refute out =~ "the numpy.py in the cwd"
    end
  end

  describe "a worker pool that cannot start" do
    @tag :capture_log
    @tag timeout: 120_000
    test "is a clear :sidecar_unavailable naming the cause, logged once" do
      dir = tmp_dir("broken-zarr")
      File.mkdir_p!(Path.join(dir, "zarr"))

      File.write!(
        Path.join([dir, "zarr", "__init__.py"]),
        "raise ImportError('this zarr is broken on purpose')\n"
      )

      log =
        capture_log(fn ->
          pid = start_supervised!({Sidecar, workers: 1, env: [{"PYTHONPATH", dir}]})
          {:ok, _} = Sidecar.info(pid)

          # ping answers at first (the pool starts after hello), then the
          # sidecar ends itself and says why.
          error =
            eventually(
              fn ->
                case Sidecar.call(pid, "ping", %{}) do
                  {:error, %Error{code: :sidecar_unavailable} = error} -> error
                  {:ok, %{"pong" => true}} -> nil
                end
              end,
              60_000
            )

          assert %Error{} = error, "the sidecar kept answering ping"
          assert error.message =~ "the worker pool cannot start"
          assert error.message =~ "this zarr is broken on purpose"
          assert {:worker_pool_failed, _} = error.details.reason
          # Retried quietly: no second error in the log.
          Process.sleep(3_000)
        end)

      errors = log |> String.split("\n") |> Enum.filter(&(&1 =~ "[error]"))
      assert length(errors) == 1, log
    end
  end

  describe "a Python that cannot import pybridge" do
    @tag :capture_log
    test "is a configuration error, logged once, that says to run mix zarr_bridge.install" do
      python = System.find_executable("python3")
      {_, status} = System.cmd(python, ["-c", "import pybridge"], stderr_to_stdout: true)
      assert status != 0, "this test needs a python3 on the PATH that lacks pybridge"

      log =
        capture_log(fn ->
          pid = start_supervised!({Sidecar, python: python, env: [{"PYTHONPATH", nil}]})

          assert eventually(
                   fn ->
                     match?(
                       {:error,
                        %Error{
                          code: :sidecar_unavailable,
                          details: %{reason: {:pybridge_not_importable, _}}
                        }},
                       Sidecar.call(pid, "ping", %{})
                     )
                   end,
                   5_000
                 )

          {:error, error} = Sidecar.call(pid, "ping", %{})
          assert error.message =~ "mix zarr_bridge.install"
          assert error.message =~ "No module named"
          Process.sleep(2_000)
        end)

      errors = log |> String.split("\n") |> Enum.filter(&(&1 =~ "[error]"))
      assert length(errors) == 1, log
    end
  end

  defp python_version(python) do
    {out, 0} = System.cmd(python, ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])

    String.trim(out)
  end
end
