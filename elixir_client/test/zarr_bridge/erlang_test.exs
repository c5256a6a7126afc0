defmodule ZarrBridge.ErlangTest do
  # Erlang callers: Erlang strings (charlists) wherever the API takes a path,
  # a name, a mode or an attribute key; and a real `erl` session that starts
  # the application, opens an array written by zarr-python and reads it.
  use ExUnit.Case, async: true

  import ZarrBridge.Test.TmpDir

  alias ZarrBridge.{Array, Group, NDArray}
  alias ZarrBridge.Test.Python

  @moduletag timeout: 120_000

  test "charlists as paths, nodes, names, modes, dtypes, dimension names and attribute keys" do
    dir = tmp_dir("erlang")
    path = String.to_charlist(Path.join(dir, "h.zarr"))

    # Called the way Erlang code calls it: module atom, proplists, charlists.
    {:ok, root} = :"Elixir.ZarrBridge.Group".create(path: path, attributes: %{~c"team" => "B"})
    assert root.path == List.to_string(path)

    {:ok, a} =
      :"Elixir.ZarrBridge.Group".create_array(root, ~c"x/temps",
        shape: {4},
        chunks: {2},
        dtype: ~c"int16",
        dimension_names: [~c"time"],
        attributes: %{~c"units" => ~c"K", ~c"nested" => %{~c"k" => 1}}
      )

    assert a.node == "x/temps" and a.metadata.dtype == :int16
    :ok = Array.write(a, NDArray.from_list!([1, 2, 3, 4], {4}, :int16))
    :ok = Array.update_attributes(a, %{~c"more" => true})

    {:ok, same} =
      :"Elixir.ZarrBridge".open(storage: :filesystem, path: path, node: ~c"x/temps", mode: ~c"r")

    assert same.mode == :r
    assert Array.get_slice!(same) == {1, 2, 3, 4}
    assert Array.read_chunk_raw!(same, ~c"c/1") == Array.read_chunk_raw!(same, "c/1")

    {:ok, g} = Group.open(path: path, mode: ~c"r")
    {:ok, x} = Group.open_group(g, ~c"x")
    assert {:ok, [{"temps", :array}]} = Group.members(x)
    assert {:ok, %Array{node: "x/temps"}} = Group.open_array(g, ~c"x/temps")

    # What zarr-python sees: string keys and names, the data as written.
    out =
      Python.run!(
        Python.prelude() <>
          """
          root = zarr.open_group(sys.argv[1], mode='r')
          a = root['x/temps']
          print(json.dumps({'root': dict(root.attrs), 'attrs': dict(a.attrs),
                            'names': list(a.metadata.dimension_names),
                            'data': a[:].tolist(), 'dtype': str(a.dtype)}, sort_keys=True))
          """,
        [List.to_string(path)]
      )

    assert ZarrBridge.Test.JSON.decode!(out) == %{
             "root" => %{"team" => "B"},
             "attrs" => %{"units" => ~c"K", "nested" => %{"k" => 1}, "more" => true},
             "names" => ["time"],
             "data" => [1, 2, 3, 4],
             "dtype" => "int16"
           }

    # Memory stores are named by charlists too.
    name = ~c"erlang-#{System.unique_integer([:positive])}"
    {:ok, m} = ZarrBridge.create(storage: :memory, path: name, shape: {2}, dtype: :uint8)
    {:ok, m2} = ZarrBridge.open(storage: :memory, path: List.to_string(name))
    assert m2.metadata.shape == {2} and m.path == List.to_string(name)
  end

  test "a charlist that is no text is refused with the usual error" do
    assert_raise ArgumentError, ~r/path must be a non-empty string/, fn ->
      ZarrBridge.open(path: [0x110000])
    end

    assert_raise ArgumentError, ~r/path must be a non-empty string/, fn ->
      ZarrBridge.open(path: [])
    end
  end

  test "an Erlang shell session: start the application, open an array, read it" do
    dir = tmp_dir("erlang")
    array = Path.join(dir, "demo.zarr")

    Python.run!(
      Python.prelude() <>
        """
        z = zarr.create_array(sys.argv[1], shape=(2, 3), chunks=(2, 2), dtype='int32')
        z[:] = np.arange(6, dtype='int32').reshape(2, 3)
        """,
      [array]
    )

    # The README's session, fed to an interactive erl shell line by line.
    session = """
    application:ensure_all_started(zarr_bridge).
    {ok, A} = 'Elixir.ZarrBridge':open([{path, "#{array}"}, {mode, r}]), ok.
    maps:get(shape, maps:get(metadata, A)).
    'Elixir.ZarrBridge.Array':get_slice(A, [{start, {0, 1}}, {stop, {2, 3}}]).
    {ok, Nd} = 'Elixir.ZarrBridge.Array':read(A, [{start, {1, 0}}]), maps:get(data, Nd).
    halt().
    """

    input = Path.join(dir, "session.erl")
    File.write!(input, session)

    {out, status} =
      System.cmd("sh", ["-c", ~s(exec erl "$@" < "$ZB_INPUT"), "erl" | erl_args()],
        env: [{"ZB_INPUT", input}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    # Each answer after its prompt, as a person sees them.
    assert out =~ ~r/1> \{ok,\[[a-z_,]*zarr_bridge\]\}\n/, out
    assert out =~ "2> ok\n", out
    assert out =~ "3> {2,3}\n", out
    assert out =~ "4> {ok,{{1,2},{4,5}}}\n", out
    assert out =~ "5> <<3,0,0,0,4,0,0,0,5,0,0,0>>\n", out
  end

  # -pa for this build's ebin directories and Elixir's own (elixir, logger).
  defp erl_args do
    build = Mix.Project.build_path()
    ours = Path.wildcard(Path.join(build, "lib/*/ebin"))
    elixir = for app <- [:elixir, :logger], do: Path.join(:code.lib_dir(app), "ebin")
    Enum.flat_map(ours ++ elixir, &["-pa", &1])
  end
end
