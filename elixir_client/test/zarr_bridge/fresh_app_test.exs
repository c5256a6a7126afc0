defmodule ZarrBridge.FreshAppTest do
  # What a new user does, from nothing: a fresh Mix application with a path
  # dependency on this elixir_client, `mix zarr_bridge.install`, a round trip
  # with zarr-python, then `mix release`, the release moved elsewhere and the
  # application deleted, and the same round trip from the release.
  #
  # pip installs the sidecar's dependencies from the package index (PyPI in
  # CI), so this takes a minute or two.
  use ExUnit.Case, async: false

  alias ZarrBridge.Test.Python

  @moduletag :fresh_app
  @moduletag timeout: 600_000

  @elixir_client Path.expand("../..", __DIR__)

  # The round trip the application runs (with `mix run`, then `bin/APP eval`):
  # read the int32 array zarr-python wrote at $ZB_IN, print its bytes, write
  # a float64 array for zarr-python at $ZB_OUT.
  @round_trip """
  {:ok, _} = Application.ensure_all_started(:zarr_bridge)
  {:ok, launch} = ZarrBridge.Sidecar.Launcher.resolve()
  IO.puts("SOURCE=\#{launch.source}")
  IO.puts("PYTHON=\#{launch.python}")
  IO.puts("WHY=\#{launch.why}")
  {:ok, input} = ZarrBridge.open(storage: :filesystem, path: System.fetch_env!("ZB_IN"))
  {:ok, nd} = ZarrBridge.Array.read(input)
  IO.puts("READ=\#{inspect(nd.shape)} \#{Base.encode16(nd.data)}")
  {:ok, out} =
    ZarrBridge.create(shape: {3, 4}, chunks: {2, 2}, dtype: :float64, storage: :filesystem,
      path: System.fetch_env!("ZB_OUT"))
  data = for i <- 0..11, into: <<>>, do: <<i * 0.5::float-little-64>>
  :ok = ZarrBridge.Array.write(out, data)
  IO.puts("WROTE")
  """

  setup do
    root = Path.join(System.tmp_dir!(), "zb-fresh-app-#{System.unique_integer([:positive])}")
    File.mkdir_p!(root)
    on_exit(fn -> File.rm_rf!(root) end)
    %{root: root}
  end

  test "install, round trip, release, move it, delete the app, round trip again", %{root: root} do
    app = Path.join(root, "fresh_app")
    data = Path.join(root, "data")
    File.mkdir_p!(data)
    script = Path.join(data, "round_trip.exs")
    File.write!(script, @round_trip)

    # 1. A new application that depends on ZarrBridge.
    mix!(root, ["new", "fresh_app", "--sup"], "dev")
    add_zarr_bridge!(Path.join(app, "mix.exs"))

    # 2. The Python half.
    install = mix!(app, ["zarr_bridge.install"], "dev")
    env_dir = Path.join([app, "_build", "zarr_bridge_python"])
    assert install =~ "creating the sidecar's Python environment in #{env_dir}"
    again = mix!(app, ["zarr_bridge.install"], "dev")
    assert again =~ "up to date", again
    refute again =~ "creating"

    # 3. A round trip in the application.
    write_input!(Path.join(data, "in1"))
    out = mix!(app, ["run", script], "dev", zb_env(data, "in1", "out1"))
    assert out =~ "SOURCE=installed", out
    assert out =~ "PYTHON=#{env_dir}/venv/bin/python", out
    assert_round_trip!(out, Path.join(data, "out1"))

    # 4. A release, moved elsewhere; the application is gone.
    mix!(app, ["release"], "prod")
    moved = Path.join(root, "elsewhere")
    File.mkdir_p!(moved)
    {_, 0} = System.cmd("cp", ["-a", Path.join(app, "_build/prod/rel/fresh_app"), moved])
    File.rm_rf!(app)
    refute File.exists?(app)

    # 5. The same round trip from the release.
    write_input!(Path.join(data, "in2"))
    bin = Path.join([moved, "fresh_app", "bin", "fresh_app"])

    {out, status} =
      System.cmd(bin, ["eval", "Code.eval_file(#{inspect(script)})"],
        env: clean_env() ++ zb_env(data, "in2", "out2"),
        cd: root,
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out =~ "SOURCE=installed", out
    assert out =~ "WHY=the release's bundle #{moved}/fresh_app/lib/zarr_bridge-", out
    assert_round_trip!(out, Path.join(data, "out2"))
  end

  defp add_zarr_bridge!(mix_exs) do
    text = File.read!(mix_exs)
    dep = ~s({:zarr_bridge, path: #{inspect(@elixir_client)}})
    text = String.replace(text, ~s(# {:dep_from_hexpm, "~> 0.3.0"},), dep <> ",")

    release = "releases: [fresh_app: [steps: [:assemble, &ZarrBridge.Release.bundle_python/1]]]"
    text = String.replace(text, "deps: deps()", "deps: deps(),\n      " <> release)
    assert text =~ dep and text =~ release, "cannot edit the generated mix.exs:\n#{text}"
    File.write!(mix_exs, text)
  end

  defp write_input!(path) do
    Python.run!(
      Python.prelude() <>
        """
        a = zarr.create_array(sys.argv[1], shape=(4, 3), chunks=(3, 2), dtype='int32')
        a[:] = np.arange(12, dtype='int32').reshape(4, 3) * 7
        """,
      [path]
    )
  end

  defp assert_round_trip!(out, written) do
    expected = for i <- 0..11, into: <<>>, do: <<i * 7::32-little>>
    assert out =~ "READ={4, 3} #{Base.encode16(expected)}", out
    assert out =~ "WROTE", out

    checked =
      Python.run!(
        Python.prelude() <>
          """
          a = zarr.open_array(sys.argv[1], mode='r')
          assert a.shape == (3, 4) and a.dtype == np.float64, (a.shape, a.dtype)
          assert (a[:] == np.arange(12).reshape(3, 4) * 0.5).all(), a[:]
          print('VERIFIED')
          """,
        [written]
      )

    assert checked =~ "VERIFIED"
  end

  defp zb_env(data, input, output),
    do: [{"ZB_IN", Path.join(data, input)}, {"ZB_OUT", Path.join(data, output)}]

  # A user's shell: none of this test run's settings for the sidecar.
  defp clean_env do
    [
      {"ZARR_BRIDGE_PYTHON", nil},
      {"PYTHONPATH", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_EXS", nil},
      {"MIX_DEPS_PATH", nil},
      {"ZARR_BRIDGE_NO_DEFAULT_SIDECAR", nil}
    ]
  end

  defp mix!(dir, args, mix_env, env \\ []) do
    {out, status} =
      System.cmd("mix", args,
        cd: dir,
        env: [{"MIX_ENV", mix_env} | clean_env()] ++ env,
        stderr_to_stdout: true
      )

    assert status == 0, "mix #{Enum.join(args, " ")} failed (#{status}):\n#{out}"
    out
  end
end
